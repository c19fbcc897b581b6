//! Rules × customers × a time window → occurrences: what is due when, for whom, and why.
//! Pure and deterministic: the same plans and window always give the same occurrences, keyed
//! by the *nominal* occasion (customer, rule, recipient, nominal local date or wall time), so
//! restarts, clock jumps and several daemons never produce a second key for one occasion.
//!
//! One pipeline serves the daemon (`collect`), `agenda` (`agenda_each`, in bounded memory),
//! `preview` (`for_rule`) and `explain` (`explain`): occasion date → leap day → lead time →
//! closed day (`on_closed`) → send time in the window → DST → per-recipient jitter →
//! deadline. Each step that moves the time appends an [`Adjustment`].

mod agenda;
mod dated;
pub mod event;
mod every;
mod key;
pub mod reconcile;
mod timing;

use crate::calendar::Adjustment;
use crate::plan::{Action, Contact, Customer, Email, Rule, Target, Trigger};
use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, TimeDelta, Timelike, Utc};
use chrono_tz::Tz;

pub use agenda::{AGENDA_SLICE, agenda, agenda_each, collect};
pub use every::MAX_FIRES_PER_RULE;
pub(crate) use key::Key;
pub use key::{EventKind, NominalKey, OutboxKey, RecipientKey};

/// Who receives the message.
#[derive(Debug, Clone, Copy)]
pub enum Recipient<'a> {
    /// A contact person of the customer.
    Contact(&'a Contact),
    /// The customer's salesperson (tasks, or emails addressed to the owner).
    Owner,
}

/// The nominal time an occurrence stands for (before lead times and other policies).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Nominal {
    /// A civil date (birthday, anniversary, fixed date).
    Date(NaiveDate),
    /// A wall-clock time (crontab rules).
    Wall(NaiveDateTime),
}

impl std::fmt::Display for Nominal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Written by hand: chrono's `format` parses its pattern on every call, and the jitter
        // hashes this for every occurrence.
        let ymd = |f: &mut std::fmt::Formatter<'_>, d: NaiveDate| {
            write!(f, "{:04}-{:02}-{:02}", d.year(), d.month(), d.day())
        };
        match self {
            Nominal::Date(d) => ymd(f, *d),
            Nominal::Wall(t) => {
                ymd(f, t.date())?;
                write!(f, "T{:02}:{:02}", t.hour(), t.minute())
            }
        }
    }
}

/// When an occurrence is sent: one instant, and the same instant in the recipient's zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Due {
    /// The send instant.
    pub utc: DateTime<Utc>,
    /// The send instant as local wall time with the zone's offset.
    pub local: DateTime<Tz>,
}

impl From<crate::calendar::Resolved> for Due {
    fn from(r: crate::calendar::Resolved) -> Due {
        Due { utc: r.utc, local: r.local }
    }
}

/// One concrete thing to send.
#[derive(Debug, Clone)]
pub struct Occurrence<'a> {
    /// The customer the rule belongs to.
    pub customer: &'a Customer,
    /// The rule that produced it.
    pub rule: &'a Rule,
    /// The contact the occasion concerns; `None` when it concerns the customer as a whole.
    pub about: Option<&'a Contact>,
    /// Where the message goes.
    pub recipient: Recipient<'a>,
    /// The occasion it stands for: part of the outbox key, never moved by policies.
    pub nominal: Nominal,
    /// The civil date of the occasion itself (the birthday, not the day a lead-time task goes).
    pub occasion_date: NaiveDate,
    /// When to send, after every policy (the DST step is among `adjustments`).
    pub due: Due,
    /// After this instant the occurrence is stale and must not be sent.
    pub deadline: DateTime<Utc>,
    /// Zone the occurrence was computed in.
    pub zone: Tz,
    /// Years of the relationship (anniversaries only).
    pub years: Option<u32>,
    /// Every policy that moved it from the nominal time, in the order applied (boxed: exactly
    /// as long as needed, since a year of agenda holds millions of these).
    pub adjustments: Box<[Adjustment]>,
}

