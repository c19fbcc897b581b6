//! Outbox rows against the current plans: for each row, does the plan still produce its key,
//! and when is it due now? Pure: the dispatcher reads the rows, asks [`locate`], and writes
//! what changed (re-timed, suppressed, revived), so `agenda` and the daemon agree again after
//! any edit of a plan or playbook.
//!
//! A calendar row is looked up by recomputing its rule for its recipient around its nominal
//! date (a few days either side; as far as the rule's lead time and closed-day policy can move
//! a send when it was not found there). An event row (`…/orders:100`) only needs its customer
//! and its rule, still of the same kind.
//!
//! When a key is no longer produced the reason names the change, most specific first:
//! customer, rule, rule kind, contact, recipient (`to`, `send`), then the occasion itself
//! (birthday, date, crontab, anniversary), then a policy that now skips it (`explain`'s reason).

use super::{EventKind, Explained, Nominal, NominalKey, OutboxKey, RecipientKey, recipient_for, subjects};
use crate::calendar::OnClosed;
use crate::calendar::business::MAX_SEARCH_DAYS;
use crate::plan::{Customer, Lead, Plans, Rule, Trigger, TriggerKind};
use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, TimeDelta, Utc};
use std::collections::HashMap;

/// A row as reconciliation sees it.
#[derive(Debug, Clone)]
pub struct Row<'k> {
    /// Its key.
    pub key: &'k OutboxKey,
    /// Its rule's `on` when it was written.
    pub kind: TriggerKind,
}

/// When and what an occurrence is under the current plans.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Send instant.
    pub due: DateTime<Utc>,
    /// After this instant it is not sent.
    pub deadline: DateTime<Utc>,
    /// Civil date of the occasion itself.
    pub occasion_date: NaiveDate,
    /// Years of the relationship (anniversaries only).
    pub years: Option<u32>,
}

/// What the current plans say about a row's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Located {
    /// A calendar occasion the plans still produce, with its timing now.
    Produced(Timing),
    /// An event row whose customer and rule are still there (events carry no timing to redo).
    Event,
    /// No longer produced; the reason names the change, e.g. "birthday of `anna` changed from
    /// 12-01 to 12-03".
    Gone(String),
}

