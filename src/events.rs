//! The other moments of a relationship, as facts. Pure: a custom event as recorded
//! ([`Event::new`] validates what `contactplan event` and `POST /api/v1/events` take),
//! the quiet spell of an `on = "inactivity"` rule ([`quiet_spell`]), which send failures mean
//! that a contact's mailbox is gone ([`mailbox_unknown`]), and what the templates of the
//! resulting rows are told ([`MomentFacts`], carried in the outbox `facts` column).
//!
//! Recording (`Store::record_event`) and evaluation (`dispatch::moments`) are the edges
//! around it.

use crate::plan::{Contact, is_event_kind, is_id, text_problem};
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

/// Longest `note` of a custom event (characters).
pub const MAX_EVENT_NOTE_CHARS: usize = 1_000;

/// Orders needed before an `on = "inactivity"` rule's `factor` can use the median interval.
pub const MIN_ORDERS_FOR_MEDIAN: usize = 3;

/// A custom event of a customer (a complaint, …), validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The customer id.
    pub customer: String,
    /// Its id: re-recording the same id records nothing new (idempotent).
    pub id: String,
    /// What happened: one lowercase word (`complaint`), matched by `event = "…"` rules.
    pub kind: String,
    /// A note for the salesperson, one line.
    pub note: Option<String>,
    /// The local day it happened.
    pub date: NaiveDate,
}

impl Event {
    /// Checks every part; `today` is the customer's local day (a date after it is refused).
    ///
    /// # Errors
    /// Each problem as one sentence, all of them (joined by `; `).
    pub fn new(
        customer: &str,
        id: &str,
        kind: &str,
        note: Option<&str>,
        date: NaiveDate,
        today: NaiveDate,
    ) -> Result<Event, String> {
        let mut problems = Vec::new();
        if !is_id(customer) {
            problems.push(format!("`{customer}` is not a customer id"));
        }
        if !is_id(id) {
            problems.push(format!(
                "`{}` is not an event id: 1–128 letters, digits, `-`, `_` or `.`, starting with a letter or digit",
                crate::plan::shown(id)
            ));
        }
        if !is_event_kind(kind) {
            problems.push(format!(
                "`{}` is not an event kind: one lowercase word (a-z, digits, `-`, `_`), e.g. complaint",
                crate::plan::shown(kind)
            ));
        }
        let note = note.map(str::trim).filter(|n| !n.is_empty());
        if let Some(why) = note.and_then(|n| text_problem(n, MAX_EVENT_NOTE_CHARS)) {
            problems.push(format!("the note {why}"));
        }
        if date > today {
            problems.push(format!("the date {date} is in the future (today is {today})"));
        }
        if !problems.is_empty() {
            return Err(problems.join("; "));
        }
        Ok(Event {
            customer: customer.to_string(),
            id: id.to_string(),
            kind: kind.to_string(),
            note: note.map(str::to_string),
            date,
        })
    }
}

/// A generated event id, unique enough for one customer: `<kind>-<YYYYMMDD>-<8 hex digits of
/// entropy>` (the caller passes entropy read at the edge: the wall clock, the process id).
pub fn generated_id(kind: &str, date: NaiveDate, entropy: u64) -> String {
    let mut h = crate::hash::Fnv1a::default();
    h.feed(kind.as_bytes());
    h.feed(&entropy.to_le_bytes());
    format!("{kind}-{}-{:08x}", date.format("%Y%m%d"), h.0 as u32)
}

/// The quiet spell of a customer for one `on = "inactivity"` rule: the last order's day, the
/// usual interval (the median of the intervals between the order days given, when there are at
/// least [`MIN_ORDERS_FOR_MEDIAN`] of them) and how many days without an order make it quiet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuietSpell {
    /// The day of the last order: the spell's id (`inactivity:<date>`).
    pub last_order: NaiveDate,
    /// The median interval between orders, in days, if known.
    pub usual_days: Option<u32>,
    /// Days without an order after which the rule fires.
    pub threshold_days: u32,
}

