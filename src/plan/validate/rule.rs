//! One `[[occasion]]` entry into a [`Rule`]: every key parsed and reported on its own
//! (`apply_keys`), then completeness and consistency at the rule's name (`complete`). A plan
//! may override a playbook rule field by field, so a rule is built over a base. Playbooks are
//! lists of such rules.

use super::scalars::{calendar_settings, parse_date, parse_duration, parse_id, parse_lead, parse_spread, parse_time};
use super::{Context, Src};
use crate::calendar::{Crontab, LeapDay, MonthDay};
use crate::diagnostics::Diagnostic;
use crate::plan::model::{
    Action, DeliveryPolicy, Lead, OnMultiple, OrderMilestones, Phase, Rule, Target, Trigger, TriggerKind,
};
use crate::plan::raw::{RawPlaybook, RawRule};
use chrono::NaiveTime;
use serde_spanned::Spanned;
use std::sync::Arc;

/// A rule under construction: from scratch (playbook, new plan rule) or from a playbook rule
/// that a plan overrides field by field.
#[derive(Default, Clone)]
struct RuleBuilder {
    kind: Option<TriggerKind>,
    years: Option<Box<[u32]>>,
    every_years: Option<u32>,
    counts: Option<Box<[u64]>>,
    every_count: Option<u64>,
    revenue: Option<Box<[u64]>>,
    on_multiple: Option<OnMultiple>,
    cron: Option<Arc<Crontab>>,
    date: Option<MonthDay>,
    action: Option<Action>,
    target: Option<Target>,
    template: Option<Box<str>>,
    at: Option<NaiveTime>,
    before: Option<Lead>,
    leap_day: Option<LeapDay>,
    delivery: Option<DeliveryPolicy>,
    priority: Option<i64>,
    spread: Option<Lead>,
    deadline: Option<Option<chrono::TimeDelta>>,
    calendar: crate::calendar::Settings,
    phases: Option<Box<[Phase]>>,
    to_phase: Option<Phase>,
    event: Option<Box<str>>,
    cc: Option<crate::plan::Email>,
    days: Option<u32>,
    factor: Option<f64>,
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
            priority: Some(r.priority),
            spread: Some(r.spread),
            deadline: Some(r.deadline),
            calendar: r.calendar.clone(),
            phases: r.phases.clone(),
            ..Default::default()
        };
        match &r.trigger {
            Trigger::Anniversary { years, every_years } => {
                b.years = Some(years.clone());
                b.every_years = *every_years;
            }
            Trigger::Orders(m) => {
                b.counts = Some(m.counts.clone());
                b.every_count = m.every_count;
                b.revenue = Some(m.revenue.clone());
                b.on_multiple = Some(m.on_multiple);
            }
            Trigger::Every { cron } => b.cron = Some(cron.clone()),
            Trigger::Date(d) => b.date = Some(*d),
            Trigger::Phase { to } => b.to_phase = *to,
            Trigger::Event { event, cc } => {
                b.event = Some(event.clone());
                b.cc = cc.clone();
            }
            Trigger::Inactivity { days, factor } => {
                b.days = *days;
                b.factor = *factor;
            }
            Trigger::Birthday | Trigger::Handover | Trigger::End => {}
        }
        b
    }
}

/// `birthday, anniversary, …`: the kinds `on` takes, for hints.
fn kinds() -> String {
    TriggerKind::ALL.map(TriggerKind::code).join(", ")
}

/// Applies the fields present in `raw` over `base` (a playbook rule a plan overrides, or
/// nothing) and builds the rule; `None` if anything was wrong (every problem is reported).
pub(super) fn build_rule(src: &mut Src, raw: &Spanned<RawRule>, base: Option<&Rule>, ctx: &Context) -> Option<Rule> {
    let before_errors = src.diags.len();
    let mut b = base.map(RuleBuilder::from_rule).unwrap_or_default();
    let unusable = unusable_keys(src, raw);
    let name_ok = apply_keys(src, raw.get_ref(), &mut b, ctx, &unusable);
    let keys_ok = src.diags.len() == before_errors && name_ok;
    // Completeness is checked even when a value was bad (a key that is present but invalid
    // does not count as missing), so both kinds of problem show in one run.
    let rule = complete(src, raw.get_ref(), b, &unusable);
    if keys_ok { rule } else { None }
}

