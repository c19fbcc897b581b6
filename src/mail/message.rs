//! MIME messages: multipart/alternative (text + HTML), UTF-8 headers, and a Message-ID
//! derived from the outbox key so every resend of one occasion carries the same id.

use crate::config::Sender;
use crate::plan::Email;
use crate::render::Rendered;
use lettre::Message;
use lettre::message::{Mailbox, MultiPart, header};
use sha2::{Digest, Sha256};

/// `<32 hex chars of sha256(key)@sender-domain>`: deterministic, opaque (no customer data).
pub fn message_id(key: &str, sender: &Email) -> String {
    let digest = Sha256::digest(key.as_bytes());
    let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!("<{hex}@{}>", sender.domain())
}

/// Why a message could not be built (an address lettre rejects).
#[derive(Debug, thiserror::Error)]
#[error("cannot build message: {0}")]
pub struct BuildError(String);

/// Builds the message for one recipient.
pub fn build(
    rendered: &Rendered,
    sender: &Sender,
    to: &Email,
    to_name: Option<&str>,
    message_id: &str,
    date: chrono::DateTime<chrono::Utc>,
) -> Result<Message, BuildError> {
    let from = Mailbox::new(
        Some(sender.name.clone()),
        sender.email.as_str().parse().map_err(|e| BuildError(format!("sender address: {e}")))?,
    );
    let to = Mailbox::new(
        to_name.map(str::to_string),
        to.as_str().parse().map_err(|e| BuildError(format!("recipient address: {e}")))?,
    );
    Message::builder()
        .from(from)
        .to(to)
        .subject(rendered.subject.clone())
        .message_id(Some(message_id.to_string()))
        .date(date.into())
        .header(header::MIME_VERSION_1_0)
        .multipart(MultiPart::alternative_plain_html(rendered.text.clone(), rendered.html.clone()))
        .map_err(|e| BuildError(e.to_string()))
}
