//! Materialisation: one daemon pass writing every occasion of N generated customers (default
//! 20,000; 3 contacts, the `standard` playbook and a monthly `cron` each) over a horizon of H
//! days (default 366, the longest allowed) into a fresh SQLite outbox. Prints the rows written,
//! the time, and the process's peak RSS (memory holds one step of customers at a time, not the
//! whole window).
//!
//!     cargo bench --bench materialize                # 20,000 customers, 366 days
//!     cargo bench --bench materialize -- 5000 30     # 5,000 customers, 30 days

#[path = "support/plans.rs"]
mod support;

use contactplan::app::Application;
use contactplan::clock::ManualClock;
use contactplan::config::{Config, Environment};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let n = args.first().copied().unwrap_or(20_000);
    let days = args.get(1).copied().unwrap_or(366);
    let plans = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("target/bench-plans/{n}"));
    support::generate(&plans, n, true).expect("generate plans");
    let dir = tempfile::tempdir().expect("tmp");
    let config_text = format!(
        "database_url = \"sqlite://outbox.db\"\nplans = \"{}\"\nplaybooks = \"{}\"\ntemplates = \"{}\"\ntimezone = \"Europe/Berlin\"\nhorizon_days = {days}\nhttp_bind = \"off\"\n[sender]\nemail = \"team@example.com\"\nname = \"Team\"\n[delivery]\nkind = \"maildir\"\npath = \"maildir\"\n",
        plans.join("plans").display(),
        plans.join("playbooks").display(),
        Path::new(env!("CARGO_MANIFEST_DIR")).join("templates").display()
    );
    let path = dir.path().join("contactplan.toml");
    std::fs::write(&path, config_text).expect("config");
    let config = Config::load(&path, &Environment::default()).expect("config");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let clock = ManualClock::new(chrono::DateTime::parse_from_rfc3339("2027-01-01T00:00:00Z").expect("t").into());
    let app = rt.block_on(Application::build(config, Arc::new(clock), Default::default())).expect("build");
    let before = support::peak_rss_kib();
    let cpu = support::cpu_seconds();
    let start = Instant::now();
    let scheduler = app.scheduler().clone();
    let stop = tokio_util::sync::CancellationToken::new();
    let report = rt.block_on(async move { scheduler.tick(&stop).await }).expect("tick");
    println!(
        "materialise {n} customers × {days} days: {} rows in {:.2} s ({:.2} s CPU); peak RSS {:.0} MB before the pass, {:.0} MB after",
        report.materialized,
        start.elapsed().as_secs_f64(),
        support::cpu_seconds() - cpu,
        before as f64 / 1024.0,
        support::peak_rss_kib() as f64 / 1024.0
    );
}
