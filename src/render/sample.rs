//! `check`'s trial run of the templates: every variant a rule of the plans can use is rendered
//! once, for a real customer and contact that uses it (one per variant, kind of occasion and
//! kind of recipient), with the same bounds as the daemon (strict undefined variables, fuel,
//! output cap). A failure is reported at the template file and line, naming what it failed for,
//! before the daemon would ever render it.

use super::{Input, Renderer, Sender};
use crate::diagnostics::Diagnostic;
use crate::events::{DepartedContact, MomentFacts};
use crate::handover::{BriefFigures, ChangeKind, ContactCard, HandoverFacts, Recent};
use crate::occasion::EventKind;
use crate::occasion::Recipient;
use crate::orders::milestone::{MilestoneFacts, YearRevenue};
use crate::plan::{Action, Customer, Plans, Rule, Target, Trigger, TriggerKind};
use chrono::{Datelike, NaiveDate};
use std::collections::HashSet;

/// The inputs one rule of one customer can render: (recipient, the contact it is about).
fn inputs<'a>(
    customer: &'a Customer,
    rule: &'a Rule,
    milestone: Option<&'a MilestoneFacts>,
    handover: Option<&'a HandoverFacts>,
    moment: Option<&'a MomentFacts>,
) -> Vec<Input<'a>> {
    let contacts: Vec<_> = match rule.target {
        Target::Contacts => customer.contacts.iter().collect(),
        Target::Primary | Target::New | Target::Departed => vec![customer.primary_contact()],
        Target::Owner => Vec::new(),
    };
    let kind = rule.trigger.kind();
    let years = (kind == TriggerKind::Anniversary).then_some(10);
    let occasion_date =
        NaiveDate::from_ymd_opt(customer.since.year() + 10, customer.since.month(), 1).unwrap_or(customer.since);
    let input = |recipient, about| Input {
        customer,
        rule,
        about,
        recipient,
        occasion_date,
        years,
        milestone,
        handover,
        moment,
    };
    match (rule.action, rule.target) {
        (_, Target::Owner) => vec![input(Recipient::Owner, None)],
        (Action::Email, _) => contacts.into_iter().map(|c| input(Recipient::Contact(c), Some(c))).collect(),
        (Action::Task, _) => contacts.into_iter().map(|c| input(Recipient::Owner, Some(c))).collect(),
    }
}

/// What an `on = "orders"` rule's templates are told in the trial run: its first threshold (a
/// count, else a revenue threshold), with sample totals over `year` and the year before.
pub fn sample_milestone(customer: &Customer, rule: &Rule, year: i32) -> Option<MilestoneFacts> {
    let Trigger::Orders(m) = &rule.trigger else { return None };
    let (measure, threshold) = match (m.counts.first(), m.every_count, m.revenue.first()) {
        (Some(&n), _, _) | (None, Some(n), _) => (EventKind::Orders, n),
        (None, None, Some(&r)) => (EventKind::Revenue, r),
        (None, None, None) => (EventKind::Orders, 100),
    };
    let cents = |c: i64| rust_decimal::Decimal::new(c, 2);
    Some(MilestoneFacts {
        measure,
        threshold,
        order_count: if measure == EventKind::Orders { threshold } else { 250 },
        currency: customer.currency,
        revenue: cents(12_345_678),
        revenue_by_year: vec![
            YearRevenue { year: year - 1, amount: cents(4_567_800) },
            YearRevenue { year, amount: cents(7_777_878) },
        ],
    })
}