impl<'a> Occurrence<'a> {
    fn key_parts(&self) -> Key<'a> {
        Key {
            customer: self.customer,
            rule: self.rule,
            recipient: self.recipient,
            about: self.about,
            nominal: self.nominal,
        }
    }

    /// The outbox key's text; unique per nominal occasion and recipient.
    pub fn key(&self) -> String {
        self.key_parts().to_string()
    }

    /// The outbox key.
    pub fn outbox_key(&self) -> OutboxKey {
        self.key_parts().owned()
    }

    /// The recipient part of the key (`contact:<id>`, `owner:<id>` or `owner`); stable across
    /// email address changes.
    pub fn recipient_key(&self) -> String {
        key::RecipientKey::of(self.recipient, self.about).to_string()
    }

    /// The address the message goes to: the contact's, or the salesperson's.
    pub fn email(&self) -> &Email {
        match self.recipient {
            Recipient::Contact(c) => &c.email,
            Recipient::Owner => &self.customer.owner,
        }
    }

    /// Email to the recipients, or a task for the salesperson.
    pub fn action(&self) -> Action {
        self.rule.action
    }
}

/// An occasion in the window that is not sent, and why (`explain` shows these).
#[derive(Debug, Clone)]
pub struct Skipped<'a> {
    /// The contact the occasion concerns.
    pub about: Option<&'a Contact>,
    /// The local day it would have been sent (or observed).
    pub date: NaiveDate,
    /// What the occasion was, e.g. "birthday 2027-02-29" or "firing 2026-12-26T09:00".
    pub what: String,
    /// The policies applied before it was dropped.
    pub adjustments: Vec<Adjustment>,
    /// Why it is not sent.
    pub reason: String,
}

/// Where the pipeline puts its results.
pub trait Sink<'a> {
    /// An occurrence due in the window.
    fn due(&mut self, o: Occurrence<'a>);
    /// An occasion in the window that is not sent (only `explain` keeps these).
    fn skipped(&mut self, _s: Skipped<'a>) {}
}

impl<'a> Sink<'a> for Vec<Occurrence<'a>> {
    fn due(&mut self, o: Occurrence<'a>) {
        self.push(o);
    }
}

/// One line of `explain`: an occurrence, or an occasion that is not sent.
#[derive(Debug, Clone)]
pub enum Explained<'a> {
    /// Sent, with every adjustment.
    Due(Occurrence<'a>),
    /// Not sent, with the reason.
    Skipped(Skipped<'a>),
}

impl<'a> Sink<'a> for Vec<Explained<'a>> {
    fn due(&mut self, o: Occurrence<'a>) {
        self.push(Explained::Due(o));
    }
    fn skipped(&mut self, s: Skipped<'a>) {
        self.push(Explained::Skipped(s));
    }
}

/// Contacts a rule concerns (before birthday filtering).
fn subjects<'a>(customer: &'a Customer, rule: &Rule) -> impl Iterator<Item = Option<&'a Contact>> + Clone {
    let (all, one): (&'a [Contact], Option<Option<&'a Contact>>) = match rule.target {
        Target::Contacts => (&customer.contacts, None),
        Target::Primary => (&[], Some(Some(customer.primary_contact()))),
        Target::Owner => (&[], Some(None)),
        // The contacts of a handover: named by the event, not by the plan (`event.rs`).
        Target::New | Target::Departed => (&[], None),
    };
    all.iter().map(Some).chain(one)
}

fn recipient_for<'a>(rule: &Rule, about: Option<&'a Contact>) -> Recipient<'a> {
    match (rule.action, about) {
        (Action::Email, Some(c)) if rule.target != Target::Owner => Recipient::Contact(c),
        _ => Recipient::Owner,
    }
}

/// What every step of one rule's pipeline needs.
struct RuleCtx<'a, 'w> {
    /// Whose occasions.
    customer: &'a Customer,
    /// Which rule.
    rule: &'a Rule,
    /// The rule's effective business calendar and send window.
    cal: crate::calendar::Calendar<'a>,
    /// Start of the window (inclusive): occurrences due from here.
    from: DateTime<Utc>,
    /// End of the window (exclusive).
    to: DateTime<Utc>,
    /// The window in the customer's zone.
    local: &'w LocalWindow,
}

/// The window `[from, to)` as local wall times and days in one zone, converted once per
/// customer (zone conversions are a large part of the cost of short windows).
pub(crate) struct LocalWindow {
    zone: Tz,
    /// `from` as local wall time.
    from: NaiveDateTime,
    /// `to` as local wall time.
    to: NaiveDateTime,
    /// The local days `[first, last]` the window touches.
    days: (NaiveDate, NaiveDate),
}

