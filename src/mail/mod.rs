//! Getting a built message out: one [`Mailer`] enum over SMTP, a Maildir and memory.
//! Nothing here knows about plans, occasions or the outbox.

pub mod header;
mod maildir;
mod message;
pub mod oauth;
pub mod quota;
mod settings;
mod smtp;

pub use message::{AUTO_RESPONSE_SUPPRESS, AUTO_SUBMITTED, BuildError, Outgoing, Party, build, message_id};
pub use settings::{OauthSettings, SmtpAuth, SmtpSettings, TlsMode, Transport};

use std::sync::{Arc, Mutex};

/// The server's (or transport's) acceptance.
#[derive(Debug, Clone)]
pub struct Accepted {
    /// E.g. "250 2.0.0 Ok: queued as 4F2K1" or "maildir new/….eml".
    pub reply: String,
}

/// How a failed send should be treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureClass {
    /// Try again later (connection refused, timeout, 4xx).
    Transient,
    /// Will not succeed (5xx, rejected address).
    Permanent,
    /// The message may or may not have been accepted (connection lost after DATA).
    Unknown,
    /// The caller withdrew the message (its go-ahead said no) before any content went out:
    /// nothing was delivered, and the connection stays usable.
    Withdrawn,
    /// The relay refused for its own sending limit (a rate, a quota; 4xx or 5xx, see
    /// [`quota`]): not this message's fault. The message is kept for later, its attempt not
    /// counted, and the relay is paused ([`quota::QuotaWindow`]).
    Quota,
}

impl FailureClass {
    /// The class as metrics and `status` name it.
    pub fn code(self) -> &'static str {
        match self {
            FailureClass::Transient => "transient",
            FailureClass::Permanent => "permanent",
            FailureClass::Unknown => "unknown",
            FailureClass::Withdrawn => "withdrawn",
            FailureClass::Quota => "quota",
        }
    }
}

/// A failed send with the server's words.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{class:?}: {detail}")]
pub struct SendError {
    /// How to treat the failure (retry, fail, report as unknown).
    pub class: FailureClass,
    /// What went wrong, with the server's reply when there was one (may quote the recipient's
    /// address: log it redacted, see [`crate::telemetry::redact_addresses`]).
    pub detail: String,
}

impl SendError {
    /// The error of a send whose go-ahead said no ([`FailureClass::Withdrawn`]).
    pub fn withdrawn() -> SendError {
        SendError { class: FailureClass::Withdrawn, detail: "withdrawn before the content was sent".into() }
    }
}

/// What waits for the go-ahead of [`Mailer::send_when`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// SMTP `DATA` itself waits: the go-ahead is "this row is now durably `sending`".
    Data,
    /// The row is durably `sending` already, so `DATA` goes out at once and only the content
    /// (with its final dot) waits: the go-ahead is "the commit recording this session's previous
    /// outcome is durable", so a crash never leaves two of its messages with unknown outcomes.
    Content,
}

/// The secrets a transport may need (never logged; `Debug` is redacted).
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    /// The SMTP AUTH password (`auth = "password"`).
    pub password: Option<secrecy::SecretString>,
    /// The OAuth client secret (`auth = "xoauth2"`).
    pub oauth_client_secret: Option<secrecy::SecretString>,
}

/// Messages kept in memory (tests, `preview`).
#[derive(Debug, Clone, Default)]
pub struct MemoryMailer {
    /// Raw RFC 5322 bytes of every accepted message, in order.
    pub sent: Arc<Mutex<Vec<Vec<u8>>>>,
}

/// The configured transport.
pub enum Mailer {
    /// Boxed: it carries TLS parameters and a connection pool, the others a path or a handle.
    Smtp(Box<smtp::SmtpMailer>),
    /// Files in a Maildir's `new/`, named by Message-ID.
    Maildir(maildir::MaildirMailer),
    /// In memory (tests, `preview`).
    Memory(MemoryMailer),
}

impl Mailer {
    /// The transport for `transport`; `password` is the SMTP AUTH password, if any.
    ///
    /// # Errors
    /// As [`Mailer::with_credentials`]; and XOAUTH2 configured (it needs a client secret).
    pub fn new(transport: &Transport, password: Option<&secrecy::SecretString>) -> anyhow::Result<Mailer> {
        let credentials = Credentials { password: password.cloned(), oauth_client_secret: None };
        Self::with_credentials(transport, credentials, std::sync::Arc::new(crate::clock::SystemClock))
    }

