//! Rules × customers × a time window → occurrences: what is due when, for whom, and why.
//! Pure and deterministic: the same plans and window always give the same occurrences, keyed
//! by the *nominal* occasion (customer, rule, recipient, nominal local date or wall time), so
//! restarts, clock jumps and several daemons never produce a second key for one occasion.

use crate::calendar::{Adjustment, Resolved, anniversary, end_of_local_day, observe, resolve_local};
use crate::plan::{Action, Contact, Customer, Email, Lead, MonthDay, Plans, Rule, Target, Trigger};
use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, TimeDelta, Utc};
use chrono_tz::Tz;
use rayon::prelude::*;

/// Who receives the message.
#[derive(Debug, Clone, Copy)]
pub enum Recipient<'a> {
    /// A contact person of the customer.
    Contact(&'a Contact),
    /// The customer's salesperson (tasks, or emails addressed to the owner).
    Owner,
}

/// The nominal time an occurrence stands for (before lead times and DST policies).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nominal {
    /// A civil date (birthday, anniversary, fixed date).
    Date(NaiveDate),
    /// A wall-clock time (crontab rules).
    Wall(NaiveDateTime),
}

impl std::fmt::Display for Nominal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Nominal::Date(d) => write!(f, "{}", d.format("%Y-%m-%d")),
            Nominal::Wall(t) => write!(f, "{}", t.format("%Y-%m-%dT%H:%M")),
        }
    }
}

/// One concrete thing to send.
#[derive(Debug, Clone)]
pub struct Occurrence<'a> {
    pub customer: &'a Customer,
    pub rule: &'a Rule,
    /// The contact the occasion concerns; `None` when it concerns the customer as a whole.
    pub about: Option<&'a Contact>,
    pub recipient: Recipient<'a>,
    pub nominal: Nominal,
    /// The civil date of the occasion itself (the birthday, not the day a lead-time task goes).
    pub occasion_date: NaiveDate,
    /// When to send, resolved with the DST policy in `zone`.
    pub due: Resolved,
    /// After this instant the occurrence is stale and must not be sent.
    pub deadline: DateTime<Utc>,
    /// Zone the occurrence was computed in.
    pub zone: Tz,
    /// Years of the relationship (anniversaries only).
    pub years: Option<u32>,
    /// Every policy that moved it from the nominal time.
    pub adjustments: Vec<Adjustment>,
}

impl Occurrence<'_> {
    /// The outbox key; unique per nominal occasion and recipient.
    pub fn key(&self) -> String {
        format!("{}/{}/{}/{}", self.customer.id, self.rule.name, self.recipient_key(), self.nominal)
    }

    /// `contact:<id>` or `owner:<about>`; stable across email address changes.
    pub fn recipient_key(&self) -> String {
        match self.recipient {
            Recipient::Contact(c) => format!("contact:{}", c.id),
            Recipient::Owner => format!("owner:{}", self.about.map_or("customer", |c| &c.id)),
        }
    }

    pub fn email(&self) -> &Email {
        match self.recipient {
            Recipient::Contact(c) => &c.email,
            Recipient::Owner => &self.customer.owner,
        }
    }

    pub fn action(&self) -> Action {
        self.rule.action
    }
}

/// Contacts a rule concerns (before birthday filtering).
fn subjects<'a>(customer: &'a Customer, rule: &Rule) -> Vec<Option<&'a Contact>> {
    match rule.target {
        Target::Contacts => customer.contacts.iter().map(Some).collect(),
        Target::Primary => vec![Some(customer.primary_contact())],
        Target::Owner => vec![None],
    }
}

fn recipient_for<'a>(rule: &Rule, about: Option<&'a Contact>) -> Recipient<'a> {
    match (rule.action, about) {
        (Action::Email, Some(c)) if rule.target != Target::Owner => Recipient::Contact(c),
        _ => Recipient::Owner,
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
    match &rule.trigger {
        Trigger::Birthday => {
            for about in subjects(customer, rule).into_iter().flatten() {
                if let Some(bd) = about.birthday {
                    dated(customer, rule, Some(about), bd, None, from, to, out);
                }
            }
        }
        Trigger::Anniversary { years, every_years } => {
            let zone = customer.timezone;
            let (y0, y1) = year_span(zone, from, to);
            for year in y0..=y1 {
                let Some(n) = u32::try_from(year - customer.since.year()).ok().filter(|n| *n >= 1) else { continue };
                if !(years.contains(&n) || every_years.is_some_and(|e| n % e == 0)) {
                    continue;
                }
                let Some((date, leap)) = anniversary(customer.since, n, rule.leap_day) else { continue };
                for about in subjects(customer, rule) {
                    emit_date(customer, rule, about, date, leap.clone(), Some(n), from, to, out);
                }
            }
        }
        Trigger::Date(md) => {
            for about in subjects(customer, rule) {
                dated(customer, rule, about, *md, md.year, from, to, out);
            }
        }
        Trigger::Every { cron } => every(customer, rule, cron, from, to, out),
        // Event-driven; they enter the outbox from order and handover events, not the calendar.
        Trigger::Orders { .. } | Trigger::Handover => {}
    }
}

/// Local years whose occasions could fall into the window (lead times reach back ≤ 366 days).
fn year_span(zone: Tz, from: DateTime<Utc>, to: DateTime<Utc>) -> (i32, i32) {
    (from.with_timezone(&zone).year() - 1, to.with_timezone(&zone).year() + 1)
}

