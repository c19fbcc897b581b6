//! The daemon configuration file (`config/contactplan.toml`): where plans, templates and the
//! database live, how mail leaves, and defaults. Relative paths resolve against the directory
//! of the config file, so the same file works from any working directory.
//!
//! Three steps, so that only the edges touch the process's surroundings:
//! - [`Config::parse`] is pure: text in, a `Config` or every problem out (`parse.rs`);
//! - [`Config::load`] reads the file and applies the environment's overrides
//!   ([`Environment`], read once by the CLI);
//! - [`Secrets::resolve`] reads the secrets (SMTP password, OAuth client secret, API token) from the
//!   environment, systemd credentials or a file (`secrets.rs`).

mod env;
mod parse;
mod secrets;

pub use env::Environment;
pub use secrets::Secrets;

use crate::diagnostics::Diagnostic;
use crate::mail::Transport;
use crate::plan::Email;
use chrono_tz::Tz;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The validated configuration (no secrets: see [`Secrets`]).
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
    pub delivery: Transport,
    /// `[delivery] password_file`: where the SMTP password is read from when neither the
    /// environment nor a systemd credential provides it (see [`Secrets::resolve`]).
    pub smtp_password_file: Option<PathBuf>,
    /// How long a claim or a send in progress stays locked without renewal (`[delivery]
    /// lease_secs`, default 45 s). A delivering daemon renews its leases every third of it,
    /// so only a stopped daemon's leases run out and another daemon takes its rows over.
    pub lease: Duration,
    /// `[delivery] max_per_second`, `max_per_minute`, `max_per_hour`, `max_per_day`: what the
    /// relay takes, from all daemons on the database together.
    pub relay_limits: RelayLimits,
    /// Where the HTTP listener binds (health, metrics, status); `None` (`http_bind = "off"`)
    /// disables it.
    pub http_bind: Option<std::net::SocketAddr>,
    /// Bounds on HTTP clients: connections at once, header/idle timeout, request sizes.
    pub http_limits: HttpLimits,
    /// How long finished outbox rows and delivered Maildir files are kept.
    pub retention: Retention,
    /// Largest number of outbox items claimed in one batch.
    pub batch_size: u32,
    /// Where failed, missed and unknown-outcome reports go (a digest email); `None`: log only.
    pub ops_email: Option<Email>,
    /// Language of the ops report (`[ops] language`, `de` or `en`; default `en`).
    pub ops_language: crate::plan::Language,
    /// `[calendar]`: business-calendar and send-window defaults under every customer's keys.
    pub calendar: crate::calendar::Settings,
}

/// Messages the relay takes per window (UTC-aligned seconds, minutes, hours and days of the
/// database clock), counted over every daemon sharing the database; `None`: no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayLimits {
    /// `max_per_second`.
    pub per_second: Option<u32>,
    /// `max_per_minute`.
    pub per_minute: Option<u32>,
    /// `max_per_hour`.
    pub per_hour: Option<u32>,
    /// `max_per_day`.
    pub per_day: Option<u32>,
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

/// The bounds of the listener: every client is held to them, so no client (or a thousand)
/// can take the daemon's file descriptors, memory or time.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// Connections served at once (`http_max_connections`). When a new one comes at the cap,
    /// the oldest is closed (idle keep-alive connections first of all), so a probe is always
    /// answered.
    pub max_connections: usize,
    /// Time a client has to send a request's headers, and longest idle time between requests
    /// on a kept-alive connection (`http_timeout_secs`; hyper's `header_read_timeout`).
    pub header_timeout: Duration,
    /// Largest request head (start line and headers), in bytes; a larger one gets 431.
    pub max_header_bytes: usize,
    /// Largest request body, in bytes; a larger one gets 413.
    pub max_body_bytes: usize,
}

impl HttpLimits {
    /// The defaults (README, "Operating limits").
    pub const DEFAULT: HttpLimits = HttpLimits {
        max_connections: 64,
        header_timeout: Duration::from_secs(10),
        max_header_bytes: 16 * 1024,
        max_body_bytes: 1024 * 1024,
    };
}

/// The default address of the HTTP listener.
pub const DEFAULT_HTTP_BIND: &str = "127.0.0.1:9754";
/// The default lease length in seconds (`[delivery] lease_secs`).
pub const DEFAULT_LEASE_SECS: u64 = 45;

/// The From: identity.
#[derive(Debug, Clone)]
pub struct Sender {
    /// Address in From: and the domain of Message-IDs.
    pub email: Email,
    /// Display name in From: and the signature of templates.
    pub name: String,
    /// `[sender] timezone`: the zone of the `Date:` header (default: the daemon's `timezone`).
    pub timezone: Tz,
}

impl Sender {
    /// The sender as templates see it.
    pub fn for_templates(&self) -> crate::render::Sender<'_> {
        crate::render::Sender { name: &self.name, email: self.email.as_str() }
    }

    /// The `From:` of every message.
    pub fn party(&self) -> crate::mail::Party<'_> {
        crate::mail::Party { name: Some(&self.name), address: self.email.as_str() }
    }
}

