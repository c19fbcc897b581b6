//! Hostile template text through the real path: written as the three files of a template
//! variant, loaded with `Renderer::load` (compile, auto-escaping set-up) and rendered for a
//! valid customer. The input is split at the first two NUL bytes into subject, text body and
//! HTML body. Must never panic (errors are fine: they become diagnostics or render errors).
#![no_main]

use contactplan::config::Sender;
use contactplan::occasion::Recipient;
use contactplan::plan::{self, Context, CrontabCache, Email};
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
    sender: Sender,
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
        let ctx = Context {
            playbooks: &empty,
            broken: &[],
            templates: renderer.catalog(),
            default_tz: chrono_tz::UTC,
            crontabs: &crontabs,
        };
        let (customer, diags) = plan::plan_text(Path::new("acme.toml"), PLAN, &ctx);
        let customer = customer.unwrap_or_else(|| panic!("fixture plan is valid: {diags:?}"));
        let sender = Sender { email: Email::parse("team@example.com").expect("valid"), name: "Team \"Ω\"".into() };
        Fixture { dir, customer, sender }
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
    };
    if let Ok(rendered) = renderer.render(&input, &f.sender) {
        // What the daemon does next with a rendered message.
        let _ = contactplan::mail::build(
            &rendered,
            &f.sender,
            &contact.email,
            Some(&contact.name),
            "<fuzz@example.com>",
            chrono::Utc::now(),
        );
    }
});
