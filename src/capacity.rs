//! What the relay's caps let through, and in which order: a simulation of the claim (earliest
//! deadline first among the due rows) against `[delivery] max_per_second/minute/hour/day`
//! (UTC-aligned windows, as `store/budget.rs` counts them).
//!
//! Two users, one computation:
//! - the daemon ([`crate::dispatch`]) projects the open rows whose deadline is within
//!   [`LOOKAHEAD`] each tick and announces the ones that cannot go out in time
//!   (`dispatch/capacity.rs`);
//! - `agenda --capacity` and `check` project the plans' occurrences ([`forecast`]) and name the
//!   busiest hours and what would miss its deadline.
//!
//! The forecast places the plans' messages only. The daemon's own announcements (a "call
//! instead" digest per salesperson and an ops notice, counted against the same caps) go out when
//! a shortfall first comes within [`LOOKAHEAD`] of its deadlines — for a peak that is due in one
//! go, up to two hours before it, from an earlier window — so a daemon that runs through the
//! peak shows the shortfall forecast here (`tests/it/capacity.rs`). One started in the middle
//! of the peak sends them from the peak's windows and misses a few more.
//!
//! The simulation is an approximation of the claim: the claim orders by deadline *hour*, then
//! priority, then round-robin over customers; here only the deadline (then due time) orders.
//! How many rows miss is the same; which ones may differ within an hour.

use crate::occasion::Occurrence;
use crate::plan::Customer;
use crate::store::Budget;
use chrono::{DateTime, TimeDelta, Utc};
use chrono_tz::Tz;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

/// How far ahead the daemon looks for rows that cannot go out before their deadline.
pub const LOOKAHEAD: TimeDelta = TimeDelta::hours(2);

/// One message to place: due and deadline (Unix seconds, UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Job {
    /// Not sent before this.
    pub due: i64,
    /// Not sent at or after this (then `missed`).
    pub deadline: i64,
}

/// What the simulation says of one [`Job`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Sent at this instant (Unix seconds).
    Sent(i64),
    /// Its deadline passes first; the cap that held it back last (`max_per_hour = 5`), if any.
    Missed(Option<&'static str>),
}

/// A configured window: `(name as configured, length in seconds, cap)`.
fn windows(budget: &Budget) -> Vec<(&'static str, i64, u32)> {
    [
        ("max_per_second", 1, budget.per_second),
        ("max_per_minute", 60, budget.per_minute),
        ("max_per_hour", 3600, budget.per_hour),
        ("max_per_day", 86_400, budget.per_day),
    ]
    .into_iter()
    .filter_map(|(k, len, cap)| cap.map(|c| (k, len, c)))
    .collect()
}

/// The caps as configured, e.g. `max_per_minute = 30, max_per_day = 10000`.
pub fn describe(budget: &Budget) -> String {
    let parts: Vec<String> = windows(budget).iter().map(|(k, _, c)| format!("{k} = {c}")).collect();
    if parts.is_empty() { "no relay limits".to_string() } else { parts.join(", ") }
}

/// The tightest cap as a rate, e.g. `30/min` (the one with the least per second).
fn rate(budget: &Budget) -> String {
    let unit = |len: i64| match len {
        1 => "s",
        60 => "min",
        3600 => "hour",
        _ => "day",
    };
    windows(budget)
        .into_iter()
        .min_by(|a, b| (f64::from(a.2) / a.1 as f64).total_cmp(&(f64::from(b.2) / b.1 as f64)))
        .map_or_else(|| "no limit".to_string(), |(_, len, c)| format!("{c}/{}", unit(len)))
}

