//! Raw TOML → model, collecting every problem with its span instead of stopping at the first.

use super::model::*;
use super::raw::*;
use crate::calendar::Crontab;
use crate::diagnostics::Diagnostic;
use chrono::{NaiveDate, NaiveTime};
use chrono_tz::Tz;
use serde_spanned::Spanned;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

/// Everything a plan is validated against; shared (read-only) by the parallel workers.
pub struct Context<'a> {
    /// Valid playbooks by name.
    pub playbooks: &'a HashMap<String, Playbook>,
    /// Playbooks that exist but have errors (plans using them are held back).
    pub broken: &'a [String],
    pub templates: &'a dyn Templates,
    /// Zone for customers and contacts that name none.
    pub default_tz: Tz,
    /// The daemon's `[calendar]` defaults, under every customer's own calendar keys.
    pub default_calendar: &'a crate::calendar::Settings,
    /// One parsed schedule per distinct expression: 100,000 plans with the same `cron`
    /// share one `Crontab` instead of holding 100,000 copies.
    pub crontabs: &'a CrontabCache,
}

/// Interns parsed crontab expressions.
#[derive(Default)]
pub struct CrontabCache(std::sync::Mutex<HashMap<Box<str>, Arc<Crontab>>>);

impl CrontabCache {
    pub fn parse(&self, expr: &str) -> Result<Arc<Crontab>, String> {
        if let Some(c) = self.0.lock().unwrap_or_else(|p| p.into_inner()).get(expr) {
            return Ok(c.clone());
        }
        let parsed = Arc::new(Crontab::parse(expr)?);
        self.0.lock().unwrap_or_else(|p| p.into_inner()).insert(expr.into(), parsed.clone());
        Ok(parsed)
    }
}

/// One source file being validated: where problems are reported.
pub struct Src<'a> {
    pub path: &'a Path,
    pub text: &'a str,
    pub diags: Vec<Diagnostic>,
}

impl<'a> Src<'a> {
    pub fn new(path: &'a Path, text: &'a str) -> Self {
        Src { path, text, diags: Vec::new() }
    }

    pub fn error<T>(&mut self, at: &Spanned<T>, msg: impl Into<String>, hint: impl Into<String>) {
        let d = Diagnostic::at(self.path, self.text, Some(at.span()), msg).hint(hint);
        self.diags.push(d);
    }

    pub fn error_span(&mut self, span: std::ops::Range<usize>, msg: impl Into<String>, hint: impl Into<String>) {
        let d = Diagnostic::at(self.path, self.text, Some(span), msg).hint(hint);
        self.diags.push(d);
    }

    fn ok(&self) -> bool {
        !self.diags.iter().any(Diagnostic::is_error)
    }
}

