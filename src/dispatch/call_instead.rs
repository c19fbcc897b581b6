//! The salesperson's "call instead" digest (issue 15): the rows announced `missed` because the
//! relay's caps cannot send them before their deadline (`capacity.rs`), one email per
//! salesperson listing theirs, so they call (or write) instead.
//!
//! Durable, like the ops report: the rows' entries are written in the transaction that marks
//! them `missed` (`Store::announce_missed`), and an entry counts as told only after the relay
//! accepted the digest listing it (`Store::mark_call_told`). A failed send gives its claim back
//! and is tried again at the next tick (after [`RETRY_REFUSED_SECS`] when the relay refused it
//! permanently, so a refused address does not use the relay's budget at every tick); a daemon that stops between the send and the mark leaves
//! a lease that ends, and another daemon (or this one, restarted) sends the digest again with the
//! same entries and the same Message-ID (derived from them), so the resend is recognisable:
//! at-least-once, because a salesperson who never hears is worse than one who hears twice.
//!
//! Once per salesperson: a digest is claimed with a lease (on the database clock) before it is
//! sent, one owner's entries at a time and never split between daemons (`store/calls.rs`), so
//! with several daemons on one database an owner gets one digest. At most [`DIGEST_ROWS`]
//! entries per email; the rest go in the next one.
//!
//! Each digest counts against the relay's caps (`relay::take_one`); when they leave no room now,
//! the entries wait for a later tick. The tick runs this pass right after the capacity
//! announcement and before claiming rows, so the room the projection kept for the digests goes
//! to them.
//!
//! Language: the one most of the owner's listed customers use (ties: English); rendered with
//! `templates/call_instead/<lang>/`, or a built-in plain English text when that is missing or
//! fails.

use super::Scheduler;
use crate::render::{CallRow, digest_language, plain_call_instead};
use crate::store::{CallDigest, CallEntry, secs};
use crate::workspace::Snapshot;

/// Entries per digest; the rest go in the next one.
pub const DIGEST_ROWS: i64 = 200;

/// Digests sent per pass at most (the caps usually stop a pass long before).
const DIGESTS_PER_PASS: usize = 100;

/// How long a digest waits after the relay refused it permanently (a 5xx for the
/// salesperson's address): it is tried again then, not at every tick.
pub const RETRY_REFUSED_SECS: i64 = 600;

/// What became of one claimed digest.
enum Sent {
    /// The relay accepted it; its entries are told.
    Accepted,
    /// Not sent: give the claim back (and try again at once, or after this many seconds).
    Failed { retry_in: i64 },
    /// The relay's limits leave no room now: give the claim back and end the pass.
    NoRoom,
}

