//! The business calendar and send-time settings of a customer or rule: which local days are
//! closed (weekend, public holidays of a region, closure dates, blackout periods), what a rule
//! does when its send day is closed (`on_closed`), the local send window and the per-recipient
//! jitter. Pure: settings in, answers about civil dates out.
//!
//! Precedence, key by key: rule → customer → daemon `[calendar]`. The most specific level that
//! sets a key wins; lists replace, they do not merge (`blackout = []` clears an inherited list).
//! Nothing is closed unless one of the levels configures it.

use super::date::MonthDay;
use super::holidays::Region;
use chrono::{Datelike, NaiveDate, NaiveTime, TimeDelta, Timelike, Weekday};
use std::sync::Arc;

/// Longest run of closed days a move (`on_closed`) or a business-day count searches through;
/// beyond it the occurrence is skipped and `explain` says why.
pub const MAX_SEARCH_DAYS: u32 = 366;
/// Largest `before = "N business days"`.
pub const MAX_BUSINESS_DAYS: u32 = 250;

/// Days of the week that are always closed: bit 0 = Monday … bit 6 = Sunday.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Weekdays(u8);

const DAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

impl Weekdays {
    /// `["sat", "sun"]`; names are case-insensitive, full English names also work.
    ///
    /// # Errors
    /// A name that is not a day of the week, or all seven days (nothing could ever be sent).
    pub fn parse<'s>(names: impl IntoIterator<Item = &'s str>) -> Result<Weekdays, String> {
        let mut bits = 0u8;
        for n in names {
            let lower = n.trim().to_ascii_lowercase();
            let i = DAY_NAMES
                .iter()
                .position(|d| lower == *d || (lower.len() > 3 && full_day_name(d) == lower))
                .ok_or_else(|| format!("`{n}` is not a day of the week"))?;
            bits |= 1 << i;
        }
        if bits == 0x7f {
            return Err("every day of the week is closed, so nothing could ever be sent".into());
        }
        Ok(Weekdays(bits))
    }

    /// Whether `d` is closed.
    pub fn contains(self, d: Weekday) -> bool {
        self.0 & (1 << d.num_days_from_monday()) != 0
    }

    /// Whether no weekday is closed.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// `sat, sun`.
    pub fn names(self) -> String {
        DAY_NAMES
            .iter()
            .enumerate()
            .filter(|(i, _)| self.0 & (1 << i) != 0)
            .map(|(_, d)| *d)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn full_day_name(short: &str) -> &'static str {
    match short {
        "mon" => "monday",
        "tue" => "tuesday",
        "wed" => "wednesday",
        "thu" => "thursday",
        "fri" => "friday",
        "sat" => "saturday",
        _ => "sunday",
    }
}

/// A closure date: yearly (`--12-24`) or once (`2026-12-24`). Parsed from `YYYY-MM-DD` or
/// `--MM-DD`.
///
/// # Errors
/// Anything else, or a day that does not exist (`--02-30`; `--02-29` is allowed).
pub fn parse_day(s: &str) -> Result<MonthDay, String> {
    let s = s.trim();
    let bad = || format!("`{s}` is not a date (YYYY-MM-DD) or a yearly day (--MM-DD)");
    if let Some(rest) = s.strip_prefix("--") {
        let (m, d) = rest.split_once('-').ok_or_else(bad)?;
        let (m, d): (u32, u32) = (m.parse().map_err(|_| bad())?, d.parse().map_err(|_| bad())?);
        // 2000 is a leap year, so --02-29 is a valid yearly day.
        NaiveDate::from_ymd_opt(2000, m, d).ok_or_else(bad)?;
        return Ok(MonthDay { month: m, day: d, year: None });
    }
    let d = NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(|_| bad())?;
    Ok(MonthDay { month: d.month(), day: d.day(), year: Some(d.year()) })
}

fn day_matches(md: &MonthDay, date: NaiveDate) -> bool {
    md.month == date.month() && md.day == date.day() && md.year.is_none_or(|y| y == date.year())
}

fn show_day(md: &MonthDay) -> String {
    match md.year {
        Some(y) => format!("{y:04}-{:02}-{:02}", md.month, md.day),
        None => format!("--{:02}-{:02}", md.month, md.day),
    }
}

