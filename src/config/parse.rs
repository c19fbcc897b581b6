//! The config file as written (`Raw*`, with spans) and its validation into [`Config`]. Pure:
//! text in, a `Config` or every problem out; no environment, no credentials, no files read
//! (secrets are a separate step: `super::secrets`).

use super::{Config, DEFAULT_HTTP_BIND, DEFAULT_LEASE_SECS, Retention, Sender, normalize};
use crate::diagnostics::Diagnostic;
use crate::mail::{SmtpSettings, TlsMode, Transport};
use crate::plan::Email;
use chrono_tz::Tz;
use serde::Deserialize;
use serde_spanned::Spanned;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    database_url: Option<Spanned<String>>,
    plans: Option<String>,
    playbooks: Option<String>,
    templates: Option<String>,
    timezone: Option<Spanned<String>>,
    horizon_days: Option<Spanned<i64>>,
    http_bind: Option<Spanned<String>>,
    http_max_connections: Option<Spanned<u32>>,
    http_timeout_secs: Option<Spanned<u64>>,
    batch_size: Option<Spanned<u32>>,
    sender: RawSender,
    delivery: RawDelivery,
    ops: Option<RawOps>,
    calendar: Option<crate::plan::RawCalendar>,
    retention: Option<RawRetention>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRetention {
    outbox_days: Option<Spanned<i64>>,
    maildir_days: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOps {
    email: Spanned<String>,
    language: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSender {
    email: Spanned<String>,
    name: Spanned<String>,
    timezone: Option<Spanned<String>>,
}

/// `[delivery]` as written; which keys apply depends on `kind`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDelivery {
    kind: Spanned<String>,
    path: Option<Spanned<String>>,
    host: Option<Spanned<String>>,
    port: Option<u16>,
    tls: Option<crate::mail::TlsMode>,
    username: Option<String>,
    password_file: Option<String>,
    timeout_secs: Option<Spanned<u64>>,
    connections: Option<Spanned<u32>>,
    lease_secs: Option<Spanned<u64>>,
    ca_file: Option<String>,
    tls_name: Option<String>,
}

/// Validates config text; `path` names the file in messages and anchors relative paths.
pub(super) fn parse(path: &Path, text: &str) -> Result<Config, Vec<Diagnostic>> {
    let raw: RawConfig = toml::from_str(text).map_err(|e| {
        vec![
            Diagnostic::at(path, text, e.span(), e.message().trim().to_string())
                .hint("see README.md, section \"Daemon configuration\""),
        ]
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    let resolve = |p: &str| -> PathBuf { normalize(&base.join(p)) };
    let mut errors = Vec::new();

    let mut zone = |v: &Option<Spanned<String>>, default: Tz| match v {
        None => default,
        Some(tz) => match tz.get_ref().parse::<Tz>() {
            Ok(tz) => tz,
            Err(_) => {
                errors.push(
                    Diagnostic::at(path, text, Some(tz.span()), format!("unknown time zone `{}`", tz.get_ref()))
                        .hint("use an IANA zone name such as \"Europe/Berlin\""),
                );
                default
            }
        },
    };
    let default_timezone = zone(&raw.timezone, chrono_tz::UTC);
    let sender_timezone = zone(&raw.sender.timezone, default_timezone);
    // The sender's name is in every From: header and in the templates' signature.
    let sender_name = raw.sender.name.get_ref().trim().to_string();
    let name_problem = if sender_name.is_empty() {
        Some("is empty".to_string())
    } else {
        crate::plan::text_problem(&sender_name, crate::plan::MAX_COMPANY_CHARS)
    };
    if let Some(why) = name_problem {
        errors.push(
            Diagnostic::at(path, text, Some(raw.sender.name.span()), format!("sender.name {why}"))
                .hint("the name shown in From: and signed under every message, on one line, e.g. \"Beispiel GmbH\""),
        );
    }
    let mut email = |v: &Spanned<String>, example: &str| match Email::parse(v.get_ref()) {
        Ok(e) => Some(e),
        Err(why) => {
            errors.push(Diagnostic::at(path, text, Some(v.span()), why).hint(format!("e.g. \"{example}\"")));
            None
        }
    };
    let sender_email = email(&raw.sender.email, "team@example.com");
    let ops_email = raw.ops.as_ref().and_then(|o| email(&o.email, "ops@example.com"));
    let ops_language = match raw.ops.as_ref().and_then(|o| o.language.as_ref()) {
        None => crate::plan::Language::En,
        Some(l) => crate::plan::Language::parse(l.get_ref()).unwrap_or_else(|| {
            errors.push(
                Diagnostic::at(path, text, Some(l.span()), format!("unknown ops.language `{}`", l.get_ref()))
                    .hint("\"de\" or \"en\""),
            );
            crate::plan::Language::En
        }),
    };
    let horizon_days = raw.horizon_days.as_ref().map_or(2, |h| *h.get_ref());
    if !(1..=366).contains(&horizon_days) {
        let span = raw.horizon_days.as_ref().map(|h| h.span());
        errors.push(
            Diagnostic::at(path, text, span, "horizon_days must be between 1 and 366").hint("2 is a good default"),
        );
    }
    let http_limits = http_limits(path, text, &raw, &mut errors);
    let batch_size = raw.batch_size.as_ref().map_or(100, |b| *b.get_ref());
    if !(1..=10_000).contains(&batch_size) {
        let span = raw.batch_size.as_ref().map(|b| b.span());
        errors.push(Diagnostic::at(path, text, span, "batch_size must be between 1 and 10000"));
    }
    let smtp_password_file = raw.delivery.password_file.as_deref().map(&resolve);
    let lease = lease(path, text, raw.delivery.lease_secs.as_ref(), &mut errors);
    let delivery = delivery(path, text, raw.delivery, &resolve, &mut errors);
    let calendar = match &raw.calendar {
        None => crate::calendar::Settings::default(),
        Some(c) => crate::plan::calendar_table(path, text, c).unwrap_or_else(|mut diags| {
            errors.append(&mut diags);
            crate::calendar::Settings::default()
        }),
    };
    let http_bind = match &raw.http_bind {
        None => DEFAULT_HTTP_BIND.parse().ok(),
        Some(b) if b.get_ref() == "off" => None,
        Some(b) => match b.get_ref().parse::<std::net::SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                errors.push(
                    Diagnostic::at(
                        path,
                        text,
                        Some(b.span()),
                        format!("http_bind `{}` is not an address:port", b.get_ref()),
                    )
                    .hint("e.g. \"127.0.0.1:9754\", or \"off\" to disable the listener"),
                );
                None
            }
        },
    };
    let mut days = |v: Option<&Spanned<i64>>, default: Option<i64>, key: &str| -> Option<chrono::TimeDelta> {
        let d = v.map(|d| *d.get_ref()).or(default)?;
        if !(1..=36_500).contains(&d) {
            errors.push(
                Diagnostic::at(path, text, v.map(|d| d.span()), format!("retention.{key} must be between 1 and 36500"))
                    .hint("a number of days; leave it out for the default"),
            );
        }
        Some(chrono::TimeDelta::days(d))
    };
    let retention = Retention {
        outbox: days(raw.retention.as_ref().and_then(|r| r.outbox_days.as_ref()), Some(400), "outbox_days")
            .unwrap_or(chrono::TimeDelta::days(400)),
        maildir: days(raw.retention.as_ref().and_then(|r| r.maildir_days.as_ref()), None, "maildir_days"),
    };
    let url = raw.database_url.as_ref().map_or("sqlite://contactplan.db", |u| u.get_ref().as_str());
    let database_url = match resolve_database_url(url, base) {
        Ok(u) => u,
        Err(why) => {
            let span = raw.database_url.as_ref().map(|u| u.span());
            errors.push(
                Diagnostic::at(path, text, span, why).hint("use sqlite://path/to/file.db or postgres://user@host/db"),
            );
            String::new()
        }
    };
    if !errors.is_empty() {
        return Err(errors);
    }
    let Some(email) = sender_email else { return Err(errors) };
    Ok(Config {
        path: path.to_path_buf(),
        database_url,
        plans_dir: resolve(raw.plans.as_deref().unwrap_or("plans")),
        playbooks_dir: resolve(raw.playbooks.as_deref().unwrap_or("playbooks")),
        templates_dir: resolve(raw.templates.as_deref().unwrap_or("../templates")),
        default_timezone,
        horizon: chrono::TimeDelta::days(horizon_days),
        sender: Sender { email, name: sender_name, timezone: sender_timezone },
        delivery,
        smtp_password_file,
        lease,
        http_bind,
        http_limits,
        retention,
        batch_size,
        ops_email,
        ops_language,
        calendar,
    })
}

fn delivery(
    path: &Path,
    text: &str,
    d: RawDelivery,
    resolve: &dyn Fn(&str) -> PathBuf,
    errors: &mut Vec<Diagnostic>,
) -> Transport {
    let smtp_only = d.host.is_some()
        || d.port.is_some()
        || d.tls.is_some()
        || d.username.is_some()
        || d.password_file.is_some()
        || d.timeout_secs.is_some()
        || d.connections.is_some()
        || d.lease_secs.is_some();
    match d.kind.get_ref().as_str() {
        "maildir" => {
            if smtp_only {
                errors.push(
                    Diagnostic::at(path, text, Some(d.kind.span()), "SMTP settings given for a maildir delivery")
                        .hint("remove host/port/tls/… or set kind = \"smtp\""),
                );
            }
            match d.path {
                Some(p) => Transport::Maildir { path: resolve(p.get_ref()) },
                None => {
                    errors.push(
                        Diagnostic::at(path, text, Some(d.kind.span()), "maildir delivery needs `path`")
                            .hint("e.g. path = \"../var/maildir\""),
                    );
                    Transport::Maildir { path: PathBuf::new() }
                }
            }
        }
        "smtp" => {
            if let Some(p) = &d.path {
                errors.push(
                    Diagnostic::at(path, text, Some(p.span()), "`path` applies to maildir delivery only")
                        .hint("remove it"),
                );
            }
            let host = match d.host {
                Some(h) if !h.get_ref().trim().is_empty() => h.get_ref().trim().to_string(),
                _ => {
                    errors.push(
                        Diagnostic::at(path, text, Some(d.kind.span()), "smtp delivery needs `host`")
                            .hint("e.g. host = \"mail.example.com\""),
                    );
                    String::new()
                }
            };
            let tls = d.tls.unwrap_or(TlsMode::Starttls);
            let port = d.port.unwrap_or(match tls {
                TlsMode::None => 25,
                TlsMode::Starttls => 587,
                TlsMode::Tls => 465,
            });
            let connections = d.connections.as_ref().map_or(1, |c| *c.get_ref());
            if !(1..=64).contains(&connections) {
                errors.push(Diagnostic::at(
                    path,
                    text,
                    d.connections.as_ref().map(|c| c.span()),
                    "delivery.connections must be between 1 and 64",
                ));
            }
            let timeout = d.timeout_secs.as_ref().map_or(60, |t| *t.get_ref());
            if timeout == 0 {
                errors.push(Diagnostic::at(
                    path,
                    text,
                    d.timeout_secs.as_ref().map(|t| t.span()),
                    "delivery.timeout_secs must be positive",
                ));
            }
            Transport::Smtp(SmtpSettings {
                host,
                port,
                tls,
                username: d.username,
                timeout: Duration::from_secs(timeout),
                connections,
                ca_file: d.ca_file.as_deref().map(resolve),
                tls_name: d.tls_name,
            })
        }
        other => {
            errors.push(
                Diagnostic::at(path, text, Some(d.kind.span()), format!("unknown delivery kind `{other}`"))
                    .hint("use \"maildir\" or \"smtp\""),
            );
            Transport::Maildir { path: PathBuf::new() }
        }
    }
}

/// `http_max_connections` (1–10000) and `http_timeout_secs` (1–3600) over the defaults.
fn http_limits(path: &Path, text: &str, raw: &RawConfig, errors: &mut Vec<Diagnostic>) -> super::HttpLimits {
    let mut limits = super::HttpLimits::DEFAULT;
    if let Some(n) = &raw.http_max_connections {
        if (1..=10_000).contains(n.get_ref()) {
            limits.max_connections = *n.get_ref() as usize;
        } else {
            errors.push(
                Diagnostic::at(path, text, Some(n.span()), "http_max_connections must be between 1 and 10000").hint(
                    "64 (the default) is plenty for probes and scrapes; keep it well under the unit's LimitNOFILE",
                ),
            );
        }
    }
    if let Some(t) = &raw.http_timeout_secs {
        if (1..=3600).contains(t.get_ref()) {
            limits.header_timeout = Duration::from_secs(*t.get_ref());
        } else {
            errors.push(
                Diagnostic::at(path, text, Some(t.span()), "http_timeout_secs must be between 1 and 3600")
                    .hint("10 (the default): a client has that long to send its request headers"),
            );
        }
    }
    limits
}

/// `[delivery] lease_secs`: how long a claim or a send in progress stays locked without
/// renewal (3 s to 1 h; default 45 s).
fn lease(path: &Path, text: &str, v: Option<&Spanned<u64>>, errors: &mut Vec<Diagnostic>) -> Duration {
    let secs = v.map_or(DEFAULT_LEASE_SECS, |s| *s.get_ref());
    if !(3..=3600).contains(&secs) {
        errors.push(
            Diagnostic::at(path, text, v.map(|s| s.span()), "delivery.lease_secs must be between 3 and 3600")
                .hint("45 (the default) lets another daemon take a stopped one's rows over within a minute"),
        );
        return Duration::from_secs(DEFAULT_LEASE_SECS);
    }
    Duration::from_secs(secs)
}

/// SQLite paths are made absolute against the config directory; other URLs pass through.
fn resolve_database_url(url: &str, base: &Path) -> Result<String, String> {
    if let Some(rest) = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")) {
        let (file, query) = rest.split_once('?').map_or((rest, None), |(f, q)| (f, Some(q)));
        if file.is_empty() {
            return Err(format!("database_url `{url}` names no file"));
        }
        if file == ":memory:" {
            return Ok(url.to_string());
        }
        let p = Path::new(file);
        let abs = normalize(&base.join(p));
        Ok(match query {
            Some(q) => format!("sqlite://{}?{q}", abs.display()),
            None => format!("sqlite://{}", abs.display()),
        })
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(url.to_string())
    } else {
        Err(format!("database_url `{url}` is neither sqlite:// nor postgres://"))
    }
}
