//! Calendar truth: occasions on the right day and minute in every zone, through the real plan
//! validation and the occasion pipeline the daemon uses. Expected values are literals taken
//! from tzdata via Python's zoneinfo (transition table below), the calendar, and the
//! documented policies; they are never computed by the code under test.

use crate::helpers::templates_dir;
use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, TimeDelta, Utc};
use contactplan::calendar::{Adjustment, Settings, business};
use contactplan::occasion::{self, Explained, Occurrence};
use contactplan::plan::{self, Context, CrontabCache, Customer};
use contactplan::render::TemplateCatalog;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

/// Validates one plan exactly as the loader does, with `defaults` as the daemon's `[calendar]`.
fn customer_with(text: &str, defaults: &Settings) -> Customer {
    let (catalog, _) = TemplateCatalog::scan(&templates_dir());
    let crontabs = CrontabCache::default();
    let playbooks = HashMap::new();
    let ctx = Context {
        playbooks: &playbooks,
        broken: &[],
        templates: &catalog,
        default_tz: chrono_tz::UTC,
        default_calendar: defaults,
        crontabs: &crontabs,
        rules: &contactplan::plan::RuleCache::default(),
    };
    let (c, diags) = plan::plan_text(Path::new("test.toml"), text, &ctx);
    c.unwrap_or_else(|| panic!("plan is invalid: {diags:#?}\n{text}"))
}

fn customer(text: &str) -> Customer {
    customer_with(text, &Settings::default())
}

/// A plan in `tz` with extra `[customer]` lines, the given contacts and rules.
fn plan_text(tz: &str, customer_keys: &str, contacts: &str, rules: &str) -> String {
    format!(
        "[customer]\nid = \"acme\"\nname = \"Acme\"\nsince = 2015-06-01\nowner = \"owner@example.com\"\ntimezone = \"{tz}\"\nlanguage = \"en\"\nphase = \"growth\"\n{customer_keys}\n{contacts}\n{rules}"
    )
}

fn contact(id: &str, birthday: &str, primary: bool) -> String {
    format!(
        "[[contact]]\nid = \"{id}\"\nname = \"Pat {id}\"\nemail = \"{id}@acme.example\"\nbirthday = {birthday}\ntone = \"formal\"\nprimary = {primary}\n"
    )
}

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn day(s: &str) -> NaiveDate {
    s.parse().unwrap()
}

fn occurrences<'a>(c: &'a Customer, from: &str, to: &str) -> Vec<Occurrence<'a>> {
    let mut v = Vec::new();
    occasion::for_customer(c, utc(from), utc(to), &mut v);
    v.sort_by_key(|o| (o.due.utc, o.key()));
    v
}

fn local(o: &Occurrence) -> String {
    o.due.local.to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
}

fn kinds(o: &Occurrence) -> Vec<String> {
    o.adjustments.iter().map(|a| serde_json::to_value(a).unwrap()["kind"].as_str().unwrap().to_string()).collect()
}

/// One DST transition of 2026 as tzdata has it (Python zoneinfo, system tzdata): wall times in
/// `[start, end)` do not exist (`gap`) or happen twice (fold), with `first`/`second` the UTC
/// offsets before and after.
struct Transition {
    zone: &'static str,
    gap: bool,
    start: &'static str,
    end: &'static str,
    first: &'static str,
    second: &'static str,
}

#[rustfmt::skip]
const TRANSITIONS: &[Transition] = &[
    Transition { zone: "America/New_York", gap: true, start: "2026-03-08 02:00", end: "2026-03-08 03:00", first: "-05:00", second: "-04:00" },
    Transition { zone: "America/New_York", gap: false, start: "2026-11-01 01:00", end: "2026-11-01 02:00", first: "-04:00", second: "-05:00" },
    Transition { zone: "Europe/Berlin", gap: true, start: "2026-03-29 02:00", end: "2026-03-29 03:00", first: "+01:00", second: "+02:00" },
    Transition { zone: "Europe/Berlin", gap: false, start: "2026-10-25 02:00", end: "2026-10-25 03:00", first: "+02:00", second: "+01:00" },
    Transition { zone: "Europe/London", gap: true, start: "2026-03-29 01:00", end: "2026-03-29 02:00", first: "+00:00", second: "+01:00" },
    Transition { zone: "Europe/London", gap: false, start: "2026-10-25 01:00", end: "2026-10-25 02:00", first: "+01:00", second: "+00:00" },
    // Negative DST in tzdata (winter is the "daylight" time); the wall clock moves as in London.
    Transition { zone: "Europe/Dublin", gap: true, start: "2026-03-29 01:00", end: "2026-03-29 02:00", first: "+00:00", second: "+01:00" },
    Transition { zone: "Europe/Dublin", gap: false, start: "2026-10-25 01:00", end: "2026-10-25 02:00", first: "+01:00", second: "+00:00" },
    // 30-minute DST.
    Transition { zone: "Australia/Lord_Howe", gap: false, start: "2026-04-05 01:30", end: "2026-04-05 02:00", first: "+11:00", second: "+10:30" },
    Transition { zone: "Australia/Lord_Howe", gap: true, start: "2026-10-04 02:00", end: "2026-10-04 02:30", first: "+10:30", second: "+11:00" },
    // Midnight transitions: the fold repeats 23:00–24:00, the gap swallows 00:00–01:00.
    Transition { zone: "America/Santiago", gap: false, start: "2026-04-04 23:00", end: "2026-04-05 00:00", first: "-03:00", second: "-04:00" },
    Transition { zone: "America/Santiago", gap: true, start: "2026-09-06 00:00", end: "2026-09-06 01:00", first: "-04:00", second: "-03:00" },
    Transition { zone: "Africa/Cairo", gap: true, start: "2026-04-24 00:00", end: "2026-04-24 01:00", first: "+02:00", second: "+03:00" },
    Transition { zone: "Africa/Cairo", gap: false, start: "2026-10-29 23:00", end: "2026-10-30 00:00", first: "+03:00", second: "+02:00" },
    // 45-minute offsets.
    Transition { zone: "Pacific/Chatham", gap: false, start: "2026-04-05 02:45", end: "2026-04-05 03:45", first: "+13:45", second: "+12:45" },
    Transition { zone: "Pacific/Chatham", gap: true, start: "2026-09-27 02:45", end: "2026-09-27 03:45", first: "+12:45", second: "+13:45" },
];

