//! Date occasions (birthdays, anniversaries, fixed dates): civil dates in the recipient's
//! zone, never derived through UTC. Per occasion: observed date (leap-day policy) → send date
//! (lead time) → open day (`on_closed`) → send time (window, DST, jitter) → deadline.

use super::{Key, Occurrence, RuleCtx, Sink, Skipped, recipient_for, subjects, timing};
use crate::calendar::business::{Direction, MAX_SEARCH_DAYS};
use crate::calendar::{Adjustment, OnClosed, anniversary, end_of_local_day, observe};
use crate::plan::{Contact, Lead, MonthDay, Trigger};
use chrono::{Datelike, NaiveDate, TimeDelta};

/// How many days the send date can lie before (`back`) or after (`ahead`) the occasion date
/// under this rule's lead time and closed-day policy: only occasions within this reach of the
/// window are looked at.
fn reach(ctx: &RuleCtx<'_, '_>) -> (i64, i64) {
    let lead = match ctx.rule.before {
        Lead::None => 0,
        Lead::Days(n) => i64::from(n),
        Lead::BusinessDays(_) => 2 * i64::from(MAX_SEARCH_DAYS),
    };
    let moves = ctx.cal.has_closures() && matches!(ctx.cal.on_closed, OnClosed::Before | OnClosed::After);
    let extra = if moves { i64::from(MAX_SEARCH_DAYS) } else { 0 };
    // `spread` moves the send day later: by up to n days, or n open days.
    let spread = match ctx.rule.spread {
        Lead::None => 0,
        Lead::Days(n) => i64::from(n),
        Lead::BusinessDays(n) => i64::from(n) + i64::from(MAX_SEARCH_DAYS),
    };
    match ctx.cal.on_closed {
        OnClosed::Before => (lead + extra, spread),
        OnClosed::After => (lead, extra + spread),
        _ => (lead, spread),
    }
}

/// Years whose occasions can be due in the window, for a subject in zone `zone`.
fn years(ctx: &RuleCtx<'_, '_>, zone: chrono_tz::Tz) -> std::ops::RangeInclusive<i32> {
    let (first, last) = ctx.days_in(zone);
    let (back, ahead) = reach(ctx);
    let lo = first - TimeDelta::days(ahead + 1);
    let hi = last + TimeDelta::days(back + 1);
    lo.year()..=hi.year()
}

pub(super) fn rule<'a, S: Sink<'a>>(ctx: &RuleCtx<'a, '_>, sink: &mut S) {
    let (customer, rule) = (ctx.customer, ctx.rule);
    match &rule.trigger {
        Trigger::Birthday => {
            for about in subjects(customer, rule).flatten() {
                if let Some(bd) = about.birthday {
                    yearly(ctx, Some(about), bd, None, sink);
                }
            }
        }
        Trigger::Anniversary { years: listed, every_years } => {
            for about in subjects(customer, rule) {
                for year in years(ctx, customer.zone_of(about)) {
                    let Some(n) = u32::try_from(year - customer.since.year()).ok().filter(|n| *n >= 1) else {
                        continue;
                    };
                    if !(listed.contains(&n) || every_years.is_some_and(|e| n % e == 0)) {
                        continue;
                    }
                    match anniversary(customer.since, n, rule.leap_day) {
                        Some((date, leap)) => occasion(ctx, about, date, leap, Some(n), sink),
                        None => leap_skipped(ctx, about, year, "anniversary", sink),
                    }
                }
            }
        }
        Trigger::Date(md) => {
            for about in subjects(customer, rule) {
                yearly(ctx, about, *md, md.year, sink);
            }
        }
        Trigger::Every { .. }
        | Trigger::Orders(_)
        | Trigger::Handover
        | Trigger::Phase { .. }
        | Trigger::Event { .. }
        | Trigger::Inactivity { .. }
        | Trigger::End => {}
    }
}

/// A yearly month-day (or a one-off when `only_year` is set).
fn yearly<'a, S: Sink<'a>>(
    ctx: &RuleCtx<'a, '_>,
    about: Option<&'a Contact>,
    md: MonthDay,
    only_year: Option<i32>,
    sink: &mut S,
) {
    let zone = ctx.customer.zone_of(about);
    for year in years(ctx, zone) {
        if only_year.is_some_and(|y| y != year) {
            continue;
        }
        // A birthday with a known year starts the year after birth.
        if ctx.rule.trigger == Trigger::Birthday && md.year.is_some_and(|b| year <= b) {
            continue;
        }
        match observe(md, year, ctx.rule.leap_day) {
            Some((date, leap)) => occasion(ctx, about, date, leap, None, sink),
            None => leap_skipped(ctx, about, year, ctx.rule.trigger.kind().code(), sink),
        }
    }
}

