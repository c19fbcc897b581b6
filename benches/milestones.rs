//! Order milestone evaluation after a large import: N generated customers (default 100,000; the
//! `standard` playbook, whose `hundredth-order` rule counts [100, 1000]) and M orders (default
//! 1,000,000: 1 % of the customers get 109 orders, the others share the rest), stored through
//! `Store::ingest_orders` in commits of whole customers (about 10,000 orders each) into a fresh
//! SQLite outbox. Then one evaluation pass over every change (`dispatch::milestones::run`, what
//! each daemon tick runs). Prints the store ingest rate, the evaluation time, the rows written
//! and the peak RSS. Target: evaluation ≤ 2 s for the default size.
//!
//!     cargo bench --bench milestones                    # 100,000 customers, 1,000,000 orders
//!     cargo bench --bench milestones -- 10000 100000    # customers, orders

#[path = "support/plans.rs"]
mod support;

use contactplan::app::Application;
use contactplan::clock::ManualClock;
use contactplan::config::{Config, Environment};
use contactplan::money::{Currency, Money};
use contactplan::orders::Order;
use contactplan::store::UnixSecs;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let n = args.first().copied().unwrap_or(100_000).max(100);
    let m = args.get(1).copied().unwrap_or(1_000_000).max(n);
    let plans = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("target/bench-plans/{n}"));
    support::generate(&plans, n, false).expect("generate plans");
    let dir = tempfile::tempdir().expect("tmp");
    let config_text = format!(
        "database_url = \"sqlite://outbox.db\"\nplans = \"{}\"\nplaybooks = \"{}\"\ntemplates = \"{}\"\ntimezone = \"Europe/Berlin\"\nhttp_bind = \"off\"\n[sender]\nemail = \"team@example.com\"\nname = \"Team\"\n[delivery]\nkind = \"maildir\"\npath = \"maildir\"\n",
        plans.join("plans").display(),
        plans.join("playbooks").display(),
        Path::new(env!("CARGO_MANIFEST_DIR")).join("templates").display()
    );
    let path = dir.path().join("contactplan.toml");
    std::fs::write(&path, config_text).expect("config");
    let config = Config::load(&path, &Environment::default()).expect("config");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let now: chrono::DateTime<chrono::Utc> =
        chrono::DateTime::parse_from_rfc3339("2027-01-04T08:00:00Z").expect("t").into();
    let app = rt
        .block_on(Application::build(config.clone(), Arc::new(ManualClock::new(now)), Default::default()))
        .expect("build");
    let store = app.store().clone();

    // 1 % of the customers pass 100 orders; the rest share what is left.
    let heavy = n / 100;
    let heavy_orders = 109;
    let light = (m - heavy * heavy_orders) / (n - heavy);
    let mut extra = (m - heavy * heavy_orders) % (n - heavy);
    let mut batch: Vec<Order> = Vec::with_capacity(11_000);
    let mut stored = 0usize;
    let started = Instant::now();
    for c in 0..n {
        let count = if c < heavy {
            heavy_orders
        } else {
            light
                + usize::from(
                    extra > 0 && {
                        extra -= 1;
                        true
                    },
                )
        };
        for k in 0..count {
            batch.push(Order {
                customer: format!("c{c:06}"),
                id: format!("A-{k:05}"),
                date: chrono::NaiveDate::from_ymd_opt(2020 + (k % 7) as i32, 1 + (k % 12) as u32, 1 + (k % 28) as u32)
                    .expect("date"),
                amount: Some(Money {
                    amount: rust_decimal::Decimal::new(12_345 + k as i64, 2),
                    currency: Currency::EUR,
                }),
                reference: None,
            });
        }
        if batch.len() >= 10_000 || c + 1 == n {
            rt.block_on(store.ingest_orders(&batch, "bench", UnixSecs::from(now))).expect("ingest");
            stored += batch.len();
            batch.clear();
        }
    }
    let ingest = started.elapsed().as_secs_f64();
    let snap = app.current();
    let rss_before = support::peak_rss_kib();
    let cpu = support::cpu_seconds();
    let started = Instant::now();
    let pass = rt
        .block_on(contactplan::dispatch::milestones::run(&store, &snap.plans, now, &config.sender.email, &|| {}))
        .expect("evaluate");
    let took = started.elapsed().as_secs_f64();
    println!(
        "ingest {stored} orders for {n} customers: {ingest:.1} s ({:.0} orders/s); evaluate {} changes: {took:.2} s ({:.2} s CPU), {} milestone rows; peak RSS {:.0} MB before, {:.0} MB after",
        stored as f64 / ingest,
        pass.evaluated,
        support::cpu_seconds() - cpu,
        pass.written,
        rss_before as f64 / 1024.0,
        support::peak_rss_kib() as f64 / 1024.0
    );
}