fn wall(s: &str) -> NaiveDateTime {
    NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").unwrap()
}

#[test]
fn dst_gaps_and_folds_fire_once_in_every_zone() {
    for t in TRANSITIONS {
        let (start, end) = (wall(t.start), wall(t.end));
        let len = (end - start).num_minutes();
        let mid = start + TimeDelta::minutes(len / 2);
        let date = start.date();
        let rules = format!(
            "[[occasion]]\nname = \"daily\"\non = \"every\"\ncron = \"{} {} * * *\"\nsend = \"task\"\ntemplate = \"checkin\"\n\n\
             [[occasion]]\nname = \"quarter\"\non = \"every\"\ncron = \"*/15 * * * *\"\nsend = \"task\"\ntemplate = \"checkin\"\n\n\
             [[occasion]]\nname = \"birthday\"\non = \"birthday\"\ntemplate = \"birthday\"\nat = \"{}\"\n",
            mid.format("%M"),
            mid.format("%H"),
            mid.format("%H:%M")
        );
        let bday = format!("\"--{}\"", date.format("%m-%d"));
        let c = customer(&plan_text(t.zone, "", &contact("pat", &bday, true), &rules));
        let from = format!("{}T00:00:00Z", date - TimeDelta::days(1));
        let to = format!("{}T00:00:00Z", date + TimeDelta::days(2));
        let all = occurrences(&c, &from, &to);
        let on_day = |rule: &str| -> Vec<&Occurrence> {
            all.iter().filter(|o| &*o.rule.name == rule && o.due.local.date_naive() == date).collect()
        };
        let ctx = format!("{} {}", t.zone, t.start);

        // Every rule's output is strictly increasing in time.
        for rule in ["daily", "quarter", "birthday"] {
            let times: Vec<_> = all.iter().filter(|o| &*o.rule.name == rule).map(|o| o.due.utc).collect();
            assert!(times.windows(2).all(|w| w[0] < w[1]), "{ctx} {rule}: not strictly increasing");
        }
        let expected_once = if t.gap {
            format!("{}T{}:00{}", end.date(), end.format("%H:%M"), t.second)
        } else {
            format!("{}T{}:00{}", mid.date(), mid.format("%H:%M"), t.first)
        };
        let adjustment = if t.gap { "dst_gap" } else { "dst_fold" };
        for rule in ["daily", "birthday"] {
            let fired = on_day(rule);
            assert_eq!(
                fired.len(),
                1,
                "{ctx} {rule}: fires once: {:?}",
                fired.iter().map(|o| local(o)).collect::<Vec<_>>()
            );
            assert_eq!(local(fired[0]), expected_once, "{ctx} {rule}");
            assert!(kinds(fired[0]).contains(&adjustment.to_string()), "{ctx} {rule}: {:?}", fired[0].adjustments);
        }
        // The birthday's deadline is the end of its local day.
        let b = on_day("birthday")[0];
        assert_eq!(b.deadline.with_timezone(&b.zone).date_naive(), date + TimeDelta::days(1), "{ctx}");

        // Sub-hourly: each wall time of the day fires once; gap wall times merge into the
        // first instant after the gap; fold wall times use the earlier instant.
        let quarter = on_day("quarter");
        let walls: BTreeSet<NaiveDateTime> = quarter.iter().map(|o| o.due.local.naive_local()).collect();
        assert_eq!(walls.len(), quarter.len(), "{ctx}: a wall time fired twice");
        let gap_quarters = if t.gap { len / 15 } else { 0 };
        assert_eq!(quarter.len() as i64, 96 - gap_quarters, "{ctx}: quarter-hour firings on {date}");
        for o in &quarter {
            let w = o.due.local.naive_local();
            let offset = o.due.local.format("%:z").to_string();
            if t.gap {
                assert!(!(start..end).contains(&w), "{ctx}: fired inside the gap at {w}");
            } else if (start..end).contains(&w) {
                assert_eq!(offset, t.first, "{ctx}: fold wall time {w} must use the earlier instant");
            }
        }
        if t.gap {
            let at_end: Vec<_> = quarter.iter().filter(|o| o.due.local.naive_local() == end).collect();
            assert_eq!(at_end.len(), 1, "{ctx}: one firing at the end of the gap");
            assert_eq!(at_end[0].due.local.format("%:z").to_string(), t.second);
        }
    }
}

#[test]
fn kolkata_has_no_transitions_and_no_adjustments() {
    let rules = "[[occasion]]\nname = \"quarter\"\non = \"every\"\ncron = \"*/15 * * * *\"\nsend = \"task\"\ntemplate = \"checkin\"\n";
    let c = customer(&plan_text("Asia/Kolkata", "", &contact("pat", "1980-03-08", true), rules));
    let all = occurrences(&c, "2026-03-07T18:30:00Z", "2026-03-08T18:30:00Z");
    assert_eq!(all.len(), 96);
    assert!(all.iter().all(|o| o.adjustments.is_empty() && o.due.local.format("%:z").to_string() == "+05:30"));
    assert_eq!(local(&all[0]), "2026-03-08T00:00:00+05:30");
}

