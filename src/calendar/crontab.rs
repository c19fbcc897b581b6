//! Ordinary 5-field crontab (what ops know) on top of the `cron` crate (Quartz dialect).
//!
//! Translation, field by field: we expand each crontab field to the set of values it matches
//! (names, ranges, steps, Sunday as 0 or 7), then hand the crate explicit value lists in its
//! own dialect (seconds first, Sunday = 1). POSIX cron ORs day-of-month and day-of-week when
//! both are restricted (neither starts with `*`, as in Vixie cron); the crate ANDs them, so
//! that case becomes two schedules whose fire times are merged.
//!
//! Schedules are evaluated on *naive local wall time* (the crate is fed UTC as a stand-in for
//! "no zone"); `calendar::civil` then resolves each wall time to an instant with the explicit
//! DST policy. This avoids the crate's own DST behaviour (dropped runs in gaps, doubled runs
//! in folds).

use chrono::{NaiveDateTime, TimeZone, Utc};
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;

/// A parsed crontab expression.
#[derive(Debug)]
pub struct Crontab {
    /// The expression as written, for messages and display.
    source: Box<str>,
    /// One schedule, or two when day-of-month and day-of-week are ORed.
    schedules: Box<[cron::Schedule]>,
}

impl PartialEq for Crontab {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

const MONTHS: [&str; 12] = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"];
const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

/// Expands one field into the sorted set of values it matches.
fn expand(field: &str, min: u32, max: u32, names: &[&str], name_base: u32) -> Result<Vec<u32>, String> {
    let value = |s: &str| -> Result<u32, String> {
        let lower = s.to_ascii_lowercase();
        if let Some(i) = names.iter().position(|n| *n == lower) {
            return Ok(i as u32 + name_base);
        }
        let v: u32 = s.parse().map_err(|_| format!("`{s}` is not a number or name"))?;
        if v < min || v > max {
            return Err(format!("{v} is outside {min}–{max}"));
        }
        Ok(v)
    };
    let mut out = Vec::new();
    for part in field.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => {
                let step: u32 = s.parse().map_err(|_| format!("step `{s}` is not a number"))?;
                if step == 0 {
                    return Err("a step of 0 never matches".into());
                }
                (r, step)
            }
            None => (part, 1),
        };
        let (lo, hi) = if range == "*" {
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            let (a_val, mut b_val) = (value(a)?, value(b)?);
            // Day of week: a range that ends on Sunday (`fri-sun`, `5-0`) runs to the end of
            // the week, Sunday read as 7; the name `sun` at the end always means 7 (as croner
            // reads it), so `0-sun` is the whole week.
            if max == 7 && b_val == 0 && (a_val > 0 || b.eq_ignore_ascii_case("sun")) {
                b_val = 7;
            }
            let (a, b) = (a_val, b_val);
            if a > b {
                return Err(format!("range {a}-{b} runs backwards"));
            }
            (a, b)
        } else {
            let v = value(range)?;
            // `5/15` means "from 5 to the maximum, every 15" as in Vixie cron.
            (v, if part.contains('/') { max } else { v })
        };
        out.extend((lo..=hi).step_by(step as usize));
    }
    out.sort_unstable();
    out.dedup();
    if out.is_empty() {
        return Err("field matches nothing".into());
    }
    Ok(out)
}

fn list(values: &[u32], full: usize) -> String {
    if values.len() == full {
        return "*".into();
    }
    values.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}

impl Crontab {
    /// Parses `minute hour day-of-month month day-of-week`.
    ///
    /// Sunday is 0 or 7; names, ranges and steps work (POSIX/Vixie cron syntax, see the README).
    ///
    /// # Errors
    /// Not five fields, a field out of range or malformed, or an expression that never matches a
    /// real date (such as 30 February).
    pub fn parse(expr: &str) -> Result<Crontab, String> {
        let fields: Vec<&str> = expr.split_whitespace().collect();
        let [minute, hour, dom, month, dow] = fields.as_slice() else {
            return Err(format!("expected 5 fields, found {}", fields.len()));
        };
        let minutes = expand(minute, 0, 59, &[], 0).map_err(|e| format!("minute: {e}"))?;
        let hours = expand(hour, 0, 23, &[], 0).map_err(|e| format!("hour: {e}"))?;
        let doms = expand(dom, 1, 31, &[], 0).map_err(|e| format!("day of month: {e}"))?;
        let months = expand(month, 1, 12, &MONTHS, 1).map_err(|e| format!("month: {e}"))?;
        // Sunday is 0 or 7; fold 7 onto 0, then shift to the crate's Sunday = 1.
        let mut dows: Vec<u32> =
            expand(dow, 0, 7, &DAYS, 0).map_err(|e| format!("day of week: {e}"))?.into_iter().map(|d| d % 7).collect();
        dows.sort_unstable();
        dows.dedup();
        let quartz_dows: Vec<u32> = dows.iter().map(|d| d + 1).collect();

        let (m, h, mo) = (list(&minutes, 60), list(&hours, 24), list(&months, 12));
        let (d, w) = (list(&doms, 31), list(&quartz_dows, 7));
        let dom_star = dom.starts_with('*');
        let dow_star = dow.starts_with('*');
        let exprs = if !dom_star && !dow_star {
            vec![format!("0 {m} {h} {d} {mo} *"), format!("0 {m} {h} * {mo} {w}")]
        } else {
            vec![format!("0 {m} {h} {d} {mo} {w}")]
        };
        let schedules = exprs
            .iter()
            .map(|e| cron::Schedule::from_str(e).map_err(|err| format!("{err}")))
            .collect::<Result<Vec<_>, _>>()?;
        // Reject expressions that can never fire (e.g. 30 February).
        let probe = NaiveDateTime::default();
        let c = Crontab { source: expr.trim().into(), schedules: schedules.into() };
        if c.next_after(probe).is_none() {
            return Err("it never matches a real date".into());
        }
        Ok(c)
    }