impl LocalWindow {
    fn new(zone: Tz, from: DateTime<Utc>, to: DateTime<Utc>) -> LocalWindow {
        LocalWindow {
            zone,
            from: from.with_timezone(&zone).naive_local(),
            to: to.with_timezone(&zone).naive_local(),
            days: local_days(zone, from, to),
        }
    }
}

impl RuleCtx<'_, '_> {
    /// Local days `[first, last]` the window covers in `zone`.
    fn days_in(&self, zone: Tz) -> (NaiveDate, NaiveDate) {
        if zone == self.local.zone { self.local.days } else { local_days(zone, self.from, self.to) }
    }
}

/// Local days `[first, last]` a window covers in `zone`.
fn local_days(zone: Tz, from: DateTime<Utc>, to: DateTime<Utc>) -> (NaiveDate, NaiveDate) {
    let last = (to - TimeDelta::nanoseconds(1)).max(from);
    (from.with_timezone(&zone).date_naive(), last.with_timezone(&zone).date_naive())
}

/// Sends one rule's occurrences due in `[from, to)` (and, for `explain`, what is skipped) to
/// `sink`.
pub fn rule_into<'a, S: Sink<'a>>(
    customer: &'a Customer,
    rule: &'a Rule,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    sink: &mut S,
) {
    let local = LocalWindow::new(customer.timezone, from, to);
    rule_in(customer, rule, from, to, &local, sink);
}

fn rule_in<'a, S: Sink<'a>>(
    customer: &'a Customer,
    rule: &'a Rule,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    local: &LocalWindow,
    sink: &mut S,
) {
    // A rule limited to phases (`phases`) gives nothing for a customer in another phase.
    if !rule.applies_in(customer.phase) {
        return;
    }
    // Nothing is due after the relationship ended (`ended`): the window stops at the end of
    // that day.
    let to = match customer.ended.and_then(|e| e.succ_opt()) {
        Some(after) => {
            to.min(crate::calendar::resolve_local(customer.timezone, after.and_time(chrono::NaiveTime::MIN)).utc)
        }
        None => to,
    };
    if to <= from {
        return;
    }
    let ctx = RuleCtx { customer, rule, cal: customer.calendar_for(rule), from, to, local };
    match &rule.trigger {
        Trigger::Birthday | Trigger::Anniversary { .. } | Trigger::Date(_) => dated::rule(&ctx, sink),
        Trigger::Every { cron } => every::rule(&ctx, cron, sink),
        // Event-driven; they enter the outbox from order and handover events, not the calendar.
        Trigger::Orders(_)
        | Trigger::Handover
        | Trigger::Phase { .. }
        | Trigger::Event { .. }
        | Trigger::Inactivity { .. }
        | Trigger::End => {}
    }
}

/// Appends the occurrences of one rule whose due instant lies in `[from, to)`.
pub fn for_rule<'a>(
    customer: &'a Customer,
    rule: &'a Rule,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    out: &mut Vec<Occurrence<'a>>,
) {
    rule_into(customer, rule, from, to, out);
}

/// All occurrences of one customer in `[from, to)`.
pub fn for_customer<'a>(customer: &'a Customer, from: DateTime<Utc>, to: DateTime<Utc>, out: &mut Vec<Occurrence<'a>>) {
    let local = LocalWindow::new(customer.timezone, from, to);
    for rule in customer.rules.iter() {
        rule_in(customer, rule, from, to, &local, out);
    }
}

/// One rule's occurrences due in `[from, to)` and the occasions in it that are not sent, in
/// time order (for `explain`).
pub fn explain<'a>(
    customer: &'a Customer,
    rule: &'a Rule,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Vec<Explained<'a>> {
    let mut out: Vec<Explained> = Vec::new();
    rule_into(customer, rule, from, to, &mut out);
    out.sort_by_key(|e| match e {
        Explained::Due(o) => (o.due.local.date_naive(), Some(o.due.utc), o.about.map(|c| c.id.clone())),
        Explained::Skipped(s) => (s.date, None, s.about.map(|c| c.id.clone())),
    });
    out
}
