//! Agenda benchmark: every occurrence of the next 365 days for N generated customers (3
//! contacts, the `standard` playbook's 6 rules, a monthly check-in override; every other
//! customer with a German state's holidays and a Saturday/Sunday weekend; daemon defaults
//! `window = "08:00-20:00"`, `jitter = "15m"`), computed in agenda order by
//! `occasion::agenda_each`, the code behind `contactplan agenda` (and, per customer, the
//! daemon's materialisation). Also: ns per `Crontab::next_after` call.
//!
//!     cargo bench --bench agenda                # 100,000 customers
//!     cargo bench --bench agenda -- 10000       # other sizes
//!
//! Each size runs in fresh child processes so peak RSS (VmHWM) belongs to that run; the first
//! run may meet a cold page cache, the median of the next three is reported.

#[path = "support/plans.rs"]
mod support;

use chrono::{DateTime, NaiveDateTime, TimeDelta, Utc};
use contactplan::calendar::{Crontab, Settings, business};
use contactplan::plan;
use std::path::PathBuf;
use std::time::Instant;

/// The same allocator as the binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn measure(n: usize, repeat: usize) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("target/bench-plans-agenda/{n}"));
    let catalog = support::catalog();
    let defaults = Settings {
        window: Some(business::Window::parse("08:00-20:00").expect("window")),
        jitter: Some(900),
        ..Default::default()
    };
    let t = Instant::now();
    let loaded = support::load(&dir, n, &catalog, &defaults);
    let load = t.elapsed();
    let after_load = support::peak_rss_kib();

    for _ in 1..repeat {
        agenda(&loaded.plans, n, after_load, load);
    }
    agenda(&loaded.plans, n, after_load, load);
}

/// One agenda over 365 days, in agenda order, with its time, CPU time and peak RSS.
fn agenda(plans: &plan::Plans, n: usize, after_load: u64, load: std::time::Duration) {
    let from: DateTime<Utc> = "2026-12-01T00:00:00Z".parse().expect("date");
    let to = from + TimeDelta::days(365);
    let (t, cpu) = (Instant::now(), support::cpu_seconds());
    let (mut count, mut adjusted, mut check) = (0usize, 0usize, 0i64);
    let mut last = from;
    contactplan::occasion::agenda_each::<(), _>(&plans.customers, from, to, |slice| {
        for o in slice {
            assert!(o.due.utc >= last, "agenda order");
            last = o.due.utc;
            check = check.wrapping_add(o.due.utc.timestamp());
            adjusted += usize::from(!o.adjustments.is_empty());
        }
        count += slice.len();
        Ok(())
    })
    .expect("agenda");
    let agenda = t.elapsed();
    let cpu = support::cpu_seconds() - cpu;
    println!(
        "agenda n={n} days=365 threads={} occurrences={count} adjusted={adjusted} time={:.3}s cpu={cpu:.2}s peak_rss={:.1}MB (after load {:.1}MB; load {:.3}s) check={check}",
        rayon::current_num_threads(),
        agenda.as_secs_f64(),
        support::peak_rss_kib() as f64 / 1024.0,
        after_load as f64 / 1024.0,
        load.as_secs_f64(),
    );
}

/// ns per `Crontab::next_after`, chained from one firing to the next (what the occasion
/// pipeline does), for typical and awkward expressions.
fn crontab_calls() {
    let start: NaiveDateTime = "2026-01-01T00:00:00".parse().expect("time");
    for expr in ["0 9 1 * *", "0 9 * * MON-FRI", "*/15 * * * *", "0 0 13 * FRI", "30 2 * * *", "0 9 29 2 *"] {
        let cron = Crontab::parse(expr).expect("expression");
        let calls = if expr == "0 9 29 2 *" { 20_000 } else { 500_000 };
        let t = Instant::now();
        let mut at = start;
        for _ in 0..calls {
            at = match cron.next_after(at) {
                Some(next) => next,
                None => start,
            };
        }
        let ns = t.elapsed().as_nanos() as f64 / calls as f64;
        println!("crontab next_after {expr:<16} {ns:>7.0} ns/call ({calls} calls, last {at})");
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    if let Some(n) = args.first().and_then(|a| a.strip_prefix("child:")) {
        measure(n.parse().expect("size"), 1);
        return;
    }
    // `check`'s capacity forecast: 14 days under a cap of 30/min, after one load.
    if let Some(n) = args.first().and_then(|a| a.strip_prefix("capacity:")) {
        let n: usize = n.parse().expect("size");
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("target/bench-plans-agenda/{n}"));
        support::generate(&dir, n, true).expect("generate plans");
        let defaults = Settings {
            window: Some(business::Window::parse("08:00-20:00").expect("window")),
            jitter: Some(900),
            ..Default::default()
        };
        let loaded = support::load(&dir, n, &support::catalog(), &defaults);
        let from: DateTime<Utc> = "2026-12-14T23:00:00Z".parse().expect("date");
        let budget = contactplan::store::Budget { per_minute: Some(30), ..Default::default() };
        for _ in 0..3 {
            let (t, cpu) = (Instant::now(), support::cpu_seconds());
            let f = contactplan::capacity::forecast(&budget, &loaded.plans.customers, from, from + TimeDelta::days(14));
            println!(
                "capacity n={n} days=14 due={} missed={} time={:.3}s cpu={:.2}s peak_rss={:.1}MB",
                f.due,
                f.missed,
                t.elapsed().as_secs_f64(),
                support::cpu_seconds() - cpu,
                support::peak_rss_kib() as f64 / 1024.0
            );
        }
        return;
    }
    // For `perf record`: the agenda five times after one load.
    if let Some(n) = args.first().and_then(|a| a.strip_prefix("profile:")) {
        measure(n.parse().expect("size"), 5);
        return;
    }
    let sizes: Vec<usize> =
        if args.is_empty() { vec![100_000] } else { args.iter().filter_map(|a| a.parse().ok()).collect() };
    for n in sizes {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("target/bench-plans-agenda/{n}"));
        support::generate(&dir, n, true).expect("generate plans");
        support::median_of_children(n, 4);
    }
    crontab_calls();
}