#[test]
fn feb29_under_every_policy_2025_to_2033() {
    let expected: [(&str, &[&str]); 3] = [
        (
            "feb28",
            &[
                "2025-02-28",
                "2026-02-28",
                "2027-02-28",
                "2028-02-29",
                "2029-02-28",
                "2030-02-28",
                "2031-02-28",
                "2032-02-29",
                "2033-02-28",
            ],
        ),
        (
            "mar1",
            &[
                "2025-03-01",
                "2026-03-01",
                "2027-03-01",
                "2028-02-29",
                "2029-03-01",
                "2030-03-01",
                "2031-03-01",
                "2032-02-29",
                "2033-03-01",
            ],
        ),
        ("leap_only", &["2028-02-29", "2032-02-29"]),
    ];
    for (policy, dates) in expected {
        let rules = format!(
            "[[occasion]]\nname = \"birthday\"\non = \"birthday\"\ntemplate = \"birthday\"\nleap_day = \"{policy}\"\n\n\
             [[occasion]]\nname = \"anniversary\"\non = \"anniversary\"\nevery_years = 1\ntemplate = \"anniversary\"\nleap_day = \"{policy}\"\n"
        );
        // A birthday known without its year, and a relationship that began on Feb 29.
        let text = plan_text("Europe/Berlin", "", &contact("pat", "\"--02-29\"", true), &rules)
            .replace("since = 2015-06-01", "since = 2024-02-29");
        let c = customer(&text);
        let all = occurrences(&c, "2025-01-01T00:00:00Z", "2034-01-01T00:00:00Z");
        for rule in ["birthday", "anniversary"] {
            let got: Vec<String> =
                all.iter().filter(|o| &*o.rule.name == rule).map(|o| o.due.local.date_naive().to_string()).collect();
            assert_eq!(got, dates, "{rule} with leap_day = {policy}");
        }
        // Years 1..=9 of the relationship, computed from the anchor.
        let years: Vec<u32> = all.iter().filter(|o| &*o.rule.name == "anniversary").filter_map(|o| o.years).collect();
        assert_eq!(years.len(), dates.len());
        assert!(years.iter().zip(dates).all(|(y, d)| 2024 + *y as i32 == day(d).year()), "{policy}: {years:?}");
        // Moved days say so.
        for o in
            all.iter().filter(|o| o.nominal.to_string().ends_with("-03-01") || o.due.local.date_naive().day() == 28)
        {
            assert!(kinds(o).contains(&"leap_day".to_string()), "{policy}: {:?}", o.adjustments);
        }
        // `explain` lists the common years that leap_only skips.
        let rule = c.rule("birthday").unwrap();
        let explained = occasion::explain(&c, rule, utc("2025-01-01T00:00:00Z"), utc("2034-01-01T00:00:00Z"));
        let skipped: Vec<String> = explained
            .iter()
            .filter_map(|e| match e {
                Explained::Skipped(s) => Some(format!("{} {}", s.date, s.reason)),
                Explained::Due(_) => None,
            })
            .collect();
        if policy == "leap_only" {
            assert_eq!(skipped.len(), 7, "{skipped:?}");
            assert!(skipped[0].starts_with("2025-02-28 2025 has no Feb 29"), "{skipped:?}");
        } else {
            assert!(skipped.is_empty(), "{skipped:?}");
        }
    }
}

#[test]
fn month_end_anchors_are_never_chained() {
    for (since, md) in [("2016-01-31", "01-31"), ("2016-08-31", "08-31")] {
        let rules = format!(
            "[[occasion]]\nname = \"anniversary\"\non = \"anniversary\"\nevery_years = 1\ntemplate = \"anniversary\"\n\n\
             [[occasion]]\nname = \"reminder\"\non = \"date\"\ndate = \"--{md}\"\nsend = \"task\"\ntemplate = \"occasion_task\"\nbefore = \"14d\"\n"
        );
        let text = plan_text("Europe/Berlin", "", &contact("pat", "1980-05-05", true), &rules)
            .replace("since = 2015-06-01", &format!("since = {since}"));
        let c = customer(&text);
        let all = occurrences(&c, "2017-01-01T00:00:00Z", "2031-01-01T00:00:00Z");
        let ann: Vec<String> = all
            .iter()
            .filter(|o| &*o.rule.name == "anniversary")
            .map(|o| o.due.local.date_naive().to_string())
            .collect();
        let expected: Vec<String> = (2017..=2030).map(|y| format!("{y}-{md}")).collect();
        assert_eq!(ann, expected);
        let reminders: Vec<String> =
            all.iter().filter(|o| &*o.rule.name == "reminder").map(|o| o.due.local.date_naive().to_string()).collect();
        let expected_reminders: Vec<String> = (2017..=2030)
            .map(|y| {
                (NaiveDate::parse_from_str(&format!("{y}-{md}"), "%Y-%m-%d").unwrap() - TimeDelta::days(14)).to_string()
            })
            .collect();
        assert_eq!(reminders, expected_reminders);
    }
    // A monthly crontab on the 31st fires only in months that have one.
    let rules = "[[occasion]]\nname = \"m31\"\non = \"every\"\ncron = \"0 9 31 * *\"\nsend = \"task\"\ntemplate = \"checkin\"\n";
    let c = customer(&plan_text("Europe/Berlin", "", &contact("pat", "1980-05-05", true), rules));
    let got: Vec<String> = occurrences(&c, "2026-01-01T00:00:00Z", "2027-01-01T00:00:00Z")
        .iter()
        .map(|o| o.due.local.date_naive().to_string())
        .collect();
    assert_eq!(got, ["2026-01-31", "2026-03-31", "2026-05-31", "2026-07-31", "2026-08-31", "2026-10-31", "2026-12-31"]);
}

/// Send days of one yearly `date` rule, with a calendar and an `on_closed` policy.
fn send_days(customer_keys: &str, rule_keys: &str, date: &str, from: &str, to: &str) -> Vec<String> {
    let rules = format!(
        "[[occasion]]\nname = \"gift\"\non = \"date\"\ndate = {date}\nsend = \"task\"\ntemplate = \"occasion_task\"\n{rule_keys}\n"
    );
    let c = customer(&plan_text("Europe/Berlin", customer_keys, &contact("pat", "1980-05-05", true), &rules));
    occurrences(&c, from, to).iter().map(|o| o.due.local.date_naive().to_string()).collect()
}

