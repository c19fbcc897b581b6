//! Load-and-validate benchmark: N generated customer plans (3 contacts, a playbook with rules,
//! one override each), parsed in parallel and validated exactly as `check` and the daemon do.
//!
//!     cargo bench --bench load_plans -- 10000 100000
//!
//! Each size runs in its own child process so peak RSS (VmHWM) belongs to that size alone.
//!
//!     cargo bench --bench load_plans -- capped
//!
//! validates one plan at the size cap (1 MiB: 4,000 contacts and 4,000 rules of its own): the
//! work per plan must stay linear, so a hostile plan costs milliseconds, not minutes.
//! Generated plans are cached under target/bench-plans/<N>/.

#[path = "support/plans.rs"]
mod support;

use contactplan::plan;
use support::peak_rss_kib;

/// The same allocator as the binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::path::PathBuf;
use std::time::Instant;

fn measure(n: usize) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("target/bench-plans/{n}"));
    let catalog = support::catalog();
    let before = peak_rss_kib();
    let start = Instant::now();
    // Kept until after the report: its drop is not part of the load.
    let _loaded = support::load(&dir, n, &catalog, &Default::default());
    let elapsed = start.elapsed();
    println!(
        "load_plans n={n} threads={} time={:.3}s rate={:.0}/s peak_rss={:.1}MB (before load {:.1}MB)",
        rayon::current_num_threads(),
        elapsed.as_secs_f64(),
        n as f64 / elapsed.as_secs_f64(),
        peak_rss_kib() as f64 / 1024.0,
        before as f64 / 1024.0
    );
}

/// Diagnostic mode (`-- inmem:N`): parse+validate from memory, separating I/O from CPU work.
fn in_memory(n: usize) {
    use rayon::prelude::*;
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("target/bench-plans/{n}"));
    let catalog = support::catalog();
    let files = plan::toml_files(&dir.join("plans")).expect("plans");
    let texts: Vec<(PathBuf, String)> = files
        .into_iter()
        .map(|f| {
            let t = std::fs::read_to_string(&f).expect("read");
            (f, t)
        })
        .collect();
    let crontabs = plan::CrontabCache::default();
    let mut diags = Vec::new();
    let (playbooks, broken, _) = plan::playbooks(&dir.join("playbooks"), &catalog, &crontabs, &mut diags);
    let ctx = plan::Context {
        playbooks: &playbooks,
        broken: &broken,
        templates: &catalog,
        default_tz: chrono_tz::Europe::Berlin,
        default_calendar: &Default::default(),
        crontabs: &crontabs,
        rules: &contactplan::plan::RuleCache::default(),
    };
    for _ in 0..3 {
        let t = Instant::now();
        let ok = texts.par_iter().filter(|(f, s)| plan::plan_text(f, s, &ctx).0.is_some()).count();
        println!("in-memory parse+validate n={ok} {:.3}s", t.elapsed().as_secs_f64());
    }
}

/// `-- capped`: one plan just under the 1 MiB cap, validated five times from memory.
fn capped() {
    let mut text = String::from(
        "[customer]\nid = \"big\"\nname = \"Big\"\nsince = 2015-06-01\nowner = \"sales@example.com\"\ntimezone = \"Europe/Berlin\"\nlanguage = \"de\"\nphase = \"growth\"\n",
    );
    let (contacts, rules) = (4000, 4000);
    for i in 0..contacts {
        let primary = if i == 0 { "primary = true\n" } else { "" };
        text.push_str(&format!(
            "\n[[contact]]\nid = \"c{i}\"\nname = \"Person {i}\"\nemail = \"p{i}@example.de\"\nbirthday = 1980-01-{:02}\ntone = \"formal\"\n{primary}",
            i % 28 + 1
        ));
    }
    for i in 0..rules {
        text.push_str(&format!(
            "\n[[occasion]]\nname = \"r{i}\"\non = \"date\"\ndate = \"--03-{:02}\"\ntemplate = \"birthday\"\n",
            i % 28 + 1
        ));
    }
    assert!(text.len() as u64 <= contactplan::files::MAX_PLAN_BYTES, "{} bytes", text.len());
    let catalog = support::catalog();
    let crontabs = plan::CrontabCache::default();
    let playbooks = Default::default();
    let ctx = plan::Context {
        playbooks: &playbooks,
        broken: &[],
        templates: &catalog,
        default_tz: chrono_tz::Europe::Berlin,
        default_calendar: &Default::default(),
        crontabs: &crontabs,
        rules: &contactplan::plan::RuleCache::default(),
    };
    let mut times = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let (customer, diags) = plan::plan_text(std::path::Path::new("big.toml"), &text, &ctx);
        times.push(t.elapsed().as_secs_f64());
        assert!(customer.is_some(), "{diags:?}");
    }
    times.sort_by(f64::total_cmp);
    println!(
        "capped plan: {} bytes, {contacts} contacts, {rules} rules: validate median {:.1} ms (min {:.1}, max {:.1})",
        text.len(),
        times[2] * 1e3,
        times[0] * 1e3,
        times[4] * 1e3
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    if args.first().is_some_and(|a| a == "capped") {
        capped();
        return;
    }
    if let Some(n) = args.first().and_then(|a| a.strip_prefix("inmem:")) {
        in_memory(n.parse().expect("size"));
        return;
    }
    if let Some(n) = args.first().and_then(|a| a.strip_prefix("child:")) {
        measure(n.parse().expect("size"));
        return;
    }
    let sizes: Vec<usize> =
        if args.is_empty() { vec![10_000, 100_000] } else { args.iter().filter_map(|a| a.parse().ok()).collect() };
    for n in sizes {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("target/bench-plans/{n}"));
        support::generate(&dir, n, false).expect("generate plans");
        // Six fresh processes; the median of the last five (the first may meet a cold cache).
        support::median_of_children(n, 6);
    }
}
