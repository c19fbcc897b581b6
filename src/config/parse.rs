//! The config file as written (`Raw*`, with spans) and its validation into [`Config`]. Pure:
//! text in, a `Config` or every problem out; no environment, no credentials, no files read
//! (secrets are a separate step: `super::secrets`).

use super::{Config, DEFAULT_HTTP_BIND, DEFAULT_LEASE_SECS, Retention, Sender, normalize};
use crate::diagnostics::Diagnostic;
use crate::mail::{OauthSettings, SmtpAuth, SmtpSettings, TlsMode, Transport};
use crate::plan::Email;
use crate::plan::RawCalendar;
use crate::plan::entries::{FromTable, Problem, parse_document, raw_table, type_with_article, unknown};
use chrono_tz::Tz;
use serde_spanned::Spanned;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::de::{DeTable, DeValue};

/// The README section every hint of the config points to.
const SECTION: &str = "Daemon configuration";

raw_table! {
    section = "Daemon configuration";
    /// The config's top-level keys as written (its tables are read on their own).
    pub struct RawConfig {
        pub database_url: Option<Spanned<String>>,
        pub plans: Option<String>,
        pub playbooks: Option<String>,
        pub templates: Option<String>,
        pub timezone: Option<Spanned<String>>,
        pub horizon_days: Option<Spanned<i64>>,
        pub http_bind: Option<Spanned<String>>,
        pub http_max_connections: Option<Spanned<u32>>,
        pub http_timeout_secs: Option<Spanned<u64>>,
        pub batch_size: Option<Spanned<u32>>,
    }
}

/// The config's tables, in the order the README lists them.
const TABLES: [&str; 5] = ["[sender]", "[delivery]", "[ops]", "[calendar]", "[retention]"];

raw_table! {
    section = "Daemon configuration";
    pub struct RawRetention {
        pub outbox_days: Option<Spanned<i64>>,
        pub maildir_days: Option<Spanned<i64>>,
    }
}

raw_table! {
    section = "Daemon configuration";
    pub struct RawOps {
        pub email: Spanned<String>,
        pub language: Option<Spanned<String>>,
    }
}

raw_table! {
    section = "Daemon configuration";
    pub struct RawSender {
        pub email: Spanned<String>,
        pub name: Spanned<String>,
        pub timezone: Option<Spanned<String>>,
    }
}

raw_table! {
    section = "Daemon configuration";
    /// `[delivery]` as written; which keys apply depends on `kind`.
    pub struct RawDelivery {
        pub kind: Spanned<String>,
        pub path: Option<Spanned<String>>,
        pub host: Option<Spanned<String>>,
        pub port: Option<u16>,
        pub tls: Option<crate::mail::TlsMode>,
        pub username: Option<String>,
        pub auth: Option<Spanned<String>>,
        pub password_file: Option<Spanned<String>>,
        pub timeout_secs: Option<Spanned<u64>>,
        pub connections: Option<Spanned<u32>>,
        pub lease_secs: Option<Spanned<u64>>,
        pub max_per_second: Option<Spanned<i64>>,
        pub max_per_minute: Option<Spanned<i64>>,
        pub max_per_hour: Option<Spanned<i64>>,
        pub max_per_day: Option<Spanned<i64>>,
        pub quota_patterns: Option<Spanned<Vec<Spanned<String>>>>,
        pub ca_file: Option<String>,
        pub tls_name: Option<String>,
    }
}

raw_table! {
    section = "Daemon configuration";
    /// `[delivery.oauth]` as written (`auth = "xoauth2"`). `client_secret` is read only to
    /// refuse it: the secret never goes into the config file.
    pub struct RawOauth {
        pub provider: Spanned<String>,
        pub tenant: Option<Spanned<String>>,
        pub token_url: Option<Spanned<String>>,
        pub client_id: Spanned<String>,
        pub scope: Option<Spanned<String>>,
        pub client_secret: Option<Spanned<String>>,
    }
}

/// One table of the config as read key by key, with the keys that are missing (required) or
/// have the wrong type: those were reported already and hold stand-ins, so their checks (and
/// the checks that need them) are skipped.
struct Read<T> {
    raw: T,
    unusable: Vec<&'static str>,
}