/// `leap_day = "leap_only"` in a common year: nothing is sent; `explain` says so.
fn leap_skipped<'a, S: Sink<'a>>(
    ctx: &RuleCtx<'a, '_>,
    about: Option<&'a Contact>,
    year: i32,
    what: &str,
    sink: &mut S,
) {
    let Some(feb28) = NaiveDate::from_ymd_opt(year, 2, 28) else { return };
    let (first, last) = ctx.days_in(ctx.customer.zone_of(about));
    if (first..=last).contains(&feb28) {
        sink.skipped(Skipped {
            about,
            date: feb28,
            what: format!("{what} on Feb 29"),
            adjustments: Vec::new(),
            reason: format!("{year} has no Feb 29 (leap_day = leap_only)"),
        });
    }
}

/// One occasion on its observed civil date.
fn occasion<'a, S: Sink<'a>>(
    ctx: &RuleCtx<'a, '_>,
    about: Option<&'a Contact>,
    date: NaiveDate,
    leap: Option<Adjustment>,
    years: Option<u32>,
    sink: &mut S,
) {
    let (customer, rule, cal) = (ctx.customer, ctx.rule, &ctx.cal);
    let zone = customer.zone_of(about);
    let (first, last) = ctx.days_in(zone);
    let mut adjustments: Vec<Adjustment> = leap.into_iter().collect();
    let skip = |sink: &mut S, day: NaiveDate, adjustments: Vec<Adjustment>, reason: String| {
        if (first..=last).contains(&day) {
            let what = format!("{} {date}", rule.trigger.kind());
            sink.skipped(Skipped { about, date: day, what, adjustments, reason });
        }
    };

    // Lead time.
    let mut send = match rule.before {
        Lead::None => date,
        Lead::Days(n) => {
            adjustments.push(Adjustment::LeadTime { days: n, occasion_date: date });
            date - TimeDelta::days(n.into())
        }
        Lead::BusinessDays(n) => match cal.business_days_before(date, n) {
            Some((send, not_counted)) => {
                adjustments.push(Adjustment::BusinessLeadTime {
                    business_days: n,
                    occasion_date: date,
                    send_date: send,
                    not_counted,
                });
                send
            }
            None => {
                let reason = format!("fewer than {n} open days in the {} days before it", 2 * MAX_SEARCH_DAYS);
                return skip(sink, date, adjustments, reason);
            }
        },
    };

    // Closed send day.
    if cal.on_closed != OnClosed::Ignore
        && cal.has_closures()
        && let Some(why) = cal.closure(send)
    {
        let dir = match cal.on_closed {
            OnClosed::Before => Direction::Before,
            OnClosed::After => Direction::After,
            _ => return skip(sink, send, adjustments, format!("{send} is closed ({why}); on_closed = skip")),
        };
        match cal.move_off(send, dir) {
            Some((to, closed)) => {
                adjustments.push(Adjustment::Closed { policy: cal.on_closed.code(), from: send, to, closed });
                send = to;
            }
            None => {
                let reason = format!("no open day within {MAX_SEARCH_DAYS} days of {send}");
                return skip(sink, send, adjustments, reason);
            }
        }
    }

    // Spread: this recipient's day among the next `n` (open) days.
    let recipient = recipient_for(rule, about);
    let nominal = super::Nominal::Date(date);
    let key = Key { customer, rule, recipient, about, nominal };
    let spread = match rule.spread {
        Lead::None => None,
        Lead::Days(n) => Some((n, false)),
        Lead::BusinessDays(n) => Some((n, true)),
    };
    if let Some((n, business)) = spread {
        // The upper half of the key's hash (the lower half places the jitter).
        let days = ((key.hash() >> 32) % u64::from(n.max(1))) as u32;
        let mut to = send;
        for _ in 0..days {
            to += TimeDelta::days(1);
            if business && cal.has_closures() && cal.closure(to).is_some() {
                match cal.move_off(to, Direction::After) {
                    Some((open, _)) => to = open,
                    None => break,
                }
            }
        }
        if to != send {
            adjustments.push(Adjustment::Spread { days, over: n, business, from: send, to });
            send = to;
        }
    }

    // Cheap filter before any time-zone work: the send day must touch the window.
    if send < first - TimeDelta::days(1) || send > last + TimeDelta::days(1) {
        return;
    }

    let base = timing::base(zone, send, rule.at, cal, &mut adjustments);
    let day_end = end_of_local_day(zone, send);
    let limit = rule.deadline.is_none().then_some(day_end);
    let due = timing::jitter(zone, &base, cal, limit, || key.hash(), &mut adjustments);
    if due.utc < ctx.from || due.utc >= ctx.to {
        return;
    }
    sink.due(Occurrence {
        customer,
        rule,
        about,
        recipient,
        nominal,
        occasion_date: date,
        deadline: rule.deadline.map_or(day_end, |d| due.utc + d),
        due: due.into(),
        zone,
        years,
        // One exact allocation (a Vec would keep spare capacity in millions of occurrences).
        adjustments: adjustments.drain(..).collect(),
    });
}
