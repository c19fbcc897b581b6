//! One claimed outbox row → rendered message (`prepare`) → transport → the outcome to record
//! (`outcome`). The worker in `workers.rs` sends in between, gated on the row's commit.

use crate::config::Sender;
use crate::mail::quota::QuotaWindow;
use crate::mail::{Accepted, FailureClass, SendError};
use crate::occasion::{Recipient, RecipientKey};
use crate::plan::{DeliveryPolicy, Plans};
use crate::render::{Input, Renderer};
use crate::store::{Claimed, Outcome, secs};
use chrono::{DateTime, TimeDelta, Utc};

/// Attempts before a transient failure becomes permanent. The deadline usually ends retrying
/// first (backoff reaches 1 h by attempt 8); this cap stops a row from cycling for weeks when a
/// rule sets a long deadline.
pub const MAX_ATTEMPTS: i64 = 25;

/// Exponential backoff with deterministic jitter: 30 s, 60 s, 120 s … capped at 1 h, ±20 %.
pub fn backoff(key: &str, attempts: i64) -> TimeDelta {
    let base = 30i64.saturating_mul(1i64 << attempts.clamp(1, 8).saturating_sub(1)).min(3600);
    let mut h = crate::hash::Fnv1a::seeded(attempts as u64);
    h.feed(key.as_bytes());
    let h = h.0;
    let jitter = (h % 41) as i64 - 20; // −20 … +20 percent
    TimeDelta::seconds(base + base * jitter / 100)
}

/// The window a quota reply (its detail as [`SendError`] carries it) implies; a rate when the
/// text says nothing more.
pub fn quota_window(detail: &str) -> QuotaWindow {
    crate::mail::quota::split_detail(detail)
        .and_then(|(code, text)| crate::mail::quota::classify(code, text, &[]))
        .unwrap_or(QuotaWindow::Rate)
}

/// How long a row refused for the relay's limit waits, from `now`: a rate [`RATE_PAUSE`]; a
/// per-minute or per-hour limit until the next minute or hour; a daily one an hour (relays
/// count a rolling 24 h we cannot see: one probe an hour).
pub fn quota_wait(window: QuotaWindow, now: DateTime<Utc>) -> TimeDelta {
    let t = now.timestamp();
    let to_next = |len: i64| TimeDelta::seconds(len - t.rem_euclid(len));
    match window {
        QuotaWindow::Rate => RATE_PAUSE,
        QuotaWindow::Minute => to_next(60),
        QuotaWindow::Hour => to_next(3600),
        QuotaWindow::Day => DAILY_PAUSE,
    }
}

/// How long a row refused by a rate reply waits.
pub const RATE_PAUSE: TimeDelta = TimeDelta::seconds(10);
/// How long the relay is paused after a reply about a daily quota.
pub const DAILY_PAUSE: TimeDelta = TimeDelta::hours(1);

/// What happened, for logs and metrics.
pub struct Delivery {
    pub outcome: Outcome,
    /// Recipient domain (never the address) for info-level logs.
    pub domain: String,
    /// Time spent in the transport, when it was used (the send latency histogram).
    pub latency: Option<std::time::Duration>,
    /// The transport's failure class, when it failed (SMTP errors by class).
    pub failure: Option<FailureClass>,
}

impl Delivery {
    /// An outcome decided without the transport.
    fn decided(outcome: Outcome, domain: String) -> Delivery {
        Delivery { outcome, domain, latency: None, failure: None }
    }
}

/// A message ready to send, or the outcome that replaces sending it.
pub enum Prepared {
    Message {
        message: lettre::Message,
        /// Recipient domain (never the address) for info-level logs.
        domain: String,
    },
    /// Nothing to send: suppressed (no longer wanted) or failed (cannot be built).
    Done(Delivery),
}

