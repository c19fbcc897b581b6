//! The three ways orders get in, through real paths on SQLite and PostgreSQL: `contactplan
//! orders add` and `orders import` (the binary, fixtures in `tests/fixtures/orders/`), and
//! `POST /api/v1/orders` on the daemon's listener; plus a schemathesis run against the served
//! OpenAPI document. Assertions read the store, not only the output.

use crate::helpers::{edge, utc};
use crate::store::TestDb;
use contactplan::app::{Application, Services};
use contactplan::clock::ManualClock;
use contactplan::config::{Config, Environment, Secrets};
use contactplan::money::Currency;
use contactplan::store::Store;
use rust_decimal::Decimal;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

const TOKEN: &str = "orders-test-token-0123456789";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/orders").join(name)
}

/// A daemon (not started) with a plan for `acme` only, its outbox on `engine`, listening on
/// a free port, with the API token `token`.
struct OrdersApp {
    app: Application,
    dir: tempfile::TempDir,
    _db: Option<TestDb>,
}

#[derive(Clone, Copy, Debug)]
enum Engine {
    Sqlite,
    Postgres,
}

impl OrdersApp {
    async fn start(engine: Engine, token: Option<&str>) -> OrdersApp {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("plans")).unwrap();
        std::fs::create_dir_all(dir.path().join("playbooks")).unwrap();
        std::fs::write(dir.path().join("plans/acme.toml"), crate::ops::plan("acme", "pat@acme.example", "")).unwrap();
        let db = match engine {
            Engine::Sqlite => None,
            Engine::Postgres => Some(TestDb::postgres().await),
        };
        let config = format!(
            "database_url = \"{}\"\nhttp_bind = \"127.0.0.1:0\"\ntemplates = \"{}\"\ntimezone = \"Europe/Berlin\"\n[sender]\nemail = \"team@example.com\"\nname = \"Team\"\n[delivery]\nkind = \"maildir\"\npath = \"maildir\"\n",
            db.as_ref().map_or("sqlite://outbox.db", |d| d.url()),
            crate::helpers::templates_dir().display()
        );
        std::fs::write(dir.path().join("contactplan.toml"), config).unwrap();
        let config = Config::load(&dir.path().join("contactplan.toml"), &Environment::default()).unwrap();
        let mut e = edge(&config);
        if let Some(t) = token {
            let env = Environment::default().with(contactplan::config::ENV_API_TOKEN, t);
            e.secrets = Secrets::resolve(&config, &env).unwrap();
        }
        let clock = ManualClock::new(utc("2026-11-30T10:00:00Z"));
        let app = Application::build(config, Arc::new(clock), e).await.unwrap();
        OrdersApp { app, dir, _db: db }
    }

    fn store(&self) -> &Store {
        self.app.store()
    }

    /// Runs the binary with this daemon's config: (exit code, stdout, stderr).
    fn cli(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_contactplan"))
            .arg("--config")
            .arg(self.dir.path().join("contactplan.toml"))
            .args(args)
            .env_remove("CONTACTPLAN_DATABASE_URL")
            .env_remove("CONTACTPLAN_API_TOKEN")
            .env_remove("CONTACTPLAN_CONFIG")
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// (order count, EUR revenue) of a customer.
    async fn totals(&self, customer: &str) -> (u64, Decimal) {
        let t = self.store().order_totals(customer).await.unwrap();
        (t.count, t.revenue.get(&Currency::EUR).copied().unwrap_or_default())
    }
}

fn d(s: &str) -> Decimal {
    s.parse().unwrap()
}