/// Checks every key of an entry whose rule is not used (`enabled = false` in a plan), or
/// cannot be completed (its name or its customer's playbook is unusable): a bad value is still
/// an error, so it does not wait until the rule is used.
pub(super) fn check_keys(src: &mut Src, raw: &Spanned<RawRule>, ctx: &Context) {
    let unusable = unusable_keys(src, raw);
    apply_keys(src, raw.get_ref(), &mut RuleBuilder::default(), ctx, &unusable);
}

/// The keys of `raw` that are missing or have the wrong type (reported already while reading).
fn unusable_keys(src: &Src, raw: &Spanned<RawRule>) -> Vec<&'static str> {
    use crate::plan::entries::FromTable;
    RawRule::KEYS.iter().copied().filter(|k| src.unusable(raw, k)).collect()
}

/// Parses every key `r` sets into `b`, reporting each bad value; returns whether the name is
/// valid (`unusable`: keys reported already while reading).
fn apply_keys(src: &mut Src, r: &RawRule, b: &mut RuleBuilder, ctx: &Context, unusable: &[&str]) -> bool {
    let templates = ctx.templates;
    let name_ok = !unusable.contains(&"name") && parse_id(src, &r.name, "occasion name");
    if let Some(on) = &r.on {
        match TriggerKind::parse_rule(on.get_ref()) {
            Some(k) => b.kind = Some(k),
            None => {
                src.error(on, format!("unknown occasion kind `{}`", on.get_ref()), format!("use one of: {}", kinds()))
            }
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
    if let Some(n) = &r.every_count {
        if *n.get_ref() == 0 {
            src.error(n, "every_count must be at least 1", "e.g. every_count = 500 (the 500th, 1000th, … order)");
        } else {
            b.every_count = Some(*n.get_ref());
        }
    }
    if let Some(v) = &r.revenue {
        if v.get_ref().is_empty() || v.get_ref().contains(&0) {
            src.error(
                v,
                "revenue must list positive amounts (whole units of the customer's currency)",
                "e.g. revenue = [100000, 1000000]",
            );
        } else {
            let mut x = v.get_ref().clone();
            x.sort_unstable();
            x.dedup();
            b.revenue = Some(x.into());
        }
    }
    if let Some(m) = &r.on_multiple {
        match OnMultiple::parse(m.get_ref()) {
            Some(p) => b.on_multiple = Some(p),
            None => src.error(
                m,
                format!("unknown on_multiple policy `{}`", m.get_ref()),
                "use \"highest\" (only the highest threshold one change passes; default) or \"each\" (one message per threshold)",
            ),
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
            "new" => b.target = Some(Target::New),
            "departed" => b.target = Some(Target::Departed),
            other => src.error(
                t,
                format!("unknown recipient `{other}`"),
                "use \"contacts\", \"primary\" or \"owner\" (handover rules also \"new\" or \"departed\")",
            ),
        }
    }
    let phase_hint = || format!("use one of: {}", Phase::ALL.map(Phase::code).join(", "));
    if let Some(list) = &r.phases {
        let mut phases: Vec<Phase> = Vec::new();
        let mut ok = true;
        for p in list.get_ref() {
            match Phase::parse(p.get_ref()) {
                Some(x) => phases.push(x),
                None => {
                    src.error(p, format!("unknown phase `{}`", p.get_ref()), phase_hint());
                    ok = false;
                }
            }
        }
        if list.get_ref().is_empty() {
            src.error(
                list,
                "phases is empty: the rule would never apply",
                "list phases, or leave the key out (every phase)",
            );
        } else if ok {
            phases.sort_by_key(|p| Phase::ALL.iter().position(|x| x == p));
            phases.dedup();
            b.phases = Some(phases.into());
        }
    }
    if let Some(t) = &r.to_phase {
        match Phase::parse(t.get_ref()) {
            Some(p) => b.to_phase = Some(p),
            None => src.error(t, format!("unknown phase `{}`", t.get_ref()), phase_hint()),
        }
    }
    if let Some(e) = &r.event {
        if crate::plan::model::is_event_kind(e.get_ref()) {
            b.event = Some(e.get_ref().as_str().into());
        } else {
            src.error(
                e,
                format!("`{}` is not an event kind", e.get_ref()),
                "write one lowercase word (a-z, digits, `-`, `_`, at most 64 characters), e.g. event = \"complaint\"",
            );
        }
    }
    if let Some(cc) = &r.cc
        && let Some(email) = super::scalars::parse_email(src, cc)
    {
        b.cc = Some(email);
    }
    if let Some(d) = &r.days {
        if !(1..=3660).contains(d.get_ref()) {
            src.error(d, format!("days must be between 1 and 3660, not {}", d.get_ref()), "e.g. days = 90");
        } else {
            b.days = Some(*d.get_ref());
        }
    }
    if let Some(f) = &r.factor {
        let value = match f.get_ref() {
            toml::Value::Float(x) => Some(*x),
            toml::Value::Integer(n) => Some(*n as f64),
            _ => None,
        };
        match value {
            Some(x) if x.is_finite() && (1.0..=20.0).contains(&x) => b.factor = Some(x),
            _ => src.error(
                f,
                format!("`{}` is not a factor between 1 and 20", f.get_ref()),
                "a multiple of the customer's usual interval between orders, e.g. factor = 2.5",
            ),
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
    if let Some(p) = &r.priority {
        if (-1000..=1000).contains(p.get_ref()) {
            b.priority = Some(*p.get_ref());
        } else {
            src.error(
                p,
                format!("priority {} is out of range", p.get_ref()),
                "a whole number from -1000 to 1000; higher goes first when more is due than the relay takes (default 0)",
            );
        }
    }
    if let Some(v) = &r.spread
        && let Some(s) = parse_spread(src, v)
    {
        b.spread = Some(s);
    }
    if let Some(d) = &r.deadline
        && let Some(dur) = parse_duration(src, d)
    {
        b.deadline = Some(Some(dur));
    }
    // Calendar keys override the base rule's key by key.
    b.calendar = calendar_settings(src, r.calendar_keys()).over(&b.calendar);
    name_ok
}

/// Completeness and consistency of a rule whose keys all parsed, reported at the rule's name;
/// then the rule.
fn complete(src: &mut Src, r: &RawRule, b: RuleBuilder, unusable: &[&str]) -> Option<Rule> {
    let before_errors = src.diags.len();
    let at = r.name.span();
    // A key that is present but invalid (or of the wrong type) was reported already; it is not
    // also "missing".
    let bad = |key: &str| unusable.contains(&key);
    if b.kind.is_none() && r.on.is_none() && !bad("on") {
        src.error_span(
            at.clone(),
            format!("occasion `{}` has no `on`", r.name.get_ref()),
            format!("add on = \"…\" ({})", kinds()),
        );
    }
    if b.template.is_none() && r.template.is_none() && !bad("template") {
        src.error_span(
            at.clone(),
            format!("occasion `{}` has no `template`", r.name.get_ref()),
            "add template = \"<folder under templates/>\"",
        );
    }
    let (Some(kind), Some(template)) = (b.kind, b.template.clone()) else { return None };
    let misplaced = |present: bool, field: &str, owner: &str| {
        present.then(|| format!("`{field}` applies only to `on = \"{owner}\"` rules"))
    };
    let problems = [
        misplaced(
            kind != TriggerKind::Anniversary && (b.years.is_some() || b.every_years.is_some()),
            "years/every_years",
            "anniversary",
        ),
        misplaced(
            kind != TriggerKind::Orders
                && (b.counts.is_some() || b.every_count.is_some() || b.revenue.is_some() || b.on_multiple.is_some()),
            "counts/every_count/revenue/on_multiple",
            "orders",
        ),
        misplaced(kind != TriggerKind::Every && b.cron.is_some(), "cron", "every"),
        misplaced(kind != TriggerKind::Date && b.date.is_some(), "date", "date"),
        misplaced(
            !matches!(kind, TriggerKind::Birthday | TriggerKind::Anniversary | TriggerKind::Date)
                && b.spread.is_some_and(|s| s != Lead::None),
            "spread",
            "birthday\"/\"anniversary\"/\"date",
        ),
        misplaced(kind != TriggerKind::Phase && (b.to_phase.is_some() || r.to_phase.is_some()), "to_phase", "phase"),
        misplaced(kind != TriggerKind::Event && (b.event.is_some() || b.cc.is_some()), "event/cc", "event"),
        misplaced(
            kind != TriggerKind::Inactivity && (b.days.is_some() || b.factor.is_some()),
            "days/factor",
            "inactivity",
        ),
        misplaced(
            kind != TriggerKind::Handover && matches!(b.target, Some(Target::New | Target::Departed)),
            "to = \"new\"/\"departed\"",
            "handover",
        ),
    ];
    for p in problems.into_iter().flatten() {
        src.error_span(at.clone(), format!("occasion `{}`: {p}", r.name.get_ref()), "remove the key or change `on`");
    }
    let action = b.action.unwrap_or(Action::Email);
    let default_target = match kind {
        TriggerKind::Birthday => Target::Contacts,
        TriggerKind::Every
        | TriggerKind::Orders
        | TriggerKind::Handover
        | TriggerKind::Phase
        | TriggerKind::Event
        | TriggerKind::Inactivity
        | TriggerKind::End
            if action == Action::Task =>
        {
            Target::Owner
        }
        _ => Target::Primary,
    };
    let target = b.target.unwrap_or(default_target);
    let trigger = match kind {
        TriggerKind::Birthday => {
            if target == Target::Owner {
                src.error_span(
                    at.clone(),
                    format!("occasion `{}`: birthday rules concern contacts", r.name.get_ref()),
                    "use to = \"contacts\" or \"primary\"; with send = \"task\" the salesperson gets the reminder",
                );
            }
            Trigger::Birthday
        }
        TriggerKind::Anniversary => {
            if b.years.is_none()
                && b.every_years.is_none()
                && r.years.is_none()
                && r.every_years.is_none()
                && !bad("years")
                && !bad("every_years")
            {
                src.error_span(
                    at.clone(),
                    format!("occasion `{}` needs `years` or `every_years`", r.name.get_ref()),
                    "e.g. years = [1, 5, 10, 25]",
                );
            }
            Trigger::Anniversary { years: b.years.clone().unwrap_or_default(), every_years: b.every_years }
        }
        TriggerKind::Orders => {
            let given = b.counts.is_some() || b.every_count.is_some() || b.revenue.is_some();
            let tried = r.counts.is_some()
                || r.every_count.is_some()
                || r.revenue.is_some()
                || ["counts", "every_count", "revenue"].iter().any(|k| bad(k));
            if !given && !tried {
                src.error_span(
                    at.clone(),
                    format!("occasion `{}` needs `counts`, `every_count` or `revenue`", r.name.get_ref()),
                    "e.g. counts = [10, 100, 1000], every_count = 500 or revenue = [100000]",
                );
            }
            if !given {
                return None;
            }
            Trigger::Orders(OrderMilestones {
                counts: b.counts.clone().unwrap_or_default(),
                every_count: b.every_count,
                revenue: b.revenue.clone().unwrap_or_default(),
                on_multiple: b.on_multiple.unwrap_or_default(),
            })
        }
        TriggerKind::Handover => Trigger::Handover,
        TriggerKind::Phase => Trigger::Phase { to: b.to_phase },
        TriggerKind::Event => {
            if b.cc.is_some() && action != Action::Task {
                src.error_span(
                    at.clone(),
                    format!("occasion `{}`: `cc` applies only to tasks", r.name.get_ref()),
                    "add send = \"task\" (the salesperson gets the task, `cc` a copy), or remove `cc`",
                );
            }
            match b.event.clone() {
                Some(event) => Trigger::Event { event, cc: b.cc.clone() },
                None if r.event.is_some() || bad("event") => return None,
                None => {
                    src.error_span(
                        at.clone(),
                        format!("occasion `{}` needs `event`", r.name.get_ref()),
                        "name the kind of event it reacts to, e.g. event = \"complaint\"",
                    );
                    return None;
                }
            }
        }
        TriggerKind::Inactivity => {
            if b.days.is_none()
                && b.factor.is_none()
                && r.days.is_none()
                && r.factor.is_none()
                && !bad("days")
                && !bad("factor")
            {
                src.error_span(
                    at.clone(),
                    format!("occasion `{}` needs `days` or `factor`", r.name.get_ref()),
                    "e.g. days = 90, or factor = 2.5 (times the customer's usual interval between orders)",
                );
            }
            if b.days.is_none() && b.factor.is_none() {
                return None;
            }
            Trigger::Inactivity { days: b.days, factor: b.factor }
        }
        TriggerKind::End => Trigger::End,
        // `on` never names it (`parse_rule`).
        TriggerKind::Departure => return None,
        TriggerKind::Every => match b.cron.clone() {
            Some(cron) => Trigger::Every { cron },
            None if r.cron.is_some() || bad("cron") => return None,
            None => {
                src.error_span(
                    at.clone(),
                    format!("occasion `{}` needs `cron`", r.name.get_ref()),
                    "e.g. cron = \"0 9 * * MON\"",
                );
                return None;
            }
        },
        TriggerKind::Date => match b.date {
            Some(d) => Trigger::Date(d),
            None if r.date.is_some() || bad("date") => return None,
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
    // A lead time means nothing to an event (handover, phase change): say so.
    if matches!(
        kind,
        TriggerKind::Handover | TriggerKind::Phase | TriggerKind::Event | TriggerKind::Inactivity | TriggerKind::End
    ) && let Some(b) = &r.before
    {
        let d = Diagnostic::at(
            src.path,
            src.text,
            Some(b.span()),
            format!("`before` has no effect on `on = \"{kind}\"` rules"),
        )
        .hint("remove it; the message is sent when the change is seen")
        .warning();
        src.diags.push(d);
    }
    // A lead time means nothing to an order milestone (it is sent once the threshold is passed,
    // at the next time the rule's calendar and window allow): say so rather than ignore it.
    if kind == TriggerKind::Orders
        && let Some(b) = &r.before
    {
        let d = Diagnostic::at(src.path, src.text, Some(b.span()), "`before` has no effect on `on = \"orders\"` rules")
            .hint("remove it; a milestone is sent when it is reached")
            .warning();
        src.diags.push(d);
    }
    // A lead time means nothing to a crontab (say so rather than ignore it silently).
    if kind == TriggerKind::Every
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
        priority: b.priority.unwrap_or(0),
        spread: b.spread.unwrap_or_default(),
        deadline: b.deadline.flatten(),
        calendar: b.calendar,
        phases: b.phases,
    })
}

/// Validates a playbook file into its rules (in file order).
pub fn playbook(src: &mut Src, raw: &RawPlaybook, ctx: &Context) -> Vec<Arc<Rule>> {
    let mut rules: Vec<Arc<Rule>> = Vec::new();
    let mut names: std::collections::HashSet<&str> = std::collections::HashSet::new();
    for r in &raw.rules {
        if src.unusable(r, "name") {
            // No name to check for twice or to report completeness at: the values only.
            check_keys(src, r, ctx);
            continue;
        }
        if let Some(en) = &r.get_ref().enabled {
            src.error(
                en,
                "`enabled` belongs in a plan's override of a playbook rule",
                "remove it here; a playbook rule is enabled",
            );
        }
        if !names.insert(r.get_ref().name.get_ref().as_str()) {
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
    /// Its rules, in file order; customers that override none of them share this list.
    pub rules: Arc<[Arc<Rule>]>,
}