/// The spell for order days `dates` (any order, duplicates allowed) under `days`/`factor`;
/// `None` without orders (a customer who never ordered is not quiet), or when `factor` has no
/// median to multiply and `days` is not given.
pub fn quiet_spell(dates: &[NaiveDate], days: Option<u32>, factor: Option<f64>) -> Option<QuietSpell> {
    let mut d: Vec<NaiveDate> = dates.to_vec();
    d.sort_unstable();
    d.dedup();
    let last_order = *d.last()?;
    let usual_days = (dates.len() >= MIN_ORDERS_FOR_MEDIAN && d.len() >= 2)
        .then(|| {
            let mut gaps: Vec<i64> = d.windows(2).map(|w| (w[1] - w[0]).num_days()).collect();
            gaps.sort_unstable();
            let mid = gaps.len() / 2;
            let median = if gaps.len().is_multiple_of(2) { (gaps[mid - 1] + gaps[mid] + 1) / 2 } else { gaps[mid] };
            u32::try_from(median).ok()
        })
        .flatten();
    let by_factor = match (factor, usual_days) {
        (Some(f), Some(u)) => Some((f * f64::from(u.max(1))).ceil().clamp(1.0, 36_600.0) as u32),
        _ => None,
    };
    let threshold_days = by_factor.or(days)?;
    Some(QuietSpell { last_order, usual_days, threshold_days })
}

/// Whether a permanent send failure says that the mailbox does not exist (any more): enhanced
/// status 5.1.1, 5.1.0 or 5.1.10, 5.2.1 with "disabled" or "does not exist", or a 550 reply
/// with "unknown user", "no such user", "user unknown" or "mailbox unavailable". Quota,
/// policy and relay refusals (5.2.2, 5.4.x, 5.7.x) are not departures.
pub fn mailbox_unknown(reason: &str) -> bool {
    let r = reason.to_ascii_lowercase();
    let has_code = |code: &str| {
        r.match_indices(code).any(|(i, _)| {
            let before = r[..i].chars().next_back();
            let after = r[i + code.len()..].chars().next();
            !before.is_some_and(|c| c.is_ascii_digit() || c == '.') && !after.is_some_and(|c| c.is_ascii_digit())
        })
    };
    if has_code("5.1.1") || has_code("5.1.0") || has_code("5.1.10") {
        return true;
    }
    if has_code("5.2.1") && (r.contains("disabled") || r.contains("does not exist")) {
        return true;
    }
    has_code("550")
        && ["unknown user", "no such user", "user unknown", "mailbox unavailable"].iter().any(|t| r.contains(t))
}

/// What a custom event's, a quiet spell's or a departure's templates are told (`event.*`,
/// `inactivity.*`, `departure.*`), kept with its outbox row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "moment", rename_all = "lowercase")]
pub enum MomentFacts {
    /// A custom event (`event.kind`, `event.note`, `event.date`, `event.id`).
    Event {
        /// Its id.
        id: String,
        /// Its kind.
        kind: String,
        /// The note, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        note: Option<String>,
        /// The local day it happened.
        date: NaiveDate,
    },
    /// No order for a while (`inactivity.*`).
    Inactivity {
        /// The day of the last order.
        last_order: NaiveDate,
        /// The usual interval between orders in days, if known (at least 3 orders).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        usual_days: Option<u32>,
        /// The days without an order that made the rule fire.
        threshold_days: u32,
    },
    /// A contact's address was refused as unknown (`departure.*`).
    Departure {
        /// The contact as it was.
        contact: DepartedContact,
        /// The server's reply.
        reason: String,
    },
}

/// The contact of a departure signal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DepartedContact {
    /// Contact id.
    pub id: String,
    /// Full name.
    pub name: String,
    /// The refused address.
    pub email: String,
}

impl DepartedContact {
    /// The card of a contact of the plans.
    pub fn of(c: &Contact) -> DepartedContact {
        DepartedContact { id: c.id.to_string(), name: c.name.to_string(), email: c.email.as_str().to_string() }
    }
}