/// A blackout period, both ends inclusive: yearly (`--12-20..--01-06`, may cross New Year) or
/// once (`2026-08-01..2026-08-15`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Blackout {
    /// First closed day.
    pub start: MonthDay,
    /// Last closed day.
    pub end: MonthDay,
}

impl Blackout {
    /// Parses `FIRST..LAST`, each end `YYYY-MM-DD` or `--MM-DD`.
    ///
    /// # Errors
    /// No `..`, an end that is not a date, a yearly end mixed with a dated one, or a dated period
    /// that ends before it starts.
    pub fn parse(s: &str) -> Result<Blackout, String> {
        let (a, b) = s
            .split_once("..")
            .ok_or_else(|| format!("`{s}` is not a period; write FIRST..LAST such as \"--12-20..--01-06\""))?;
        let (start, end) = (parse_day(a)?, parse_day(b)?);
        match (start.year, end.year) {
            (None, None) => Ok(Blackout { start, end }),
            (Some(_), Some(_)) => {
                let first = NaiveDate::from_ymd_opt(start.year.unwrap_or(0), start.month, start.day);
                let last = NaiveDate::from_ymd_opt(end.year.unwrap_or(0), end.month, end.day);
                if first > last {
                    return Err(format!("period `{s}` ends before it starts"));
                }
                Ok(Blackout { start, end })
            }
            _ => Err(format!("period `{s}` mixes a yearly day (--MM-DD) with a dated day (YYYY-MM-DD)")),
        }
    }

    /// Whether the local date `date` lies in the period (both ends included).
    pub fn contains(&self, date: NaiveDate) -> bool {
        let md = (date.month(), date.day());
        let (s, e) = ((self.start.month, self.start.day), (self.end.month, self.end.day));
        match (self.start.year, self.end.year) {
            (Some(sy), Some(ey)) => {
                let d = (date.year(), md.0, md.1);
                (sy, s.0, s.1) <= d && d <= (ey, e.0, e.1)
            }
            // Yearly; when the start lies after the end the period crosses New Year.
            _ if s <= e => s <= md && md <= e,
            _ => md >= s || md <= e,
        }
    }
}

impl std::fmt::Display for Blackout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}..{}", show_day(&self.start), show_day(&self.end))
    }
}

/// What a rule does when its send day is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnClosed {
    /// Send on the last open day before it.
    Before,
    /// Send on the first open day after it (the default).
    #[default]
    After,
    /// Do not send this occurrence.
    Skip,
    /// Send on the closed day anyway (business-day lead times still count open days).
    Ignore,
}

impl OnClosed {
    /// Parses `before`, `after`, `skip` or `ignore`.
    ///
    /// # Errors
    /// Any other word.
    pub fn parse(s: &str) -> Result<OnClosed, String> {
        match s {
            "before" => Ok(OnClosed::Before),
            "after" => Ok(OnClosed::After),
            "skip" => Ok(OnClosed::Skip),
            "ignore" => Ok(OnClosed::Ignore),
            other => Err(format!("unknown on_closed policy `{other}`")),
        }
    }

    /// The word in configs and adjustments.
    pub fn code(self) -> &'static str {
        match self {
            OnClosed::Before => "before",
            OnClosed::After => "after",
            OnClosed::Skip => "skip",
            OnClosed::Ignore => "ignore",
        }
    }
}

/// Local send hours `"08:00-18:00"`: sends happen at or after the start and no later than the
/// end. The end may be `24:00`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Seconds after local midnight of the first allowed send time.
    pub start: u32,
    /// Seconds after local midnight of the last allowed send time (at most 86,400).
    pub end: u32,
}

impl Window {
    /// Parses `"HH:MM-HH:MM"`.
    ///
    /// # Errors
    /// A malformed time, or a start not before the end (no windows across midnight).
    pub fn parse(s: &str) -> Result<Window, String> {
        let bad = || format!("`{s}` is not a send window; write \"HH:MM-HH:MM\" such as \"08:00-18:00\"");
        let (a, b) = s.trim().split_once('-').ok_or_else(bad)?;
        let secs = |t: &str| -> Option<u32> {
            let t = t.trim();
            if t == "24:00" {
                return Some(86_400);
            }
            NaiveTime::parse_from_str(t, "%H:%M").ok().map(|t| t.num_seconds_from_midnight())
        };
        let (start, end) = (secs(a).ok_or_else(bad)?, secs(b).ok_or_else(bad)?);
        if start >= end {
            return Err(format!(
                "send window `{s}` must start before it ends (windows across midnight are not supported)"
            ));
        }
        Ok(Window { start, end })
    }