/// Places `jobs` under `budget` from `start` on, earliest deadline first among the due ones
/// (ties: due time, then position in `jobs`). `used`: what was already claimed in the window
/// containing `start`, per configured window (`(window length in seconds, used)`). Returns
/// one fate per job, in the order of `jobs`. Without a configured cap, everything due before
/// its deadline is sent at its due time.
pub fn simulate(budget: &Budget, used: &[(i64, i64)], start: i64, jobs: &[Job]) -> Vec<Fate> {
    // (name, len, cap, window start, used in it)
    let mut wins: Vec<(&'static str, i64, i64, i64, i64)> = windows(budget)
        .into_iter()
        .map(|(k, len, cap)| {
            let ws = start.div_euclid(len) * len;
            let u = used.iter().find(|(l, _)| *l == len).map_or(0, |(_, u)| *u);
            (k, len, i64::from(cap), ws, u)
        })
        .collect();
    let mut order: Vec<usize> = (0..jobs.len()).collect();
    order.sort_by_key(|i| (jobs[*i].due, *i));
    let mut fates = vec![Fate::Missed(None); jobs.len()];
    let mut heap: BinaryHeap<Reverse<(i64, i64, usize)>> = BinaryHeap::new();
    let mut next = 0;
    let mut t = start;
    let mut blocker: Option<&'static str> = None;
    loop {
        while next < order.len() && jobs[order[next]].due <= t {
            let i = order[next];
            heap.push(Reverse((jobs[i].deadline, jobs[i].due, i)));
            next += 1;
        }
        let Some(Reverse((deadline, _, i))) = heap.peek().copied() else {
            if next == order.len() {
                break;
            }
            t = t.max(jobs[order[next]].due);
            continue;
        };
        if deadline <= t {
            heap.pop();
            fates[i] = Fate::Missed(blocker);
            continue;
        }
        // The earliest instant every window has room.
        let mut slot = t;
        for w in &mut wins {
            let ws = slot.div_euclid(w.1) * w.1;
            if ws != w.3 {
                w.3 = ws;
                w.4 = 0;
            }
            if w.4 >= w.2 {
                slot = slot.max(w.3 + w.1);
                blocker = Some(w.0);
            }
        }
        if slot > t {
            t = slot;
            continue;
        }
        heap.pop();
        for w in &mut wins {
            w.4 += 1;
        }
        fates[i] = Fate::Sent(t);
    }
    fates
}

/// One hour of due times in a forecast.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HourLoad {
    /// The hour's start (UTC).
    pub start: DateTime<Utc>,
    /// Messages due in it.
    pub due: usize,
    /// Of those, how many would miss their deadline.
    pub missed: usize,
    /// When the last of them that is sent leaves.
    pub last_send: Option<DateTime<Utc>>,
}

/// What the plans ask of the relay over a span, under the caps.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Forecast {
    /// The caps, as configured.
    pub limits: String,
    /// Messages (emails and tasks) due in the span.
    pub due: usize,
    /// How many would miss their deadline.
    pub missed: usize,
    /// The busiest hours (most due first; at most [`BUSIEST`]), then every other hour with
    /// messages that would miss their deadline.
    pub hours: Vec<HourLoad>,
}

/// Busiest hours a forecast names.
pub const BUSIEST: usize = 5;

impl Forecast {
    /// Whether everything fits.
    pub fn fits(&self) -> bool {
        self.missed == 0
    }
}