/// Sends the digests still owed, one per salesperson; returns how many the relay accepted.
/// A salesperson's digest is tried once per pass: one that fails keeps its claim until the
/// pass ends (so the next claim goes to another salesperson), then gives it back.
///
/// # Errors
/// A store error (what was claimed and not sent is taken over when its lease ends).
pub async fn run(s: &Scheduler, snap: &Snapshot) -> anyhow::Result<u64> {
    // Long enough for one send (bounded by the SMTP timeout) and its mark: never renewed.
    let lease = s.settings.lease_secs() + s.settings.shutdown_grace.as_secs() as i64;
    let mut sent = 0;
    let mut failed: Vec<(CallDigest, i64)> = Vec::new();
    let mut result = Ok(());
    for _ in 0..DIGESTS_PER_PASS {
        let digest = match s.store.claim_call_digest(&s.instance, lease, DIGEST_ROWS).await {
            Ok(Some(d)) => d,
            Ok(None) => break,
            Err(e) => {
                result = Err(e);
                break;
            }
        };
        match send(s, snap, &digest).await {
            Ok(Sent::Accepted) => sent += 1,
            Ok(Sent::Failed { retry_in }) => failed.push((digest, retry_in)),
            Ok(Sent::NoRoom) => {
                failed.push((digest, 0));
                break;
            }
            // A store error: the claim is left to its lease (the digest may have been accepted
            // and not marked: a resend then carries the same Message-ID).
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    for (digest, retry_in) in &failed {
        if let Err(e) = s.store.release_call_digest(&digest.id, &s.instance, *retry_in).await {
            tracing::warn!(error = %e, "could not give a \"call instead\" digest back; it is sent when its lease ends");
        }
    }
    result.map(|()| sent)
}

/// The domain of an address, for logs.
fn domain(address: &str) -> &str {
    address.rsplit_once('@').map_or("", |(_, d)| d)
}

/// Sends one claimed digest; marks its entries told when the relay accepted it.
async fn send(s: &Scheduler, snap: &Snapshot, digest: &CallDigest) -> anyhow::Result<Sent> {
    let rows = digest.entries.len();
    if !super::relay::take_one(s).await? {
        tracing::info!(
            rows,
            domain = domain(&digest.owner),
            "the relay's limits leave no room for a \"call instead\" digest now; later"
        );
        return Ok(Sent::NoRoom);
    }
    let now = s.clock.now();
    let message = match build(s, snap, digest, now) {
        Ok(m) => m,
        Err(e) => {
            tracing::error!(error = %e, rows, "could not build the \"call instead\" digest; trying again later");
            return Ok(Sent::Failed { retry_in: RETRY_REFUSED_SECS });
        }
    };
    match s.mailer.send(&message).await {
        Ok(_) => {
            s.store.mark_call_told(&digest.id, secs(now)).await?;
            tracing::info!(rows, domain = domain(&digest.owner), "\"call instead\" digest sent to the salesperson");
            Ok(Sent::Accepted)
        }
        Err(e) => {
            super::relay::send_failed(s, &e).await;
            let retry_in = if e.class == crate::mail::FailureClass::Permanent { RETRY_REFUSED_SECS } else { 0 };
            tracing::warn!(error = %e, rows, domain = domain(&digest.owner), retry_in_secs = retry_in, "could not send the \"call instead\" digest; trying again");
            Ok(Sent::Failed { retry_in })
        }
    }
}

/// One entry as the digest lists it, from the current plans: the customer's name, the contact
/// the occasion is for or about (the primary contact for one about the customer as a whole),
/// their phone and address, the deadline in the customer's zone. What the plans no longer have
/// is shown by its id (UTC for the deadline).
fn call_row(snap: &Snapshot, e: &CallEntry) -> CallRow {
    let customer = snap.plans.get(&e.key.customer);
    let contact = customer.and_then(|c| match e.key.recipient.contact() {
        Some(id) => c.contact(id),
        None => Some(c.primary_contact()),
    });
    let zone = customer.map_or(chrono_tz::UTC, |c| c.timezone);
    CallRow {
        customer_id: e.key.customer.clone(),
        customer: customer.map_or_else(|| e.key.customer.clone(), |c| c.name.to_string()),
        contact: contact.map(|c| c.name.to_string()).or_else(|| e.key.recipient.contact().map(str::to_string)),
        phone: contact.and_then(|c| c.phone.as_deref()).map(str::to_string),
        email: contact.map(|c| c.email.as_str().to_string()),
        occasion: e.key.rule.clone(),
        deadline: e.deadline.datetime().with_timezone(&zone),
    }
}

/// The digest as a message: rendered in the owner's digest language, or the built-in plain text
/// when the template is missing or fails (or its result cannot be built into a message).
fn build(
    s: &Scheduler,
    snap: &Snapshot,
    digest: &CallDigest,
    now: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<lettre::Message> {
    let rows: Vec<CallRow> = digest.entries.iter().map(|e| call_row(snap, e)).collect();
    let language = digest_language(digest.entries.iter().map(|e| (e.key.customer.as_str(), e.language)));
    let sender = &s.settings.sender;
    let message_id = crate::mail::message_id(&digest.id, sender.email.domain());
    let make = |r: &crate::render::Rendered| {
        crate::mail::build(&crate::mail::Outgoing {
            from: sender.party(),
            to: crate::mail::Party { name: None, address: &digest.owner },
            cc: None,
            reply_to: None,
            subject: &r.subject,
            text: &r.text,
            html: &r.html,
            message_id: &message_id,
            date: now.with_timezone(&sender.timezone).fixed_offset(),
        })
    };
    match snap.renderer.render_call_instead(language, &digest.owner, &rows, sender.for_templates()) {
        Ok(rendered) => match make(&rendered) {
            Ok(m) => return Ok(m),
            Err(e) => {
                tracing::error!(error = %e, variant = %rendered.variant, "the \"call instead\" digest as rendered cannot be sent; sending the built-in plain text")
            }
        },
        Err(e) => {
            tracing::error!(error = %e, "the call_instead template failed; sending the built-in plain text")
        }
    }
    Ok(make(&plain_call_instead(&rows))?)
}