/// Environment variables the daemon reads (through [`Environment`], at the edge).
pub const ENV_DATABASE_URL: &str = "CONTACTPLAN_DATABASE_URL";
/// The SMTP AUTH password (before the credential `smtp-password` and `password_file`).
pub const ENV_SMTP_PASSWORD: &str = "CONTACTPLAN_SMTP_PASSWORD";
/// The OAuth client secret for `auth = "xoauth2"` (before the credential `oauth-client-secret`).
pub const ENV_OAUTH_CLIENT_SECRET: &str = "CONTACTPLAN_OAUTH_CLIENT_SECRET";
/// The token that guards `/metrics` and `/status` (before the credential `api-token`).
pub const ENV_API_TOKEN: &str = "CONTACTPLAN_API_TOKEN";

impl Config {
    /// Reads and validates the config file, then applies `env`'s overrides
    /// (`CONTACTPLAN_DATABASE_URL` replaces `database_url`). Every problem is returned at once.
    ///
    /// # Errors
    /// An unreadable file, or every problem [`Config::parse`] finds.
    pub fn load(path: &Path, env: &Environment) -> Result<Config, Vec<Diagnostic>> {
        let text = crate::files::read_text(path, crate::files::MAX_CONFIG_BYTES).map_err(|e| {
            let hint = match e {
                crate::files::FileError::Io(_) => "pass --config FILE or create config/contactplan.toml",
                _ => e.hint(),
            };
            vec![Diagnostic::whole_file(path, format!("cannot read the config file: {e}")).hint(hint)]
        })?;
        let mut config = Self::parse(path, &text)?;
        if let Some(url) = env.get(ENV_DATABASE_URL).filter(|u| !u.is_empty()) {
            config.database_url = url.to_string();
        }
        Ok(config)
    }

    /// Validates config text; `path` names the file in messages and anchors relative paths.
    /// Pure: reads no file, no environment and no credential.
    ///
    /// # Errors
    /// Every problem found (TOML syntax, unknown keys, bad values), each with its position.
    pub fn parse(path: &Path, text: &str) -> Result<Config, Vec<Diagnostic>> {
        parse::parse(path, text)
    }

    /// How often a delivering daemon renews its leases: a third of [`Config::lease`], so two
    /// renewals in a row may fail (a busy database) before a live sender's lease could end.
    pub fn lease_renewal(&self) -> Duration {
        self.lease / 3
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
    fn unknown_keys_hide_no_other_problem_of_the_config() {
        let text = "timezone = \"Mars/Olympus\"\nhorizn_days = 3\nhttp_bind = \"localhost\"\n\
            [sender]\nemail = \"nope\"\nnmae = \"x\"\n[delivery]\nkind = \"smtp\"\nhost = \"mail\"\nport = \"25\"\n";
        let errs = Config::parse(Path::new("c.toml"), text).unwrap_err();
        let msgs: Vec<String> = errs.iter().map(|d| format!("{}:{}", d.line, d.message)).collect();
        assert_eq!(
            msgs,
            [
                "1:unknown time zone `Mars/Olympus`",
                "2:unknown key `horizn_days` in the config's top level",
                "3:http_bind `localhost` is not an address:port",
                "5:`nope` is not a valid email address: it has no @",
                "6:unknown key `nmae` in [sender]",
                "10:expected a whole number, found the string \"25\"",
            ],
        );
        let hint = |line: usize| errs.iter().find(|d| d.line == line).and_then(|d| d.hint.clone()).unwrap_or_default();
        assert!(hint(2).starts_with("did you mean `horizon_days`?"), "{}", hint(2));
        assert!(hint(6).starts_with("did you mean `name`?"), "{}", hint(6));
        // Every problem has a line and a hint; the same text gives the same problems.
        assert!(errs.iter().all(|d| d.line > 0 && d.hint.is_some()), "{errs:?}");
        assert_eq!(Config::parse(Path::new("c.toml"), text).unwrap_err().len(), errs.len());
    }

    #[test]
    fn xoauth2_presets_per_provider_and_password_stays_the_default() {
        use crate::mail::{OauthSettings, SmtpAuth};
        let base = "[sender]\nemail = \"team@example.com\"\nname = \"x\"\n[delivery]\nkind = \"smtp\"\nhost = \"smtp.office365.com\"\nusername = \"team@example.com\"\n";
        let auth = |text: &str| match Config::parse(Path::new("c.toml"), text).unwrap().delivery {
            Transport::Smtp(s) => s.auth,
            Transport::Maildir { .. } => unreachable!(),
        };
        assert_eq!(auth(base), SmtpAuth::Password, "an existing config is unchanged");
        let ms = format!(
            "{base}auth = \"xoauth2\"\n[delivery.oauth]\nprovider = \"microsoft\"\ntenant = \"contoso.onmicrosoft.com\"\nclient_id = \"id\"\n"
        );
        assert_eq!(
            auth(&ms),
            SmtpAuth::Xoauth2(OauthSettings {
                provider: "microsoft".into(),
                token_url: "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token".into(),
                client_id: "id".into(),
                scope: "https://outlook.office365.com/.default".into(),
            })
        );
        let google = format!(
            "{base}auth = \"xoauth2\"\n[delivery.oauth]\nprovider = \"google\"\nclient_id = \"id\"\nscope = \"https://mail.google.com/\"\n"
        );
        let SmtpAuth::Xoauth2(g) = auth(&google) else { panic!("xoauth2") };
        assert_eq!(
            (g.token_url.as_str(), g.scope.as_str()),
            ("https://oauth2.googleapis.com/token", "https://mail.google.com/")
        );
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