/// What an `on = "handover"` or `on = "phase"` rule's templates are told in the trial run and
/// `preview`: a handover from a sample departed contact to the primary contact (a phase
/// change into the customer's phase), with sample figures over `year` and the year before.
pub fn sample_handover(customer: &Customer, rule: &Rule, year: i32) -> Option<HandoverFacts> {
    let primary = customer.primary_contact();
    let (change, from, to, departed) = match rule.trigger {
        Trigger::Handover => {
            let departed =
                customer.contacts.iter().find(|c| c.id != primary.id).map(ContactCard::of).unwrap_or(ContactCard {
                    id: "departed".into(),
                    name: "Max Mustermann".into(),
                    email: "max.mustermann@example.com".into(),
                    phone: Some("+49 30 1234567".into()),
                    role: Some("Einkauf".into()),
                });
            (ChangeKind::Handover, departed.id.clone(), primary.id.to_string(), Some(departed))
        }
        Trigger::Phase { to } => {
            let to = to.unwrap_or(customer.phase);
            let from = crate::plan::Phase::ALL.into_iter().find(|p| *p != to).unwrap_or(to);
            (ChangeKind::Phase, from.code().to_string(), to.code().to_string(), None)
        }
        _ => return None,
    };
    let cents = |c: i64| rust_decimal::Decimal::new(c, 2);
    let day = |m: u32, d: u32| NaiveDate::from_ymd_opt(year, m, d).unwrap_or(customer.since);
    Some(HandoverFacts {
        change,
        from,
        to,
        departed,
        brief: Some(BriefFigures {
            order_count: 42,
            revenue_by_year: vec![
                YearRevenue { year: year - 1, amount: cents(4_567_800) },
                YearRevenue { year, amount: cents(7_777_878) },
            ],
            recent: vec![
                Recent { rule: "checkin".into(), kind: "every".into(), action: "task".into(), date: day(1, 2) },
                Recent { rule: "birthday".into(), kind: "birthday".into(), action: "email".into(), date: day(3, 4) },
            ],
        }),
    })
}

/// What an `on = "event"` or `on = "inactivity"` rule's templates are told in the trial run and
/// `preview`: a sample event of the rule's kind with a note on `day`, or a quiet spell that
/// began 90 days before `day` after orders about every 30 days.
pub fn sample_moment(rule: &Rule, day: NaiveDate) -> Option<MomentFacts> {
    match &rule.trigger {
        Trigger::Event { event, .. } => Some(MomentFacts::Event {
            id: "sample-1".into(),
            kind: event.to_string(),
            note: Some("Lieferung kam zwei Wochen zu spät; Kunde ist verärgert".into()),
            date: day,
        }),
        Trigger::Inactivity { days, factor } => {
            let threshold_days = factor.map_or(days.unwrap_or(60), |f| (f * 30.0).ceil() as u32);
            Some(MomentFacts::Inactivity {
                last_order: day - chrono::TimeDelta::days(i64::from(threshold_days)),
                usual_days: Some(30),
                threshold_days,
            })
        }
        _ => None,
    }
}

/// A departure task's sample facts: the primary contact's address refused as unknown.
pub fn sample_departure(customer: &Customer) -> MomentFacts {
    MomentFacts::Departure {
        contact: DepartedContact::of(customer.primary_contact()),
        reason: "550 5.1.1 <recipient>: user unknown".into(),
    }
}

/// Renders every variant the plans can use once; the failures as diagnostics.
pub fn trial_run(plans: &Plans, renderer: &Renderer, sender: Sender) -> Vec<Diagnostic> {
    let mut tried: HashSet<(String, TriggerKind, Action, bool)> = HashSet::new();
    let mut diags = Vec::new();
    for customer in &plans.customers {
        for rule in customer.rules.iter() {
            let facts = sample_milestone(customer, rule, customer.since.year() + 10);
            let handover = sample_handover(customer, rule, customer.since.year() + 10);
            let moment = sample_moment(rule, customer.since);
            for input in inputs(customer, rule, facts.as_ref(), handover.as_ref(), moment.as_ref()) {
                // A missing variant is the plan's problem, reported by validation.
                let Some(key) = renderer.variant_for(&input) else { continue };
                if !tried.insert((key, rule.trigger.kind(), rule.action, input.about.is_some())) {
                    continue;
                }
                if let Err(e) = renderer.render(&input, sender) {
                    let about = input.about.map(|c| format!(", contact `{}`", c.id)).unwrap_or_default();
                    let context = format!("for customer `{}`, occasion `{}`{about}", customer.id, rule.name);
                    diags.push(renderer.diagnostic(&e, &context));
                }
            }
        }
        // The built-in departure task, once per language.
        let rule = crate::events::departure_rule();
        let moment = sample_departure(customer);
        let input = Input {
            customer,
            rule: &rule,
            about: Some(customer.primary_contact()),
            recipient: Recipient::Owner,
            occasion_date: customer.since,
            years: None,
            milestone: None,
            handover: None,
            moment: Some(&moment),
        };
        let Some(key) = renderer.variant_for(&input) else { continue };
        if !tried.insert((key, TriggerKind::Departure, Action::Task, true)) {
            continue;
        }
        if let Err(e) = renderer.render(&input, sender) {
            let context = format!("for customer `{}`, the departure task", customer.id);
            diags.push(renderer.diagnostic(&e, &context));
        }
    }
    diags
}