    /// The transport for `transport` with its secrets; `clock` times OAuth tokens.
    ///
    /// # Errors
    /// A Maildir that cannot be created, TLS parameters that cannot be built (an unreadable or
    /// invalid `ca_file`, no CA certificates for an https token endpoint), or XOAUTH2 without
    /// a client secret.
    pub fn with_credentials(
        transport: &Transport,
        credentials: Credentials,
        clock: crate::clock::SharedClock,
    ) -> anyhow::Result<Mailer> {
        Ok(match transport {
            Transport::Maildir { path } => Mailer::Maildir(maildir::MaildirMailer::new(path.clone())?),
            Transport::Smtp(s) => {
                let oauth = match (&s.auth, credentials.oauth_client_secret) {
                    (SmtpAuth::Xoauth2(o), Some(secret)) => {
                        Some(std::sync::Arc::new(oauth::TokenSource::new(o, secret, clock)?))
                    }
                    _ => None,
                };
                Mailer::Smtp(Box::new(smtp::SmtpMailer::new(s, credentials.password, oauth)?))
            }
        })
    }

    /// The XOAUTH2 token source, when SMTP AUTH uses one.
    pub fn oauth(&self) -> Option<&std::sync::Arc<oauth::TokenSource>> {
        match self {
            Mailer::Smtp(m) => m.oauth(),
            Mailer::Maildir(_) | Mailer::Memory(_) => None,
        }
    }

    /// Sends one message; the file name or SMTP reply comes back on success.
    ///
    /// # Errors
    /// As [`Mailer::send_when`] (never `Withdrawn`: the go-ahead is always yes).
    pub async fn send(&self, message: &lettre::Message) -> Result<Accepted, SendError> {
        self.send_when(message, std::future::ready(true), Gate::Data).await
    }

    /// Sends one message once `go` says yes. Whatever can happen before the message content
    /// is handed over (connecting, SMTP `MAIL FROM`/`RCPT TO`, and `DATA` too with
    /// [`Gate::Content`]) runs while `go` is pending; the content (the Maildir file, or SMTP
    /// `DATA` with [`Gate::Data`]) is written only after `go` resolved to true. When it
    /// resolves to false, nothing is delivered and the error class is `Withdrawn`. The
    /// dispatcher passes one of its commits as `go`, so the commit overlaps the round trips
    /// instead of preceding them.
    ///
    /// # Errors
    /// A [`SendError`] classified by phase: `Transient` (connection, TLS or AUTH failed, a 4xx
    /// reply, a timeout before the content went out, a Maildir write that failed), `Permanent` (a
    /// 5xx reply), `Unknown` (cut or timed out after the content was handed over: the server may
    /// have the message, RFC 1047), or `Withdrawn` (`go` said no; nothing was delivered).
    pub async fn send_when(
        &self,
        message: &lettre::Message,
        go: impl std::future::Future<Output = bool>,
        gate: Gate,
    ) -> Result<Accepted, SendError> {
        match self {
            Mailer::Smtp(m) => m.send(message, go, gate).await,
            Mailer::Maildir(m) => {
                if !go.await {
                    return Err(SendError::withdrawn());
                }
                m.send(message).await
            }
            Mailer::Memory(m) => {
                if !go.await {
                    return Err(SendError::withdrawn());
                }
                m.sent.lock().unwrap_or_else(|p| p.into_inner()).push(message.formatted());
                Ok(Accepted { reply: "memory".into() })
            }
        }
    }

    /// How many messages may be in flight at once (SMTP sessions; 1 otherwise).
    pub fn sessions(&self) -> usize {
        match self {
            Mailer::Smtp(m) => m.sessions(),
            Mailer::Maildir(_) | Mailer::Memory(_) => 1,
        }
    }

    /// The transport for logs (`smtp host:port (tls, N sessions)`, `maildir PATH`, `memory`);
    /// never a secret.
    pub fn describe(&self) -> String {
        match self {
            Mailer::Smtp(m) => m.describe(),
            Mailer::Maildir(m) => m.describe(),
            Mailer::Memory(_) => "memory".into(),
        }
    }
}
