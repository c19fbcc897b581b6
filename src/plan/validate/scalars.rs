//! Single values as ops write them, each checked with its own message and hint: time zones,
//! addresses, languages, ids, dates, times of day, lead times, durations, and the
//! business-calendar keys (`[customer]`, `[[occasion]]` and the daemon's `[calendar]` share
//! them).

use super::Src;
use crate::calendar::MonthDay;
use crate::diagnostics::Diagnostic;
use crate::plan::model::{Email, Language, Lead};
use crate::plan::raw::{CalendarKeys, RawCalendar};
use chrono::{NaiveDate, NaiveTime};
use chrono_tz::Tz;
use serde_spanned::Spanned;
use std::path::Path;

/// A text that reaches an e-mail header or a template (a name, a title, a salutation): an error
/// when it has a control character or more than `max` characters; whether it is fine.
pub(super) fn check_text(src: &mut Src, v: &Spanned<String>, what: &str, max: usize) -> bool {
    let Some(why) = crate::plan::model::text_problem(v.get_ref(), max) else { return true };
    let hint = if why.starts_with("contains") {
        "this value reaches e-mail headers and greetings: write it on one line, without control characters (TOML escapes such as \\n, \\t, \\u0000 or \\u001b)"
    } else {
        "this value reaches e-mail headers and greetings: shorten it"
    };
    src.error(v, format!("{what} {why}"), hint);
    false
}

pub fn parse_tz(src: &mut Src, v: &Spanned<String>) -> Option<Tz> {
    match v.get_ref().parse::<Tz>() {
        Ok(tz) => Some(tz),
        Err(_) => {
            src.error(
                v,
                format!("unknown time zone `{}`", v.get_ref()),
                "use an IANA zone name such as \"Europe/Berlin\" or \"America/New_York\"",
            );
            None
        }
    }
}

pub(super) fn parse_email(src: &mut Src, v: &Spanned<String>) -> Option<Email> {
    match Email::parse(v.get_ref().trim()) {
        Ok(e) => Some(e),
        Err(why) => {
            src.error(v, why, "write a plain address such as \"anna.mueller@example.de\"");
            None
        }
    }
}

pub(super) fn parse_language(src: &mut Src, v: &Spanned<String>) -> Option<Language> {
    let l = Language::parse(v.get_ref());
    if l.is_none() {
        src.error(v, format!("unknown language `{}`", v.get_ref()), "use \"de\" or \"en\"");
    }
    l
}

pub(super) fn parse_id(src: &mut Src, v: &Spanned<String>, what: &str) -> bool {
    let s = v.get_ref();
    let ok = crate::plan::is_id(s);
    if !ok {
        src.error(
            v,
            format!("invalid {what} `{s}`"),
            "use 1–128 ASCII letters, digits, '-', '_' or '.', starting with a letter or digit",
        );
    }
    ok
}

/// A TOML date (`2016-03-01`) or, where `month_day_ok`, a string `--MM-DD`.
pub(super) fn parse_date(src: &mut Src, v: &Spanned<toml::Value>, what: &str, month_day_ok: bool) -> Option<MonthDay> {
    let hint = if month_day_ok {
        "write a date like 1980-05-17 (no quotes), or \"--05-17\" when the year is unknown"
    } else {
        "write a date like 2016-03-01 (no quotes)"
    };
    match v.get_ref() {
        toml::Value::Datetime(dt) if dt.time.is_none() && dt.offset.is_none() => {
            let d = dt.date?;
            Some(MonthDay { month: d.month.into(), day: d.day.into(), year: Some(d.year.into()) })
        }
        toml::Value::String(s) if month_day_ok => {
            let parsed = s
                .strip_prefix("--")
                .and_then(|r| r.split_once('-'))
                .filter(|(m, d)| m.len() == 2 && d.len() == 2)
                .and_then(|(m, d)| Some((m.parse::<u32>().ok()?, d.parse::<u32>().ok()?)));
            match parsed {
                // 2000 is a leap year, so Feb 29 is a valid month-day.
                Some((m, d)) if NaiveDate::from_ymd_opt(2000, m, d).is_some() => {
                    Some(MonthDay { month: m, day: d, year: None })
                }
                _ => {
                    src.error(v, format!("`{s}` is not a valid {what}"), hint);
                    None
                }
            }
        }
        other => {
            src.error(v, format!("`{other}` is not a valid {what}"), hint);
            None
        }
    }
}