    /// Whether `secs` (seconds after local midnight) lies in the window, both ends included.
    pub fn contains(&self, secs: u32) -> bool {
        self.start <= secs && secs <= self.end
    }
}

impl std::fmt::Display for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hm = |s: u32| format!("{:02}:{:02}", s / 3600, s % 3600 / 60);
        write!(f, "{}-{}", hm(self.start), hm(self.end))
    }
}

/// `"15m"`, `"2h"`, `"90s"`, `"0m"`: the jitter spread in seconds (at most 12 hours).
///
/// # Errors
/// No number, a unit other than seconds, minutes or hours, or more than 12 hours.
pub fn parse_jitter(s: &str) -> Result<u32, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u32 = num.parse().map_err(|_| format!("`{s}` is not a duration such as \"15m\""))?;
    let secs = match unit.trim() {
        "s" | "sec" | "seconds" => Some(n),
        "m" | "min" | "minutes" => n.checked_mul(60),
        "h" | "hours" => n.checked_mul(3600),
        _ => None,
    }
    .filter(|s| *s <= 12 * 3600);
    secs.ok_or_else(|| {
        format!("`{s}` is not a jitter spread; write seconds, minutes or hours up to 12h such as \"15m\"")
    })
}

/// Hints shown with a parse error, one per key.
pub mod hints {
    /// For `region`.
    pub const REGION: &str = "use \"DE\", a German state such as \"DE-BY\" (DE-BW … DE-TH), a local variant (DE-BY-CATHOLIC, DE-SN-CATHOLIC, DE-TH-CATHOLIC, DE-BY-AUGSBURG) or \"none\"";
    /// For `weekend`.
    pub const WEEKEND: &str = "list closed weekdays such as [\"sat\", \"sun\"] (or [] for none)";
    /// For `closed`.
    pub const CLOSED: &str = "list dates such as [2026-12-24, \"--12-31\"] (a date once, \"--MM-DD\" every year)";
    /// For `blackout`.
    pub const BLACKOUT: &str =
        "list periods such as [\"--12-20..--01-06\", \"2026-08-01..2026-08-15\"] (both ends included)";
    /// For `on_closed`.
    pub const ON_CLOSED: &str = "use \"after\" (first open day after; default), \"before\" (last open day before), \"skip\" or \"ignore\" (send anyway)";
    /// For `window`.
    pub const WINDOW: &str = "write local hours such as \"08:00-18:00\" (start before end; \"24:00\" allowed as end)";
    /// For `jitter`.
    pub const JITTER: &str = "write a spread such as \"15m\", \"2h\" or \"0m\" (at most 12h)";
}

/// Calendar and send-time settings of one level (daemon, customer or rule); `None` inherits.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Settings {
    /// Public holidays of this region are closed.
    pub region: Option<Region>,
    /// These weekdays are closed.
    pub weekend: Option<Weekdays>,
    /// Extra closure dates (yearly or once); shared by the customers that inherit them.
    pub closed: Option<Arc<[MonthDay]>>,
    /// Blackout periods (yearly or once).
    pub blackout: Option<Arc<[Blackout]>>,
    /// What a rule does when its send day is closed.
    pub on_closed: Option<OnClosed>,
    /// Local hours sends must fall in.
    pub window: Option<Window>,
    /// Spread of the per-recipient send-time offset, in seconds.
    pub jitter: Option<u32>,
}

impl Settings {
    /// These settings, with every unset key taken from `fallback`.
    pub fn over(&self, fallback: &Settings) -> Settings {
        Settings {
            region: self.region.or(fallback.region),
            weekend: self.weekend.or(fallback.weekend),
            closed: self.closed.clone().or_else(|| fallback.closed.clone()),
            blackout: self.blackout.clone().or_else(|| fallback.blackout.clone()),
            on_closed: self.on_closed.or(fallback.on_closed),
            window: self.window.or(fallback.window),
            jitter: self.jitter.or(fallback.jitter),
        }
    }

    /// Whether no key is set.
    pub fn is_empty(&self) -> bool {
        *self == Settings::default()
    }
}

