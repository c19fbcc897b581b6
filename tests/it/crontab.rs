//! Differential test: contactplan's 5-field crontab (translated for the `cron` crate and
//! evaluated on naive wall time) against `croner`, an independent crontab implementation, on
//! thousands of random expressions and start times with a fixed seed.
//!
//! The one place the two differ by design: a day-of-month or day-of-week field that *starts*
//! with `*` but is not just `*` (such as `*/2`). contactplan follows Vixie cron: such a field
//! counts as unrestricted, so the two day fields are ANDed (`0 9 */2 * MON` = Mondays that are
//! odd days). croner ORs them unless the day-of-week field carries its `+` (AND) modifier. The
//! test states the decision by giving croner that modifier exactly in those cases, and counts
//! them so they are known to be covered.

use chrono::{NaiveDate, NaiveDateTime, TimeZone, Utc};
use contactplan::calendar::Crontab;
use std::str::FromStr;

use crate::helpers::Rng;

const MONTHS: [&str; 12] = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"];
const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

/// One random field over `lo..=hi`: `*`, `*/n`, a value, a range, a stepped range, `a/n` or a
/// list. `names` (when given) spell single values and range starts/ends as names sometimes.
fn field(rng: &mut Rng, lo: u32, hi: u32, names: Option<(&[&str], u32)>) -> String {
    let name = |rng: &mut Rng, v: u32| -> String {
        match names {
            // Sunday as 7 has no name of its own.
            Some((list, base)) if rng.below(3) == 0 && ((v - base) as usize) < list.len() => {
                let n = list[(v - base) as usize];
                if rng.below(2) == 0 { n.to_uppercase() } else { n.to_string() }
            }
            _ => v.to_string(),
        }
    };
    let one = |rng: &mut Rng| -> String {
        match rng.below(6) {
            0 => {
                let v = rng.between(lo, hi);
                name(rng, v)
            }
            1 | 2 => {
                let a = rng.between(lo, hi);
                let b = rng.between(a, hi);
                format!("{}-{}", name(rng, a), name(rng, b))
            }
            3 => {
                let a = rng.between(lo, hi);
                let b = rng.between(a, hi);
                format!("{a}-{b}/{}", rng.between(1, (hi - lo).max(1)))
            }
            4 => format!("{}/{}", rng.between(lo, hi), rng.between(1, (hi - lo).max(1))),
            _ => {
                let v = rng.between(lo, hi);
                name(rng, v)
            }
        }
    };
    match rng.below(10) {
        0..=2 => "*".into(),
        3 => format!("*/{}", rng.between(1, (hi - lo).max(1))),
        4 | 5 => {
            let n = rng.between(2, 4);
            (0..n).map(|_| one(rng)).collect::<Vec<_>>().join(",")
        }
        _ => one(rng),
    }
}

#[test]
fn crontab_agrees_with_croner_on_random_expressions() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (mut compared, mut vixie_and, mut never) = (0, 0, 0);
    for _ in 0..4000 {
        let minute = field(&mut rng, 0, 59, None);
        let hour = field(&mut rng, 0, 23, None);
        let dom = field(&mut rng, 1, 31, None);
        let month = field(&mut rng, 1, 12, Some((&MONTHS, 1)));
        let dow = field(&mut rng, 0, 7, Some((&DAYS, 0)));
        let expr = format!("{minute} {hour} {dom} {month} {dow}");
        let ours = match Crontab::parse(&expr) {
            Ok(c) => c,
            Err(why) => {
                // Only impossible dates (such as 30 February) are refused.
                assert!(why.contains("never matches"), "{expr}: {why}");
                never += 1;
                continue;
            }
        };
        // The documented decision (module docs): a day field starting with `*` but not just
        // `*` makes Vixie cron AND the day fields; croner needs its `+` modifier for that.
        let starred = |f: &str| f.starts_with('*') && f != "*";
        let croner_dow = if (starred(&dom) || starred(&dow)) && dom != "*" && dow != "*" {
            vixie_and += 1;
            format!("+{dow}")
        } else {
            dow.clone()
        };
        let theirs = croner::Cron::from_str(&format!("{minute} {hour} {dom} {month} {croner_dow}"))
            .unwrap_or_else(|e| panic!("croner rejects `{expr}`: {e}"));
        // A random start (with seconds, to check "strictly after"), then five firings.
        let start = NaiveDate::from_ymd_opt(rng.between(2020, 2035) as i32, rng.between(1, 12), rng.between(1, 28))
            .unwrap()
            .and_hms_opt(rng.between(0, 23), rng.between(0, 59), rng.below(2) * 30)
            .unwrap();
        let (mut a, mut b): (NaiveDateTime, NaiveDateTime) = (start, start);
        for step in 0..5 {
            let mine = ours.next_after(a).unwrap_or_else(|| panic!("{expr}: no firing after {a}"));
            let other = theirs
                .find_next_occurrence(&Utc.from_utc_datetime(&b), false)
                .unwrap_or_else(|e| panic!("croner: {expr} after {b}: {e}"))
                .naive_utc();
            assert_eq!(mine, other, "`{expr}` firing {step} after {start}");
            (a, b) = (mine, other);
            compared += 1;
        }
    }
    assert!(compared >= 15_000, "compared {compared} firings");
    assert!(vixie_and >= 100, "the */N day-field decision is exercised: {vixie_and}");
    assert!(never < 400, "{never} never-matching expressions");
}

#[test]
fn star_step_day_fields_and_like_vixie_cron() {
    // 2026-11-02 and 2026-11-16 are Mondays (odd days: none; 2026-11-09, -23 are odd Mondays).
    let c = Crontab::parse("0 9 */2 * MON").unwrap();
    let mut t = NaiveDate::from_ymd_opt(2026, 11, 1).unwrap().and_hms_opt(0, 0, 0).unwrap();
    let mut got = Vec::new();
    for _ in 0..3 {
        t = c.next_after(t).unwrap();
        got.push(t.to_string());
    }
    assert_eq!(got, ["2026-11-09 09:00:00", "2026-11-23 09:00:00", "2026-12-07 09:00:00"]);
}