/// Renders one claimed row from the *current* plans. Never panics on bad data: everything
/// that cannot become a message becomes an outcome.
pub fn prepare(row: &Claimed, plans: &Plans, renderer: &Renderer, sender: &Sender, now: DateTime<Utc>) -> Prepared {
    let done = |outcome: Outcome, domain: String| Prepared::Done(Delivery::decided(outcome, domain));
    let suppressed = |reason: String| done(Outcome::Suppressed { reason }, String::new());
    let key = &row.key;
    let Some(customer) = plans.get(&key.customer) else {
        return suppressed(format!("customer `{}` is no longer in the plans", key.customer));
    };
    let event_kind = match &key.nominal {
        crate::occasion::NominalKey::Event { kind, .. } => Some(*kind),
        crate::occasion::NominalKey::Calendar(_) => None,
    };
    // After its end, a relationship gets nothing (the end rule's own row has its week).
    if customer.ended_by(now) && event_kind != Some(crate::occasion::EventKind::End) {
        return suppressed(customer.ended_reason());
    }
    let builtin;
    let rule = if event_kind == Some(crate::occasion::EventKind::Departure) {
        builtin = crate::events::departure_rule();
        Some(&builtin)
    } else {
        customer.rule(&key.rule)
    };
    let Some(rule) = rule else {
        return suppressed(format!("occasion `{}` is no longer in the plan of `{}`", key.rule, key.customer));
    };
    if !rule.applies_in(customer.phase) {
        return suppressed(crate::occasion::reconcile::phase_excluded(customer, rule));
    }
    let gone = |id: &str| format!("contact `{id}` is no longer in the plan of `{}`", key.customer);
    let (recipient, about) = match key.recipient.as_ref() {
        RecipientKey::Contact(id) => match customer.contact(id) {
            Some(c) => (Recipient::Contact(c), Some(c)),
            None => return suppressed(gone(id)),
        },
        RecipientKey::Owner => (Recipient::Owner, None),
        RecipientKey::OwnerAbout(id) => match customer.contact(id) {
            Some(c) => (Recipient::Owner, Some(c)),
            None => return suppressed(gone(id)),
        },
    };
    let occasion_date = row.occasion_date;
    let input = Input {
        customer,
        rule,
        about,
        recipient,
        occasion_date,
        years: row.years,
        milestone: row.facts.as_ref().and_then(|f| f.milestone()),
        handover: row.facts.as_ref().and_then(|f| f.handover()),
        moment: row.facts.as_ref().and_then(|f| f.moment()),
    };
    let to = match recipient {
        Recipient::Contact(c) => &c.email,
        Recipient::Owner => &customer.owner,
    };
    let domain = to.domain().to_string();
    let rendered = match renderer.render(&input, sender.for_templates()) {
        Ok(r) => r,
        Err(e) => return done(Outcome::Failed { reason: e.to_string() }, domain),
    };
    let to_name = match recipient {
        Recipient::Contact(c) => Some(&*c.name),
        Recipient::Owner => None,
    };
    // Answers to a customer email reach the salesperson, not the daemon's mailbox.
    let reply_to = match recipient {
        Recipient::Contact(_) => Some(crate::mail::Party { name: None, address: customer.owner.as_str() }),
        Recipient::Owner => None,
    };
    // An event rule's task may go to a second address too (`cc`): one message, both in the
    // envelope, so each gets it exactly once.
    let cc = match (&rule.trigger, recipient) {
        (crate::plan::Trigger::Event { cc: Some(cc), .. }, Recipient::Owner) => {
            Some(crate::mail::Party { name: None, address: cc.as_str() })
        }
        _ => None,
    };
    let outgoing = crate::mail::Outgoing {
        from: sender.party(),
        to: crate::mail::Party { name: to_name, address: to.as_str() },
        cc,
        reply_to,
        subject: &rendered.subject,
        text: &rendered.text,
        html: &rendered.html,
        message_id: &row.message_id,
        date: now.with_timezone(&sender.timezone).fixed_offset(),
    };
    match crate::mail::build(&outgoing) {
        Ok(message) => Prepared::Message { message, domain },
        Err(e) => done(Outcome::Failed { reason: e.to_string() }, domain),
    }
}

/// What to record for a send attempt of `row` that took `latency` in the transport.
pub fn delivered(
    row: &Claimed,
    sent: Result<Accepted, SendError>,
    domain: String,
    latency: std::time::Duration,
    now: DateTime<Utc>,
) -> Delivery {
    let failure = sent.as_ref().err().map(|e| e.class);
    Delivery { outcome: outcome(row, sent, now), domain, latency: Some(latency), failure }
}

/// The outcome to record for a send attempt of `row`.
fn outcome(row: &Claimed, sent: Result<Accepted, SendError>, now: DateTime<Utc>) -> Outcome {
    match sent {
        Ok(accepted) => Outcome::Accepted { reply: accepted.reply },
        Err(e) => match e.class {
            // The relay's own limit, whatever the reply's first digit: kept, attempt not counted.
            FailureClass::Quota => {
                let window = quota_window(&e.detail);
                Outcome::Deferred { at: secs(now + quota_wait(window, now)), reason: e.detail }
            }
            FailureClass::Permanent => Outcome::Failed { reason: e.detail },
            FailureClass::Unknown if row.delivery == DeliveryPolicy::AtMostOnce => {
                Outcome::Unknown { reason: format!("outcome unknown, not resent (at_most_once): {}", e.detail) }
            }
            _ if row.attempts >= MAX_ATTEMPTS => {
                Outcome::Failed { reason: format!("gave up after {} attempts: {}", row.attempts, e.detail) }
            }
            // Withdrawn: nothing went out; if it is ever recorded, a retry is the safe reading.
            FailureClass::Transient | FailureClass::Unknown | FailureClass::Withdrawn => {
                Outcome::Retry { at: secs(now + backoff(&row.key.to_string(), row.attempts)), reason: e.detail }
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped_with_bounded_jitter() {
        let secs: Vec<i64> = (1..=10).map(|a| backoff("k", a).num_seconds()).collect();
        for (a, s) in (1..=10).zip(&secs) {
            let base = (30i64 << (a.min(8) - 1)).min(3600);
            assert!(*s >= base * 80 / 100 && *s <= base * 120 / 100, "attempt {a}: {s}");
        }
        assert!(secs[9] <= 4320);
        assert_eq!(backoff("k", 3), backoff("k", 3), "deterministic");
    }
}