pub(super) fn parse_time(src: &mut Src, v: &Spanned<toml::Value>) -> Option<NaiveTime> {
    let t = match v.get_ref() {
        toml::Value::String(s) => NaiveTime::parse_from_str(s, "%H:%M").ok(),
        toml::Value::Datetime(dt) if dt.date.is_none() && dt.offset.is_none() => {
            dt.time.and_then(|t| NaiveTime::from_hms_opt(t.hour.into(), t.minute.into(), t.second.unwrap_or(0).into()))
        }
        _ => None,
    };
    if t.is_none() {
        src.error(
            v,
            format!("`{}` is not a local time of day", v.get_ref()),
            "write \"09:00\" (24-hour, local to the recipient)",
        );
    }
    t
}

pub(super) fn parse_lead(src: &mut Src, v: &Spanned<String>) -> Option<Lead> {
    let s = v.get_ref().trim();
    let number = |rest: &str| rest.trim().parse::<u32>().ok();
    let business = s
        .strip_suffix("business days")
        .or_else(|| s.strip_suffix("business day"))
        .and_then(number)
        .filter(|n| (1..=crate::calendar::business::MAX_BUSINESS_DAYS).contains(n));
    if let Some(n) = business {
        return Some(Lead::BusinessDays(n));
    }
    let num = s.strip_suffix("days").or_else(|| s.strip_suffix("day")).or_else(|| s.strip_suffix('d')).and_then(number);
    match num {
        Some(n) if n <= 366 => Some(if n == 0 { Lead::None } else { Lead::Days(n) }),
        _ => {
            src.error(
                v,
                format!("`{s}` is not a lead time"),
                "write calendar days such as \"14d\" (0 to 366) or open days such as \"3 business days\" (1 to 250)",
            );
            None
        }
    }
}

/// `spread`: `"3d"`/`"3 days"` (calendar days) or `"3 business days"` (open days), 1 to
/// [`MAX_SPREAD_DAYS`]; `"1d"` is no spread.
pub(super) fn parse_spread(src: &mut Src, v: &Spanned<String>) -> Option<Lead> {
    let s = v.get_ref().trim();
    let number = |rest: &str| rest.trim().parse::<u32>().ok().filter(|n| (1..=MAX_SPREAD_DAYS).contains(n));
    if let Some(n) = s.strip_suffix("business days").or_else(|| s.strip_suffix("business day")).and_then(number) {
        return Some(if n == 1 { Lead::None } else { Lead::BusinessDays(n) });
    }
    match s.strip_suffix("days").or_else(|| s.strip_suffix("day")).or_else(|| s.strip_suffix('d')).and_then(number) {
        Some(n) => Some(if n == 1 { Lead::None } else { Lead::Days(n) }),
        None => {
            src.error(
                v,
                format!("`{s}` is not a spread"),
                format!(
                    "the days to spread a rule's sends over, per recipient: calendar days such as \"3d\" or open days such as \"3 business days\" (1 to {MAX_SPREAD_DAYS})"
                ),
            );
            None
        }
    }
}

/// The longest `spread`, in days.
pub const MAX_SPREAD_DAYS: u32 = 31;