/// Renders the ops report once with a sample row (when ops reports are configured): a failure,
/// or a missing `ops_report` template (the daemon then sends a built-in plain text), is reported.
pub fn trial_report(renderer: &Renderer, sender: Sender) -> Vec<Diagnostic> {
    let row = super::ReportRow {
        state: "failed".into(),
        key: "acme/birthday/contact:anna/2026-03-14".into(),
        due: "2026-03-14T08:00:00+00:00".into(),
        attempts: 3,
        reason: "550 5.1.1 mailbox unavailable".into(),
        reply: Some("550 5.1.1 mailbox unavailable".into()),
    };
    let mut diags = Vec::new();
    for language in [crate::plan::Language::En] {
        match renderer.render_report(language, "host-1-0", std::slice::from_ref(&row), sender) {
            Ok(_) => {}
            Err(super::RenderError::NoVariant { .. }) => diags.push(
                Diagnostic::whole_file(
                    &renderer.catalog().dir().join(super::REPORT_TEMPLATE),
                    "no ops_report template: the ops report is sent as built-in plain text",
                )
                .hint("copy templates/ops_report/ from the shipped templates")
                .warning(),
            ),
            Err(e) => diags.push(renderer.diagnostic(&e, "for the ops report")),
        }
    }
    diags
}

/// Sample rows of a "call instead" digest: a contact with a phone number and one without, in
/// Berlin, with a deadline on `day` at 10:00 (the trial run, `preview`, the template tests).
pub fn sample_call_rows(day: NaiveDate) -> Vec<super::CallRow> {
    use chrono::TimeZone;
    let tz = chrono_tz::Europe::Berlin;
    let at = |h: u32| {
        day.and_hms_opt(h, 0, 0)
            .and_then(|t| tz.from_local_datetime(&t).earliest())
            .unwrap_or_else(|| tz.from_utc_datetime(&day.and_time(chrono::NaiveTime::MIN)))
    };
    vec![
        super::CallRow {
            customer_id: "mueller".into(),
            customer: "Müller & Söhne GmbH".into(),
            contact: Some("Dr. Anna Müller".into()),
            phone: Some("+49 89 1234-567".into()),
            email: Some("anna@example.com".into()),
            occasion: "birthday".into(),
            deadline: at(10),
        },
        super::CallRow {
            customer_id: "weiss".into(),
            customer: "Weiß <Technik> KG".into(),
            contact: Some("Jörg Weiß".into()),
            phone: None,
            email: Some("joerg@example.com".into()),
            occasion: "anniversary".into(),
            deadline: at(18),
        },
    ]
}

/// Renders the "call instead" digest once per language with sample rows (when the relay's caps
/// are configured, the daemon may send it): a failure, or a missing `call_instead` variant (the
/// daemon then sends a built-in plain English text), is reported.
pub fn trial_call_instead(renderer: &Renderer, sender: Sender) -> Vec<Diagnostic> {
    let rows = sample_call_rows(NaiveDate::from_ymd_opt(2026, 12, 21).unwrap_or_default());
    let mut diags = Vec::new();
    for language in [crate::plan::Language::De, crate::plan::Language::En] {
        match renderer.render_call_instead(language, "owner@example.com", &rows, sender) {
            Ok(_) => {}
            // Its files are there but did not load: that error is reported already (not "missing").
            Err(super::RenderError::NoVariant { .. })
                if renderer.catalog().dir().join(super::CALL_INSTEAD_TEMPLATE).join(language.code()).is_dir() => {}
            Err(super::RenderError::NoVariant { .. }) => diags.push(
                Diagnostic::whole_file(
                    &renderer.catalog().dir().join(super::CALL_INSTEAD_TEMPLATE),
                    format!(
                        "no call_instead template for `{}`: when the relay's limits cannot send occasions in time, \
                         salespeople get the \"call instead\" email as built-in plain English text",
                        language.code()
                    ),
                )
                .hint("copy templates/call_instead/ from the shipped templates")
                .warning(),
            ),
            Err(e) => diags.push(renderer.diagnostic(&e, "for the \"call instead\" email")),
        }
    }
    diags
}