/// A yearly month-day (or a one-off when `only_year` is set).
#[allow(clippy::too_many_arguments)]
fn dated<'a>(
    customer: &'a Customer,
    rule: &'a Rule,
    about: Option<&'a Contact>,
    md: MonthDay,
    only_year: Option<i32>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    out: &mut Vec<Occurrence<'a>>,
) {
    let zone = customer.zone_of(about);
    let (y0, y1) = year_span(zone, from, to);
    for year in y0..=y1 {
        if only_year.is_some_and(|y| y != year) {
            continue;
        }
        // A birthday with a known year starts the year after birth.
        if rule.trigger == Trigger::Birthday && md.year.is_some_and(|b| year <= b) {
            continue;
        }
        if let Some((date, leap)) = observe(md, year, rule.leap_day) {
            emit_date(customer, rule, about, date, leap, None, from, to, out);
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn emit_date<'a>(
    customer: &'a Customer,
    rule: &'a Rule,
    about: Option<&'a Contact>,
    date: NaiveDate,
    leap: Option<Adjustment>,
    years: Option<u32>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    out: &mut Vec<Occurrence<'a>>,
) {
    let zone = customer.zone_of(about);
    let mut adjustments: Vec<Adjustment> = leap.into_iter().collect();
    let send_date = match rule.before {
        Lead::None => date,
        Lead::Days(n) => {
            adjustments.push(Adjustment::LeadTime { days: n, occasion_date: date });
            date - TimeDelta::days(n.into())
        }
    };
    let due = resolve_local(zone, send_date.and_time(rule.at));
    if due.utc < from || due.utc >= to {
        return;
    }
    adjustments.extend(due.adjustment.clone());
    // The nominal key is the occasion's own date: changing `at` or `before` never re-sends.
    let nominal = Nominal::Date(date);
    out.push(Occurrence {
        customer,
        rule,
        about,
        recipient: recipient_for(rule, about),
        nominal,
        occasion_date: date,
        deadline: rule.deadline.map_or_else(|| end_of_local_day(zone, send_date), |d| due.utc + d),
        due,
        zone,
        years,
        adjustments,
    });
}

/// Upper bound on fires of one crontab rule per window, so a `* * * * *` rule over a year
/// cannot exhaust memory.
pub const MAX_FIRES_PER_RULE: usize = 100_000;

fn every<'a>(
    customer: &'a Customer,
    rule: &'a Rule,
    cron: &crate::calendar::Crontab,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    out: &mut Vec<Occurrence<'a>>,
) {
    let zone = customer.timezone;
    // Start a little before the window so wall times shifted out of a gap are not missed.
    let mut wall = from.with_timezone(&zone).naive_local() - TimeDelta::hours(26);
    let stop = to.with_timezone(&zone).naive_local() + TimeDelta::hours(26);
    let mut fires: Vec<(NaiveDateTime, Resolved)> = Vec::new();
    while let Some(next) = cron.next_after(wall) {
        if next > stop || fires.len() >= MAX_FIRES_PER_RULE {
            break;
        }
        wall = next;
        let r = resolve_local(zone, next);
        // Several wall times in one gap collapse onto one instant: fire once, strictly increasing.
        if fires.last().is_some_and(|(_, prev)| prev.utc >= r.utc) {
            continue;
        }
        fires.push((next, r));
    }
    for (i, (nominal, due)) in fires.iter().enumerate() {
        if due.utc < from || due.utc >= to {
            continue;
        }
        let day_end = end_of_local_day(zone, due.local.date_naive());
        let deadline = match rule.deadline {
            Some(d) => due.utc + d,
            None => fires.get(i + 1).map_or(day_end, |(_, n)| n.utc.min(day_end)),
        };
        for about in subjects(customer, rule) {
            out.push(Occurrence {
                customer,
                rule,
                about,
                recipient: recipient_for(rule, about),
                nominal: Nominal::Wall(*nominal),
                occasion_date: due.local.date_naive(),
                due: due.clone(),
                deadline,
                zone,
                years: None,
                adjustments: due.adjustment.clone().into_iter().collect(),
            });
        }
    }
}

/// All occurrences of one customer in `[from, to)`.
pub fn for_customer<'a>(customer: &'a Customer, from: DateTime<Utc>, to: DateTime<Utc>, out: &mut Vec<Occurrence<'a>>) {
    for rule in customer.rules.iter() {
        for_rule(customer, rule, from, to, out);
    }
}

/// All occurrences of all customers in `[from, to)`, in no particular order (the outbox does
/// not need one; sorting builds every key string).
pub fn collect(plans: &Plans, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<Occurrence<'_>> {
    plans
        .customers
        .par_iter()
        .fold(Vec::new, |mut v, c| {
            for_customer(c, from, to, &mut v);
            v
        })
        .reduce(Vec::new, |mut a, mut b| {
            a.append(&mut b);
            a
        })
}

/// All occurrences of all customers in `[from, to)`, ordered by due time then key.
pub fn agenda(plans: &Plans, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<Occurrence<'_>> {
    let mut all = collect(plans, from, to);
    all.par_sort_by_cached_key(|o| (o.due.utc, o.key()));
    all
}
