//! Event occasions: something happened at an instant (an order milestone was reached; later a
//! handover, a phase change) → one occurrence per recipient of a rule, keyed by the event
//! (`acme/hundredth-order/owner/orders:100`), never by a date, so the same event evaluated again
//! — by a restart, another instance, a re-import — finds its key and is not sent twice.
//!
//! Send time: at the rule's `at` on the local day the event happened, or at once when that time
//! has passed — as long as the day is open and the moment is inside the rule's send window (any
//! time of day when none is configured); otherwise at `at` (moved into the window) on the next
//! open day. An event is never dropped by the calendar: `on_closed = "before"` or `"skip"` also
//! moves it to the next open day (the past cannot be chosen, and skipping would lose it). The
//! deadline is the rule's `deadline` after the send time, or [`DEFAULT_EVENT_DEADLINE`].

use super::{Recipient, RecipientKey, recipient_for, subjects, timing};
use crate::calendar::business::{Direction, MAX_SEARCH_DAYS};
use crate::calendar::{Adjustment, Calendar, OnClosed};
use crate::occasion::{EventKind, NominalKey, OutboxKey};
use crate::plan::{Contact, Customer, Rule};
use chrono::{DateTime, NaiveDate, TimeDelta, Timelike, Utc};
use chrono_tz::Tz;

/// How long an event occurrence may still be sent after its send time when the rule sets no
/// `deadline`: a week (a daemon that was down for a weekend still sends it).
pub const DEFAULT_EVENT_DEADLINE: TimeDelta = TimeDelta::days(7);

/// One message an event gives.
#[derive(Debug, Clone)]
pub struct EventOccurrence<'a> {
    /// The customer.
    pub customer: &'a Customer,
    /// The rule.
    pub rule: &'a Rule,
    /// The contact it concerns, if any.
    pub about: Option<&'a Contact>,
    /// Where it goes.
    pub recipient: Recipient<'a>,
    /// Its outbox key (`…/<kind>:<id>`).
    pub key: OutboxKey,
    /// The local day the event happened (`occasion.date` in templates).
    pub occasion_date: NaiveDate,
    /// Send instant.
    pub due: DateTime<Utc>,
    /// Not sent at or after this instant.
    pub deadline: DateTime<Utc>,
    /// The zone the send time was computed in.
    pub zone: Tz,
}

/// The occurrences of `rule` (of `customer`) for the event `kind:id` that happened at `at`.
pub fn occurrences<'a>(
    customer: &'a Customer,
    rule: &'a Rule,
    kind: EventKind,
    id: &str,
    at: DateTime<Utc>,
) -> Vec<EventOccurrence<'a>> {
    occurrences_about(customer, rule, kind, id, at, subjects(customer, rule))
}

/// [`occurrences`] for the contacts an event names itself (a handover's new or departed
/// contact: `to = "new"`/`"departed"`); `None` in `about` is the customer as a whole.
pub fn occurrences_about<'a>(
    customer: &'a Customer,
    rule: &'a Rule,
    kind: EventKind,
    id: &str,
    at: DateTime<Utc>,
    about: impl IntoIterator<Item = Option<&'a Contact>>,
) -> Vec<EventOccurrence<'a>> {
    let cal = customer.calendar_for(rule);
    about
        .into_iter()
        .map(|about| {
            let recipient = recipient_for(rule, about);
            let zone = customer.zone_of(about);
            let due = send_time(zone, &cal, rule.at, at);
            let key = OutboxKey {
                customer: customer.id.to_string(),
                rule: rule.name.to_string(),
                recipient: RecipientKey::of(recipient, about).to_owned(),
                nominal: NominalKey::Event { kind, id: id.to_string() },
            };
            EventOccurrence {
                customer,
                rule,
                about,
                recipient,
                key,
                occasion_date: at.with_timezone(&zone).date_naive(),
                due,
                deadline: due + rule.deadline.unwrap_or(DEFAULT_EVENT_DEADLINE),
                zone,
            }
        })
        .collect()
}

/// See the module docs. Never earlier than `at`.
fn send_time(zone: Tz, cal: &Calendar<'_>, send_at: chrono::NaiveTime, at: DateTime<Utc>) -> DateTime<Utc> {
    let local = at.with_timezone(&zone);
    let mut day = local.date_naive();
    let mut scratch: Vec<Adjustment> = Vec::new();
    for _ in 0..=MAX_SEARCH_DAYS {
        if cal.on_closed != OnClosed::Ignore && !cal.is_open(day) {
            match cal.move_off(day, Direction::After) {
                Some((open, _)) => day = open,
                None => return at,
            }
        }
        let base = timing::base(zone, day, send_at, cal, &mut scratch).utc;
        if base >= at {
            return base;
        }
        // The send time of the event's own day has passed: now, if now is a moment to send.
        let secs = local.time().num_seconds_from_midnight();
        if day == local.date_naive() && cal.window.is_none_or(|w| w.contains(secs)) {
            return at;
        }
        day = day.succ_opt().unwrap_or(day);
    }
    at
}
