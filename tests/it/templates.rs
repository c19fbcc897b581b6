//! Every shipped template × language × tone, rendered for one sample customer and pinned by an
//! insta snapshot (`snapshots/it__templates__<template>-<variant>.snap`): subject, text and
//! HTML as the recipient gets them. Review changes with `cargo insta review`.

use contactplan::calendar::CrontabCache;
use contactplan::occasion::Recipient;
use contactplan::plan::{self, Context, Customer, Language};
use contactplan::render::{Input, Renderer, ReportRow, Sender};
use std::collections::HashMap;
use std::path::Path;

fn customer(renderer: &Renderer, language: &str) -> Customer {
    let text = format!(
        r#"[customer]
id = "mueller"
name = "Müller & Söhne GmbH"
since = 2016-03-14
owner = "katrin.vogel@example.com"
language = "{language}"
phase = "maturity"
goals = ["Rahmenvertrag 2027 verlängern", "Service-Team kennenlernen"]
notes = "Bestellt quartalsweise; Entscheidungen über den Einkauf"

[[contact]]
id = "anna"
name = "Dr. Anna Müller"
gender = "female"
email = "anna@example.com"
tone = "formal"
primary = true
phone = "+49 89 1234-567"
role = "Leiterin Einkauf"

[[contact]]
id = "joerg"
name = "Jörg Weiß"
gender = "male"
email = "joerg@example.com"
tone = "informal"

[[occasion]]
name = "birthday"
on = "birthday"
template = "birthday"

[[occasion]]
name = "birthday-call"
on = "birthday"
send = "task"
template = "occasion_task"

[[occasion]]
name = "anniversary"
on = "anniversary"
years = [10]
template = "anniversary"

[[occasion]]
name = "anniversary-call"
on = "anniversary"
years = [10]
send = "task"
template = "occasion_task"

[[occasion]]
name = "thanks"
on = "date"
date = "--12-01"
to = "contacts"
template = "anniversary"

[[occasion]]
name = "hundredth-order"
on = "orders"
counts = [100]
to = "contacts"
template = "order_milestone"

[[occasion]]
name = "revenue-call"
on = "orders"
revenue = [100000]
send = "task"
template = "order_milestone"

[[occasion]]
name = "handover-brief"
on = "handover"
send = "task"
template = "handover_brief"

[[occasion]]
name = "welcome"
on = "handover"
to = "new"
template = "handover_welcome"

[[occasion]]
name = "farewell"
on = "handover"
to = "departed"
template = "handover_farewell"

[[occasion]]
name = "phase-brief"
on = "phase"
send = "task"
template = "handover_brief"

[[occasion]]
name = "complaint"
on = "event"
event = "complaint"
send = "task"
cc = "vertrieb@example.com"
template = "event_task"

[[occasion]]
name = "quiet"
on = "inactivity"
factor = 2.5
send = "task"
template = "inactivity_task"

[[occasion]]
name = "checkin"
on = "every"
cron = "0 9 1 * *"
send = "task"
template = "checkin"
"#
    );
    let (playbooks, calendar, crontabs) = (HashMap::new(), Default::default(), CrontabCache::default());
    let ctx = Context {
        playbooks: &playbooks,
        broken: &[],
        templates: renderer.catalog(),
        default_tz: chrono_tz::Europe::Berlin,
        default_calendar: &calendar,
        crontabs: &crontabs,
        rules: &contactplan::plan::RuleCache::default(),
    };
    let (c, diags) = plan::plan_text(Path::new("mueller.toml"), &text, &ctx);
    c.unwrap_or_else(|| panic!("{diags:?}"))
}

fn shown(r: &contactplan::render::Rendered) -> String {
    format!("Subject: {}\n----- text/plain -----\n{}\n----- text/html -----\n{}", r.subject, r.text, r.html)
}

