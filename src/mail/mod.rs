//! Getting a built message out: one [`Mailer`] enum over SMTP, a Maildir and memory.
//! Nothing here knows about plans, occasions or the outbox.

mod maildir;
mod message;
mod smtp;

pub use message::{BuildError, build, message_id};

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
}

/// A failed send with the server's words.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{class:?}: {detail}")]
pub struct SendError {
    pub class: FailureClass,
    pub detail: String,
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
    Maildir(maildir::MaildirMailer),
    Memory(MemoryMailer),
}

impl Mailer {
    pub fn from_config(delivery: &crate::config::Delivery) -> anyhow::Result<Mailer> {
        Ok(match delivery {
            crate::config::Delivery::Maildir { path } => Mailer::Maildir(maildir::MaildirMailer::new(path.clone())?),
            crate::config::Delivery::Smtp(s) => Mailer::Smtp(Box::new(smtp::SmtpMailer::new(s)?)),
        })
    }

    /// Sends one message; the file name or SMTP reply comes back on success.
    pub async fn send(&self, message: &lettre::Message) -> Result<Accepted, SendError> {
        match self {
            Mailer::Smtp(m) => m.send(message).await,
            Mailer::Maildir(m) => m.send(message).await,
            Mailer::Memory(m) => {
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

    pub fn describe(&self) -> String {
        match self {
            Mailer::Smtp(m) => m.describe(),
            Mailer::Maildir(m) => m.describe(),
            Mailer::Memory(_) => "memory".into(),
        }
    }
}