/// Why a day is closed (no allocation: a closed day is looked at often).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closure {
    /// A listed closure date.
    Date,
    /// Inside a blackout period.
    Blackout(Blackout),
    /// A public holiday (its name) of the region.
    Holiday(&'static str, Region),
    /// A closed weekday.
    Weekend(Weekday),
}

impl std::fmt::Display for Closure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Closure::Date => write!(f, "closure date"),
            Closure::Blackout(b) => write!(f, "blackout {b}"),
            Closure::Holiday(name, region) => write!(f, "holiday {name} ({})", region.code()),
            Closure::Weekend(d) => write!(f, "weekend ({d})"),
        }
    }
}

/// A run of consecutive closed days with the same reason, for adjustments and `explain`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ClosedSpan {
    /// First closed day of the run.
    pub from: NaiveDate,
    /// Last closed day of the run.
    pub to: NaiveDate,
    /// The reason, written as text, e.g. "holiday Neujahr (DE-BY)".
    #[serde(serialize_with = "as_text")]
    pub why: Closure,
}

fn as_text<S: serde::Serializer>(c: &Closure, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(c)
}

impl std::fmt::Display for ClosedSpan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.from == self.to {
            write!(f, "{} {}", self.from, self.why)
        } else {
            write!(f, "{}..{} {}", self.from, self.to, self.why)
        }
    }
}

/// Adds `date` (closed for `why`) to a list of runs, joining it to an adjacent run.
fn note_closed(spans: &mut Vec<ClosedSpan>, date: NaiveDate, why: Closure) {
    if let Some(last) = spans.last_mut()
        && last.why == why
        && ((last.to + TimeDelta::days(1)) == date || (last.from - TimeDelta::days(1)) == date)
    {
        last.from = last.from.min(date);
        last.to = last.to.max(date);
        return;
    }
    spans.push(ClosedSpan { from: date, to: date, why });
}

/// The effective calendar of one rule for one customer (rule settings over customer settings,
/// which already include the daemon defaults). Cheap to build: it only borrows.
#[derive(Debug, Clone, Copy)]
pub struct Calendar<'a> {
    /// Whose public holidays are closed (`Region::None`: none).
    region: Region,
    /// Weekdays that are always closed.
    weekend: Weekdays,
    /// Extra closure dates, borrowed from the settings.
    closed: &'a [MonthDay],
    /// Blackout periods, borrowed from the settings.
    blackout: &'a [Blackout],
    /// What the rule does on a closed send day.
    pub on_closed: OnClosed,
    /// Local send hours, if any.
    pub window: Option<Window>,
    /// Jitter spread in seconds (0 = none).
    pub jitter: u32,
}

/// Direction of a move off a closed day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Towards earlier days.
    Before,
    /// Towards later days.
    After,
}