/// For each row (in order), what the current plans say about its key.
pub fn locate(plans: &Plans, rows: &[Row<'_>]) -> Vec<Located> {
    let mut out: Vec<Option<Located>> = vec![None; rows.len()];
    // Calendar rows grouped by (customer, rule): one computation per group.
    let mut groups: HashMap<(&str, &str), Vec<usize>> = HashMap::new();
    for (i, row) in rows.iter().enumerate() {
        match settled(plans, row) {
            Some(l) => out[i] = Some(l),
            None => groups.entry((&row.key.customer, &row.key.rule)).or_default().push(i),
        }
    }
    for ((customer, rule), members) in groups {
        // `settled` returned None for these rows: the customer and the rule exist.
        let Some(customer) = plans.get(customer) else { continue };
        let Some(rule) = customer.rule(rule) else { continue };
        let near =
            Found::compute(customer, rule, Window::near(rule, members.iter().filter_map(|&i| nominal(rows[i].key))));
        for &i in &members {
            let key = rows[i].key;
            if let Some(t) = near.timing(key) {
                out[i] = Some(Located::Produced(t));
                continue;
            }
            // Not near its nominal date: look as far as the rule can move a send.
            let far = match (can_move(customer, rule), nominal(key)) {
                (true, Some(n)) => Some(Found::compute(customer, rule, Window::far(rule, n))),
                _ => None,
            };
            let found = far.as_ref().unwrap_or(&near);
            out[i] = Some(match found.timing(key) {
                Some(t) => Located::Produced(t),
                None => Located::Gone(why_gone(customer, rule, key, found)),
            });
        }
    }
    out.into_iter()
        .map(|l| l.unwrap_or_else(|| Located::Gone("the plans no longer produce this occasion".into())))
        .collect()
}

/// Whether a send of `rule` can lie farther from its occasion than its lead time plus two days:
/// a business-day lead, or closed days moving sends (`on_closed = "before"`/`"after"`).
fn can_move(customer: &Customer, rule: &Rule) -> bool {
    let cal = customer.calendar_for(rule);
    let business_lead = matches!(rule.before, Lead::BusinessDays(_)) && !matches!(rule.trigger, Trigger::Every { .. });
    business_lead || (cal.has_closures() && matches!(cal.on_closed, OnClosed::Before | OnClosed::After))
}

/// Decided without computing occurrences: event rows, and rows whose customer, rule or contact
/// is gone. `None`: look the occurrence up.
fn settled(plans: &Plans, row: &Row<'_>) -> Option<Located> {
    let key = row.key;
    let Some(customer) = plans.get(&key.customer) else {
        return Some(Located::Gone(format!("customer `{}` removed from the plans", key.customer)));
    };
    // A departure task is built in (no rule): it stays while its contact does.
    if let NominalKey::Event { kind: EventKind::Departure, .. } = key.nominal {
        return Some(match key.recipient.contact().filter(|id| customer.contact(id).is_none()) {
            Some(id) => Located::Gone(format!("contact `{id}` removed from the plan of `{}`", key.customer)),
            None => Located::Event,
        });
    }
    // Nothing is due after the relationship ended: its later occasions are suppressed.
    if let (Some(end), NominalKey::Calendar(n)) = (customer.ended, &key.nominal)
        && match n {
            Nominal::Date(d) => *d,
            Nominal::Wall(w) => w.date(),
        } > end
    {
        return Some(Located::Gone(customer.ended_reason()));
    }
    let Some(rule) = customer.rule(&key.rule) else {
        return Some(Located::Gone(format!("rule `{}` removed from the plan of `{}`", key.rule, key.customer)));
    };
    let kind = rule.trigger.kind();
    if kind != row.kind {
        return Some(Located::Gone(format!("rule `{}` now has on = \"{kind}\" (was \"{}\")", key.rule, row.kind)));
    }
    if !rule.applies_in(customer.phase) {
        return Some(Located::Gone(phase_excluded(customer, rule)));
    }
    if let Some(id) = key.recipient.contact()
        && customer.contact(id).is_none()
    {
        return Some(Located::Gone(format!("contact `{id}` removed from the plan of `{}`", key.customer)));
    }
    match key.nominal {
        NominalKey::Event { .. } => Some(Located::Event),
        NominalKey::Calendar(_) => None,
    }
}

/// Why a rule limited to phases does not apply to `customer` now, e.g. "rule `upsell`
/// applies only in phases growth, maturity; `acme` is now in phase degeneration (phase changed)".
pub fn phase_excluded(customer: &Customer, rule: &Rule) -> String {
    format!(
        "rule `{}` applies only in phases {}; `{}` is now in phase {} (phase changed)",
        rule.name,
        rule.phases_text(),
        customer.id,
        customer.phase
    )
}

fn nominal(key: &OutboxKey) -> Option<Nominal> {
    match key.nominal {
        NominalKey::Calendar(n) => Some(n),
        NominalKey::Event { .. } => None,
    }
}

fn nominal_date(n: Nominal) -> NaiveDate {
    match n {
        Nominal::Date(d) => d,
        Nominal::Wall(t) => t.date(),
    }
}

/// Due instants to recompute: `[from, to)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Window {
    from: DateTime<Utc>,
    to: DateTime<Utc>,
}

impl Window {
    /// Around the nominal dates: the lead time (three calendar days per business day) plus two
    /// days before (zones, DST), three after (jitter, the deadline's day).
    fn near(rule: &Rule, nominals: impl Iterator<Item = Nominal>) -> Window {
        let dates: Vec<NaiveDate> = nominals.map(nominal_date).collect();
        let lo = dates.iter().min().copied().unwrap_or_default();
        let hi = dates.iter().max().copied().unwrap_or_default();
        let lead = match (&rule.trigger, rule.before) {
            (Trigger::Every { .. }, _) | (_, Lead::None) => 0,
            (_, Lead::Days(n)) => i64::from(n),
            (_, Lead::BusinessDays(n)) => 3 * i64::from(n) + 7,
        };
        Window { from: midnight(lo) - TimeDelta::days(lead + 2), to: midnight(hi) + TimeDelta::days(3) }
    }

    /// As far as the rule can move a send of the occasion on `n`: every lead and closed-day
    /// search ends within [`MAX_SEARCH_DAYS`] open-day steps.
    fn far(rule: &Rule, n: Nominal) -> Window {
        let reach = 2 * i64::from(MAX_SEARCH_DAYS)
            + match rule.before {
                Lead::Days(d) => i64::from(d),
                _ => 0,
            };
        let d = nominal_date(n);
        Window { from: midnight(d) - TimeDelta::days(reach + 2), to: midnight(d) + TimeDelta::days(reach + 3) }
    }
}

fn midnight(d: NaiveDate) -> DateTime<Utc> {
    d.and_time(chrono::NaiveTime::MIN).and_utc()
}

