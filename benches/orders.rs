//! Orders in: N generated orders (default 1,000,000) for N/10 customers, on SQLite and (when
//! it answers at CONTACTPLAN_TEST_POSTGRES_URL) PostgreSQL, each into a fresh database.
//! - CSV: a German-dialect file (`;`, decimal comma, sorted by customer, as ERP exports are)
//!   imported by the real binary (`contactplan orders import`), timed from start to exit;
//!   peak RSS is the child's (`wait4`'s rusage).
//! - API: the same orders through `POST /api/v1/orders` on a daemon in this process, in
//!   batches of 5,000 per request, one request at a time (bodies built before the clock starts).
//!
//! Run it so:
//!
//!     cargo bench --bench orders                # 1,000,000 orders
//!     cargo bench --bench orders -- 100000      # another size
//!     cargo bench --bench orders -- sqlite      # one engine only
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
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let pg_base = std::env::var("CONTACTPLAN_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let engines: Vec<&str> = match args.iter().find(|a| *a == "sqlite" || *a == "postgres") {
        Some(e) => vec![e.as_str()],
        None => vec!["sqlite", "postgres"],
    };
    let mut targets = Vec::new();
    for engine in engines {
        let urls = match engine {
            "sqlite" => Some(("sqlite://outbox.db".to_string(), "sqlite://outbox.db".to_string())),
            _ => rt.block_on(async {
                Some((fresh_pg_schema(&pg_base, "csv").await?, fresh_pg_schema(&pg_base, "api").await?))
            }),
        };
        match urls {
            Some(urls) => targets.push((engine, urls)),
            None => println!("{engine}: skipped (no PostgreSQL at {pg_base})"),
        }
    }
    // Every CSV import first: a child's peak RSS includes what it had before `exec`, a copy of
    // this process's, which the API runs (their JSON bodies) make large.
    for (engine, (csv_url, _)) in &targets {
        import_csv(&write_config(dir.path(), &format!("{engine}-csv"), csv_url), &csv, n, customers, engine);
    }
    for (engine, (_, api_url)) in &targets {
        rt.block_on(post_api(&write_config(dir.path(), &format!("{engine}-api"), api_url), n, customers, engine));
    }
    if targets.iter().any(|(e, _)| *e == "postgres") {
        rt.block_on(drop_pg_schemas(&pg_base));
    }
}

/// The CSV file through the binary.
// The child is reaped by `wait_with_rusage` (wait4, for its own peak RSS), not `Child::wait`.
#[allow(clippy::zombie_processes)]
fn import_csv(config: &Path, csv: &Path, n: usize, customers: usize, engine: &str) {
    let size = std::fs::metadata(csv).map(|m| m.len()).unwrap_or(0);
    let start = Instant::now();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_contactplan"))
        .arg("--config")
        .arg(config)
        .args(["orders", "import"])
        .arg(csv)
        .args(["--format", "json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("run contactplan");
    let mut stdout = Vec::new();
    std::io::Read::read_to_end(&mut child.stdout.take().expect("stdout"), &mut stdout).expect("read");
    let (code, peak_kib) = wait_with_rusage(child.id());
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(code, 0, "import failed: {}", String::from_utf8_lossy(&stdout));
    let report: serde_json::Value = serde_json::from_slice(&stdout).expect("json report");
    assert_eq!(report["inserted"].as_u64(), Some(n as u64), "{report}");
    println!(
        "{engine}: CSV import, {n} orders for {customers} customers ({:.0} MB, {} transactions): {secs:.2} s, {:.0} orders/s; peak RSS of the import {:.0} MB",
        size as f64 / 1e6,
        report["transactions"],
        n as f64 / secs,
        peak_kib as f64 / 1024.0
    );
}

/// The same orders through the API, batch after batch.
async fn post_api(config: &Path, n: usize, customers: usize, engine: &str) {
    let config = Config::load(config, &Environment::default()).expect("config");
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
        let (code, _, reply) =
            contactplan::http::request(addr, "POST", "/api/v1/orders", Some(TOKEN), Some(body)).await.expect("post");
        assert_eq!(code, 200, "{reply}");
        let v: serde_json::Value = serde_json::from_str(&reply).expect("reply");
        inserted += v["inserted"].as_u64().unwrap_or(0);
    }
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(inserted, n as u64);
    println!(
        "{engine}: API, {n} orders in batches of {BATCH}, one request at a time: {secs:.2} s, {:.0} orders/s",
        n as f64 / secs
    );
    running.stop().await;
}

/// A new, empty schema on the PostgreSQL server; its URL (`None`: no server).
async fn fresh_pg_schema(base: &str, name: &str) -> Option<String> {
    let pool = sqlx::PgPool::connect(base).await.ok()?;
    let schema = format!("bench_orders_{}_{name}", std::process::id());
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))).execute(&pool).await.ok()?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}"))).execute(&pool).await.ok()?;
    let sep = if base.contains('?') { '&' } else { '?' };
    Some(format!("{base}{sep}options=-c%20search_path%3D{schema}"))
}

async fn drop_pg_schemas(base: &str) {
    if let Ok(pool) = sqlx::PgPool::connect(base).await {
        for name in ["csv", "api"] {
            let schema = format!("bench_orders_{}_{name}", std::process::id());
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA IF EXISTS {schema} CASCADE")))
                .execute(&pool)
                .await;
        }
    }
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

fn write_config(dir: &Path, name: &str, database_url: &str) -> std::path::PathBuf {
    let root = dir.join(name);
    std::fs::create_dir_all(root.join("plans")).expect("plans");
    std::fs::create_dir_all(root.join("playbooks")).expect("playbooks");
    let text = format!(
        "database_url = \"{database_url}\"\nplans = \"plans\"\nplaybooks = \"playbooks\"\ntemplates = \"{}\"\ntimezone = \"Europe/Berlin\"\nhttp_bind = \"127.0.0.1:0\"\n[sender]\nemail = \"team@example.com\"\nname = \"Team\"\n[delivery]\nkind = \"maildir\"\npath = \"maildir\"\n",
        Path::new(env!("CARGO_MANIFEST_DIR")).join("templates").display()
    );
    let path = root.join("contactplan.toml");
    std::fs::write(&path, text).expect("config");
    path
}

/// Waits for the child `pid`: its exit code (-1 unless it exited) and peak RSS in KiB.
fn wait_with_rusage(pid: u32) -> (i32, i64) {
    // SAFETY: wait4 on our own child, writing into the zeroed structs we pass.
    unsafe {
        let mut status = 0;
        let mut usage: libc::rusage = std::mem::zeroed();
        if libc::wait4(pid as libc::pid_t, &mut status, 0, &mut usage) < 0 {
            return (-1, 0);
        }
        let code = if libc::WIFEXITED(status) { libc::WEXITSTATUS(status) } else { -1 };
        (code, usage.ru_maxrss)
    }
}