impl<'a> Calendar<'a> {
    /// The rule's settings over the customer's (which already include the daemon's); an unset key
    /// everywhere means: no region, no weekend, no closure dates or blackouts, `after`, no window,
    /// no jitter.
    pub fn new(rule: &'a Settings, customer: &'a Settings) -> Calendar<'a> {
        Calendar {
            region: rule.region.or(customer.region).unwrap_or(Region::None),
            weekend: rule.weekend.or(customer.weekend).unwrap_or_default(),
            closed: rule.closed.as_deref().or(customer.closed.as_deref()).unwrap_or(&[]),
            blackout: rule.blackout.as_deref().or(customer.blackout.as_deref()).unwrap_or(&[]),
            on_closed: rule.on_closed.or(customer.on_closed).unwrap_or_default(),
            window: rule.window.or(customer.window),
            jitter: rule.jitter.or(customer.jitter).unwrap_or(0),
        }
    }

    /// True when some day can be closed at all.
    pub fn has_closures(&self) -> bool {
        self.region != Region::None || !self.weekend.is_empty() || !self.closed.is_empty() || !self.blackout.is_empty()
    }

    /// Why `date` is closed, or `None` when it is open. The most specific reason wins: a
    /// closure date, then a blackout, then a holiday, then the weekend.
    pub fn closure(&self, date: NaiveDate) -> Option<Closure> {
        if self.closed.iter().any(|md| day_matches(md, date)) {
            return Some(Closure::Date);
        }
        if let Some(b) = self.blackout.iter().find(|b| b.contains(date)) {
            return Some(Closure::Blackout(*b));
        }
        if let Some(name) = super::holidays::holiday(self.region, date) {
            return Some(Closure::Holiday(name, self.region));
        }
        let wd = date.weekday();
        self.weekend.contains(wd).then_some(Closure::Weekend(wd))
    }

    /// Whether `date` (a local date) is open; every day is open when nothing can be closed.
    pub fn is_open(&self, date: NaiveDate) -> bool {
        !self.has_closures() || self.closure(date).is_none()
    }

    /// The nearest open day strictly before or after `date`, with the closed days passed over
    /// (including `date` itself when it is closed). `None` when none lies within
    /// [`MAX_SEARCH_DAYS`].
    pub fn move_off(&self, date: NaiveDate, dir: Direction) -> Option<(NaiveDate, Vec<ClosedSpan>)> {
        let step = match dir {
            Direction::Before => TimeDelta::days(-1),
            Direction::After => TimeDelta::days(1),
        };
        let mut spans = Vec::new();
        if let Some(c) = self.closure(date) {
            note_closed(&mut spans, date, c);
        }
        let mut d = date;
        for _ in 0..MAX_SEARCH_DAYS {
            d = d.checked_add_signed(step)?;
            match self.closure(d) {
                None => return Some((d, spans)),
                Some(c) => note_closed(&mut spans, d, c),
            }
        }
        None
    }

    /// The `n`th open day strictly before `date` (`before = "N business days"`), with the
    /// closed days passed over. `None` when fewer than `n` open days lie within twice
    /// [`MAX_SEARCH_DAYS`].
    pub fn business_days_before(&self, date: NaiveDate, n: u32) -> Option<(NaiveDate, Vec<ClosedSpan>)> {
        let mut spans = Vec::new();
        let (mut d, mut left) = (date, n);
        for _ in 0..2 * MAX_SEARCH_DAYS {
            d = d.pred_opt()?;
            match self.has_closures().then(|| self.closure(d)).flatten() {
                None => {
                    left -= 1;
                    if left == 0 {
                        return Some((d, spans));
                    }
                }
                Some(c) => note_closed(&mut spans, d, c),
            }
        }
        None
    }

    /// Number of consecutive closed days next to `date` in direction `dir`, starting with
    /// `date` itself (0 when it is open); bounded by [`MAX_SEARCH_DAYS`]. Used to widen the
    /// scan of crontab rules so occurrences moved into a window from outside are found.
    pub fn closed_run(&self, date: NaiveDate, dir: Direction) -> u32 {
        if !self.has_closures() {
            return 0;
        }
        let mut d = date;
        for n in 0..MAX_SEARCH_DAYS {
            if self.closure(d).is_none() {
                return n;
            }
            d = match dir {
                Direction::Before => d.pred_opt(),
                Direction::After => d.succ_opt(),
            }
            .unwrap_or(d);
        }
        MAX_SEARCH_DAYS
    }

    /// A short description for `explain`: only what is configured.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if self.region != Region::None {
            parts.push(format!("region {}", self.region.code()));
        }
        if !self.weekend.is_empty() {
            parts.push(format!("weekend {}", self.weekend.names()));
        }
        if !self.closed.is_empty() {
            parts.push(format!("closed {}", self.closed.iter().map(show_day).collect::<Vec<_>>().join(", ")));
        }
        if !self.blackout.is_empty() {
            parts.push(format!(
                "blackout {}",
                self.blackout.iter().map(|b| b.to_string()).collect::<Vec<_>>().join(", ")
            ));
        }
        if self.has_closures() {
            parts.push(format!("on_closed = {}", self.on_closed.code()));
        } else {
            parts.push("no closed days".into());
        }
        if let Some(w) = self.window {
            parts.push(format!("window {w}"));
        }
        if self.jitter > 0 {
            parts.push(format!("jitter {}s", self.jitter));
        }
        parts.join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn blackouts_cross_new_year_and_dated_ones_do_not_repeat() {
        let b = Blackout::parse("--12-20..--01-06").unwrap();
        for (day, inside) in [
            ("2026-12-19", false),
            ("2026-12-20", true),
            ("2027-01-01", true),
            ("2027-01-06", true),
            ("2027-01-07", false),
            ("2027-06-01", false),
        ] {
            assert_eq!(b.contains(d(day)), inside, "{day}");
        }
        let once = Blackout::parse("2026-08-01..2026-08-15").unwrap();
        assert!(once.contains(d("2026-08-15")) && !once.contains(d("2027-08-10")));
        assert!(Blackout::parse("2026-08-15..2026-08-01").unwrap_err().contains("ends before"));
        assert!(Blackout::parse("--12-20..2027-01-06").unwrap_err().contains("mixes"));
        assert!(Blackout::parse("--12-20").is_err());
        assert_eq!(b.to_string(), "--12-20..--01-06");
    }

    #[test]
    fn settings_parse_with_reasons() {
        assert_eq!(Weekdays::parse(["Sat", "sunday"]).unwrap().names(), "sat, sun");
        assert!(Weekdays::parse(["mon", "tue", "wed", "thu", "fri", "sat", "sun"]).is_err());
        assert!(Weekdays::parse(["caturday"]).is_err());
        assert_eq!(Window::parse("08:00-24:00").unwrap(), Window { start: 8 * 3600, end: 86_400 });
        assert!(Window::parse("18:00-08:00").unwrap_err().contains("before it ends"));
        assert!(Window::parse("8-18").is_err());
        assert_eq!(parse_jitter("15m"), Ok(900));
        assert_eq!(parse_jitter("0m"), Ok(0));
        assert!(parse_jitter("13h").is_err() && parse_jitter("soon").is_err());
        assert_eq!(parse_day("--02-29").unwrap(), MonthDay { month: 2, day: 29, year: None });
        assert!(parse_day("--02-30").is_err() && parse_day("2027-02-29").is_err());
    }

    #[test]
    fn moves_and_business_days_pass_over_closed_days() {
        let customer = Settings {
            region: Some(Region::parse("DE-BY").unwrap()),
            weekend: Some(Weekdays::parse(["sat", "sun"]).unwrap()),
            ..Default::default()
        };
        let rule = Settings::default();
        let cal = Calendar::new(&rule, &customer);
        // 2026-12-25 (Fri) and 26 (Sat) are holidays, 27 is a Sunday.
        let (to, spans) = cal.move_off(d("2026-12-25"), Direction::After).unwrap();
        assert_eq!(to, d("2026-12-28"));
        let text: Vec<String> = spans.iter().map(|s| s.to_string()).collect();
        assert_eq!(
            text,
            [
                "2026-12-25 holiday 1. Weihnachtstag (DE-BY)",
                "2026-12-26 holiday 2. Weihnachtstag (DE-BY)",
                "2026-12-27 weekend (Sun)"
            ]
        );
        assert_eq!(cal.move_off(d("2026-12-25"), Direction::Before).unwrap().0, d("2026-12-24"));
        // 3 business days before Tue 2027-01-05: Mon 4, (Sun 3, Sat 2), Fri 1 is Neujahr, Thu 31, Wed 30.
        assert_eq!(cal.business_days_before(d("2027-01-05"), 3).unwrap().0, d("2026-12-30"));
        assert_eq!(cal.closed_run(d("2026-12-25"), Direction::After), 3);
        assert_eq!(cal.closed_run(d("2026-12-24"), Direction::After), 0);
        // Nothing configured: nothing is closed; business days are calendar days.
        let none = Settings::default();
        let open = Calendar::new(&none, &none);
        assert!(!open.has_closures() && open.is_open(d("2026-12-25")));
        assert_eq!(open.business_days_before(d("2027-01-05"), 3).unwrap().0, d("2027-01-02"));
    }

    #[test]
    fn rule_settings_win_key_by_key() {
        let daemon =
            Settings { window: Some(Window::parse("08:00-18:00").unwrap()), jitter: Some(600), ..Default::default() };
        let customer =
            Settings { jitter: Some(60), on_closed: Some(OnClosed::Before), ..Default::default() }.over(&daemon);
        let rule = Settings { on_closed: Some(OnClosed::Skip), blackout: Some(Arc::from([])), ..Default::default() };
        let cal = Calendar::new(&rule, &customer);
        assert_eq!((cal.on_closed, cal.jitter, cal.window), (OnClosed::Skip, 60, daemon.window));
        assert!(!cal.has_closures());
    }
}
