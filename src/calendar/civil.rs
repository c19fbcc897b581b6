//! Civil (wall-clock) time policies. Each decision here is explicit and tested:
//!
//! * **Gap** (a local time that does not exist, spring-forward): the occasion fires once, at
//!   the first valid instant after the gap (02:30 on a 02:00→03:00 night becomes 03:00).
//! * **Fold** (a local time that happens twice, fall-back): fires once, at the earlier instant.
//! * **Feb 29** in common years: `feb28` (default), `mar1`, or `leap_only` (skipped).
//! * Date-only occasions are civil dates in the recipient's zone; they never pass through UTC.

use super::Adjustment;
use super::date::{LeapDay, MonthDay};
use chrono::{DateTime, Datelike, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, TimeDelta, TimeZone, Utc};
use chrono_tz::Tz;

/// A local wall time resolved to an instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The instant, in UTC.
    pub utc: DateTime<Utc>,
    /// The same instant as local time in the zone, with its offset.
    pub local: DateTime<Tz>,
    /// The DST gap or fold step, if the wall time needed one.
    pub adjustment: Option<Adjustment>,
}

/// Resolves a wall time in `tz` to one instant using the gap/fold policy.
pub fn resolve_local(tz: Tz, wall: NaiveDateTime) -> Resolved {
    match tz.from_local_datetime(&wall) {
        LocalResult::Single(dt) => Resolved { utc: dt.with_timezone(&Utc), local: dt, adjustment: None },
        LocalResult::Ambiguous(a, b) => {
            let dt = if a.with_timezone(&Utc) <= b.with_timezone(&Utc) { a } else { b };
            Resolved { utc: dt.with_timezone(&Utc), local: dt, adjustment: Some(Adjustment::DstFold { local: wall }) }
        }
        LocalResult::None => {
            // Walk forward minute by minute to the first wall time that exists; tz transitions
            // are on whole minutes and gaps are at most a few hours (one day is a hard bound).
            let mut t = wall;
            for _ in 0..(24 * 60) {
                t += TimeDelta::minutes(1);
                let first = t.with_second(0);
                if let Some(dt) = tz.from_local_datetime(&first).earliest() {
                    return Resolved {
                        utc: dt.with_timezone(&Utc),
                        local: dt,
                        adjustment: Some(Adjustment::DstGap { nominal: wall, shifted_to: first }),
                    };
                }
            }
            // Unreachable with real tz data; fall back to reading the wall time as UTC offset 0.
            let utc = Utc.from_utc_datetime(&wall);
            Resolved { utc, local: utc.with_timezone(&tz), adjustment: None }
        }
    }
}

trait WithSecond {
    fn with_second(self, s: u32) -> Self;
}

impl WithSecond for NaiveDateTime {
    fn with_second(self, s: u32) -> Self {
        chrono::Timelike::with_second(&self, s).unwrap_or(self)
    }
}

/// The day a month-day is observed in `year`, applying the leap-day policy. `None` when the
/// policy skips the year (`leap_only` in a common year).
pub fn observe(md: MonthDay, year: i32, policy: LeapDay) -> Option<(NaiveDate, Option<Adjustment>)> {
    if let Some(d) = NaiveDate::from_ymd_opt(year, md.month, md.day) {
        return Some((d, None));
    }
    if md.month == 2 && md.day == 29 {
        let (observed, name) = match policy {
            LeapDay::Feb28 => (NaiveDate::from_ymd_opt(year, 2, 28)?, "feb28"),
            LeapDay::Mar1 => (NaiveDate::from_ymd_opt(year, 3, 1)?, "mar1"),
            LeapDay::LeapOnly => return None,
        };
        let adj = Adjustment::LeapDay { nominal: format!("{year}-02-29"), observed, policy: name };
        return Some((observed, Some(adj)));
    }
    None
}

/// The anniversary of `start` after `years` years, from the original anchor (never chained).
pub fn anniversary(start: NaiveDate, years: u32, policy: LeapDay) -> Option<(NaiveDate, Option<Adjustment>)> {
    let year = start.year().checked_add(i32::try_from(years).ok()?)?;
    observe(MonthDay { month: start.month(), day: start.day(), year: Some(start.year()) }, year, policy)
}

/// The first instant of the local day after `date`: the default deadline of date occasions.
pub fn end_of_local_day(tz: Tz, date: NaiveDate) -> DateTime<Utc> {
    let next = date.succ_opt().unwrap_or(date);
    resolve_local(tz, next.and_time(NaiveTime::MIN)).utc
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wall(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").unwrap()
    }

    #[test]
    fn gap_moves_to_end_of_gap() {
        let r = resolve_local(chrono_tz::America::New_York, wall("2025-03-09 02:30"));
        assert_eq!(r.local.to_rfc3339(), "2025-03-09T03:00:00-04:00");
        assert_eq!(r.utc.to_rfc3339(), "2025-03-09T07:00:00+00:00");
        assert!(matches!(r.adjustment, Some(Adjustment::DstGap { .. })));
    }

    #[test]
    fn fold_takes_earlier_instant() {
        let r = resolve_local(chrono_tz::America::New_York, wall("2025-11-02 01:30"));
        assert_eq!(r.local.to_rfc3339(), "2025-11-02T01:30:00-04:00");
        assert_eq!(r.adjustment, Some(Adjustment::DstFold { local: wall("2025-11-02 01:30") }));
    }

    #[test]
    fn midnight_gap_in_santiago() {
        // Chile springs forward at 24:00 → 01:00 (2025-09-07): local midnight does not exist.
        let end = end_of_local_day(chrono_tz::America::Santiago, NaiveDate::from_ymd_opt(2025, 9, 6).unwrap());
        assert_eq!(end.with_timezone(&chrono_tz::America::Santiago).to_rfc3339(), "2025-09-07T01:00:00-03:00");
    }

    #[test]
    fn feb29_policies() {
        let md = MonthDay { month: 2, day: 29, year: Some(1988) };
        assert_eq!(observe(md, 2027, LeapDay::Feb28).unwrap().0, NaiveDate::from_ymd_opt(2027, 2, 28).unwrap());
        assert_eq!(observe(md, 2027, LeapDay::Mar1).unwrap().0, NaiveDate::from_ymd_opt(2027, 3, 1).unwrap());
        assert_eq!(observe(md, 2027, LeapDay::LeapOnly), None);
        let (d, adj) = observe(md, 2028, LeapDay::LeapOnly).unwrap();
        assert_eq!((d, adj), (NaiveDate::from_ymd_opt(2028, 2, 29).unwrap(), None));
    }

    #[test]
    fn anniversaries_come_from_the_anchor() {
        let start = NaiveDate::from_ymd_opt(2024, 2, 29).unwrap();
        assert_eq!(anniversary(start, 1, LeapDay::Feb28).unwrap().0, NaiveDate::from_ymd_opt(2025, 2, 28).unwrap());
        assert_eq!(anniversary(start, 4, LeapDay::Feb28).unwrap().0, NaiveDate::from_ymd_opt(2028, 2, 29).unwrap());
        let jan31 = NaiveDate::from_ymd_opt(2016, 1, 31).unwrap();
        assert_eq!(anniversary(jan31, 10, LeapDay::Feb28).unwrap().0, NaiveDate::from_ymd_opt(2026, 1, 31).unwrap());
    }
}