/// The id part of a departure key: the contact id and a hash of the refused address
/// (`anna.1f2e3d4c`), so a new address of the same contact gets its own signal.
pub fn departure_id(contact: &str, address: &str) -> String {
    let mut h = crate::hash::Fnv1a::default();
    h.feed(address.to_ascii_lowercase().as_bytes());
    format!("{contact}.{:08x}", h.0 as u32)
}

/// The rule-name part of departure keys (`acme/departure/owner:anna/departure:anna.1f2e3d4c`).
pub const DEPARTURE_RULE: &str = "departure";

/// The template of departure tasks.
pub const DEPARTURE_TEMPLATE: &str = "departure_task";

/// The built-in rule departure tasks render with (no plan names it): a task to the
/// salesperson about the contact, template [`DEPARTURE_TEMPLATE`].
pub fn departure_rule() -> crate::plan::Rule {
    use crate::plan::{Action, DeliveryPolicy, Lead, LeapDay, Rule, Target, Trigger};
    Rule {
        name: DEPARTURE_RULE.into(),
        trigger: Trigger::Event { event: DEPARTURE_RULE.into(), cc: None },
        action: Action::Task,
        target: Target::Owner,
        template: DEPARTURE_TEMPLATE.into(),
        at: chrono::NaiveTime::MIN,
        before: Lead::None,
        leap_day: LeapDay::default(),
        delivery: DeliveryPolicy::AtLeastOnce,
        deadline: None,
        calendar: crate::calendar::Settings::default(),
        phases: None,
        priority: 0,
        spread: Lead::None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    #[test]
    fn events_are_validated_part_by_part() {
        let today = day("2026-12-01");
        let e = Event::new("acme", "c-1", "complaint", Some("  late delivery "), today, today).unwrap();
        assert_eq!(e.note.as_deref(), Some("late delivery"));
        let err = Event::new("acme", "a/b", "Complaint", Some("x\ny"), day("2026-12-02"), today).unwrap_err();
        for want in ["not an event id", "not an event kind", "control character", "in the future"] {
            assert!(err.contains(want), "{err}");
        }
        assert!(generated_id("complaint", today, 7).starts_with("complaint-20261201-"));
        assert!(is_id(&generated_id("complaint", today, 7)));
    }

    #[test]
    fn a_quiet_spell_needs_orders_and_three_for_the_median() {
        assert_eq!(quiet_spell(&[], Some(30), None), None, "no orders: not quiet");
        let two = [day("2026-01-01"), day("2026-02-01")];
        assert_eq!(quiet_spell(&two, None, Some(2.0)), None, "no median, no days");
        assert_eq!(quiet_spell(&two, Some(30), Some(2.0)).unwrap().threshold_days, 30, "falls back to days");
        let three = [day("2026-01-01"), day("2026-01-11"), day("2026-01-31")];
        let s = quiet_spell(&three, Some(300), Some(2.0)).unwrap();
        assert_eq!((s.last_order, s.usual_days, s.threshold_days), (day("2026-01-31"), Some(15), 30));
    }

    #[test]
    fn only_unknown_mailboxes_are_departures() {
        for yes in [
            "permanent error (550): 5.1.1 mailbox unavailable",
            "550 5.1.10 RESOLVER.ADR.RecipientNotFound",
            "550 5.2.1 The email account that you tried to reach is disabled",
            "550 Requested action not taken: mailbox unavailable",
            "550 no such user here",
        ] {
            assert!(mailbox_unknown(yes), "{yes}");
        }
        for no in [
            "554 5.2.0 STOREDRV.Submission.Exception",
            "550 5.4.5 Daily SMTP relay limit exceeded",
            "550 5.7.1 relaying denied",
            "552 5.2.2 mailbox full",
            "550 5.1.12 something else",
        ] {
            assert!(!mailbox_unknown(no), "{no}");
        }
    }
}
