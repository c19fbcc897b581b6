//! The daemon configuration file (`config/contactplan.toml`): where plans, templates and the
//! database live, how mail leaves, and defaults. Relative paths resolve against the directory
//! of the config file, so the same file works from any working directory.

use crate::diagnostics::Diagnostic;
use crate::plan::Email;
use chrono_tz::Tz;
use serde::Deserialize;
use serde_spanned::Spanned;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this was read from, for messages.
    pub path: PathBuf,
    /// `sqlite://…` or `postgres://…`; the URL alone selects the store engine.
    pub database_url: String,
    /// One TOML file per customer.
    pub plans_dir: PathBuf,
    /// Shared rule sets referenced by `playbook = "…"`.
    pub playbooks_dir: PathBuf,
    /// One folder per template, one sub-folder per language/tone variant.
    pub templates_dir: PathBuf,
    /// Zone for customers and contacts that name none.
    pub default_timezone: Tz,
    /// How far ahead occasions are written into the outbox.
    pub horizon: chrono::TimeDelta,
    /// The From: of every message.
    pub sender: Sender,
    /// Where messages go.
    pub delivery: Delivery,
    /// Where the HTTP listener binds (health, metrics, status); `None` (`http_bind = "off"`)
    /// disables it.
    pub http_bind: Option<std::net::SocketAddr>,
    /// Bearer token `/metrics` and `/status` require, from `CONTACTPLAN_API_TOKEN` or the
    /// systemd credential `api-token`; `None`: open (the listener is on loopback by default).
    pub api_token: Option<Secret>,
    /// How long finished outbox rows and delivered Maildir files are kept.
    pub retention: Retention,
    /// Largest number of outbox items claimed in one batch.
    pub batch_size: u32,
    /// Where failed, missed and unknown-outcome reports go (a digest email); `None`: log only.
    pub ops_email: Option<Email>,
    /// `[calendar]`: business-calendar and send-window defaults under every customer's keys.
    pub calendar: crate::calendar::Settings,
}

/// A secret value; never shown by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Bounded growth: finished outbox rows and Maildir files older than this are deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Finished rows (accepted, failed, missed, suppressed, unknown) whose deadline and last
    /// change are older than this are deleted (failed/missed/unknown only once reported).
    pub outbox: chrono::TimeDelta,
    /// Files in the Maildir's `new/` and `cur/` older than this are deleted; `None` keeps them
    /// (the Maildir usually belongs to whoever reads it).
    pub maildir: Option<chrono::TimeDelta>,
}

/// The default address of the HTTP listener.
pub const DEFAULT_HTTP_BIND: &str = "127.0.0.1:9754";

/// The From: identity.
#[derive(Debug, Clone)]
pub struct Sender {
    /// Address in From: and the domain of Message-IDs.
    pub email: Email,
    /// Display name in From: and the signature of templates.
    pub name: String,
}

/// The mail transport.
#[derive(Debug, Clone)]
pub enum Delivery {
    /// Write each message as an .eml file into a Maildir (`tmp/` → `new/`).
    Maildir { path: PathBuf },
    /// Send over SMTP.
    Smtp(SmtpSettings),
}

/// How the SMTP relay is reached.
#[derive(Clone)]
pub struct SmtpSettings {
    /// Host name or address of the relay.
    pub host: String,
    /// TCP port; 587 for STARTTLS, 465 for implicit TLS, 25 for plain.
    pub port: u16,
    /// Transport security.
    pub tls: TlsMode,
    /// Login name, when the relay wants AUTH.
    pub username: Option<String>,
    /// Password, read from a file, the environment or a systemd credential — never from the
    /// config file itself, and never logged.
    pub password: Option<String>,
    /// Bound on one whole SMTP transaction (lettre's own timeout covers connecting only).
    pub timeout: Duration,
    /// Parallel SMTP sessions.
    pub connections: u32,
    /// Extra trusted CA certificate (PEM), e.g. a private relay's own CA.
    pub ca_file: Option<PathBuf>,
    /// Name to verify in the server certificate, when it differs from `host` (e.g. connecting
    /// to 127.0.0.1 with a certificate for `localhost`).
    pub tls_name: Option<String>,
}