/// Turns a TOML parse/shape error into a diagnostic with a hint.
pub fn toml_error(path: &Path, text: &str, e: &toml::de::Error) -> Diagnostic {
    let msg = e.message().trim().to_string();
    let hint = if msg.contains("unknown field") {
        "remove the key or fix its spelling; the allowed keys are listed above (README, \"Plan format\")"
    } else if msg.contains("missing field") {
        "add the required key"
    } else if msg.contains("invalid type") {
        "check the value's type: strings need quotes, dates are written 2016-03-01 without quotes"
    } else {
        "fix the TOML syntax at this position"
    };
    Diagnostic::at(path, text, e.span(), msg).hint(hint)
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

fn parse_email(src: &mut Src, v: &Spanned<String>) -> Option<Email> {
    match Email::parse(v.get_ref().trim()) {
        Ok(e) => Some(e),
        Err(why) => {
            src.error(v, why, "write a plain address such as \"anna.mueller@example.de\"");
            None
        }
    }
}

fn parse_language(src: &mut Src, v: &Spanned<String>) -> Option<Language> {
    let l = Language::parse(v.get_ref());
    if l.is_none() {
        src.error(v, format!("unknown language `{}`", v.get_ref()), "use \"de\" or \"en\"");
    }
    l
}

fn parse_id(src: &mut Src, v: &Spanned<String>, what: &str) -> bool {
    let s = v.get_ref();
    let ok = !s.is_empty()
        && s.len() <= 128
        && s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
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
fn parse_date(src: &mut Src, v: &Spanned<toml::Value>, what: &str, month_day_ok: bool) -> Option<MonthDay> {
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

fn parse_time(src: &mut Src, v: &Spanned<toml::Value>) -> Option<NaiveTime> {
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

fn parse_lead(src: &mut Src, v: &Spanned<String>) -> Option<Lead> {
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

/// Validates the business-calendar keys of one table (customer, rule or the daemon's
/// `[calendar]`); invalid keys are reported and left unset.
fn calendar_settings(src: &mut Src, k: CalendarKeys) -> crate::calendar::Settings {
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
fn parse_duration(src: &mut Src, v: &Spanned<String>) -> Option<chrono::TimeDelta> {
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

/// A rule under construction: from scratch (playbook, new plan rule) or from a playbook rule
/// that a plan overrides field by field.
#[derive(Default, Clone)]
struct RuleBuilder {
    kind: Option<&'static str>,
    years: Option<Box<[u32]>>,
    every_years: Option<u32>,
    counts: Option<Box<[u64]>>,
    cron: Option<Arc<Crontab>>,
    date: Option<MonthDay>,
    action: Option<Action>,
    target: Option<Target>,
    template: Option<Box<str>>,
    at: Option<NaiveTime>,
    before: Option<Lead>,
    leap_day: Option<LeapDay>,
    delivery: Option<DeliveryPolicy>,
    deadline: Option<Option<chrono::TimeDelta>>,
    calendar: crate::calendar::Settings,
}

impl RuleBuilder {
    fn from_rule(r: &Rule) -> Self {
        let mut b = RuleBuilder {
            kind: Some(r.trigger.kind()),
            action: Some(r.action),
            target: Some(r.target),
            template: Some(r.template.clone()),
            at: Some(r.at),
            before: Some(r.before),
            leap_day: Some(r.leap_day),
            delivery: Some(r.delivery),
            deadline: Some(r.deadline),
            calendar: r.calendar.clone(),
            ..Default::default()
        };
        match &r.trigger {
            Trigger::Anniversary { years, every_years } => {
                b.years = Some(years.clone());
                b.every_years = *every_years;
            }
            Trigger::Orders { counts } => b.counts = Some(counts.clone()),
            Trigger::Every { cron } => b.cron = Some(cron.clone()),
            Trigger::Date(d) => b.date = Some(*d),
            Trigger::Birthday | Trigger::Handover => {}
        }
        b
    }
}

pub const KINDS: [&str; 6] = ["birthday", "anniversary", "orders", "handover", "every", "date"];

/// Applies the fields present in `raw` and builds the rule; `None` if anything was wrong.
fn build_rule(src: &mut Src, raw: &Spanned<RawRule>, base: Option<&Rule>, ctx: &Context) -> Option<Rule> {
    let templates = ctx.templates;
    let before_errors = src.diags.len();
    let r = raw.get_ref();
    let mut b = base.map(RuleBuilder::from_rule).unwrap_or_default();
    let name_ok = parse_id(src, &r.name, "occasion name");
    if let Some(on) = &r.on {
        match KINDS.iter().find(|k| **k == on.get_ref()) {
            Some(k) => b.kind = Some(k),
            None => src.error(
                on,
                format!("unknown occasion kind `{}`", on.get_ref()),
                format!("use one of: {}", KINDS.join(", ")),
            ),
        }
    }
    if let Some(y) = &r.years {
        if y.get_ref().is_empty() || y.get_ref().contains(&0) {
            src.error(y, "years must list positive whole years", "e.g. years = [1, 5, 10, 25]");
        } else {
            let mut v = y.get_ref().clone();
            v.sort_unstable();
            v.dedup();
            b.years = Some(v.into());
        }
    }
    if let Some(n) = &r.every_years {
        if *n.get_ref() == 0 {
            src.error(n, "every_years must be at least 1", "e.g. every_years = 5");
        } else {
            b.every_years = Some(*n.get_ref());
        }
    }
    if let Some(c) = &r.counts {
        if c.get_ref().is_empty() || c.get_ref().contains(&0) {
            src.error(c, "counts must list positive order counts", "e.g. counts = [10, 100, 1000]");
        } else {
            let mut v = c.get_ref().clone();
            v.sort_unstable();
            v.dedup();
            b.counts = Some(v.into());
        }
    }
    if let Some(c) = &r.cron {
        match ctx.crontabs.parse(c.get_ref()) {
            Ok(cron) => b.cron = Some(cron),
            Err(why) => src.error(
                c,
                format!("invalid cron expression `{}`: {why}", c.get_ref()),
                "write 5 crontab fields: minute hour day-of-month month day-of-week, e.g. \"0 9 * * MON\"",
            ),
        }
    }
    if let Some(d) = &r.date
        && let Some(md) = parse_date(src, d, "date", true)
    {
        b.date = Some(md);
    }
    if let Some(s) = &r.send {
        match s.get_ref().as_str() {
            "email" => b.action = Some(Action::Email),
            "task" => b.action = Some(Action::Task),
            other => src.error(
                s,
                format!("unknown send action `{other}`"),
                "use \"email\" (to the recipients) or \"task\" (a reminder to the salesperson)",
            ),
        }
    }
    if let Some(t) = &r.to {
        match t.get_ref().as_str() {
            "contacts" => b.target = Some(Target::Contacts),
            "primary" => b.target = Some(Target::Primary),
            "owner" => b.target = Some(Target::Owner),
            other => src.error(t, format!("unknown recipient `{other}`"), "use \"contacts\", \"primary\" or \"owner\""),
        }
    }
    if let Some(t) = &r.template {
        if templates.has_template(t.get_ref()) {
            b.template = Some(t.get_ref().as_str().into());
        } else {
            src.error(
                t,
                format!("unknown template `{}`", t.get_ref()),
                format!(
                    "create {}/{}/<variant>/ or use one of: {}",
                    templates.dir().display(),
                    t.get_ref(),
                    templates.names().join(", ")
                ),
            );
        }
    }
    if let Some(a) = &r.at
        && let Some(t) = parse_time(src, a)
    {
        b.at = Some(t);
    }
    if let Some(l) = &r.before
        && let Some(l) = parse_lead(src, l)
    {
        b.before = Some(l);
    }
    if let Some(l) = &r.leap_day {
        match l.get_ref().as_str() {
            "feb28" => b.leap_day = Some(LeapDay::Feb28),
            "mar1" => b.leap_day = Some(LeapDay::Mar1),
            "leap_only" => b.leap_day = Some(LeapDay::LeapOnly),
            other => src.error(
                l,
                format!("unknown leap_day policy `{other}`"),
                "use \"feb28\" (default), \"mar1\" or \"leap_only\"",
            ),
        }
    }
    if let Some(d) = &r.delivery {
        match d.get_ref().as_str() {
            "at_least_once" => b.delivery = Some(DeliveryPolicy::AtLeastOnce),
            "at_most_once" => b.delivery = Some(DeliveryPolicy::AtMostOnce),
            other => src.error(
                d,
                format!("unknown delivery policy `{other}`"),
                "use \"at_least_once\" (resend when the outcome is unknown; default) or \"at_most_once\" (never resend; ops are told)",
            ),
        }
    }
    if let Some(d) = &r.deadline
        && let Some(dur) = parse_duration(src, d)
    {
        b.deadline = Some(Some(dur));
    }
    // Calendar keys override the base rule's key by key.
    b.calendar = calendar_settings(src, r.calendar_keys()).over(&b.calendar);
    if src.diags.len() > before_errors || !name_ok {
        return None;
    }

    // Completeness and consistency, reported at the rule's name.
    let at = raw.get_ref().name.span();
    let Some(kind) = b.kind else {
        src.error_span(
            at,
            format!("occasion `{}` has no `on`", r.name.get_ref()),
            format!("add on = \"…\" ({})", KINDS.join(", ")),
        );
        return None;
    };
    let Some(template) = b.template.clone() else {
        src.error_span(
            at,
            format!("occasion `{}` has no `template`", r.name.get_ref()),
            "add template = \"<folder under templates/>\"",
        );
        return None;
    };
    let misplaced = |present: bool, field: &str, owner: &str| {
        present.then(|| format!("`{field}` applies only to `on = \"{owner}\"` rules"))
    };
    let problems = [
        misplaced(
            kind != "anniversary" && (b.years.is_some() || b.every_years.is_some()),
            "years/every_years",
            "anniversary",
        ),
        misplaced(kind != "orders" && b.counts.is_some(), "counts", "orders"),
        misplaced(kind != "every" && b.cron.is_some(), "cron", "every"),
        misplaced(kind != "date" && b.date.is_some(), "date", "date"),
    ];
    for p in problems.into_iter().flatten() {
        src.error_span(at.clone(), format!("occasion `{}`: {p}", r.name.get_ref()), "remove the key or change `on`");
    }
    let action = b.action.unwrap_or(Action::Email);
    let default_target = match kind {
        "birthday" => Target::Contacts,
        "every" | "orders" | "handover" if action == Action::Task => Target::Owner,
        _ => Target::Primary,
    };
    let target = b.target.unwrap_or(default_target);
    let trigger = match kind {
        "birthday" => {
            if target == Target::Owner {
                src.error_span(
                    at.clone(),
                    format!("occasion `{}`: birthday rules concern contacts", r.name.get_ref()),
                    "use to = \"contacts\" or \"primary\"; with send = \"task\" the salesperson gets the reminder",
                );
            }
            Trigger::Birthday
        }
        "anniversary" => {
            if b.years.is_none() && b.every_years.is_none() {
                src.error_span(
                    at.clone(),
                    format!("occasion `{}` needs `years` or `every_years`", r.name.get_ref()),
                    "e.g. years = [1, 5, 10, 25]",
                );
            }
            Trigger::Anniversary { years: b.years.clone().unwrap_or_default(), every_years: b.every_years }
        }
        "orders" => match b.counts.clone() {
            Some(counts) => Trigger::Orders { counts },
            None => {
                src.error_span(
                    at.clone(),
                    format!("occasion `{}` needs `counts`", r.name.get_ref()),
                    "e.g. counts = [10, 100, 1000]",
                );
                return None;
            }
        },
        "handover" => Trigger::Handover,
        "every" => match b.cron.clone() {
            Some(cron) => Trigger::Every { cron },
            None => {
                src.error_span(
                    at.clone(),
                    format!("occasion `{}` needs `cron`", r.name.get_ref()),
                    "e.g. cron = \"0 9 * * MON\"",
                );
                return None;
            }
        },
        _ => match b.date {
            Some(d) => Trigger::Date(d),
            None => {
                src.error_span(
                    at.clone(),
                    format!("occasion `{}` needs `date`", r.name.get_ref()),
                    "e.g. date = \"--12-01\" (yearly) or date = 2026-12-01 (once)",
                );
                return None;
            }
        },
    };
    if src.diags.len() > before_errors {
        return None;
    }
    // A lead time means nothing to a crontab (say so rather than ignore it silently).
    if kind == "every"
        && let Some(b) = &r.before
    {
        let d = Diagnostic::at(src.path, src.text, Some(b.span()), "`before` has no effect on `on = \"every\"` rules")
            .hint("remove it, or write the crontab for the earlier time")
            .warning();
        src.diags.push(d);
    }
    Some(Rule {
        name: r.name.get_ref().as_str().into(),
        trigger,
        action,
        target,
        template,
        at: b.at.unwrap_or(NaiveTime::from_hms_opt(9, 0, 0).unwrap_or_default()),
        before: b.before.unwrap_or_default(),
        leap_day: b.leap_day.unwrap_or_default(),
        delivery: b.delivery.unwrap_or_default(),
        deadline: b.deadline.flatten(),
        calendar: b.calendar,
    })
}

/// Validates a playbook file into its rules (in file order).
pub fn playbook(src: &mut Src, raw: &RawPlaybook, ctx: &Context) -> Vec<Arc<Rule>> {
    let mut rules: Vec<Arc<Rule>> = Vec::new();
    for r in &raw.occasions {
        if let Some(en) = &r.get_ref().enabled {
            src.error(
                en,
                "`enabled` belongs in a plan's override of a playbook rule",
                "remove it here; a playbook rule is enabled",
            );
        }
        if rules.iter().any(|x| *x.name == **r.get_ref().name.get_ref()) {
            src.error(
                &r.get_ref().name,
                format!("occasion `{}` is defined twice", r.get_ref().name.get_ref()),
                "give each occasion a unique name",
            );
            continue;
        }
        if let Some(rule) = build_rule(src, r, None, ctx) {
            rules.push(Arc::new(rule));
        }
    }
    rules
}

/// A loaded playbook.
#[derive(Debug, Clone)]
pub struct Playbook {
    pub rules: Arc<[Arc<Rule>]>,
}

/// Validates one customer plan. `playbooks` holds the valid playbooks by name; `broken`
/// names playbooks that exist but have errors.
pub fn plan(src: &mut Src, raw: &RawPlan, ctx: &Context) -> Option<Customer> {
    let (playbooks, broken, templates, default_tz) = (ctx.playbooks, ctx.broken, ctx.templates, ctx.default_tz);
    let c = raw.customer.get_ref();
    parse_id(src, &c.id, "customer id");
    if c.name.get_ref().trim().is_empty() {
        src.error(&c.name, "customer name is empty", "write the company name as it should appear in emails");
    }
    let since = parse_date(src, &c.since, "relationship start date `since`", false)
        .and_then(|md| NaiveDate::from_ymd_opt(md.year?, md.month, md.day));
    let owner = parse_email(src, &c.owner);
    let timezone = match &c.timezone {
        Some(tz) => parse_tz(src, tz),
        None => Some(default_tz),
    };
    let language = parse_language(src, &c.language);
    let calendar = calendar_settings(src, c.calendar_keys()).over(ctx.default_calendar);
    let phase = Phase::parse(c.phase.get_ref());
    if phase.is_none() {
        src.error(
            &c.phase,
            format!("unknown phase `{}`", c.phase.get_ref()),
            "use \"initiation\", \"growth\", \"maturity\" or \"degeneration\"",
        );
    }

    // Contacts.
    let mut contacts: Vec<Option<Contact>> = Vec::with_capacity(raw.contacts.len());
    let mut primaries = Vec::new();
    for rc in &raw.contacts {
        let rc_span = rc.span();
        let rc = rc.get_ref();
        let id_ok = parse_id(src, &rc.id, "contact id");
        if id_ok && contacts.iter().flatten().any(|x| *x.id == **rc.id.get_ref()) {
            src.error(
                &rc.id,
                format!("contact id `{}` is used twice", rc.id.get_ref()),
                "give each contact a unique id",
            );
        }
        let email = parse_email(src, &rc.email);
        let gender = match rc.gender.as_ref().map(|g| g.get_ref().as_str()) {
            None | Some("other") | Some("diverse") => Some(Gender::None),
            Some("female") => Some(Gender::Female),
            Some("male") => Some(Gender::Male),
            Some(other) => {
                if let Some(g) = &rc.gender {
                    src.error(
                        g,
                        format!("unknown gender `{other}`"),
                        "use \"female\", \"male\" or \"other\" (or leave it out for a neutral salutation)",
                    );
                }
                None
            }
        };
        let birthday = rc.birthday.as_ref().and_then(|b| parse_date(src, b, "birthday", true));
        let tone = Tone::parse(rc.tone.get_ref());
        if tone.is_none() {
            src.error(
                &rc.tone,
                format!("unknown tone `{}`", rc.tone.get_ref()),
                "use \"formal\" (Sie) or \"informal\" (du)",
            );
        }
        let language = rc.language.as_ref().map(|l| parse_language(src, l));
        let tz = rc.timezone.as_ref().map(|t| parse_tz(src, t));
        if let Some(flag) = rc.primary.as_ref().filter(|p| *p.get_ref()) {
            primaries.push((contacts.len(), rc_span.clone(), flag.span()));
        }
        if rc.name.get_ref().trim().is_empty() {
            src.error(&rc.name, "contact name is empty", "write the person's full name, e.g. \"Anna Müller\"");
        }
        let built = (|| {
            Some(Contact {
                id: id_ok.then(|| rc.id.get_ref().as_str().into())?,
                name: rc.name.get_ref().trim().into(),
                title: rc.title.as_deref().map(|t| t.trim().into()),
                gender: gender?,
                email: email?,
                birthday,
                tone: tone?,
                language: present_and_valid(language)?,
                timezone: present_and_valid(tz)?,
            })
        })();
        // `None` entries keep indices aligned with the file; they always come with an error.
        contacts.push(built);
    }
    let primary = match primaries.as_slice() {
        [(i, _, _)] => Some(*i),
        [] => {
            src.error(
                &raw.customer,
                "no contact is marked `primary = true`",
                "mark exactly one [[contact]] with primary = true",
            );
            None
        }
        [_, rest @ ..] => {
            for (_, _, flag) in rest {
                src.error_span(
                    flag.clone(),
                    "a second contact is marked `primary = true`",
                    "exactly one contact may be primary; remove primary = true from all but one",
                );
            }
            None
        }
    };

    // Rules: the playbook's, then the plan's own (overriding or disabling by name).
    let mut rules: Vec<Arc<Rule>> = Vec::new();
    let mut shared: Option<Arc<[Arc<Rule>]>> = None;
    if let Some(pb) = &c.playbook {
        match playbooks.get(pb.get_ref()) {
            Some(p) => {
                rules = p.rules.to_vec();
                shared = Some(p.rules.clone());
            }
            None if broken.contains(pb.get_ref()) => {
                src.error(
                    pb,
                    format!("playbook `{}` has errors", pb.get_ref()),
                    "fix the playbook (see its errors); this plan is not applied until then",
                );
            }
            None => {
                let mut names: Vec<&String> = playbooks.keys().collect();
                names.sort();
                src.error(
                    pb,
                    format!("unknown playbook `{}`", pb.get_ref()),
                    format!(
                        "playbooks are files in the playbooks directory; known: {}",
                        names.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
                    ),
                );
            }
        }
    }
    let mut own: Vec<&str> = Vec::new();
    for r in &raw.occasions {
        let name = r.get_ref().name.get_ref().as_str();
        if own.contains(&name) {
            src.error(
                &r.get_ref().name,
                format!("occasion `{name}` is defined twice in this plan"),
                "merge the two entries",
            );
            continue;
        }
        own.push(name);
        shared = None;
        let pos = rules.iter().position(|x| &*x.name == name);
        let enabled = r.get_ref().enabled.as_ref().is_none_or(|e| *e.get_ref());
        if !enabled {
            match pos {
                Some(i) => {
                    rules.remove(i);
                }
                None => src.error(
                    &r.get_ref().name,
                    format!("`enabled = false` for `{name}`, which the playbook does not define"),
                    "name a rule of the customer's playbook, or remove the entry",
                ),
            }
            continue;
        }
        if let Some(rule) = build_rule(src, r, pos.map(|i| &*rules[i]), ctx) {
            match pos {
                Some(i) => rules[i] = Arc::new(rule),
                None => rules.push(Arc::new(rule)),
            }
        }
    }

    if !src.ok() {
        return None;
    }
    let (since, owner, timezone, language, phase, primary) = (since?, owner?, timezone?, language?, phase?, primary?);
    let customer = Customer {
        id: c.id.get_ref().as_str().into(),
        name: c.name.get_ref().trim().into(),
        since,
        owner,
        timezone,
        language,
        phase,
        contacts: contacts.into_iter().collect::<Option<Box<[Contact]>>>()?,
        primary,
        rules: shared.unwrap_or_else(|| rules.into()),
        source: Arc::from(src.path),
        calendar,
    };
    check_template_variants(src, raw, &customer, templates);
    src.ok().then_some(customer)
}

/// Every rule must have a template variant for the language and tone of each recipient.
fn check_template_variants(src: &mut Src, raw: &RawPlan, customer: &Customer, templates: &dyn Templates) {
    // Few distinct (template, language, tone) combinations per plan: resolve each once.
    let mut seen: Vec<(&str, Language, Option<Tone>)> = Vec::new();
    for rule in customer.rules.iter() {
        for (i, contact) in customer.contacts.iter().enumerate() {
            let (lang, tone) = match rule.action {
                Action::Task => (customer.language, None),
                Action::Email if rule.target == Target::Owner => (customer.language, None),
                Action::Email => (customer.language_of(Some(contact)), Some(contact.tone)),
            };
            let combo = (&*rule.template, lang, tone);
            if seen.contains(&combo) {
                continue;
            }
            seen.push(combo);
            if !templates.has_variant(&rule.template, lang, tone) {
                let wanted = match tone {
                    Some(t) => format!("{}-{}", lang.code(), t.code()),
                    None => lang.code().to_string(),
                };
                let span = raw.contacts.get(i).map_or(raw.customer.span(), |c| c.get_ref().tone.span());
                src.error_span(
                    span,
                    format!(
                        "template `{}` has no variant `{wanted}` (needed by occasion `{}` for contact `{}`)",
                        rule.template, rule.name, contact.id
                    ),
                    format!(
                        "add {}/{}/{wanted}/ (or /{}/) with subject.txt.j2, body.txt.j2 and body.html.j2",
                        templates.dir().display(),
                        rule.template,
                        lang.code()
                    ),
                );
            }
        }
    }
}

/// An optional key: `Some(None)` when absent, `Some(Some(v))` when valid, `None` when invalid.
fn present_and_valid<T>(v: Option<Option<T>>) -> Option<Option<T>> {
    match v {
        None => Some(None),
        Some(Some(x)) => Some(Some(x)),
        Some(None) => None,
    }
}