fn json(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

async fn orders_add(engine: Engine) {
    let t = OrdersApp::start(engine, None).await;
    let (code, out, err) = t.cli(&["orders", "add", "--customer", "acme", "--order", "A-1", "--amount", "1234.50 EUR"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("order A-1 of acme") && out.contains("1234.50 EUR") && out.contains("new"), "{out}");
    assert!(!err.contains("warning"), "acme is in the plans: {err}");
    assert_eq!(t.totals("acme").await, (1, d("1234.50")));
    // The same order again changes nothing; a correction updates it.
    let (code, out, _) = t.cli(&["orders", "add", "--customer", "acme", "--order", "A-1", "--amount", "1234.50 EUR"]);
    assert_eq!((code, out.contains("unchanged")), (0, true), "{out}");
    let (code, out, _) = t.cli(&[
        "orders",
        "add",
        "--customer",
        "acme",
        "--order",
        "A-1",
        "--date",
        "30.11.2026",
        "--amount",
        "1000,00",
        "--currency",
        "EUR",
    ]);
    assert_eq!((code, out.contains("updated")), (0, true), "{out}");
    assert_eq!(t.totals("acme").await, (1, d("1000")));
    // Not in the plans: stored, with a warning.
    let (code, _, err) = t.cli(&["orders", "add", "--customer", "globex", "--order", "G-1"]);
    assert_eq!(code, 0);
    assert!(err.contains("warning: 1 customer(s) not in the plans") && err.contains("globex"), "{err}");
    assert_eq!(t.totals("globex").await.0, 1);
    // Invalid input: exit 2, every problem named, nothing stored.
    let (code, _, err) =
        t.cli(&["orders", "add", "--customer", "a/b", "--order", "X", "--amount", "1,234", "--currency", "EUR"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--customer") && err.contains("`a/b`") && err.contains("ambiguous"), "{err}");
    assert_eq!(t.totals("a/b").await.0, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn orders_add_on_sqlite() {
    orders_add(Engine::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn orders_add_on_postgres() {
    orders_add(Engine::Postgres).await;
}

async fn csv_import(engine: Engine) {
    let t = OrdersApp::start(engine, None).await;
    let en = fixture("en_utf8_bom.csv");
    let en = en.to_str().unwrap();

    // --all-or-nothing with a bad row: exit 2, nothing stored.
    let (code, out, err) = t.cli(&["orders", "import", en, "--all-or-nothing"]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(out.contains("nothing imported: 2 of 5 rows rejected (--all-or-nothing)"), "{out}");
    assert_eq!(t.totals("acme").await.0, 0);

    // English, comma-separated, decimal point, UTF-8 with BOM: good rows stored, bad ones named.
    let (code, out, err) = t.cli(&["orders", "import", en]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("delimiter ',', decimal point, utf-8, header on line 1"), "{out}");
    assert!(out.contains("line 5: date `2026-11-31`"), "{out}");
    assert!(out.contains("line 6: amount `12.5x`"), "{out}");
    assert!(out.contains("imported 3 of 5 rows: 3 new, 0 updated, 0 unchanged; 2 rejected"), "{out}");
    assert!(err.contains("1 customer(s) not in the plans") && err.contains("globex"), "{err}");
    assert_eq!(t.totals("acme").await, (2, d("1334.40")));
    assert_eq!(t.totals("globex").await, (1, d("250")));

    // The same file again: nothing changes.
    let (code, out, _) = t.cli(&["orders", "import", en, "--format", "json"]);
    assert_eq!(code, 1);
    let r = json(&out);
    assert_eq!(
        (r["inserted"].as_u64(), r["unchanged"].as_u64(), r["changed_customers"].as_u64()),
        (Some(0), Some(3), Some(0))
    );
    assert_eq!(r["errors"][0]["line"], 5);
    assert_eq!(r["errors"][0]["field"], "date");
    assert_eq!(t.totals("acme").await, (2, d("1334.40")));

    // A correction updates the stored order.
    let (code, out, _) =
        t.cli(&["orders", "import", fixture("en_correction.csv").to_str().unwrap(), "--format", "json"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(json(&out)["updated"], 1);
    assert_eq!(t.totals("acme").await, (2, d("1399.90")));

    // German: semicolons, decimal comma, Windows-1252 with umlauts in a reference.
    let de = fixture("de_windows1252.csv");
    let de = de.to_str().unwrap();
    let (code, _, err) = t.cli(&["orders", "import", de]);
    assert_eq!(code, 2, "not UTF-8 without --encoding");
    assert!(err.contains("line 1 is not valid UTF-8") && err.contains("--encoding windows-1252"), "{err}");
    let (code, out, err) = t.cli(&["orders", "import", de, "--encoding", "windows-1252"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("delimiter ';', decimal comma, windows-1252"), "{out}");
    assert!(out.contains("Währung = currency"), "{out}");
    assert!(out.contains("line 3: amount `1.234`: `1.234` is ambiguous"), "{out}");
    assert!(out.contains("line 5: customer `ac me`"), "{out}");
    assert_eq!(t.totals("acme").await, (3, d("2634.46")));
    assert_eq!(t.totals("initech").await, (1, d("17")));
    assert_eq!(reference(&t, "acme", "4711").await.as_deref(), Some("Grüße an Frau Müller"));
    assert_eq!(reference(&t, "initech", "9").await.as_deref(), Some("Bestellung für Köln"));
}

/// The stored reference of an order, read with SQL.
async fn reference(t: &OrdersApp, customer: &str, order: &str) -> Option<String> {
    use sqlx::Connection;
    let url = t.app.config().database_url.clone();
    if url.starts_with("postgres") {
        let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
        sqlx::query_scalar("SELECT reference FROM orders WHERE customer = $1 AND order_id = $2")
            .bind(customer)
            .bind(order)
            .fetch_one(&mut c)
            .await
            .unwrap()
    } else {
        let path = t.dir.path().join("outbox.db");
        let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display())).await.unwrap();
        sqlx::query_scalar("SELECT reference FROM orders WHERE customer = ?1 AND order_id = ?2")
            .bind(customer)
            .bind(order)
            .fetch_one(&mut c)
            .await
            .unwrap()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn csv_import_on_sqlite() {
    csv_import(Engine::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn csv_import_on_postgres() {
    csv_import(Engine::Postgres).await;
}

async fn post(
    addr: std::net::SocketAddr,
    token: Option<&str>,
    body: &str,
) -> (u16, axum::http::HeaderMap, serde_json::Value) {
    let (code, headers, body) =
        contactplan::http::request(addr, "POST", "/api/v1/orders", token, Some(body.as_bytes().to_vec()))
            .await
            .unwrap();
    let v = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{code} {e}: {body}"));
    (code, headers, v)
}

async fn http_api(engine: Engine) {
    let t = OrdersApp::start(engine, Some(TOKEN)).await;
    let running = t.app.start(Services { http: true, ..Services::NONE }).await.unwrap();
    let addr = running.http_addr().unwrap();
    let batch = r#"{"orders": [
        {"customer": "acme", "order": "A-1", "date": "2026-11-02", "amount": "1234.50", "currency": "EUR", "reference": "PO 7781"},
        {"customer": "acme", "order": "A-2", "date": "2026-11-03"},
        {"customer": "globex", "order": "G-1", "date": "2026-11-04", "amount": "250", "currency": "eur"}
    ]}"#;

    // No token, a wrong token: 401 with WWW-Authenticate, nothing stored.
    for token in [None, Some("wrong"), Some("orders-test-token-012345678")] {
        let (code, headers, body) = post(addr, token, batch).await;
        assert_eq!(code, 401, "{token:?}: {body}");
        assert_eq!(headers.get("www-authenticate").unwrap(), "Bearer");
    }
    assert_eq!(t.totals("acme").await.0, 0);

    // Too large: 413, nothing stored (over 8 MiB, or over 10,000 orders).
    // (The answer comes before the body is read, and the connection then closes: a client still
    // sending may see the close instead of the 413.)
    let big = format!("{}{batch}", " ".repeat(9 * 1024 * 1024));
    match contactplan::http::request(addr, "POST", "/api/v1/orders", Some(TOKEN), Some(big.into_bytes())).await {
        Ok((code, _, body)) => assert_eq!(code, 413, "{body}"),
        Err(e) => eprintln!("the oversized request saw the connection close: {e}"),
    }
    let many: Vec<String> =
        (0..10_001).map(|i| format!(r#"{{"customer": "acme", "order": "{i}", "date": "2026-11-02"}}"#)).collect();
    let (code, _, body) = post(addr, Some(TOKEN), &format!("[{}]", many.join(","))).await;
    assert_eq!(code, 413, "{body}");
    assert!(body["error"].as_str().unwrap().contains("at most 10000"), "{body}");
    assert_eq!(t.totals("acme").await.0, 0);

    // Malformed JSON: 400.
    let (code, _, body) = post(addr, Some(TOKEN), r#"{"orders": [{"customer": "acme""#).await;
    assert_eq!(code, 400, "{body}");
    assert!(body["error"].as_str().unwrap().starts_with("malformed JSON"), "{body}");

    // One invalid order: 422 naming index, field and value; nothing stored, not even the valid ones.
    let bad = batch.replace(r#""amount": "250""#, r#""amount": "12,5x""#);
    let (code, _, body) = post(addr, Some(TOKEN), &bad).await;
    assert_eq!(code, 422, "{body}");
    assert_eq!(body["errors"][0]["index"], 2, "{body}");
    assert_eq!(body["errors"][0]["field"], "amount", "{body}");
    assert_eq!(body["errors"][0]["value"], "12,5x", "{body}");
    assert_eq!(body["errors"].as_array().unwrap().len(), 1, "{body}");
    // A JSON number as the amount: refused with its reason.
    let float = batch.replace(r#""amount": "250""#, r#""amount": 250.1"#);
    let (code, _, body) = post(addr, Some(TOKEN), &float).await;
    assert_eq!(code, 422, "{body}");
    assert!(body["errors"][0]["reason"].as_str().unwrap().contains("must be a string"), "{body}");
    assert_eq!(t.totals("acme").await.0, 0);
    assert_eq!(t.totals("globex").await.0, 0);

    // A valid batch: stored, with counts; again: unchanged; one object and an array work too.
    let (code, _, body) = post(addr, Some(TOKEN), batch).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        (body["inserted"].as_u64(), body["updated"].as_u64(), body["unchanged"].as_u64()),
        (Some(3), Some(0), Some(0))
    );
    assert_eq!(t.totals("acme").await, (2, d("1234.50")));
    assert_eq!(t.totals("globex").await, (1, d("250")));
    assert_eq!(
        (body["unknown_customers"].as_u64(), body["unknown_customers_first"][0].as_str()),
        (Some(1), Some("globex"))
    );
    let (code, _, body) = post(addr, Some(TOKEN), batch).await;
    assert_eq!((code, body["unchanged"].as_u64()), (200, Some(3)), "{body}");
    let one = r#"{"customer": "acme", "order": "A-2", "date": "2026-11-03", "amount": "100.00", "currency": "EUR"}"#;
    let (code, _, body) = post(addr, Some(TOKEN), one).await;
    assert_eq!((code, body["updated"].as_u64()), (200, Some(1)), "{body}");
    let (code, _, body) = post(addr, Some(TOKEN), &format!("[{one}]")).await;
    assert_eq!((code, body["unchanged"].as_u64()), (200, Some(1)), "{body}");
    assert_eq!(t.totals("acme").await, (2, d("1334.50")));

    // The document is served without a token; the other routes are unchanged.
    let (code, _, doc) = contactplan::http::request(addr, "GET", "/api/v1/openapi.json", None, None).await.unwrap();
    assert_eq!(code, 200);
    assert!(doc.contains("\"/api/v1/orders\""));
    assert_eq!(contactplan::http::get(addr, "/healthz", None).await.unwrap(), (200, "ok\n".to_string()));
    assert_eq!(contactplan::http::get(addr, "/status", None).await.unwrap().0, 401);
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn http_orders_api_on_sqlite() {
    http_api(Engine::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn http_orders_api_on_postgres() {
    http_api(Engine::Postgres).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn http_orders_api_refuses_writes_without_a_configured_token() {
    let t = OrdersApp::start(Engine::Sqlite, None).await;
    let running = t.app.start(Services { http: true, ..Services::NONE }).await.unwrap();
    let addr = running.http_addr().unwrap();
    let one = r#"{"customer": "acme", "order": "A-1", "date": "2026-11-03"}"#;
    for token in [None, Some("anything")] {
        let (code, _, body) = post(addr, token, one).await;
        assert_eq!(code, 403, "{body}");
        assert!(body["error"].as_str().unwrap().contains("CONTACTPLAN_API_TOKEN"), "{body}");
    }
    assert_eq!(t.totals("acme").await.0, 0);
    running.stop().await;
}

/// schemathesis (installed by tests/run into target/schemathesis-venv) against the served
/// document, with the token: no server error, responses as documented.
#[tokio::test(flavor = "multi_thread")]
async fn http_api_holds_to_its_openapi_document_under_schemathesis() {
    let st = std::env::var_os("CONTACTPLAN_SCHEMATHESIS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/schemathesis-venv/bin/schemathesis"));
    assert!(st.exists(), "{} is missing: run tests/run, which installs schemathesis there", st.display());
    let t = OrdersApp::start(Engine::Sqlite, Some(TOKEN)).await;
    let running = t.app.start(Services { http: true, ..Services::NONE }).await.unwrap();
    let addr = running.http_addr().unwrap();
    let report = t.dir.path().join("schemathesis");
    let dir = t.dir.path().to_path_buf();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(&st)
            .arg("--config-file")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/schemathesis.toml"))
            .arg("run")
            .arg(format!("http://{addr}/api/v1/openapi.json"))
            .args(["--header", &format!("Authorization: Bearer {TOKEN}")])
            .args(["--max-examples", "50", "--max-time", "20", "--seed", "1", "--workers", "1"])
            .args(["--checks", "all"])
            .args(["--generation-database", "none", "--no-color", "--report", "json"])
            .arg("--report-dir")
            .arg(&report)
            .current_dir(&dir)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    println!("{text}");
    assert!(out.status.success(), "schemathesis failed:\n{text}");
    assert!(!text.contains("Server error"), "{text}");
    running.stop().await;
}

/// Transactions hold about 10,000 orders and whole customers: a file sorted by customer is cut
/// between customers, and one whose customers alternate is not cut at all, so every customer
/// gets one change per import.
#[tokio::test(flavor = "multi_thread")]
async fn csv_import_never_splits_a_customer_across_transactions() {
    use std::fmt::Write;
    let t = OrdersApp::start(Engine::Sqlite, None).await;
    let import = |name: &str, rows: &mut dyn Iterator<Item = (String, usize)>| {
        let mut text = String::from("customer,order,date\n");
        for (c, i) in rows {
            writeln!(text, "{c},{i},2026-01-01").unwrap();
        }
        let path = t.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        let (code, out, err) = t.cli(&["orders", "import", path.to_str().unwrap(), "--format", "json"]);
        assert_eq!(code, 0, "{out}{err}");
        json(&out)
    };
    let sorted = import(
        "sorted.csv",
        &mut ["s1", "s2", "s3"].into_iter().flat_map(|c| (0..10_000).map(move |i| (c.to_string(), i))),
    );
    assert_eq!((sorted["inserted"].as_u64(), sorted["transactions"].as_u64()), (Some(30_000), Some(3)), "{sorted}");
    let mixed = import("mixed.csv", &mut (0..20_002).map(|i| (format!("m{}", i % 2), i)));
    assert_eq!((mixed["inserted"].as_u64(), mixed["transactions"].as_u64()), (Some(20_002), Some(1)), "{mixed}");
    let changes = t.store().unevaluated_changes(100).await.unwrap();
    let mut per_customer: Vec<(&str, u64)> = changes.iter().map(|c| (c.customer.as_str(), c.after.count)).collect();
    per_customer.sort();
    assert_eq!(per_customer, [("m0", 10_001), ("m1", 10_001), ("s1", 10_000), ("s2", 10_000), ("s3", 10_000)]);
}