/// Simulates the occurrences of `customers` due in `[from, to)` (the agenda's computation) under
/// `budget`, from fresh windows at `from`.
pub fn forecast<C: std::borrow::Borrow<Customer> + Sync>(
    budget: &Budget,
    customers: &[C],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Forecast {
    let mut jobs = Vec::new();
    let _ = crate::occasion::agenda_each::<(), C>(customers, from, to, |slice| {
        jobs.extend(
            slice.iter().map(|o: &&Occurrence| Job { due: o.due.utc.timestamp(), deadline: o.deadline.timestamp() }),
        );
        Ok(())
    });
    forecast_jobs(budget, &jobs, from.timestamp())
}

/// [`forecast`] over given jobs.
pub fn forecast_jobs(budget: &Budget, jobs: &[Job], start: i64) -> Forecast {
    let fates = simulate(budget, &[], start, jobs);
    let mut hours: BTreeMap<i64, HourLoad> = BTreeMap::new();
    let mut missed = 0;
    for (job, fate) in jobs.iter().zip(&fates) {
        let h = job.due.div_euclid(3600) * 3600;
        let load = hours.entry(h).or_insert_with(|| HourLoad {
            start: DateTime::from_timestamp(h, 0).unwrap_or_default(),
            due: 0,
            missed: 0,
            last_send: None,
        });
        load.due += 1;
        match fate {
            Fate::Sent(t) => {
                let at = DateTime::from_timestamp(*t, 0).unwrap_or_default();
                load.last_send = Some(load.last_send.map_or(at, |l| l.max(at)));
            }
            Fate::Missed(_) => {
                load.missed += 1;
                missed += 1;
            }
        }
    }
    let mut all: Vec<HourLoad> = hours.into_values().collect();
    all.sort_by_key(|h| (Reverse(h.due), h.start));
    let mut shown: Vec<HourLoad> = all.iter().take(BUSIEST).cloned().collect();
    shown.extend(all.iter().skip(BUSIEST).filter(|h| h.missed > 0).cloned());
    Forecast { limits: describe(budget), due: jobs.len(), missed, hours: shown }
}

/// The forecast as text, hours in `tz`: one line per hour, and what to do when it does not fit.
pub fn render(f: &Forecast, budget: &Budget, tz: Tz) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let local = |t: DateTime<Utc>| t.with_timezone(&tz);
    let _ = writeln!(
        out,
        "{} message{} due under {}; {}",
        group(f.due),
        if f.due == 1 { "" } else { "s" },
        f.limits,
        if f.fits() { "everything fits".to_string() } else { format!("{} would miss their deadline", group(f.missed)) }
    );
    for h in &f.hours {
        let start = local(h.start);
        let end = local(h.start + TimeDelta::hours(1));
        let _ = write!(
            out,
            "{}–{} {}: {} email{} due; at {}",
            start.format("%Y-%m-%d %H:%M"),
            end.format("%H:%M"),
            tz.name(),
            group(h.due),
            if h.due == 1 { "" } else { "s" },
            rate(budget)
        );
        match h.last_send {
            Some(l) => {
                let _ = write!(out, " the last leaves {}", local(l).format("%Y-%m-%d %H:%M"));
            }
            None => {
                let _ = write!(out, " none leaves");
            }
        }
        if h.missed > 0 {
            let _ = writeln!(
                out,
                " and {} would miss their deadline — raise the limit, spread over days with `spread` or within the day with `jitter`/`window`, or move the rule",
                group(h.missed)
            );
        } else {
            let _ = writeln!(out, "; all in time");
        }
    }
    out
}

/// `100412` as `100,412`.
pub fn group(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn earliest_deadline_first_under_a_per_minute_cap() {
        let b = Budget { per_minute: Some(2), ..Budget::default() };
        // Six due at 0: deadlines 120, 120, 60, 600, 90, 110.
        let jobs: Vec<Job> = [120, 120, 60, 600, 90, 110].iter().map(|d| Job { due: 0, deadline: *d }).collect();
        let fates = simulate(&b, &[], 0, &jobs);
        assert_eq!(
            fates,
            vec![
                Fate::Sent(60),
                Fate::Missed(Some("max_per_minute")),
                Fate::Sent(0),
                Fate::Sent(120),
                Fate::Sent(0),
                Fate::Sent(60)
            ]
        );
        // Already used up this minute.
        let fates = simulate(&b, &[(60, 2)], 0, &jobs[2..3]);
        assert_eq!(fates, vec![Fate::Missed(Some("max_per_minute"))]);
        assert_eq!(group(100_412), "100,412");
        assert_eq!(rate(&Budget { per_minute: Some(30), per_day: Some(100_000), ..Budget::default() }), "30/min");
    }

    #[test]
    fn without_caps_everything_goes_at_its_due_time() {
        let jobs = [Job { due: 5, deadline: 10 }, Job { due: 20, deadline: 10 }];
        assert_eq!(simulate(&Budget::default(), &[], 0, &jobs), vec![Fate::Sent(5), Fate::Missed(None)]);
    }
}
