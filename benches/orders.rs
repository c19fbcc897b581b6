//! Orders in: N generated orders (default 1,000,000) for N/10 customers, on SQLite.
//! - CSV: a German-dialect file (`;`, decimal comma, sorted by customer, as ERP exports are)
//!   imported by the real binary (`contactplan orders import`), timed from start to exit;
//!   peak RSS is the child's (`getrusage(RUSAGE_CHILDREN)`).
//! - API: the same orders through `POST /api/v1/orders` on a daemon in this process, in
//!   batches of 5,000 per request, one request at a time (bodies built before the clock starts).
//!
//! Run it so:
//!
//!     cargo bench --bench orders                # 1,000,000 orders
//!     cargo bench --bench orders -- 100000      # another size
//!
//! `cargo test --benches` runs it with 20,000 orders (no `--bench` argument: a smoke run).

use contactplan::app::{Application, Services};
use contactplan::clock::ManualClock;
use contactplan::config::{Config, Environment, Secrets};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

const TOKEN: &str = "bench-token";
const BATCH: usize = 5_000;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let full = args.iter().any(|a| a == "--bench");
    let n = args.iter().find_map(|a| a.parse::<usize>().ok()).unwrap_or(if full { 1_000_000 } else { 20_000 });
    let customers = (n / 10).max(1);
    let dir = tempfile::tempdir().expect("tmp");
    let csv = dir.path().join("orders.csv");
    write_csv(&csv, n, customers).expect("csv");
    let size = std::fs::metadata(&csv).map(|m| m.len()).unwrap_or(0);

    // CSV through the binary.
    let config = write_config(dir.path(), "csv");
    let start = Instant::now();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_contactplan"))
        .arg("--config")
        .arg(&config)
        .args(["orders", "import"])
        .arg(&csv)
        .args(["--format", "json"])
        .output()
        .expect("run contactplan");
    let secs = start.elapsed().as_secs_f64();
    assert!(out.status.success(), "import failed: {}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json report");
    assert_eq!(report["inserted"].as_u64(), Some(n as u64), "{report}");
    println!(
        "CSV import, {n} orders for {customers} customers ({:.0} MB, {} transactions): {secs:.2} s, {:.0} orders/s; peak RSS of the import {:.0} MB",
        size as f64 / 1e6,
        report["transactions"],
        n as f64 / secs,
        children_peak_rss_kib() as f64 / 1024.0
    );

    // The same orders through the API.
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let config = Config::load(&write_config(dir.path(), "api"), &Environment::default()).expect("config");
        let env = Environment::default().with(contactplan::config::ENV_API_TOKEN, TOKEN);
        let edge =
            contactplan::app::Edge { secrets: Secrets::resolve(&config, &env).expect("secrets"), ..Default::default() };
        let clock = ManualClock::new(chrono::DateTime::parse_from_rfc3339("2026-11-30T10:00:00Z").expect("t").into());
        let app = Application::build(config, Arc::new(clock), edge).await.expect("build");
        let running = app.start(Services { http: true, ..Services::NONE }).await.expect("start");
        let addr = running.http_addr().expect("listening");
        let bodies: Vec<Vec<u8>> =
            (0..n).step_by(BATCH).map(|from| json_batch(from, (from + BATCH).min(n), customers)).collect();
        let start = Instant::now();
        let mut inserted = 0;
        for body in bodies {
            let (code, _, reply) = contactplan::http::request(addr, "POST", "/api/v1/orders", Some(TOKEN), Some(body))
                .await
                .expect("post");
            assert_eq!(code, 200, "{reply}");
            let v: serde_json::Value = serde_json::from_str(&reply).expect("reply");
            inserted += v["inserted"].as_u64().unwrap_or(0);
        }
        let secs = start.elapsed().as_secs_f64();
        assert_eq!(inserted, n as u64);
        println!(
            "API, {n} orders in batches of {BATCH}, one request at a time: {secs:.2} s, {:.0} orders/s",
            n as f64 / secs
        );
        running.stop().await;
    });
}

/// The i-th order: customer, order id, date, amount (cents).
fn order(i: usize, customers: usize) -> (String, String, String, u64) {
    let per = 10;
    let c = (i / per) % customers;
    let day = 1 + (i * 7) % 28;
    let month = 1 + (i / 28) % 12;
    (format!("c{c:06}"), format!("A-{i:07}"), format!("{day:02}.{month:02}.2026"), 1000 + (i as u64 * 7919) % 500_000)
}

fn write_csv(path: &Path, n: usize, customers: usize) -> std::io::Result<()> {
    let mut w = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(w, "Kundennummer;Bestellnummer;Datum;Betrag;Währung;Referenz")?;
    for i in 0..n {
        let (c, id, date, cents) = order(i, customers);
        let euros = cents / 100;
        let amount = if euros >= 1000 {
            format!("{}.{:03},{:02}", euros / 1000, euros % 1000, cents % 100)
        } else {
            format!("{euros},{:02}", cents % 100)
        };
        writeln!(w, "{c};{id};{date};{amount};EUR;Bestellung {i}")?;
    }
    w.flush()
}

fn json_batch(from: usize, to: usize, customers: usize) -> Vec<u8> {
    let orders: Vec<serde_json::Value> = (from..to)
        .map(|i| {
            let (c, id, date, cents) = order(i, customers);
            let iso = format!("2026-{}-{}", &date[3..5], &date[0..2]);
            serde_json::json!({
                "customer": c, "order": id, "date": iso,
                "amount": format!("{}.{:02}", cents / 100, cents % 100), "currency": "EUR",
                "reference": format!("Bestellung {i}"),
            })
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({ "orders": orders })).expect("json")
}

fn write_config(dir: &Path, name: &str) -> std::path::PathBuf {
    let root = dir.join(name);
    std::fs::create_dir_all(root.join("plans")).expect("plans");
    std::fs::create_dir_all(root.join("playbooks")).expect("playbooks");
    let text = format!(
        "database_url = \"sqlite://outbox.db\"\nplans = \"plans\"\nplaybooks = \"playbooks\"\ntemplates = \"{}\"\ntimezone = \"Europe/Berlin\"\nhttp_bind = \"127.0.0.1:0\"\n[sender]\nemail = \"team@example.com\"\nname = \"Team\"\n[delivery]\nkind = \"maildir\"\npath = \"maildir\"\n",
        Path::new(env!("CARGO_MANIFEST_DIR")).join("templates").display()
    );
    let path = root.join("contactplan.toml");
    std::fs::write(&path, text).expect("config");
    path
}

/// Largest peak RSS of the waited-for children, in KiB.
fn children_peak_rss_kib() -> i64 {
    // SAFETY: getrusage writes into the zeroed struct we pass.
    unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) == 0 { usage.ru_maxrss } else { 0 }
    }
}
