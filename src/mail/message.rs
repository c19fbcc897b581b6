//! MIME messages: multipart/alternative (text + HTML), UTF-8 headers, and a Message-ID
//! derived from the outbox key so every resend of one occasion carries the same id. Takes
//! plain strings: what a message says is decided elsewhere (render), who it is for too.

use lettre::Message;
use lettre::message::{Mailbox, MultiPart, header};
use sha2::{Digest, Sha256};

/// `<32 hex chars of sha256(key)@domain>`: deterministic (RFC 5322 §3.6.4 wants it unique per
/// message; one key is one occasion, so every resend of it carries the same id, and relays
/// and mailboxes can drop a duplicate), and opaque (no customer data in the header).
pub fn message_id(key: &str, domain: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!("<{hex}@{domain}>")
}

/// One end of a message: an address and, optionally, the display name shown with it.
#[derive(Debug, Clone, Copy)]
pub struct Party<'a> {
    /// Display name (`"Anna Müller"`), encoded per RFC 2047 when not ASCII.
    pub name: Option<&'a str>,
    /// `local@domain`.
    pub address: &'a str,
}

/// Everything a message is made of.
#[derive(Debug, Clone, Copy)]
pub struct Outgoing<'a> {
    /// `From:` (and the envelope sender).
    pub from: Party<'a>,
    /// `To:` (and the one envelope recipient).
    pub to: Party<'a>,
    /// `Subject:` (one line).
    pub subject: &'a str,
    /// The text/plain part.
    pub text: &'a str,
    /// The text/html part.
    pub html: &'a str,
    /// `Message-ID:`, with its angle brackets (see [`message_id`]).
    pub message_id: &'a str,
    /// `Date:`, the instant the message is handed to the transport.
    pub date: chrono::DateTime<chrono::Utc>,
}

/// Why a message could not be built (an address lettre rejects).
#[derive(Debug, thiserror::Error)]
#[error("cannot build message: {0}")]
pub struct BuildError(String);

fn mailbox(party: Party, what: &str) -> Result<Mailbox, BuildError> {
    let address = party.address.parse().map_err(|e| BuildError(format!("{what} address: {e}")))?;
    Ok(Mailbox::new(party.name.map(str::to_string), address))
}

/// Builds the message.
///
/// # Errors
/// An address lettre does not accept, or a message lettre cannot assemble.
pub fn build(m: &Outgoing) -> Result<Message, BuildError> {
    Message::builder()
        .from(mailbox(m.from, "sender")?)
        .to(mailbox(m.to, "recipient")?)
        .subject(m.subject.to_string())
        .message_id(Some(m.message_id.to_string()))
        .date(m.date.into())
        .header(header::MIME_VERSION_1_0)
        .multipart(MultiPart::alternative_plain_html(m.text.to_string(), m.html.to_string()))
        .map_err(|e| BuildError(e.to_string()))
}