impl<T> Read<T> {
    fn bad(&self, key: &str) -> bool {
        self.unusable.contains(&key)
    }
}

/// The config's tables and top-level keys, read key by key: every unknown key (with a
/// did-you-mean), missing key and wrong type of the file goes to `problems`.
struct RawFile {
    top: Read<RawConfig>,
    sender: Read<RawSender>,
    delivery: Read<RawDelivery>,
    /// `[delivery.oauth]` and its span.
    oauth: Option<(Read<RawOauth>, Range<usize>)>,
    ops: Option<Read<RawOps>>,
    calendar: Option<Read<RawCalendar>>,
    retention: Option<Read<RawRetention>>,
}

/// `[name]`: a table read key by key, or a stand-in after its problem when it is not a table.
fn table<T: FromTable>(value: &Spanned<DeValue<'_>>, what: &str, problems: &mut Vec<Problem>) -> Read<T> {
    let (raw, unusable) = match value.get_ref().as_table() {
        Some(t) => T::from_table(t, &value.span(), what, problems),
        None => {
            problems.push(Problem {
                span: Some(value.span()),
                message: format!("{what} must be a table, not {}", type_with_article(value.get_ref())),
                hint: format!("write it as {what} on a line of its own, its keys below (README, \"{SECTION}\")"),
            });
            T::stand_in(&value.span())
        }
    };
    Read { raw, unusable }
}

/// `[delivery]` with its sub-table `[delivery.oauth]` read on its own.
type DeliveryTables = (Read<RawDelivery>, Option<(Read<RawOauth>, Range<usize>)>);

fn delivery_tables(value: &Spanned<DeValue<'_>>, problems: &mut Vec<Problem>) -> DeliveryTables {
    let Some(t) = value.get_ref().as_table() else { return (table(value, "[delivery]", problems), None) };
    let mut rest = DeTable::new();
    let mut oauth = None;
    for (key, v) in t.iter() {
        if key.get_ref().as_ref() == "oauth" {
            oauth = Some((table(v, "[delivery.oauth]", problems), v.span()));
        } else {
            rest.insert(key.clone(), v.clone());
        }
    }
    let (raw, unusable) = RawDelivery::from_table(&rest, &value.span(), "[delivery]", problems);
    (Read { raw, unusable }, oauth)
}

/// A required table that is not in the file: its problem, and a stand-in.
fn missing<T: FromTable>(what: &str, text: &str, problems: &mut Vec<Problem>) -> Read<T> {
    problems.push(Problem {
        span: None,
        message: format!("missing table {what}"),
        hint: format!("add {what} with its keys (README, \"{SECTION}\")"),
    });
    let (raw, unusable) = T::stand_in(&(0..text.len()));
    Read { raw, unusable }
}

/// Reads the document key by key (see [`RawFile`]).
fn read(doc: &Spanned<DeTable<'_>>, text: &str, problems: &mut Vec<Problem>) -> RawFile {
    let keys: Vec<&str> = RawConfig::KEYS.iter().chain(&TABLES).copied().collect();
    let mut top = DeTable::new();
    let (mut sender, mut delivery, mut ops, mut calendar, mut retention) = (None, None, None, None, None);
    let mut oauth = None;
    for (key, value) in doc.get_ref().iter() {
        match key.get_ref().as_ref() {
            "sender" => sender = Some(table(value, "[sender]", problems)),
            "delivery" => {
                let (d, o) = delivery_tables(value, problems);
                delivery = Some(d);
                oauth = o;
            }
            "ops" => ops = Some(table(value, "[ops]", problems)),
            "calendar" => calendar = Some(table(value, "[calendar]", problems)),
            "retention" => retention = Some(table(value, "[retention]", problems)),
            k if RawConfig::KEYS.contains(&k) => {
                top.insert(key.clone(), value.clone());
            }
            _ => problems.push(unknown(key, "the config's top level", &keys, SECTION)),
        }
    }
    let (raw, unusable) = RawConfig::from_table(&top, &doc.span(), "the config's top level", problems);
    RawFile {
        top: Read { raw, unusable },
        sender: sender.unwrap_or_else(|| missing("[sender]", text, problems)),
        delivery: delivery.unwrap_or_else(|| missing("[delivery]", text, problems)),
        oauth,
        ops,
        calendar,
        retention,
    }
}

