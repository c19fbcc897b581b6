//! Hostile playbook text through the public `plan::playbook_text`, validated against the
//! shipped templates. Must never panic.
#![no_main]

use contactplan::plan::{self, Context, CrontabCache};
use contactplan::render::Renderer;
use libfuzzer_sys::fuzz_target;
use std::collections::HashMap;
use std::path::Path;
use std::sync::OnceLock;

fn renderer() -> &'static Renderer {
    static R: OnceLock<Renderer> = OnceLock::new();
    R.get_or_init(|| Renderer::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../templates")).0)
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let empty = HashMap::new();
    let crontabs = CrontabCache::default();
    let calendar = contactplan::calendar::Settings::default();
    let ctx = Context {
        playbooks: &empty,
        broken: &[],
        templates: renderer().catalog(),
        default_tz: chrono_tz::UTC,
        default_calendar: &calendar,
        crontabs: &crontabs,
        rules: &contactplan::plan::RuleCache::default(),
    };
    let (_, diags) = plan::playbook_text(Path::new("fuzz.toml"), text, &ctx);
    for d in &diags {
        let _ = d.to_string();
    }
});