    /// The first wall-clock time strictly after `after` that matches.
    pub fn next_after(&self, after: NaiveDateTime) -> Option<NaiveDateTime> {
        let start = Utc.from_utc_datetime(&after);
        self.schedules.iter().filter_map(|s| s.after(&start).next()).min().map(|t| t.naive_utc())
    }

    /// The expression as written (trimmed).
    pub fn as_str(&self) -> &str {
        &self.source
    }
}

/// Interns parsed crontab expressions: 100,000 plans with the same `cron` share one
/// [`Crontab`] instead of holding 100,000 copies. Thread-safe (plans load in parallel).
#[derive(Default)]
pub struct CrontabCache(std::sync::Mutex<HashMap<Box<str>, Arc<Crontab>>>);

impl CrontabCache {
    /// The parsed expression, parsed once per distinct text.
    ///
    /// # Errors
    /// The expression is not valid 5-field crontab (the reason in words).
    pub fn parse(&self, expr: &str) -> Result<Arc<Crontab>, String> {
        if let Some(c) = self.0.lock().unwrap_or_else(|p| p.into_inner()).get(expr) {
            return Ok(c.clone());
        }
        let parsed = Arc::new(Crontab::parse(expr)?);
        self.0.lock().unwrap_or_else(|p| p.into_inner()).insert(expr.into(), parsed.clone());
        Ok(parsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    fn at(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").unwrap()
    }

    fn fires(expr: &str, from: &str, n: usize) -> Vec<String> {
        let c = Crontab::parse(expr).unwrap();
        let mut t = at(from);
        (0..n)
            .map(|_| {
                t = c.next_after(t).unwrap();
                t.format("%a %Y-%m-%d %H:%M").to_string()
            })
            .collect()
    }

    #[test]
    fn weekday_names_and_numbers_follow_posix() {
        // 2026-11-22 is a Sunday.
        assert_eq!(fires("0 9 * * MON", "2026-11-22 00:00", 2), ["Mon 2026-11-23 09:00", "Mon 2026-11-30 09:00"]);
        assert_eq!(fires("0 9 * * 1-5", "2026-11-21 10:00", 2), ["Mon 2026-11-23 09:00", "Tue 2026-11-24 09:00"]);
        assert_eq!(fires("0 9 * * 0", "2026-11-22 10:00", 1), ["Sun 2026-11-29 09:00"]);
        assert_eq!(fires("0 9 * * 7", "2026-11-22 10:00", 1), ["Sun 2026-11-29 09:00"]);
        assert_eq!(fires("0 9 * * sat-sun", "2026-11-22 10:00", 2), ["Sat 2026-11-28 09:00", "Sun 2026-11-29 09:00"]);
    }

    #[test]
    fn day_of_month_and_week_are_ored_when_both_restricted() {
        // The 13th OR any Friday.
        assert_eq!(
            fires("0 0 13 * FRI", "2026-11-01 00:00", 3),
            ["Fri 2026-11-06 00:00", "Fri 2026-11-13 00:00", "Fri 2026-11-20 00:00"]
        );
        assert_eq!(fires("0 0 13 * TUE", "2026-11-10 01:00", 2), ["Fri 2026-11-13 00:00", "Tue 2026-11-17 00:00"]);
        // A star in either field means AND (only the other restricts).
        assert_eq!(
            fires("0 0 */10 * *", "2026-11-01 00:00", 3),
            ["Wed 2026-11-11 00:00", "Sat 2026-11-21 00:00", "Tue 2026-12-01 00:00"]
        );
    }

    #[test]
    fn steps_ranges_and_lists() {
        assert_eq!(
            fires("*/20 9-10 * * *", "2026-11-22 09:00", 4),
            ["Sun 2026-11-22 09:20", "Sun 2026-11-22 09:40", "Sun 2026-11-22 10:00", "Sun 2026-11-22 10:20"]
        );
        assert_eq!(fires("5/30 * * * *", "2026-11-22 09:00", 2), ["Sun 2026-11-22 09:05", "Sun 2026-11-22 09:35"]);
        assert_eq!(fires("0 8 1 jan,jul *", "2026-11-22 09:00", 2), ["Fri 2027-01-01 08:00", "Thu 2027-07-01 08:00"]);
    }

    #[test]
    fn month_end_days_only_where_they_exist() {
        assert_eq!(fires("0 9 31 * *", "2026-11-22 00:00", 2), ["Thu 2026-12-31 09:00", "Sun 2027-01-31 09:00"]);
        assert_eq!(fires("0 9 29 2 *", "2026-01-01 00:00", 1), ["Tue 2028-02-29 09:00"]);
    }

    #[test]
    fn bad_expressions_are_rejected_with_reasons() {
        for (expr, why) in [
            ("0 9 * *", "expected 5 fields"),
            ("0 0 9 * * MON", "expected 5 fields"),
            ("61 9 * * *", "minute"),
            ("0 25 * * *", "hour"),
            ("0 9 0 * *", "day of month"),
            ("0 9 * 13 *", "month"),
            ("0 9 * * 8", "day of week"),
            ("0 9 * * FUNDAY", "day of week"),
            ("*/0 * * * *", "step"),
            ("0 9 5-1 * *", "backwards"),
            ("0 9 30 2 *", "never matches"),
        ] {
            let err = Crontab::parse(expr).unwrap_err();
            assert!(err.contains(why), "{expr}: {err}");
        }
        let _ = NaiveDate::default();
    }
}
