//! Hostile plan text through the public `plan::plan_text` (the fast reader and its toml-crate
//! fallback), validated against the shipped templates and playbook. Must never panic.
#![no_main]

use contactplan::plan::{self, Context, CrontabCache};
use contactplan::render::Renderer;
use libfuzzer_sys::fuzz_target;
use std::collections::HashMap;
use std::path::Path;
use std::sync::OnceLock;

struct Fixture {
    renderer: Renderer,
    playbooks: HashMap<String, plan::Playbook>,
    crontabs: CrontabCache,
    calendar: contactplan::calendar::Settings,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let (renderer, _) = Renderer::load(&root.join("templates"));
        let crontabs = CrontabCache::default();
        let mut diags = Vec::new();
        let (playbooks, _, _) =
            plan::playbooks(&root.join("config/playbooks"), renderer.catalog(), &crontabs, &mut diags);
        Fixture { renderer, playbooks, crontabs, calendar: Default::default() }
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let f = fixture();
    let ctx = Context {
        playbooks: &f.playbooks,
        broken: &[],
        templates: f.renderer.catalog(),
        default_tz: chrono_tz::UTC,
        default_calendar: &f.calendar,
        crontabs: &f.crontabs,
        rules: &contactplan::plan::RuleCache::default(),
    };
    let (customer, diags) = plan::plan_text(Path::new("fuzz.toml"), text, &ctx);
    // Every diagnostic must render (line/column/caret arithmetic on hostile text).
    for d in &diags {
        let _ = d.to_string();
    }
    if let Some(c) = customer {
        // A valid plan must also compute occasions without panicking.
        let plans = plan::Plans::new(vec![c]);
        let from = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default();
        let _ = contactplan::occasion::collect(&plans.customers, from, from + chrono::TimeDelta::days(3));
    }
});
