//! Load-and-validate benchmark: N generated customer plans (3 contacts, a playbook with rules,
//! one override each), parsed in parallel and validated exactly as `check` and the daemon do.
//!
//!     cargo bench --bench load_plans -- 10000 100000
//!
//! Each size runs in its own child process so peak RSS (VmHWM) belongs to that size alone.
//! Generated plans are cached under target/bench-plans/<N>/.

mod common;

use common::generate;
use contactplan::plan::{self, Sources};

/// The same allocator as the binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use contactplan::render::TemplateCatalog;
use std::path::{Path, PathBuf};
use std::time::Instant;

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(|l| l.split_whitespace().nth(1).unwrap_or("0").parse().unwrap_or(0))
        })
        .unwrap_or(0)
}

fn measure(n: usize) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("target/bench-plans/{n}"));
    let (catalog, _) = TemplateCatalog::scan(&Path::new(env!("CARGO_MANIFEST_DIR")).join("templates"));
    let before = peak_rss_kib();
    let start = Instant::now();
    let loaded = plan::load(
        &Sources {
            plans_dir: &dir.join("plans"),
            playbooks_dir: &dir.join("playbooks"),
            templates: &catalog,
            default_timezone: chrono_tz::Europe::Berlin,
        },
        &|| {},
    );
    let elapsed = start.elapsed();
    assert_eq!(loaded.plans.len(), n, "all generated plans are valid: {:?}", loaded.diagnostics.first());
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
    let (catalog, _) = TemplateCatalog::scan(&Path::new(env!("CARGO_MANIFEST_DIR")).join("templates"));
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
        crontabs: &crontabs,
    };
    for _ in 0..3 {
        let t = Instant::now();
        let ok = texts.par_iter().filter(|(f, s)| plan::plan_text(f, s, &ctx).0.is_some()).count();
        println!("in-memory parse+validate n={ok} {:.3}s", t.elapsed().as_secs_f64());
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
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
        generate(&dir, n).expect("generate plans");
        // Each run in a fresh process (its own peak RSS); the first run may meet a cold page
        // cache, the next five are warm and reported as the median.
        let mut runs: Vec<(f64, String)> = Vec::new();
        for i in 0..6 {
            let out = std::process::Command::new(std::env::current_exe().expect("exe"))
                .arg(format!("child:{n}"))
                .output()
                .expect("child");
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
            let secs: f64 = line
                .split("time=")
                .nth(1)
                .and_then(|t| t.split('s').next())
                .and_then(|t| t.parse().ok())
                .unwrap_or(f64::NAN);
            println!("  run {i}{}: {line}", if i == 0 { " (maybe cold)" } else { "" });
            if i > 0 {
                runs.push((secs, line));
            }
        }
        runs.sort_by(|a, b| a.0.total_cmp(&b.0));
        println!("MEDIAN {}", runs[runs.len() / 2].1);
    }
}