#[test]
fn new_year_crossing_blackouts_and_on_closed() {
    // A Christmas-rush blackout across New Year plus a Saturday/Sunday weekend. 2026-12-19 is a
    // Saturday, 2026-12-18 a Friday, 2027-01-07 a Thursday, 2027-01-09 a Saturday.
    let keys = "weekend = [\"sat\", \"sun\"]\nblackout = [\"--12-20..--01-06\"]";
    let (from, to) = ("2026-12-01T00:00:00Z", "2027-02-01T00:00:00Z");
    #[rustfmt::skip]
    let cases: &[(&str, &str, &[&str])] = &[
        ("\"--12-22\"", "on_closed = \"after\"", &["2027-01-07"]),
        ("\"--12-22\"", "", &["2027-01-07"]), // `after` is the default
        ("\"--12-22\"", "on_closed = \"before\"", &["2026-12-18"]),
        ("\"--12-22\"", "on_closed = \"skip\"", &[]),
        ("\"--12-22\"", "on_closed = \"ignore\"", &["2026-12-22"]),
        ("\"--01-02\"", "on_closed = \"after\"", &["2027-01-07"]),
        ("\"--01-02\"", "on_closed = \"before\"", &["2026-12-18"]),
        ("\"--12-19\"", "on_closed = \"after\"", &["2027-01-07"]),
        ("\"--12-19\"", "on_closed = \"before\"", &["2026-12-18"]),
        ("\"--01-07\"", "on_closed = \"before\"", &["2027-01-07"]),
        ("\"--01-09\"", "on_closed = \"after\"", &["2027-01-11"]),
        ("\"--01-09\"", "on_closed = \"before\"", &["2027-01-08"]),
        // A rule's own blackout replaces the customer's.
        ("\"--12-22\"", "blackout = [\"--12-24..--12-26\"]", &["2026-12-22"]),
        ("\"--12-22\"", "blackout = []", &["2026-12-22"]),
        // One-off dated blackout that ends in the new year.
        ("\"--01-04\"", "blackout = [\"2026-12-28..2027-01-05\"]", &["2027-01-06"]),
    ];
    for (date, rule_keys, expected) in cases {
        assert_eq!(send_days(keys, rule_keys, date, from, to), *expected, "date = {date}, {rule_keys}");
    }
    // The move is recorded, listing the closed days.
    let rules = "[[occasion]]\nname = \"gift\"\non = \"date\"\ndate = \"--12-22\"\nsend = \"task\"\ntemplate = \"occasion_task\"\n";
    let c = customer(&plan_text("Europe/Berlin", keys, &contact("pat", "1980-05-05", true), rules));
    let all = occurrences(&c, from, to);
    assert_eq!(all[0].nominal.to_string(), "2026-12-22", "the key stays the nominal occasion");
    match &all[0].adjustments[..] {
        [Adjustment::Closed { policy: "after", from, to, closed }] => {
            assert_eq!((*from, *to), (day("2026-12-22"), day("2027-01-07")));
            assert_eq!(closed[0].to_string(), "2026-12-22..2027-01-06 blackout --12-20..--01-06");
        }
        other => panic!("{other:?}"),
    }
    // Skipped occasions are explained.
    let skip = customer(&plan_text(
        "Europe/Berlin",
        keys,
        &contact("pat", "1980-05-05", true),
        &format!("{rules}on_closed = \"skip\"\n"),
    ));
    let explained = occasion::explain(&skip, skip.rule("gift").unwrap(), utc(from), utc(to));
    match &explained[..] {
        [Explained::Skipped(s)] => {
            assert!(s.reason.contains("2026-12-22 is closed (blackout --12-20..--01-06)"), "{}", s.reason)
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn holidays_close_days_only_where_configured() {
    let (from, to) = ("2026-12-01T00:00:00Z", "2027-02-01T00:00:00Z");
    // Heilige Drei Könige (Jan 6, a Wednesday in 2027) is a holiday in Bavaria, not in Berlin.
    assert_eq!(send_days("region = \"DE-BY\"", "", "\"--01-06\"", from, to), ["2027-01-07"]);
    assert_eq!(send_days("region = \"DE-BE\"", "", "\"--01-06\"", from, to), ["2027-01-06"]);
    assert_eq!(send_days("", "", "\"--01-06\"", from, to), ["2027-01-06"], "nothing is closed unless configured");
    // Christmas Day 2026 is a Friday: the next open day in Bavaria with a weekend is Monday.
    assert_eq!(
        send_days("region = \"DE-BY\"\nweekend = [\"sat\", \"sun\"]", "", "\"--12-25\"", from, to),
        ["2026-12-28"]
    );
    // Extra closure dates, yearly and once.
    assert_eq!(send_days("closed = [\"--12-24\", 2026-12-23]", "", "\"--12-23\"", from, to), ["2026-12-25"]);
}

#[test]
fn business_day_lead_times_across_new_year() {
    let (from, to) = ("2026-12-01T00:00:00Z", "2027-02-01T00:00:00Z");
    let bavaria = "region = \"DE-BY\"\nweekend = [\"sat\", \"sun\"]";
    #[rustfmt::skip]
    let cases: &[(&str, &str, &str)] = &[
        // Jan 4 (Mon) counts; Jan 3/2 weekend and Jan 1 Neujahr do not; Dec 31, Dec 30 count.
        (bavaria, "2027-01-05", "2026-12-30"),
        // Jan 6 is a holiday in Bavaria: Jan 5, Jan 4, Dec 31.
        (bavaria, "2027-01-07", "2026-12-31"),
        // Dec 27 Sun, 26 Sat + holiday, 25 holiday: Dec 24, 23, 22.
        (bavaria, "2026-12-28", "2026-12-22"),
        // No calendar: business days are calendar days.
        ("", "2027-01-05", "2027-01-02"),
    ];
    for (keys, occasion, expected) in cases {
        let got = send_days(keys, "before = \"3 business days\"", occasion, from, to);
        assert_eq!(got, [*expected], "{occasion} with `{keys}`");
    }
    let rules = "[[occasion]]\nname = \"gift\"\non = \"date\"\ndate = 2027-01-05\nsend = \"task\"\ntemplate = \"occasion_task\"\nbefore = \"3 business days\"\n";
    let c = customer(&plan_text("Europe/Berlin", bavaria, &contact("pat", "1980-05-05", true), rules));
    let o = &occurrences(&c, from, to)[0];
    assert_eq!(o.occasion_date, day("2027-01-05"));
    assert_eq!(
        o.adjustments[0].to_string(),
        "3 business days before the occasion on 2027-01-05: 2026-12-30 (not counted: 2027-01-03 weekend (Sun), 2027-01-02 weekend (Sat), 2027-01-01 holiday Neujahr (DE-BY))"
    );
}

#[test]
fn crontab_firings_on_closed_days_fire_once() {
    let weekend = "weekend = [\"sat\", \"sun\"]";
    let rule = |extra: &str| {
        format!(
            "[[occasion]]\nname = \"daily\"\non = \"every\"\ncron = \"0 9 * * *\"\nsend = \"task\"\ntemplate = \"checkin\"\n{extra}\n"
        )
    };
    // 2026-12-05/06 are Saturday/Sunday.
    let (from, to) = ("2026-12-03T00:00:00Z", "2026-12-09T00:00:00Z");
    for (policy, days, key) in [
        ("after", vec!["2026-12-03", "2026-12-04", "2026-12-07", "2026-12-08"], "2026-12-07T09:00"),
        ("before", vec!["2026-12-03", "2026-12-04", "2026-12-07", "2026-12-08"], "2026-12-04T09:00"),
        ("skip", vec!["2026-12-03", "2026-12-04", "2026-12-07", "2026-12-08"], "2026-12-07T09:00"),
    ] {
        let c = customer(&plan_text(
            "Europe/Berlin",
            weekend,
            &contact("pat", "1980-05-05", true),
            &rule(&format!("on_closed = \"{policy}\"")),
        ));
        let all = occurrences(&c, from, to);
        let got: Vec<String> = all.iter().map(|o| o.due.local.date_naive().to_string()).collect();
        assert_eq!(got, days, "{policy}");
        // The firing that was not moved keeps its own key.
        assert!(all.iter().any(|o| o.nominal.to_string() == key), "{policy}");
        let explained = occasion::explain(&c, c.rule("daily").unwrap(), utc(from), utc(to));
        let skipped: Vec<String> = explained
            .iter()
            .filter_map(|e| if let Explained::Skipped(s) = e { Some(s.what.clone()) } else { None })
            .collect();
        assert_eq!(skipped, ["firing 2026-12-05T09:00", "firing 2026-12-06T09:00"], "{policy}");
    }
    // A monthly check-in on a closed first of the month moves (nothing else fires that day).
    let rules = "[[occasion]]\nname = \"checkin\"\non = \"every\"\ncron = \"0 9 1 * *\"\nsend = \"task\"\ntemplate = \"checkin\"\n";
    let c = customer(&plan_text(
        "Europe/Berlin",
        "region = \"DE-BY\"\nweekend = [\"sat\", \"sun\"]",
        &contact("pat", "1980-05-05", true),
        rules,
    ));
    let got: Vec<String> =
        occurrences(&c, "2026-10-15T00:00:00Z", "2027-02-15T00:00:00Z").iter().map(|o| local(o)).collect();
    // Nov 1 2026 Sunday + Allerheiligen → Mon Nov 2; Jan 1 2027 Neujahr → Mon Jan 4 (2–3 weekend).
    assert_eq!(
        got,
        [
            "2026-11-02T09:00:00+01:00",
            "2026-12-01T09:00:00+01:00",
            "2027-01-04T09:00:00+01:00",
            "2027-02-01T09:00:00+01:00"
        ]
    );
}

#[test]
fn precedence_rule_over_customer_over_daemon() {
    let daemon = Settings {
        weekend: Some(business::Weekdays::parse(["sat", "sun"]).unwrap()),
        on_closed: Some(business::OnClosed::After),
        ..Default::default()
    };
    // 2026-12-06 is a Sunday.
    let rules = |extra: &str| {
        format!(
            "[[occasion]]\nname = \"plain\"\non = \"date\"\ndate = \"--12-06\"\nsend = \"task\"\ntemplate = \"occasion_task\"\n\n\
             [[occasion]]\nname = \"own\"\non = \"date\"\ndate = \"--12-06\"\nsend = \"task\"\ntemplate = \"occasion_task\"\n{extra}\n"
        )
    };
    let days = |customer_keys: &str, extra: &str| -> Vec<(String, String)> {
        let c = customer_with(
            &plan_text("Europe/Berlin", customer_keys, &contact("pat", "1980-05-05", true), &rules(extra)),
            &daemon,
        );
        let mut v: Vec<(String, String)> = occurrences(&c, "2026-12-01T00:00:00Z", "2026-12-31T00:00:00Z")
            .iter()
            .map(|o| (o.rule.name.to_string(), o.due.local.date_naive().to_string()))
            .collect();
        v.sort();
        v
    };
    let pairs = |v: &[(&str, &str)]| v.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect::<Vec<_>>();
    // Daemon only: after.
    assert_eq!(days("", ""), pairs(&[("own", "2026-12-07"), ("plain", "2026-12-07")]));
    // Customer: before; rule: ignore.
    assert_eq!(
        days("on_closed = \"before\"", "on_closed = \"ignore\""),
        pairs(&[("own", "2026-12-06"), ("plain", "2026-12-04")])
    );
    // The customer clears the weekend; a rule sets its own.
    assert_eq!(days("weekend = []", "weekend = [\"sun\"]"), pairs(&[("own", "2026-12-07"), ("plain", "2026-12-06")]));
}

#[test]
fn window_and_jitter_spread_500_recipients_deterministically() {
    let contacts: String = (0..500).map(|i| contact(&format!("p{i:03}"), "\"--03-10\"", i == 0)).collect();
    let spread = |at: &str| -> (Vec<String>, Vec<(String, DateTime<Utc>)>) {
        let rules =
            format!("[[occasion]]\nname = \"birthday\"\non = \"birthday\"\ntemplate = \"birthday\"\nat = \"{at}\"\n");
        let c = customer(&plan_text("Europe/Berlin", "window = \"08:00-18:00\"\njitter = \"30m\"", &contacts, &rules));
        let all = occurrences(&c, "2026-03-09T00:00:00Z", "2026-03-12T00:00:00Z");
        assert_eq!(all.len(), 500);
        let locals = all.iter().map(|o| o.due.local.format("%H:%M:%S").to_string()).collect();
        let keyed = all.iter().map(|o| (o.key(), o.due.utc)).collect();
        (locals, keyed)
    };
    let (locals, keyed) = spread("09:00");
    assert!(locals.iter().all(|t| ("09:00:00".."09:30:00").contains(&t.as_str())), "{locals:?}");
    let distinct: BTreeSet<&String> = locals.iter().collect();
    assert!(distinct.len() > 400, "only {} distinct send seconds", distinct.len());
    // The offset is FNV-1a (64 bit) of the outbox key modulo the spread, as documented.
    let c = customer(&plan_text(
        "Europe/Berlin",
        "window = \"08:00-18:00\"\njitter = \"30m\"",
        &contacts,
        "[[occasion]]\nname = \"birthday\"\non = \"birthday\"\ntemplate = \"birthday\"\n",
    ));
    for o in occurrences(&c, "2026-03-09T00:00:00Z", "2026-03-12T00:00:00Z") {
        let fnv =
            o.key().bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
        match &o.adjustments[..] {
            [Adjustment::Jitter { seconds, spread }] => assert_eq!(fnv % u64::from(*spread), u64::from(*seconds)),
            other => panic!("{other:?}"),
        }
    }
    // Keys stay the nominal occasion; a recomputation (a restart) gives the same times.
    assert!(keyed.iter().all(|(k, _)| k.starts_with("acme/birthday/contact:p") && k.ends_with("/2026-03-10")));
    let mut again = spread("09:00").1;
    let mut first = keyed.clone();
    first.sort();
    again.sort();
    assert_eq!(first, again);
    // Outside the window: clamped into it, the spread kept inside.
    let (late, _) = spread("20:00");
    assert!(late.iter().all(|t| ("17:30:00"..="18:00:00").contains(&t.as_str())), "{late:?}");
    let (early, _) = spread("06:00");
    assert!(early.iter().all(|t| ("08:00:00".."08:30:00").contains(&t.as_str())), "{early:?}");
}

#[test]
fn sub_hourly_jitter_keeps_each_recipients_sends_in_order_and_before_the_deadline() {
    let contacts: String = (0..3).map(|i| contact(&format!("p{i}"), "\"--05-05\"", i == 0)).collect();
    let rules = "[[occasion]]\nname = \"pulse\"\non = \"every\"\ncron = \"*/10 * * * *\"\nto = \"contacts\"\ntemplate = \"checkin\"\njitter = \"30m\"\nwindow = \"08:00-18:00\"\n";
    // New York's spring-forward day, across the window's edges.
    let c = customer(&plan_text("America/New_York", "", &contacts, rules));
    let all = occurrences(&c, "2026-03-08T00:00:00Z", "2026-03-10T00:00:00Z");
    for p in ["p0", "p1", "p2"] {
        let mine: Vec<&Occurrence> = all.iter().filter(|o| o.about.is_some_and(|a| &*a.id == p)).collect();
        assert!(mine.len() > 100);
        for w in mine.windows(2) {
            assert!(w[0].due.utc < w[1].due.utc, "{p}: out of order");
        }
        for o in &mine {
            assert!(o.due.utc < o.deadline, "{p}: due {} not before deadline {}", o.due.utc, o.deadline);
            let secs = o.due.local.format("%H:%M:%S").to_string();
            assert!(("08:00:00"..="18:00:00").contains(&secs.as_str()), "{p}: {secs} outside the window");
        }
    }
    // Firings before the window merge into its opening on each day: one per day per recipient.
    let at_eight = all
        .iter()
        .filter(|o| o.about.is_some_and(|a| &*a.id == "p0") && o.nominal.to_string().ends_with("T08:00"))
        .count();
    assert_eq!(at_eight, 2);
}

/// A config directory with a `[calendar]` table and one plan, for the real binary.
fn workspace(calendar: &str, plan: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("plans")).unwrap();
    std::fs::write(dir.path().join("plans/acme.toml"), plan).unwrap();
    let config = format!(
        "database_url = \"sqlite://outbox.db\"\ntemplates = \"{}\"\ntimezone = \"Europe/Berlin\"\n\n[calendar]\n{calendar}\n\n[sender]\nemail = \"team@example.com\"\nname = \"Team\"\n\n[delivery]\nkind = \"maildir\"\npath = \"maildir\"\n",
        templates_dir().display()
    );
    std::fs::write(dir.path().join("contactplan.toml"), config).unwrap();
    dir
}

fn contactplan(dir: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let config = dir.join("contactplan.toml");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_contactplan"))
        .arg("--config")
        .arg(&config)
        .args(args)
        .env_remove("CONTACTPLAN_DATABASE_URL")
        .output()
        .unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

const ACME_RULES: &str = "[[occasion]]\nname = \"birthday\"\non = \"birthday\"\ntemplate = \"birthday\"\n\n\
[[occasion]]\nname = \"gift\"\non = \"date\"\ndate = \"--12-22\"\nsend = \"task\"\ntemplate = \"occasion_task\"\nblackout = [\"--12-20..--01-06\"]\non_closed = \"skip\"\n\n\
[[occasion]]\nname = \"checkin\"\non = \"every\"\ncron = \"0 7 1 * *\"\nsend = \"task\"\ntemplate = \"checkin\"\n";

#[test]
fn agenda_json_schema_and_explain_through_the_binary() {
    // Christmas Day 2026 is a Friday, a holiday in Bavaria; Saturday and Sunday are closed.
    let plan = plan_text("Europe/Berlin", "region = \"DE-BY\"", &contact("pat", "1980-12-25", true), ACME_RULES);
    let dir = workspace("window = \"08:00-18:00\"\njitter = \"10m\"\nweekend = [\"sat\", \"sun\"]", &plan);
    let (code, stdout, stderr) =
        contactplan(dir.path(), &["agenda", "--from", "2026-11-25", "--days", "60", "--format", "json"]);
    assert_eq!(code, Some(0), "{stderr}");
    let items: Vec<serde_json::Value> = serde_json::from_str(&stdout).unwrap();
    assert_eq!(items.len(), 3, "{stdout}");
    let mut last = String::new();
    for i in &items {
        for field in
            ["due_utc", "due_local", "local_date", "timezone", "customer", "occasion", "kind", "action", "recipient"]
        {
            assert!(i[field].is_string(), "`{field}` in {i}");
        }
        let due_utc = i["due_utc"].as_str().unwrap();
        assert!(due_utc.ends_with('Z') && DateTime::parse_from_rfc3339(due_utc).is_ok(), "{due_utc}");
        let due_local = DateTime::parse_from_rfc3339(i["due_local"].as_str().unwrap()).unwrap();
        assert_eq!(due_local.with_timezone(&Utc), utc(due_utc));
        assert_eq!(i["local_date"].as_str().unwrap(), due_local.date_naive().to_string());
        assert_eq!(i["timezone"], "Europe/Berlin");
        assert!(["email", "task"].contains(&i["action"].as_str().unwrap()));
        for a in i["adjustments"].as_array().unwrap() {
            assert!(a["kind"].is_string() && a["note"].is_string(), "{a}");
        }
        assert!(last.as_str() <= due_utc, "sorted by due_utc");
        last = due_utc.to_string();
    }
    // The checkin at 07:00 is clamped into the window; the birthday moves to Monday.
    let checkin = &items[0];
    assert_eq!(checkin["occasion"], "checkin");
    assert!(checkin["due_local"].as_str().unwrap().starts_with("2026-12-01T08:"), "{checkin}");
    let kinds = |i: &serde_json::Value| -> Vec<String> {
        i["adjustments"].as_array().unwrap().iter().map(|a| a["kind"].as_str().unwrap().to_string()).collect()
    };
    assert_eq!(kinds(checkin), ["window_clamp", "jitter"]);
    let birthday = &items[1];
    assert_eq!(birthday["local_date"], "2026-12-28");
    assert_eq!(birthday["occasion_date"], "2026-12-25");
    assert_eq!(birthday["key"], "acme/birthday/contact:pat/2026-12-25");
    assert_eq!(kinds(birthday), ["closed", "jitter"]);
    assert!(birthday["adjustments"][0]["note"].as_str().unwrap().contains("holiday 1. Weihnachtstag (DE-BY)"));
    assert_eq!(items[2]["local_date"], "2027-01-04", "Jan 1 is Neujahr, 2–3 a weekend");

    // The table shows the same adjustments in words.
    let (code, table, _) = contactplan(dir.path(), &["agenda", "--from", "2026-11-25", "--days", "60"]);
    assert_eq!(code, Some(0));
    assert!(table.contains("moved to 2026-12-28 (on_closed = after)") && table.contains("3 items"), "{table}");

    // explain: every step, then the skipped gift.
    let (code, text, stderr) =
        contactplan(dir.path(), &["explain", "--customer", "acme", "--occasion", "birthday", "--year", "2026"]);
    assert_eq!(code, Some(0), "{stderr}");
    for needle in [
        "calendar  region DE-BY; weekend sat, sun; on_closed = after; window 08:00-18:00; jitter 600s",
        "occasion     birthday on 2026-12-25 (Fri)",
        "closed day   2026-12-25 is closed (2026-12-25 holiday 1. Weihnachtstag (DE-BY), 2026-12-26 holiday 2. Weihnachtstag (DE-BY), 2026-12-27 weekend (Sun)); moved to 2026-12-28 (on_closed = after)",
        "send time    at 09:00 local (Europe/Berlin)",
        "jitter       +",
        "due          2026-12-28T09:",
        "deadline     2026-12-29T00:00:00+01:00 (the end of the local send day)",
        "outbox key   acme/birthday/contact:pat/2026-12-25",
    ] {
        assert!(text.contains(needle), "missing `{needle}` in\n{text}");
    }
    let (_, text, _) =
        contactplan(dir.path(), &["explain", "--customer", "acme", "--occasion", "gift", "--year", "2026"]);
    assert!(text.contains("NOT SENT") && text.contains("on_closed = skip"), "{text}");
    let (code, _, stderr) = contactplan(dir.path(), &["explain", "--customer", "acme", "--occasion", "nope"]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("it has: birthday, gift, checkin"), "{stderr}");
}

#[test]
fn bad_calendar_values_are_reported_with_file_line_and_value() {
    let plan = plan_text(
        "Europe/Berlin",
        "weekend = [\"sat\", \"caturday\"]\nblackout = [\"--12-20\"]",
        &contact("pat", "1980-12-25", true),
        "[[occasion]]\nname = \"birthday\"\non = \"birthday\"\ntemplate = \"birthday\"\nbefore = \"3 business weeks\"\nwindow = \"18:00-08:00\"\n",
    );
    let dir = workspace("window = \"08:00-18:00\"", &plan);
    let (code, _, stderr) = contactplan(dir.path(), &["check"]);
    assert_eq!(code, Some(1), "{stderr}");
    for (at, message) in [
        ("acme.toml:9:19", "`caturday` is not a day of the week"),
        ("acme.toml:10:13", "`--12-20` is not a period"),
        ("acme.toml:23:10", "`3 business weeks` is not a lead time"),
        ("acme.toml:24:10", "send window `18:00-08:00` must start before it ends"),
    ] {
        let block =
            stderr.split("\n\n").find(|b| b.contains(at)).unwrap_or_else(|| panic!("no report at {at}:\n{stderr}"));
        assert!(block.contains(message) && block.contains("= hint:"), "{at}: {block}");
    }
    // The daemon's [calendar] table is checked the same way.
    let dir = workspace(
        "region = \"DE-XX\"\njitter = \"soon\"",
        &plan_text("Europe/Berlin", "", &contact("pat", "1980-12-25", true), ""),
    );
    let (code, _, stderr) = contactplan(dir.path(), &["check"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("contactplan.toml:6:10") && stderr.contains("unknown region `DE-XX`"), "{stderr}");
    assert!(stderr.contains("contactplan.toml:7:10") && stderr.contains("`soon` is not a duration"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_daemon_sends_on_the_moved_day_under_the_nominal_key() {
    use crate::helpers::{Delivery, spawn_app};
    // Jane's birthday 2027-03-14 is a Sunday; the customer is closed on weekends.
    let plan = plan_text(
        "Europe/Berlin",
        "weekend = [\"sat\", \"sun\"]\njitter = \"10m\"",
        &contact("jane", "1982-03-14", true),
        "[[occasion]]\nname = \"birthday\"\non = \"birthday\"\ntemplate = \"birthday\"\n",
    );
    let mut app = spawn_app(&[("acme", &plan)], &[], utc("2027-03-13T12:00:00Z"), Delivery::Smtp).await;
    app.tick().await;
    assert_eq!(app.tick_at("2027-03-14T08:30:00Z").await.accepted, 0, "nothing on the closed Sunday");
    assert_eq!(app.tick_at("2027-03-15T07:59:59Z").await.accepted, 0, "nothing before 09:00 Monday");
    // 09:00 CET plus a jitter below 10 minutes.
    assert_eq!(app.tick_at("2027-03-15T08:10:00Z").await.accepted, 1);
    let sender = contactplan::plan::Email::parse("team@example.com").unwrap();
    let key = "acme/birthday/contact:jane/2027-03-14";
    assert_eq!(app.smtp.messages()[0].header("Message-ID"), contactplan::mail::message_id(key, sender.domain()));
    // A restart recomputes the same key and time: nothing twice.
    app.restart().await;
    app.tick_at("2027-03-15T09:00:00Z").await;
    assert_eq!(app.smtp.messages().len(), 1);
}

#[test]
fn a_lead_time_on_a_crontab_rule_is_a_warning_not_silence() {
    let rules = "[[occasion]]\nname = \"checkin\"\non = \"every\"\ncron = \"0 9 1 * *\"\nsend = \"task\"\ntemplate = \"checkin\"\nbefore = \"3d\"\n";
    let dir = workspace("", &plan_text("Europe/Berlin", "", &contact("pat", "1980-12-25", true), rules));
    let (code, stdout, stderr) = contactplan(dir.path(), &["check"]);
    assert_eq!(code, Some(0), "a warning does not fail the check: {stderr}");
    assert!(stderr.contains("warning: `before` has no effect on `on = \"every\"` rules"), "{stderr}");
    assert!(stdout.contains("1 warnings") || stdout.contains("1 warning"), "{stdout}");
}

#[test]
fn spread_puts_1000_recipients_evenly_on_their_days_and_each_keeps_its_day() {
    let contacts: String = (0..1000).map(|i| contact(&format!("p{i:04}"), "\"--12-21\"", i == 0)).collect();
    let days_of = |spread: &str| -> BTreeMap<String, NaiveDate> {
        let rules = format!(
            "[[occasion]]\nname = \"birthday\"\non = \"birthday\"\ntemplate = \"birthday\"\nat = \"09:00\"\nspread = \"{spread}\"\n"
        );
        // A fresh parse each time: what a reload or another instance computes.
        let c =
            customer(&plan_text("Europe/Berlin", "region = \"DE\"\nweekend = [\"sat\", \"sun\"]", &contacts, &rules));
        let all = occurrences(&c, "2026-12-10T00:00:00Z", "2027-01-10T00:00:00Z");
        assert_eq!(all.len(), 1000, "each recipient once");
        all.iter()
            .map(|o| {
                assert!(o.key().ends_with("/2026-12-21"), "the key stays nominal: {}", o.key());
                assert!(o.due.utc < o.deadline, "inside its deadline");
                (o.key(), o.due.local.date_naive())
            })
            .collect()
    };
    // 2026-12-21 is a Monday: three calendar days are Mon–Wed; five open days skip Christmas
    // (Fri 25th, Sat 26th) and the weekend.
    for (spread, expected) in [
        ("3d", vec![day("2026-12-21"), day("2026-12-22"), day("2026-12-23")]),
        (
            "5 business days",
            vec![day("2026-12-21"), day("2026-12-22"), day("2026-12-23"), day("2026-12-24"), day("2026-12-28")],
        ),
    ] {
        let first = days_of(spread);
        let mut per_day: BTreeMap<NaiveDate, usize> = BTreeMap::new();
        for d in first.values() {
            *per_day.entry(*d).or_insert(0) += 1;
        }
        assert_eq!(per_day.keys().copied().collect::<Vec<_>>(), expected, "{spread}: {per_day:?}");
        let even = 1000.0 / expected.len() as f64;
        for n in per_day.values() {
            assert!((*n as f64 - even).abs() <= even * 0.2, "{spread}: within ±20 %: {per_day:?}");
        }
        assert_eq!(days_of(spread), first, "{spread}: each recipient's day is stable");
    }
}