/// The occurrences of one rule in a window, by recipient and nominal time, and the occasions
/// it skips there with the reason.
#[derive(Default)]
struct Found<'a> {
    due: HashMap<(RecipientKey<&'a str>, Nominal), Timing>,
    /// (contact id or "", nominal date) → why it is not sent.
    skipped: HashMap<(&'a str, NaiveDate), String>,
}

impl<'a> Found<'a> {
    fn compute(customer: &'a Customer, rule: &'a Rule, w: Window) -> Found<'a> {
        let mut found = Found::default();
        for e in super::explain(customer, rule, w.from, w.to) {
            match e {
                Explained::Due(o) => {
                    let t =
                        Timing { due: o.due.utc, deadline: o.deadline, occasion_date: o.occasion_date, years: o.years };
                    found.due.insert((RecipientKey::of(o.recipient, o.about), o.nominal), t);
                }
                Explained::Skipped(s) => {
                    found.skipped.insert((s.about.map_or("", |c| &*c.id), s.date), s.reason);
                }
            }
        }
        found
    }

    fn timing(&self, key: &OutboxKey) -> Option<Timing> {
        let n = nominal(key)?;
        self.due.get(&(key.recipient.as_ref(), n)).copied()
    }
}

/// Why `rule` no longer produces `key` (its customer, rule and contact exist).
fn why_gone(customer: &Customer, rule: &Rule, key: &OutboxKey, found: &Found<'_>) -> String {
    let name = &key.rule;
    let about_id = key.recipient.contact();
    let about = about_id.and_then(|id| customer.contact(id));
    // Is the recipient still one the rule writes to?
    let targeted = subjects(customer, rule).any(|s| {
        s.map(|c| &*c.id) == about_id && RecipientKey::of(recipient_for(rule, s), s) == key.recipient.as_ref()
    });
    if !targeted {
        let whom = match key.recipient.as_ref() {
            RecipientKey::Contact(id) => format!("contact `{id}`"),
            RecipientKey::OwnerAbout(id) => format!("a task about contact `{id}`"),
            RecipientKey::Owner => "a task about the customer".to_string(),
        };
        return format!(
            "rule `{name}` no longer sends {whom} (to = \"{}\", send = \"{}\")",
            rule.target.code(),
            rule.action.code()
        );
    }
    let Some(n) = nominal(key) else { return format!("rule `{name}` no longer produces this event") };
    let was = nominal_date(n);
    let md = |m: u32, d: u32| format!("{m:02}-{d:02}");
    let specific = match (&rule.trigger, n) {
        (Trigger::Birthday, _) => {
            let id = about_id.unwrap_or("?");
            Some(match about.and_then(|c| c.birthday) {
                None => format!("birthday of `{id}` removed"),
                Some(b) if (b.month, b.day) != (was.month(), was.day()) => {
                    format!("birthday of `{id}` changed from {} to {}", md(was.month(), was.day()), md(b.month, b.day))
                }
                Some(_) => return skipped_or(found, about_id, was, name),
            })
        }
        (Trigger::Date(d), _)
            if (d.month, d.day) != (was.month(), was.day()) || d.year.is_some_and(|y| y != was.year()) =>
        {
            Some(format!("date of rule `{name}` changed from {} to {}", md(was.month(), was.day()), md(d.month, d.day)))
        }
        (Trigger::Anniversary { .. }, _)
            if (customer.since.month(), customer.since.day()) != (was.month(), was.day()) =>
        {
            Some(format!("the relationship's start changed (since = {}); no anniversary on {was}", customer.since))
        }
        (Trigger::Every { cron }, Nominal::Wall(w)) if !fires_at(cron, w) => Some(format!(
            "the crontab of rule `{name}` is now `{}`, which does not fire at {}",
            cron.as_str(),
            w.format("%Y-%m-%d %H:%M")
        )),
        _ => None,
    };
    specific.unwrap_or_else(|| skipped_or(found, about_id, was, name))
}

fn skipped_or(found: &Found<'_>, about: Option<&str>, date: NaiveDate, rule: &str) -> String {
    match found.skipped.get(&(about.unwrap_or(""), date)) {
        Some(reason) => format!("not sent under the current plan: {reason}"),
        None => format!("rule `{rule}` no longer produces this occasion"),
    }
}

fn fires_at(cron: &crate::calendar::Crontab, wall: NaiveDateTime) -> bool {
    cron.next_after(wall - TimeDelta::minutes(1)) == Some(wall)
}