/// Validates config text; `path` names the file in messages and anchors relative paths.
///
/// Like a plan, the file is read key by key, so every problem of the file is reported in one
/// run: every syntax error the `toml` crate finds, or else every unknown key (with a
/// did-you-mean), missing key and wrong type of every table together with every bad value.
pub(super) fn parse(path: &Path, text: &str) -> Result<Config, Vec<Diagnostic>> {
    let doc = parse_document(text).map_err(|errors| {
        errors
            .iter()
            .map(|e| {
                Diagnostic::at(path, text, e.span(), e.message().trim().to_string())
                    .hint("fix the TOML syntax at this position; see README.md, section \"Daemon configuration\"")
            })
            .collect::<Vec<_>>()
    })?;
    let mut problems = Vec::new();
    let file = read(&doc, text, &mut problems);
    let mut errors: Vec<Diagnostic> =
        problems.into_iter().map(|p| Diagnostic::at(path, text, p.span, p.message).hint(p.hint)).collect();
    let result = validate(path, text, file, &mut errors);
    // In the order of the file, as a compiler reports.
    errors.sort_by_key(|d| (d.line, d.column));
    match result {
        Some(config) if errors.is_empty() => Ok(config),
        _ => Err(errors),
    }
}

/// The values of a config read key by key; `None` when something is wrong (every problem is
/// in `errors`).
fn validate(path: &Path, text: &str, file: RawFile, errors: &mut Vec<Diagnostic>) -> Option<Config> {
    let RawFile { top, sender, delivery: raw_delivery, oauth, ops, calendar, retention } = file;
    let raw = &top.raw;
    let base = path.parent().unwrap_or(Path::new("."));
    let resolve = |p: &str| -> PathBuf { normalize(&base.join(p)) };

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
    let sender_timezone = zone(&sender.raw.timezone, default_timezone);
    // The sender's name is in every From: header and in the templates' signature.
    let sender_name = sender.raw.name.get_ref().trim().to_string();
    let name_problem = if sender.bad("name") {
        None
    } else if sender_name.is_empty() {
        Some("is empty".to_string())
    } else {
        crate::plan::text_problem(&sender_name, crate::plan::MAX_COMPANY_CHARS)
    };
    if let Some(why) = name_problem {
        errors.push(
            Diagnostic::at(path, text, Some(sender.raw.name.span()), format!("sender.name {why}"))
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
    let sender_email = (!sender.bad("email")).then(|| email(&sender.raw.email, "team@example.com")).flatten();
    let ops_email = ops.as_ref().filter(|o| !o.bad("email")).and_then(|o| email(&o.raw.email, "ops@example.com"));
    let ops_language = match ops.as_ref().and_then(|o| o.raw.language.as_ref()) {
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
    let http_limits = http_limits(path, text, raw, errors);
    let batch_size = raw.batch_size.as_ref().map_or(100, |b| *b.get_ref());
    if !(1..=10_000).contains(&batch_size) {
        let span = raw.batch_size.as_ref().map(|b| b.span());
        errors.push(Diagnostic::at(path, text, span, "batch_size must be between 1 and 10000"));
    }
    let smtp_password_file = raw_delivery.raw.password_file.as_ref().map(|f| resolve(f.get_ref()));
    let lease = lease(path, text, raw_delivery.raw.lease_secs.as_ref(), errors);
    let (relay_limits, quota_patterns) = relay_limits(path, text, &raw_delivery.raw, errors);
    let mut delivery = delivery(path, text, raw_delivery, oauth.as_ref(), &resolve, errors);
    if let Transport::Smtp(s) = &mut delivery {
        s.quota_patterns = quota_patterns;
    }
    let calendar = match &calendar {
        None => crate::calendar::Settings::default(),
        Some(c) => crate::plan::calendar_table(path, text, &c.raw).unwrap_or_else(|mut diags| {
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
        outbox: days(retention.as_ref().and_then(|r| r.raw.outbox_days.as_ref()), Some(400), "outbox_days")
            .unwrap_or(chrono::TimeDelta::days(400)),
        maildir: days(retention.as_ref().and_then(|r| r.raw.maildir_days.as_ref()), None, "maildir_days"),
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
        return None;
    }
    let email = sender_email?;
    Some(Config {
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
        relay_limits,
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
    read: Read<RawDelivery>,
    oauth: Option<&(Read<RawOauth>, Range<usize>)>,
    resolve: &dyn Fn(&str) -> PathBuf,
    errors: &mut Vec<Diagnostic>,
) -> Transport {
    let bad = |key: &str| read.bad(key);
    let d = &read.raw;
    // The SMTP-only keys given (`lease_secs` is the outbox's claim lease: every kind). A key of
    // the wrong type counts as given (it was reported as such already).
    let given = [
        ("host", d.host.is_some()),
        ("port", d.port.is_some()),
        ("tls", d.tls.is_some()),
        ("username", d.username.is_some()),
        ("auth", d.auth.is_some()),
        ("password_file", d.password_file.is_some()),
        ("timeout_secs", d.timeout_secs.is_some()),
        ("connections", d.connections.is_some()),
        ("[delivery.oauth]", oauth.is_some()),
    ];
    let smtp_only: Vec<&str> = given.iter().filter(|(k, set)| *set || bad(k)).map(|(k, _)| *k).collect();
    if bad("kind") {
        // Which keys apply depends on the kind, which was reported already.
        return Transport::Maildir { path: PathBuf::new() };
    }
    match d.kind.get_ref().as_str() {
        "maildir" => {
            if !smtp_only.is_empty() {
                errors.push(
                    Diagnostic::at(
                        path,
                        text,
                        Some(d.kind.span()),
                        format!("SMTP settings given for a maildir delivery: {}", smtp_only.join(", ")),
                    )
                    .hint(format!("remove {} or set kind = \"smtp\"", smtp_only.join(", "))),
                );
            }
            match &d.path {
                Some(p) => Transport::Maildir { path: resolve(p.get_ref()) },
                None if bad("path") => Transport::Maildir { path: PathBuf::new() },
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
            let host = match &d.host {
                Some(h) if !h.get_ref().trim().is_empty() => h.get_ref().trim().to_string(),
                None if bad("host") => String::new(),
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
            let auth = smtp_auth(path, text, &read, oauth, &host, tls, errors);
            Transport::Smtp(SmtpSettings {
                host,
                port,
                tls,
                username: d.username.clone(),
                auth,
                timeout: Duration::from_secs(timeout),
                connections,
                ca_file: d.ca_file.as_deref().map(resolve),
                tls_name: d.tls_name.clone(),
                quota_patterns: Vec::new(),
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

/// The README section of XOAUTH2, for hints.
const OAUTH_SECTION: &str = "README, \"Microsoft 365 and Google Workspace (XOAUTH2)\"";

/// `[delivery] auth` and, for XOAUTH2, `[delivery.oauth]`.
fn smtp_auth(
    path: &Path,
    text: &str,
    read: &Read<RawDelivery>,
    oauth: Option<&(Read<RawOauth>, Range<usize>)>,
    host: &str,
    tls: TlsMode,
    errors: &mut Vec<Diagnostic>,
) -> SmtpAuth {
    let d = &read.raw;
    let method = d.auth.as_ref().map_or("password", |a| a.get_ref().as_str());
    let auth_span = d.auth.as_ref().map(|a| a.span());
    match method {
        "password" => {
            if let Some((_, span)) = oauth {
                errors.push(
                    Diagnostic::at(path, text, Some(span.clone()), "[delivery.oauth] applies to auth = \"xoauth2\" only")
                        .hint("set auth = \"xoauth2\" in [delivery] to send with OAuth 2.0 tokens, or remove [delivery.oauth]"),
                );
            }
            SmtpAuth::Password
        }
        "xoauth2" => {
            if let Some(f) = &d.password_file {
                errors.push(
                    Diagnostic::at(path, text, Some(f.span()), "password_file applies to auth = \"password\" only")
                        .hint("XOAUTH2 sends a token, not a password: remove password_file"),
                );
            }
            if d.username.is_none() && !read.bad("username") {
                errors.push(
                    Diagnostic::at(
                        path,
                        text,
                        auth_span.clone(),
                        "auth = \"xoauth2\" needs `username`, the mailbox that sends",
                    )
                    .hint(
                        "e.g. username = \"team@example.com\" in [delivery] (the mailbox the application may send as)",
                    ),
                );
            }
            if tls == TlsMode::None && !host.is_empty() && !crate::mail::oauth::is_loopback(host) {
                errors.push(
                    Diagnostic::at(
                        path,
                        text,
                        auth_span.clone(),
                        format!("auth = \"xoauth2\" with tls = \"none\" would send the token to {host} unencrypted"),
                    )
                    .hint("use tls = \"starttls\" (port 587) or tls = \"tls\" (port 465); plain text is only allowed to a loopback relay"),
                );
            }
            match oauth {
                Some((o, _)) => SmtpAuth::Xoauth2(oauth_settings(path, text, o, errors)),
                None => {
                    errors.push(
                        Diagnostic::at(path, text, auth_span, "auth = \"xoauth2\" needs a [delivery.oauth] table")
                            .hint(format!("add [delivery.oauth] with provider and client_id (and tenant for Microsoft); see {OAUTH_SECTION}")),
                    );
                    SmtpAuth::Password
                }
            }
        }
        other => {
            errors.push(Diagnostic::at(path, text, auth_span, format!("unknown delivery.auth `{other}`")).hint(
                "\"password\" (AUTH PLAIN/LOGIN) or \"xoauth2\" (OAuth 2.0 tokens: Microsoft 365, Google Workspace)",
            ));
            SmtpAuth::Password
        }
    }
}

/// `[delivery.oauth]`: the provider's presets, overridden by `token_url` and `scope`.
fn oauth_settings(path: &Path, text: &str, read: &Read<RawOauth>, errors: &mut Vec<Diagnostic>) -> OauthSettings {
    use crate::mail::oauth::{GOOGLE_SCOPE, GOOGLE_TOKEN_URL, MICROSOFT_SCOPE, MICROSOFT_TOKEN_URL};
    let o = &read.raw;
    if let Some(s) = &o.client_secret {
        errors.push(
            Diagnostic::at(path, text, Some(s.span()), "the OAuth client secret must not be written in the config file")
                .hint("remove client_secret; pass it as the systemd credential oauth-client-secret or in CONTACTPLAN_OAUTH_CLIENT_SECRET (and replace it: this file was readable)"),
        );
    }
    let mut value = |v: &Spanned<String>, key: &str| -> String {
        let s = v.get_ref().trim().to_string();
        if s.is_empty() {
            errors
                .push(Diagnostic::at(path, text, Some(v.span()), format!("delivery.oauth.{key} is empty")).hint(
                    format!("give it a value, or leave the key out where it has a default; see {OAUTH_SECTION}"),
                ));
        }
        s
    };
    let client_id = if read.bad("client_id") { String::new() } else { value(&o.client_id, "client_id") };
    let scope = o.scope.as_ref().map(|s| value(s, "scope"));
    let token_url = o.token_url.as_ref().map(|u| value(u, "token_url"));
    let tenant = o.tenant.as_ref().map(|t| (value(t, "tenant"), t.span()));
    let provider = o.provider.get_ref().trim().to_string();
    let provider_span = Some(o.provider.span());
    let tenant_elsewhere = |errors: &mut Vec<Diagnostic>| {
        if let Some((_, span)) = &tenant {
            errors.push(
                Diagnostic::at(path, text, Some(span.clone()), "`tenant` applies to provider = \"microsoft\" only")
                    .hint("remove it; for another endpoint, set token_url"),
            );
        }
    };
    let (preset_url, preset_scope) = match provider.as_str() {
        _ if read.bad("provider") => (String::new(), String::new()),
        "microsoft" => {
            let url = match &tenant {
                None => {
                    errors.push(
                        Diagnostic::at(path, text, provider_span, "provider = \"microsoft\" needs `tenant`").hint(
                            "the directory (tenant) id or a verified domain, e.g. tenant = \"contoso.onmicrosoft.com\"",
                        ),
                    );
                    String::new()
                }
                Some((t, span)) => {
                    if !t.is_empty() && !t.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-') {
                        errors.push(
                            Diagnostic::at(
                                path,
                                text,
                                Some(span.clone()),
                                format!("delivery.oauth.tenant `{}` is not a tenant id or domain", t.escape_debug()),
                            )
                            .hint("the directory (tenant) id (a GUID) or a verified domain such as contoso.onmicrosoft.com"),
                        );
                    }
                    MICROSOFT_TOKEN_URL.replace("{tenant}", t)
                }
            };
            (url, MICROSOFT_SCOPE.to_string())
        }
        "google" => {
            tenant_elsewhere(errors);
            (GOOGLE_TOKEN_URL.to_string(), GOOGLE_SCOPE.to_string())
        }
        "custom" => {
            tenant_elsewhere(errors);
            let missing: Vec<&str> = [("`token_url`", token_url.is_none()), ("`scope`", scope.is_none())]
                .into_iter()
                .filter_map(|(k, m)| m.then_some(k))
                .collect();
            if !missing.is_empty() {
                errors.push(
                    Diagnostic::at(
                        path,
                        text,
                        provider_span,
                        format!("provider = \"custom\" needs {}", missing.join(" and ")),
                    )
                    .hint("the token endpoint (https://…) and the scope your relay's tokens need"),
                );
            }
            (String::new(), String::new())
        }
        other => {
            errors.push(
                Diagnostic::at(path, text, provider_span, format!("unknown delivery.oauth.provider `{other}`"))
                    .hint("\"microsoft\" (Microsoft 365), \"google\" (Google Workspace) or \"custom\" (with token_url and scope)"),
            );
            (String::new(), String::new())
        }
    };
    if let (Some(url), Some(u)) = (&token_url, &o.token_url)
        && !url.is_empty()
        && let Err(why) = crate::mail::oauth::check_token_url(url)
    {
        errors.push(
            Diagnostic::at(path, text, Some(u.span()), format!("delivery.oauth.token_url {why}"))
                .hint("an https:// URL; plain http:// only to a loopback address (tests)"),
        );
    }
    OauthSettings {
        provider,
        token_url: token_url.unwrap_or(preset_url),
        client_id,
        scope: scope.unwrap_or(preset_scope),
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

/// `[delivery] max_per_second`, `max_per_minute`, `max_per_hour`, `max_per_day` (each 1 to
/// 1,000,000,000; none: unlimited) and `quota_patterns` (non-empty texts of at most 200
/// characters).
fn relay_limits(
    path: &Path,
    text: &str,
    d: &RawDelivery,
    errors: &mut Vec<Diagnostic>,
) -> (super::RelayLimits, Vec<String>) {
    let mut cap = |v: &Option<Spanned<i64>>, key: &str| -> Option<u32> {
        let v = v.as_ref()?;
        match u32::try_from(*v.get_ref()) {
            Ok(n) if (1..=1_000_000_000).contains(&n) => Some(n),
            _ => {
                errors.push(
                    Diagnostic::at(
                        path,
                        text,
                        Some(v.span()),
                        format!("delivery.{key} must be between 1 and 1000000000"),
                    )
                    .hint(
                        "messages the relay takes in that window from all daemons together; leave it out for no limit",
                    ),
                );
                None
            }
        }
    };
    let limits = super::RelayLimits {
        per_second: cap(&d.max_per_second, "max_per_second"),
        per_minute: cap(&d.max_per_minute, "max_per_minute"),
        per_hour: cap(&d.max_per_hour, "max_per_hour"),
        per_day: cap(&d.max_per_day, "max_per_day"),
    };
    let mut patterns = Vec::new();
    for p in d.quota_patterns.as_ref().map_or(&[][..], |l| l.get_ref().as_slice()) {
        let t = p.get_ref().trim();
        if t.is_empty() || t.chars().count() > 200 {
            errors.push(
                Diagnostic::at(
                    path,
                    text,
                    Some(p.span()),
                    "a delivery.quota_patterns entry must have 1 to 200 characters",
                )
                .hint("a piece of the relay's reply text, e.g. \"sending quota exceeded\" (matched ignoring case)"),
            );
        } else {
            patterns.push(t.to_string());
        }
    }
    (limits, patterns)
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
