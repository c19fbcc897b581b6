//! MIME messages: multipart/alternative (text + HTML), UTF-8 headers, and a Message-ID
//! derived from the outbox key so every resend of one occasion carries the same id. Takes
//! plain strings: what a message says is decided elsewhere (render), who it is for too.

use super::header::{self, HeaderError};
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};
use lettre::{Address, Message};
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
    /// Display name (`"Anna Müller"`), encoded per RFC 2047 when not plain ASCII.
    pub name: Option<&'a str>,
    /// `local@domain`.
    pub address: &'a str,
}

/// Everything a message is made of.
#[derive(Debug, Clone, Copy)]
pub struct Outgoing<'a> {
    /// `From:` (and the envelope sender).
    pub from: Party<'a>,
    /// `To:` (and the first envelope recipient).
    pub to: Party<'a>,
    /// `Cc:` (and a second envelope recipient): an event task's copy (`cc`).
    pub cc: Option<Party<'a>>,
    /// `Reply-To:`, where answers should go (the salesperson, for emails to customers).
    pub reply_to: Option<Party<'a>>,
    /// `Subject:` (one line).
    pub subject: &'a str,
    /// The text/plain part.
    pub text: &'a str,
    /// The text/html part.
    pub html: &'a str,
    /// `Message-ID:`, with its angle brackets (see [`message_id`]).
    pub message_id: &'a str,
    /// `Date:`, the instant the message is handed to the transport, written with this offset
    /// (the sender's zone).
    pub date: chrono::DateTime<chrono::FixedOffset>,
}

/// Why a message could not be built: an address lettre rejects, a control character in a
/// header value, or a message lettre cannot assemble.
#[derive(Debug, thiserror::Error)]
#[error("cannot build message: {0}")]
pub struct BuildError(String);

impl From<HeaderError> for BuildError {
    fn from(e: HeaderError) -> Self {
        BuildError(e.0)
    }
}

/// `Auto-Submitted:` (RFC 3834 §5): the message is generated, so auto-responders stay quiet.
pub const AUTO_SUBMITTED: &str = "auto-generated";
/// `X-Auto-Response-Suppress:` (MS-OXCMAIL): Exchange's own switch for out-of-office and other
/// automatic replies (delivery and non-delivery reports are not suppressed).
pub const AUTO_RESPONSE_SUPPRESS: &str = "OOF, AutoReply";

fn address(party: Party, what: &str) -> Result<Address, BuildError> {
    party.address.parse().map_err(|e| BuildError(format!("{what} address: {e}")))
}

/// Sets a header to a value encoded and verified by `header.rs`, in place of lettre's own.
fn set(headers: &mut lettre::message::header::Headers, name: &'static str, encoded: String) {
    let name = HeaderName::new_from_ascii_str(name);
    headers.insert_raw(HeaderValue::dangerous_new_pre_encoded(name, encoded.clone(), encoded));
}

/// Builds the message: multipart/alternative (text, then HTML), with `From`, `To`, `Cc`, `Reply-To`,
/// `Subject`, `Date`, `Message-ID`, `MIME-Version`, `Auto-Submitted` and
/// `X-Auto-Response-Suppress`. Never panics on any input.
///
/// # Errors
/// An address lettre does not accept or that is not plain ASCII, a control character in a
/// display name or the subject, or a message lettre cannot assemble.
pub fn build(m: &Outgoing) -> Result<Message, BuildError> {
    // Every value a plan or template can influence is encoded by `header.rs` first, so lettre
    // never sees a display name (its `Mailbox` panics on CR/LF) or a raw subject.
    let from = header::mailbox("From", m.from.name, m.from.address)?;
    let to = header::mailbox("To", m.to.name, m.to.address)?;
    let reply_to = m.reply_to.map(|r| header::mailbox("Reply-To", r.name, r.address)).transpose()?;
    let cc = m.cc.map(|c| header::mailbox("Cc", c.name, c.address)).transpose()?;
    let subject = header::unstructured("Subject", m.subject)?;
    let date = m.date.to_rfc2822();
    header::verify("Date", &date)?;
    header::verify("Message-ID", m.message_id)?;
    let mut builder = Message::builder()
        .from(Mailbox::new(None, address(m.from, "sender")?))
        .to(Mailbox::new(None, address(m.to, "recipient")?));
    if let Some(r) = m.reply_to {
        builder = builder.reply_to(Mailbox::new(None, address(r, "reply-to")?));
    }
    if let Some(c) = m.cc {
        builder = builder.cc(Mailbox::new(None, address(c, "cc")?));
    }
    let mut message = builder
        .subject(String::new())
        .message_id(Some(m.message_id.to_string()))
        .date(m.date.with_timezone(&chrono::Utc).into())
        .header(lettre::message::header::MIME_VERSION_1_0)
        .multipart(MultiPart::alternative_plain_html(m.text.to_string(), m.html.to_string()))
        .map_err(|e| BuildError(e.to_string()))?;
    let headers = message.headers_mut();
    set(headers, "From", from);
    set(headers, "To", to);
    if let Some(c) = cc {
        set(headers, "Cc", c);
    }
    if let Some(r) = reply_to {
        set(headers, "Reply-To", r);
    }
    set(headers, "Subject", subject);
    set(headers, "Date", date);
    set(headers, "Auto-Submitted", AUTO_SUBMITTED.to_string());
    set(headers, "X-Auto-Response-Suppress", AUTO_RESPONSE_SUPPRESS.to_string());
    Ok(message)
}