#[test]
fn every_shipped_template_language_and_tone() {
    let (renderer, diags) = Renderer::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("templates"));
    assert!(diags.is_empty(), "{diags:?}");
    let sender = Sender { name: "Beispiel GmbH – Ihr Kundenteam", email: "team@example.com" };
    let date = chrono::NaiveDate::from_ymd_opt(2026, 3, 14).unwrap();
    let mut seen = Vec::new();
    for language in [Language::De, Language::En] {
        let c = customer(&renderer, language.code());
        for rule in c.rules.iter() {
            let years = rule.name.starts_with("anniversary").then_some(10);
            let milestone = contactplan::render::sample_milestone(&c, rule, 2026);
            let milestone = milestone.as_ref();
            let handover = contactplan::render::sample_handover(&c, rule, 2026);
            let handover = handover.as_ref();
            let moment = contactplan::render::sample_moment(rule, date);
            let moment = moment.as_ref();
            let inputs: Vec<Input> = match rule.action {
                plan::Action::Email => c
                    .contacts
                    .iter()
                    .map(|k| Input {
                        customer: &c,
                        rule,
                        about: Some(k),
                        recipient: Recipient::Contact(k),
                        occasion_date: date,
                        years,
                        milestone,
                        handover,
                        moment,
                    })
                    .collect(),
                plan::Action::Task => vec![Input {
                    customer: &c,
                    rule,
                    about: (&*rule.name != "checkin").then(|| c.primary_contact()),
                    recipient: Recipient::Owner,
                    occasion_date: date,
                    years,
                    milestone,
                    handover,
                    moment,
                }],
            };
            for input in inputs {
                let r = renderer.render(&input, sender).unwrap();
                assert!(r.fuel < 5_000, "{} used {} fuel", r.variant, r.fuel);
                let name = format!("{}-{}", r.variant.replace('/', "-"), rule.trigger.kind());
                insta::assert_snapshot!(name.clone(), shown(&r));
                seen.push(r.variant);
            }
        }
        // The built-in departure task.
        let rule = contactplan::events::departure_rule();
        let moment = contactplan::render::sample_departure(&c);
        let input = Input {
            customer: &c,
            rule: &rule,
            about: Some(c.primary_contact()),
            recipient: Recipient::Owner,
            occasion_date: date,
            years: None,
            milestone: None,
            handover: None,
            moment: Some(&moment),
        };
        let r = renderer.render(&input, sender).unwrap();
        insta::assert_snapshot!(format!("{}-departure", r.variant.replace('/', "-")), shown(&r));
        seen.push(r.variant);
        let row = ReportRow {
            state: "failed".into(),
            key: "mueller/birthday/contact:anna/2026-03-14".into(),
            due: "2026-03-14T08:00:00+00:00".into(),
            attempts: 3,
            reason: "550 5.1.1 <script>mailbox</script> unavailable".into(),
            reply: Some("550 5.1.1 mailbox unavailable".into()),
        };
        let r = renderer.render_report(language, "host-1-0", &[row], sender).unwrap();
        insta::assert_snapshot!(r.variant.replace('/', "-"), shown(&r));
        seen.push(r.variant);
        // The salesperson's "call instead" digest: a contact with a phone (a tel: link) and one
        // without, a customer name with markup.
        let rows = contactplan::render::sample_call_rows(date);
        let r = renderer.render_call_instead(language, "katrin.vogel@example.com", &rows, sender).unwrap();
        assert!(r.fuel < 5_000, "{} used {} fuel", r.variant, r.fuel);
        insta::assert_snapshot!(r.variant.replace('/', "-"), shown(&r));
        seen.push(r.variant);
    }
    // Every shipped variant was rendered.
    for key in renderer.catalog().all() {
        assert!(seen.contains(&key), "{key} has no snapshot");
    }
}

/// `check` with relay limits renders the "call instead" digest once per language: nothing to
/// say with the shipped templates; a warning per language without them (the daemon then sends
/// the built-in plain English text), and that text lists every row with a tel: link.
#[test]
fn check_warns_when_the_call_instead_template_is_missing() {
    let sender = Sender { name: "Beispiel GmbH", email: "team@example.com" };
    let (shipped, _) = Renderer::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("templates"));
    assert!(contactplan::render::trial_call_instead(&shipped, sender).is_empty());
    let dir = tempfile::tempdir().unwrap();
    let (bare, _) = Renderer::load(dir.path());
    let diags = contactplan::render::trial_call_instead(&bare, sender);
    let shown: Vec<String> = diags.iter().map(|d| d.to_string()).collect();
    assert_eq!(diags.len(), 2, "{shown:?}");
    assert!(diags.iter().all(|d| !d.is_error()), "{shown:?}");
    assert!(shown[0].contains("no call_instead template for `de`") && shown[1].contains("for `en`"), "{shown:?}");
    let rows = contactplan::render::sample_call_rows(chrono::NaiveDate::from_ymd_opt(2026, 12, 21).unwrap());
    let plain = contactplan::render::plain_call_instead(&rows);
    assert!(plain.subject.starts_with("Call instead: 2 occasions"), "{}", plain.subject);
    assert!(plain.html.contains("href=\"tel:+49891234567\""), "{}", plain.html);
}