impl std::fmt::Debug for SmtpSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .field("connections", &self.connections)
            .field("ca_file", &self.ca_file)
            .field("tls_name", &self.tls_name)
            .finish()
    }
}

/// SMTP transport security.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// Plain text (only sensible on loopback).
    None,
    /// Upgrade with STARTTLS; refuse to send if the server does not offer it.
    Starttls,
    /// Implicit TLS from the first byte (port 465).
    Tls,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    database_url: Option<Spanned<String>>,
    plans: Option<String>,
    playbooks: Option<String>,
    templates: Option<String>,
    timezone: Option<Spanned<String>>,
    horizon_days: Option<Spanned<i64>>,
    http_bind: Option<Spanned<String>>,
    batch_size: Option<Spanned<u32>>,
    sender: RawSender,
    delivery: RawDelivery,
    ops: Option<RawOps>,
    calendar: Option<crate::plan::RawCalendar>,
    retention: Option<RawRetention>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetention {
    outbox_days: Option<Spanned<i64>>,
    maildir_days: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOps {
    email: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSender {
    email: Spanned<String>,
    name: String,
}

/// `[delivery]` as written; which keys apply depends on `kind`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDelivery {
    kind: Spanned<String>,
    path: Option<Spanned<String>>,
    host: Option<Spanned<String>>,
    port: Option<u16>,
    tls: Option<TlsMode>,
    username: Option<String>,
    password_file: Option<String>,
    timeout_secs: Option<Spanned<u64>>,
    connections: Option<Spanned<u32>>,
    ca_file: Option<String>,
    tls_name: Option<String>,
}

/// Environment variables that override the file (for tests, containers and secrets).
pub const ENV_DATABASE_URL: &str = "CONTACTPLAN_DATABASE_URL";
pub const ENV_SMTP_PASSWORD: &str = "CONTACTPLAN_SMTP_PASSWORD";
pub const ENV_API_TOKEN: &str = "CONTACTPLAN_API_TOKEN";

impl Config {
    /// Reads and validates the config file; every problem is returned at once.
    pub fn load(path: &Path) -> Result<Config, Vec<Diagnostic>> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            vec![
                Diagnostic::whole_file(path, format!("cannot read the config file: {e}"))
                    .hint("pass --config FILE or create config/contactplan.toml"),
            ]
        })?;
        Self::parse(path, &text)
    }

    /// Validates config text; `path` names the file in messages and anchors relative paths.
    pub fn parse(path: &Path, text: &str) -> Result<Config, Vec<Diagnostic>> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            vec![
                Diagnostic::at(path, text, e.span(), e.message().trim().to_string())
                    .hint("see README.md, section \"Daemon configuration\""),
            ]
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let resolve = |p: &str| -> PathBuf { normalize(&base.join(p)) };
        let mut errors = Vec::new();

        let default_timezone = match &raw.timezone {
            None => chrono_tz::UTC,
            Some(tz) => match tz.get_ref().parse::<Tz>() {
                Ok(tz) => tz,
                Err(_) => {
                    errors.push(
                        Diagnostic::at(path, text, Some(tz.span()), format!("unknown time zone `{}`", tz.get_ref()))
                            .hint("use an IANA zone name such as \"Europe/Berlin\""),
                    );
                    chrono_tz::UTC
                }
            },
        };
        let mut email = |v: &Spanned<String>, example: &str| match Email::parse(v.get_ref()) {
            Ok(e) => Some(e),
            Err(why) => {
                errors.push(Diagnostic::at(path, text, Some(v.span()), why).hint(format!("e.g. \"{example}\"")));
                None
            }
        };
        let sender_email = email(&raw.sender.email, "team@example.com");
        let ops_email = raw.ops.as_ref().and_then(|o| email(&o.email, "ops@example.com"));
        let horizon_days = raw.horizon_days.as_ref().map_or(2, |h| *h.get_ref());
        if !(1..=366).contains(&horizon_days) {
            let span = raw.horizon_days.as_ref().map(|h| h.span());
            errors.push(
                Diagnostic::at(path, text, span, "horizon_days must be between 1 and 366").hint("2 is a good default"),
            );
        }
        let batch_size = raw.batch_size.as_ref().map_or(100, |b| *b.get_ref());
        if !(1..=10_000).contains(&batch_size) {
            let span = raw.batch_size.as_ref().map(|b| b.span());
            errors.push(Diagnostic::at(path, text, span, "batch_size must be between 1 and 10000"));
        }
        let delivery = Self::delivery(path, text, raw.delivery, &resolve, &mut errors);
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
                    Diagnostic::at(
                        path,
                        text,
                        v.map(|d| d.span()),
                        format!("retention.{key} must be between 1 and 36500"),
                    )
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
        let api_token = match std::env::var(ENV_API_TOKEN) {
            Ok(t) if !t.is_empty() => Some(Secret(t)),
            _ => credential("api-token")
                .unwrap_or_else(|e| {
                    errors.push(Diagnostic::whole_file(path, e).hint("check the unit's LoadCredential=api-token"));
                    None
                })
                .map(Secret),
        };
        let database_url = match std::env::var(ENV_DATABASE_URL) {
            Ok(url) if !url.is_empty() => url,
            _ => {
                let url = raw.database_url.as_ref().map_or("sqlite://contactplan.db", |u| u.get_ref().as_str());
                match resolve_database_url(url, base) {
                    Ok(u) => u,
                    Err(why) => {
                        let span = raw.database_url.as_ref().map(|u| u.span());
                        errors.push(
                            Diagnostic::at(path, text, span, why)
                                .hint("use sqlite://path/to/file.db or postgres://user@host/db"),
                        );
                        String::new()
                    }
                }
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
            sender: Sender { email, name: raw.sender.name },
            delivery,
            http_bind,
            api_token,
            retention,
            batch_size,
            ops_email,
            calendar,
        })
    }
}

