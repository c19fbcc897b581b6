//! Crontab rules: nominal wall times from the crontab (evaluated on naive local time), each
//! moved off closed days (`on_closed`, keeping its time of day), into the send window (same
//! local day) and resolved with the DST policy. Firings that land on the same instant fire
//! once; the one that was not moved wins, else the earliest nominal time (so a Saturday
//! firing moved to Monday 09:00 merges into Monday's own 09:00 firing, and 02:00–02:59 in a
//! spring-forward gap merge into 03:00). The output is strictly increasing in time.

use super::{Key, Nominal, Occurrence, RuleCtx, Sink, Skipped, recipient_for, subjects, timing};
use crate::calendar::business::{Direction, MAX_SEARCH_DAYS};
use crate::calendar::{Adjustment, Crontab, OnClosed, Resolved, end_of_local_day};
use chrono::{NaiveDateTime, TimeDelta};

/// Upper bound on fires of one crontab rule per window, so a `* * * * *` rule over a year
/// cannot exhaust memory.
pub const MAX_FIRES_PER_RULE: usize = 100_000;

/// One firing after the date and window policies, before jitter.
struct Firing {
    /// The crontab's wall time: part of the key.
    nominal: NaiveDateTime,
    /// Where it was moved (closed day, window) and resolved (DST).
    base: Resolved,
    /// Whether a closed day, the window or a DST gap moved its wall time.
    moved: bool,
    /// What moved it (closed day, window, DST), copied into each recipient's occurrence.
    adjustments: Vec<Adjustment>,
}

pub(super) fn rule<'a, S: Sink<'a>>(ctx: &RuleCtx<'a, '_>, cron: &Crontab, sink: &mut S) {
    let (customer, rule, cal) = (ctx.customer, ctx.rule, &ctx.cal);
    let zone = customer.timezone;
    let (first, last) = ctx.local.days;
    let in_window = |d: chrono::NaiveDate| (first..=last).contains(&d);
    let moves = cal.has_closures() && matches!(cal.on_closed, OnClosed::Before | OnClosed::After);
    // Scan a little around the window (wall times shifted by DST or jitter), and across a run
    // of closed days next to it whose firings move into it.
    let mut wall = ctx.local.from - TimeDelta::hours(26);
    let mut stop = ctx.local.to + TimeDelta::hours(26);
    if moves && cal.on_closed == OnClosed::After {
        wall -= TimeDelta::days(cal.closed_run(first - TimeDelta::days(1), Direction::Before).into());
    }
    if moves && cal.on_closed == OnClosed::Before {
        stop += TimeDelta::days(cal.closed_run(last + TimeDelta::days(1), Direction::After).into());
    }

    let mut fires: Vec<Firing> = Vec::new();
    while let Some(next) = cron.next_after(wall) {
        if next > stop || fires.len() >= MAX_FIRES_PER_RULE {
            break;
        }
        wall = next;
        let mut adjustments = Vec::new();
        let mut date = next.date();
        if cal.on_closed != OnClosed::Ignore
            && cal.has_closures()
            && let Some(why) = cal.closure(date)
        {
            let dir = match cal.on_closed {
                OnClosed::Before => Direction::Before,
                OnClosed::After => Direction::After,
                _ => {
                    if in_window(date) {
                        let reason = format!("{date} is closed ({why}); on_closed = skip");
                        sink.skipped(skipped(next, Vec::new(), reason));
                    }
                    continue;
                }
            };
            match cal.move_off(date, dir) {
                Some((to, closed)) => {
                    adjustments.push(Adjustment::Closed { policy: cal.on_closed.code(), from: date, to, closed });
                    date = to;
                }
                None => {
                    if in_window(date) {
                        let reason = format!("no open day within {MAX_SEARCH_DAYS} days of {date}");
                        sink.skipped(skipped(next, Vec::new(), reason));
                    }
                    continue;
                }
            }
        }
        let base = timing::base(zone, date, next.time(), cal, &mut adjustments);
        let moved = base.local.naive_local() != next;
        fires.push(Firing { nominal: next, base, moved, adjustments });
    }

    // Fire once per instant: the unmoved firing wins, else the earliest nominal time.
    fires.sort_by_key(|f| (f.base.utc, f.moved, f.nominal));
    let mut kept: Vec<Firing> = Vec::with_capacity(fires.len());
    for f in fires {
        match kept.last() {
            Some(prev) if prev.base.utc == f.base.utc => {
                if in_window(f.nominal.date()) {
                    let at = prev.base.local.format("%Y-%m-%d %H:%M %:z");
                    let reason =
                        format!("fires at the same instant as the firing of {} ({at}); fired once", prev.nominal);
                    sink.skipped(skipped(f.nominal, f.adjustments, reason));
                }
            }
            _ => kept.push(f),
        }
    }

    let mut scratch: Vec<Adjustment> = Vec::new();
    for (i, f) in kept.iter().enumerate() {
        let day_end = end_of_local_day(zone, f.base.local.date_naive());
        let default_deadline = kept.get(i + 1).map_or(day_end, |n| n.base.utc.min(day_end));
        // Jitter only adds time, at most the spread.
        if f.base.utc >= ctx.to || f.base.utc + TimeDelta::seconds(cal.jitter.into()) < ctx.from {
            continue;
        }
        for about in subjects(customer, rule) {
            let recipient = recipient_for(rule, about);
            let nominal = Nominal::Wall(f.nominal);
            let key = Key { customer, rule, recipient, about, nominal };
            let adjustments = &mut scratch;
            adjustments.clear();
            adjustments.extend_from_slice(&f.adjustments);
            let limit = rule.deadline.is_none().then_some(default_deadline);
            let due = timing::jitter(zone, &f.base, cal, limit, || key.hash(), adjustments);
            if due.utc < ctx.from || due.utc >= ctx.to {
                continue;
            }
            sink.due(Occurrence {
                customer,
                rule,
                about,
                recipient,
                nominal,
                occasion_date: f.base.local.date_naive(),
                deadline: rule.deadline.map_or(default_deadline, |d| due.utc + d),
                due: due.into(),
                zone,
                years: None,
                // One exact allocation (a Vec would keep spare capacity in millions of occurrences).
                adjustments: adjustments.drain(..).collect(),
            });
        }
    }
}

fn skipped<'a>(nominal: NaiveDateTime, adjustments: Vec<Adjustment>, reason: String) -> Skipped<'a> {
    Skipped {
        about: None,
        date: nominal.date(),
        what: format!("firing {}", nominal.format("%Y-%m-%dT%H:%M")),
        adjustments,
        reason,
    }
}
