//! Hostile template text through the real path: written as the three files of a template
//! variant, loaded with `Renderer::load` (compile, auto-escaping set-up) and rendered for a
//! valid customer. The input is split at the first two NUL bytes into subject, text body and
//! HTML body. Must never panic (errors are fine: they become diagnostics or render errors).
#![no_main]

use contactplan::occasion::Recipient;
use contactplan::plan::{self, Context, CrontabCache};
use contactplan::render::{Input, Renderer};
use libfuzzer_sys::fuzz_target;
use std::collections::HashMap;
use std::path::Path;
use std::sync::OnceLock;

const PLAN: &str = r#"[customer]
id = "acme"
name = "ACME <b>&amp; Söhne</b>"
since = 2016-02-29
owner = "owner@example.com"
timezone = "Europe/Berlin"
language = "en"
phase = "growth"

[[contact]]
id = "anna"
name = "Dr. Anna {{ Müller }}"
email = "anna@example.de"
birthday = 1980-02-29
tone = "formal"
primary = true

[[occasion]]
name = "fuzz"
on = "birthday"
template = "fuzz"
"#;

struct Fixture {
    dir: tempfile::TempDir,
    customer: plan::Customer,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let variant = dir.path().join("fuzz/en-formal");
        std::fs::create_dir_all(&variant).expect("template dir");
        for part in contactplan::render::PARTS {
            std::fs::write(variant.join(part), "x").expect("seed template");
        }
        let (renderer, _) = Renderer::load(dir.path());
        let empty = HashMap::new();
        let crontabs = CrontabCache::default();
        let calendar = contactplan::calendar::Settings::default();
        let ctx = Context {
            playbooks: &empty,
            broken: &[],
            templates: renderer.catalog(),
            default_tz: chrono_tz::UTC,
            default_calendar: &calendar,
            crontabs: &crontabs,
            rules: &contactplan::plan::RuleCache::default(),
        };
        let (customer, diags) = plan::plan_text(Path::new("acme.toml"), PLAN, &ctx);
        let customer = customer.unwrap_or_else(|| panic!("fixture plan is valid: {diags:?}"));
        Fixture { dir, customer }
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let f = fixture();
    let mut parts = text.splitn(3, '\0');
    let variant = f.dir.path().join("fuzz/en-formal");
    for part in contactplan::render::PARTS {
        if std::fs::write(variant.join(part), parts.next().unwrap_or("")).is_err() {
            return;
        }
    }
    let (renderer, _diags) = Renderer::load(f.dir.path());
    let c = &f.customer;
    let Some(rule) = c.rule("fuzz") else { return };
    let contact = c.primary_contact();
    let input = Input {
        customer: c,
        rule,
        about: Some(contact),
        recipient: Recipient::Contact(contact),
        occasion_date: chrono::NaiveDate::from_ymd_opt(2028, 2, 29).unwrap_or_default(),
        years: Some(48),
        milestone: None,
        handover: None,
        moment: None,
    };
    let sender = contactplan::render::Sender { name: "Team \"Ω\"", email: "team@example.com" };
    if let Ok(rendered) = renderer.render(&input, sender) {
        // What the daemon does next with a rendered message.
        let _ = contactplan::mail::build(&contactplan::mail::Outgoing {
            from: contactplan::mail::Party { name: Some(sender.name), address: sender.email },
            to: contactplan::mail::Party { name: Some(&contact.name), address: contact.email.as_str() },
            cc: None,
            reply_to: Some(contactplan::mail::Party { name: None, address: c.owner.as_str() }),
            subject: &rendered.subject,
            text: &rendered.text,
            html: &rendered.html,
            message_id: "<fuzz@example.com>",
            date: chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default().fixed_offset(),
        });
    }
});