impl Config {
    fn delivery(
        path: &Path,
        text: &str,
        d: RawDelivery,
        resolve: &dyn Fn(&str) -> PathBuf,
        errors: &mut Vec<Diagnostic>,
    ) -> Delivery {
        let smtp_only = d.host.is_some()
            || d.port.is_some()
            || d.tls.is_some()
            || d.username.is_some()
            || d.password_file.is_some()
            || d.timeout_secs.is_some()
            || d.connections.is_some();
        match d.kind.get_ref().as_str() {
            "maildir" => {
                if smtp_only {
                    errors.push(
                        Diagnostic::at(path, text, Some(d.kind.span()), "SMTP settings given for a maildir delivery")
                            .hint("remove host/port/tls/… or set kind = \"smtp\""),
                    );
                }
                match d.path {
                    Some(p) => Delivery::Maildir { path: resolve(p.get_ref()) },
                    None => {
                        errors.push(
                            Diagnostic::at(path, text, Some(d.kind.span()), "maildir delivery needs `path`")
                                .hint("e.g. path = \"../var/maildir\""),
                        );
                        Delivery::Maildir { path: PathBuf::new() }
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
                let password = read_password(d.password_file.as_deref().map(resolve)).unwrap_or_else(|e| {
                    errors.push(Diagnostic::whole_file(path, e).hint("check delivery.password_file"));
                    None
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
                Delivery::Smtp(SmtpSettings {
                    host,
                    port,
                    tls,
                    username: d.username,
                    password,
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
                Delivery::Maildir { path: PathBuf::new() }
            }
        }
    }
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

/// Collapses `.` and `..` lexically, so messages show `templates/x`, not `config/../templates/x`.
pub fn normalize(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => match out.components().next_back() {
                Some(Component::Normal(_)) => {
                    out.pop();
                }
                Some(Component::RootDir) => {}
                _ => out.push(".."),
            },
            other => out.push(other),
        }
    }
    if out.as_os_str().is_empty() { PathBuf::from(".") } else { out }
}

/// A systemd credential (`LoadCredential=NAME:…`) from `$CREDENTIALS_DIRECTORY`, trailing
/// newline removed; `None` when not passed in.
pub fn credential(name: &str) -> Result<Option<String>, String> {
    let Ok(dir) = std::env::var("CREDENTIALS_DIRECTORY") else { return Ok(None) };
    let cred = Path::new(&dir).join(name);
    if !cred.exists() {
        return Ok(None);
    }
    std::fs::read_to_string(&cred)
        .map(|s| Some(s.trim_end().to_string()))
        .map_err(|e| format!("cannot read credential {}: {e}", cred.display()))
}

/// The SMTP password: environment, then systemd credential, then the configured file.
fn read_password(file: Option<PathBuf>) -> Result<Option<String>, String> {
    if let Ok(p) = std::env::var(ENV_SMTP_PASSWORD) {
        return Ok(Some(p));
    }
    if let Some(p) = credential("smtp-password")? {
        return Ok(Some(p));
    }
    match file {
        None => Ok(None),
        Some(f) => std::fs::read_to_string(&f)
            .map(|s| Some(s.trim_end().to_string()))
            .map_err(|e| format!("cannot read password file {}: {e}", f.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_normalised_lexically() {
        assert_eq!(normalize(Path::new("tests/fixtures/broken/../../../templates")), PathBuf::from("templates"));
        assert_eq!(normalize(Path::new("config/../../x")), PathBuf::from("../x"));
        assert_eq!(normalize(Path::new("/etc/../var/lib")), PathBuf::from("/var/lib"));
        assert_eq!(normalize(Path::new("./a/./b")), PathBuf::from("a/b"));
    }

    const MINIMAL: &str =
        "[sender]\nemail = \"team@example.com\"\nname = \"x\"\n[delivery]\nkind = \"maildir\"\npath = \"m\"\n";

    #[test]
    fn http_bind_and_retention_have_safe_defaults_and_are_validated() {
        let c = Config::parse(Path::new("c.toml"), MINIMAL).unwrap();
        assert_eq!(c.http_bind, Some("127.0.0.1:9754".parse().unwrap()), "loopback by default");
        assert_eq!(c.retention, Retention { outbox: chrono::TimeDelta::days(400), maildir: None });

        let text = format!("http_bind = \"off\"\n[retention]\noutbox_days = 30\nmaildir_days = 7\n{MINIMAL}");
        let c = Config::parse(Path::new("c.toml"), &text).unwrap();
        assert_eq!(c.http_bind, None);
        assert_eq!(c.retention.maildir, Some(chrono::TimeDelta::days(7)));

        let text = format!("http_bind = \"localhost\"\n[retention]\noutbox_days = 0\n{MINIMAL}");
        let errs = Config::parse(Path::new("c.toml"), &text).unwrap_err();
        let msgs: Vec<String> = errs.iter().map(|d| format!("{}:{}", d.line, d.message)).collect();
        assert_eq!(
            msgs,
            ["1:http_bind `localhost` is not an address:port", "3:retention.outbox_days must be between 1 and 36500"]
        );
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        assert_eq!(format!("{:?}", Some(Secret("hunter2".into()))), "Some(<redacted>)");
    }

    #[test]
    fn config_problems_are_all_reported() {
        let text = "timezone = \"Mars/Olympus\"\nhorizon_days = 0\n[sender]\nemail = \"nope\"\nname = \"x\"\n[delivery]\nkind = \"maildir\"\npath = \"m\"\n";
        let errs = Config::parse(Path::new("c.toml"), text).unwrap_err();
        let msgs: Vec<String> = errs.iter().map(|d| format!("{}:{}", d.line, d.message)).collect();
        assert_eq!(msgs.len(), 3, "{msgs:?}");
        assert!(msgs[0].starts_with("1:unknown time zone"));
        assert!(msgs.iter().any(|m| m.starts_with("4:") && m.contains("not a valid email")));
        assert!(msgs.iter().any(|m| m.starts_with("2:horizon_days")));
    }
}
