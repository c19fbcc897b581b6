//! How mail leaves: the transport and, for SMTP, how the relay is reached. Built by the daemon
//! config (`config`), consumed by [`super::Mailer::new`]. Secrets are not part of it: the SMTP
//! password comes separately, as a [`secrecy::SecretString`].

use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// The mail transport.
#[derive(Debug, Clone)]
// One value per daemon (in the config): its size does not matter, boxing would only add noise.
#[allow(clippy::large_enum_variant)]
pub enum Transport {
    /// Write each message as an .eml file into a Maildir (`tmp/` → `new/`).
    Maildir {
        /// The Maildir root; `tmp/`, `new/` and `cur/` are created below it.
        path: PathBuf,
    },
    /// Send over SMTP.
    Smtp(SmtpSettings),
}

/// How the SMTP relay is reached (everything but the password).
#[derive(Debug, Clone)]
pub struct SmtpSettings {
    /// Host name or address of the relay.
    pub host: String,
    /// TCP port; 587 for STARTTLS, 465 for implicit TLS, 25 for plain.
    pub port: u16,
    /// Transport security.
    pub tls: TlsMode,
    /// Login name, when the relay wants AUTH (the password is passed to `Mailer::new`); with
    /// XOAUTH2, the mailbox the token is for.
    pub username: Option<String>,
    /// How to authenticate with `username`: a password (PLAIN/LOGIN) or an OAuth 2.0 token
    /// (XOAUTH2).
    pub auth: SmtpAuth,
    /// Bound on one whole SMTP transaction (lettre's own timeout covers connecting only).
    pub timeout: Duration,
    /// Parallel SMTP sessions.
    pub connections: u32,
    /// Extra trusted CA certificate (PEM), e.g. a private relay's own CA.
    pub ca_file: Option<PathBuf>,
    /// Name to verify in the server certificate, when it differs from `host` (e.g. connecting
    /// to 127.0.0.1 with a certificate for `localhost`).
    pub tls_name: Option<String>,
    /// `[delivery] quota_patterns`: more reply texts (case-insensitive substrings) that mean
    /// the relay's sending limit, beside the built-in ones (`quota::DEFAULT_PATTERNS`).
    pub quota_patterns: Vec<String>,
}

/// SMTP transport security.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// Plain text (only sensible on loopback).
    None,
    /// Upgrade with STARTTLS (RFC 3207); refuse to send if the server does not offer it.
    Starttls,
    /// Implicit TLS from the first byte (port 465, RFC 8314).
    Tls,
}

impl TlsMode {
    /// The config's word for it (`tls = "none" | "starttls" | "tls"`).
    pub fn code(self) -> &'static str {
        match self {
            TlsMode::None => "none",
            TlsMode::Starttls => "starttls",
            TlsMode::Tls => "tls",
        }
    }
}

/// The SMTP AUTH method (`[delivery] auth`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SmtpAuth {
    /// AUTH PLAIN or LOGIN with the password, when a username and a password are given.
    Password,
    /// AUTH XOAUTH2 with a token from the OAuth 2.0 client-credentials grant.
    Xoauth2(OauthSettings),
}

/// Where and how the OAuth 2.0 access token for XOAUTH2 is obtained (`[delivery.oauth]`),
/// everything but the client secret (passed to `Mailer::new` as a `SecretString`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OauthSettings {
    /// `microsoft`, `google` or `custom` (for logs and messages).
    pub provider: String,
    /// The token endpoint: `https://…`, or `http://` on a loopback address (tests).
    pub token_url: String,
    /// The application (client) id.
    pub client_id: String,
    /// The scope requested, e.g. `https://outlook.office365.com/.default`.
    pub scope: String,
}