/// Validates the business-calendar keys of one table (customer, rule or the daemon's
/// `[calendar]`); invalid keys are reported and left unset.
pub(super) fn calendar_settings(src: &mut Src, k: CalendarKeys) -> crate::calendar::Settings {
    use crate::calendar::business::{self, Blackout, OnClosed, Weekdays, Window, hints};
    use crate::calendar::{Region, Settings};
    fn one<T>(
        src: &mut Src,
        v: Option<&Spanned<String>>,
        parse: fn(&str) -> Result<T, String>,
        hint: &str,
    ) -> Option<T> {
        let v = v?;
        parse(v.get_ref()).map_err(|why| src.error(v, why, hint)).ok()
    }
    /// Each element parsed; `None` (and every bad element reported) when any is invalid.
    fn each<V, T>(
        src: &mut Src,
        list: Option<&Spanned<Vec<Spanned<V>>>>,
        parse: impl Fn(&V) -> Result<T, String>,
        hint: &str,
    ) -> Option<Vec<T>> {
        let mut out = Vec::new();
        let mut ok = true;
        for item in list?.get_ref() {
            match parse(item.get_ref()) {
                Ok(t) => out.push(t),
                Err(why) => {
                    src.error(item, why, hint);
                    ok = false;
                }
            }
        }
        ok.then_some(out)
    }
    // Each name is checked at its own position; the whole list once more (not every day).
    let weekend =
        match each(src, k.weekend, |s: &String| Weekdays::parse([s.as_str()]).map(|_| s.clone()), hints::WEEKEND) {
            Some(names) => match Weekdays::parse(names.iter().map(String::as_str)) {
                Ok(w) => Some(w),
                Err(why) => {
                    if let Some(v) = k.weekend {
                        src.error(v, why, hints::WEEKEND);
                    }
                    None
                }
            },
            None => None,
        };
    let closed = each(
        src,
        k.closed,
        |v: &toml::Value| match v {
            toml::Value::Datetime(dt) if dt.time.is_none() && dt.offset.is_none() => {
                business::parse_day(&dt.to_string())
            }
            toml::Value::String(s) => business::parse_day(s),
            other => Err(format!("`{other}` is not a closure date")),
        },
        hints::CLOSED,
    );
    Settings {
        region: one(src, k.region, Region::parse, hints::REGION),
        weekend,
        closed: closed.map(Into::into),
        blackout: each(src, k.blackout, |s: &String| Blackout::parse(s), hints::BLACKOUT).map(Into::into),
        on_closed: one(src, k.on_closed, OnClosed::parse, hints::ON_CLOSED),
        window: one(src, k.window, Window::parse, hints::WINDOW),
        jitter: one(src, k.jitter, business::parse_jitter, hints::JITTER),
    }
}

/// Validates the daemon config's `[calendar]` table (`path`/`text` name the config file).
///
/// # Errors
/// Every problem in the table (unknown region or weekday, malformed date, blackout, window or
/// jitter, unknown `on_closed`), each with its line in `text`.
pub fn calendar_table(
    path: &Path,
    text: &str,
    raw: &RawCalendar,
) -> Result<crate::calendar::Settings, Vec<Diagnostic>> {
    let mut src = Src::new(path, text);
    let settings = calendar_settings(&mut src, raw.calendar_keys());
    if src.diags.is_empty() { Ok(settings) } else { Err(src.diags) }
}

/// `"90m"`, `"4h"`, `"2d"`: a positive duration of at most 31 days.
pub(super) fn parse_duration(src: &mut Src, v: &Spanned<String>) -> Option<chrono::TimeDelta> {
    let s = v.get_ref().trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: i64 = num.parse().unwrap_or(0);
    let d = match unit.trim() {
        "m" | "min" | "minutes" => chrono::TimeDelta::try_minutes(n),
        "h" | "hours" => chrono::TimeDelta::try_hours(n),
        "d" | "days" => chrono::TimeDelta::try_days(n),
        _ => None,
    }
    .filter(|d| *d > chrono::TimeDelta::zero() && *d <= chrono::TimeDelta::days(31));
    if d.is_none() {
        src.error(
            v,
            format!("`{s}` is not a duration"),
            "write minutes, hours or days such as \"90m\", \"4h\" or \"2d\" (up to 31 days)",
        );
    }
    d
}
