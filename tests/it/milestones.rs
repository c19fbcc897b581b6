//! Order milestones through the daemon: orders stored (as `orders add`, `orders import` and the
//! API store them) while the daemon runs → the thresholds of `on = "orders"` rules each reach
//! the outbox once and are sent once over real SMTP on 127.0.0.1 — under jumps over a
//! threshold, re-imports, corrections and restarts; several thresholds in one change follow
//! `on_multiple`; revenue counts in the customer's currency. On SQLite and PostgreSQL.

use crate::helpers::{Delivery, Engine, TestApp, spawn_app_on, utc};
use contactplan::clock::Clock;
use contactplan::money::{Currency, Money};
use contactplan::orders::Order;
use contactplan::store::{Row, RowState, UnixSecs};

/// ACME in Berlin with Anna (primary, formal, English), and `rules` appended.
fn plan(rules: &str) -> String {
    format!(
        r#"[customer]
id = "acme"
name = "ACME"
since = 2015-06-01
owner = "owner@example.com"
timezone = "Europe/Berlin"
language = "en"
phase = "maturity"
currency = "EUR"

[[contact]]
id = "anna"
name = "Anna Schmidt"
gender = "female"
email = "anna@acme.example"
tone = "formal"
primary = true
{rules}"#
    )
}

/// A thank-you email to Anna at the 100th and 1000th order, and a task for the salesperson
/// at the same counts; both at once when the event's day has passed 00:00.
const COUNTS: &str = r#"
[[occasion]]
name = "thanks"
on = "orders"
counts = [100, 1000]
to = "primary"
template = "order_milestone"
at = "00:00"

[[occasion]]
name = "call"
on = "orders"
counts = [100, 1000]
send = "task"
template = "order_milestone"
at = "00:00"
"#;

/// Monday 2026-11-30, 09:00 in Berlin.
const START: &str = "2026-11-30T08:00:00Z";

fn order(customer: &str, n: u32, amount: &str, currency: Currency) -> Order {
    let date = chrono::NaiveDate::from_ymd_opt(2025 + (n % 2) as i32, 1 + n % 12, 1 + n % 28).unwrap();
    Order {
        customer: customer.into(),
        id: format!("PO-{n:05}"),
        date,
        amount: Some(Money { amount: amount.parse().unwrap(), currency }),
        reference: None,
    }
}

fn orders(range: std::ops::RangeInclusive<u32>) -> Vec<Order> {
    range.map(|n| order("acme", n, "10.00", Currency::EUR)).collect()
}

async fn ingest(app: &TestApp, orders: &[Order]) {
    let now = UnixSecs::from(app.clock.now());
    app.app.store().ingest_orders(orders, "test", now).await.unwrap();
}

async fn rows(app: &TestApp, state: RowState) -> Vec<Row> {
    app.app.store().rows(Some(state), 1000).await.unwrap()
}

fn keys(rows: &[Row]) -> Vec<String> {
    let mut k: Vec<String> = rows.iter().map(|r| r.key.to_string()).collect();
    k.sort();
    k
}

async fn start(engine: Engine, rules: &str) -> TestApp {
    let app = spawn_app_on(engine, &[("acme", &plan(rules))], &[], utc(START), Delivery::Smtp).await;
    app.tick().await;
    app
}

/// 98 orders, then one import of five more (98 → 103): the 100th is thanked once — by email to
/// Anna and as a task for the salesperson — and never again after a re-import, a correction of
/// an old order, or a restart.
async fn a_jump_over_the_threshold_fires_it_exactly_once(engine: Engine) {
    let mut app = start(engine, COUNTS).await;
    ingest(&app, &orders(1..=98)).await;
    let r = app.tick().await;
    assert_eq!((r.milestones, r.accepted), (0, 0), "nothing at 98: {r:?}");

    app.clock.set(utc("2026-11-30T10:15:00Z"));
    ingest(&app, &orders(99..=103)).await;
    let r = app.tick().await;
    assert_eq!((r.milestones, r.accepted), (2, 2), "the 100th: one email, one task: {r:?}");
    let sent = rows(&app, RowState::Accepted).await;
    assert_eq!(keys(&sent), ["acme/call/owner/orders:100", "acme/thanks/contact:anna/orders:100"]);
    assert_eq!(sent[0].due.datetime(), utc("2026-11-30T10:15:00Z"), "at once: 00:00 has passed that day");

    let messages = app.smtp.messages();
    let email = messages.iter().find(|m| m.to == ["anna@acme.example"]).expect("Anna is thanked");
    assert_eq!(email.header("Subject"), "Thank you for your 100th order");
    let (text, _) = email.parts();
    assert!(text.contains("Dear Ms Schmidt,") && text.contains("since 1 June 2015"), "{text}");
    let task = messages.iter().find(|m| m.to == ["owner@example.com"]).expect("the salesperson's task");
    assert_eq!(task.header("Subject"), "Task: ACME – 100th order");
    let (text, _) = task.parts();
    assert!(text.contains("Orders so far: 103") && text.contains("Revenue so far: €1,030.00"), "{text}");
    assert!(text.contains("Revenue 2025: €") && text.contains("Revenue 2026: €"), "by year: {text}");

    // The same file again, a corrected amount and date of an old order, a restart.
    ingest(&app, &orders(1..=103)).await;
    let mut fixed = order("acme", 7, "99.90", Currency::EUR);
    fixed.date = chrono::NaiveDate::from_ymd_opt(2024, 5, 5).unwrap();
    ingest(&app, &[fixed]).await;
    app.restart().await;
    for t in ["2026-11-30T12:00:00Z", "2026-12-01T12:00:00Z"] {
        let r = app.tick_at(t).await;
        assert_eq!((r.milestones, r.accepted), (0, 0), "{t}: {r:?}");
    }
    assert_eq!(app.smtp.messages().len(), 2, "exactly once");
    let totals = app.app.store().order_totals("acme").await.unwrap();
    assert_eq!(totals.count, 103, "re-imports count once");
}

/// One import passes 100 and 1000: under `on_multiple = "highest"` (the default) only the
/// 1000th is sent and the 100th is recorded `suppressed` with the reason; under `"each"` both.
async fn several_thresholds_in_one_change_follow_on_multiple(engine: Engine) {
    let each = COUNTS.replace(
        "at = \"00:00\"\n\n[[occasion]]\nname = \"call\"",
        "at = \"00:00\"\non_multiple = \"each\"\n\n[[occasion]]\nname = \"call\"",
    );
    let app = start(engine, &each).await;
    ingest(&app, &orders(1..=1002)).await;
    let r = app.tick().await;
    assert_eq!((r.milestones, r.accepted), (4, 3), "{r:?}");
    assert_eq!(
        keys(&rows(&app, RowState::Accepted).await),
        ["acme/call/owner/orders:1000", "acme/thanks/contact:anna/orders:100", "acme/thanks/contact:anna/orders:1000"]
    );
    let skipped = rows(&app, RowState::Suppressed).await;
    assert_eq!(keys(&skipped), ["acme/call/owner/orders:100"]);
    assert_eq!(
        skipped[0].reason.as_deref(),
        Some(
            "passed together with order 1000 in one change (1002 orders now; on_multiple = highest: only the 1000th is sent)"
        )
    );
    // Ops can see why it was not sent.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_contactplan"))
        .args(["outbox", "--state", "suppressed", "--config"])
        .arg(app.dir.path().join("contactplan.toml"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("acme/call/owner/orders:100") && text.contains("on_multiple = highest"), "{text}");
}

/// Revenue thresholds in the customer's currency (EUR): USD orders do not count; a correction
/// that lifts an order over the threshold fires it once; a correction down and up again does
/// not fire it again.
async fn revenue_thresholds_count_the_customers_currency_once(engine: Engine) {
    let rule = r#"
[[occasion]]
name = "revenue"
on = "orders"
revenue = [1000]
send = "task"
template = "order_milestone"
at = "00:00"
"#;
    let app = start(engine, rule).await;
    let mut batch: Vec<Order> = (1..=9).map(|n| order("acme", n, "100.00", Currency::EUR)).collect();
    batch.push(order("acme", 10, "5000.00", Currency::parse("USD").unwrap()));
    ingest(&app, &batch).await;
    assert_eq!(app.tick().await.milestones, 0, "900 EUR and 5000 USD: under 1000 EUR");

    ingest(&app, &[order("acme", 9, "100.01", Currency::EUR)]).await; // 900.01
    assert_eq!(app.tick().await.milestones, 0);
    ingest(&app, &[order("acme", 11, "99.99", Currency::EUR)]).await; // exactly 1000.00
    let r = app.tick().await;
    assert_eq!((r.milestones, r.accepted), (1, 1), "{r:?}");
    let (text, _) = app.smtp.messages()[0].parts();
    assert!(text.contains("has passed €1,000 in revenue") && text.contains("Revenue so far: €1,000.00"), "{text}");

    ingest(&app, &[order("acme", 11, "1.00", Currency::EUR)]).await; // down to 901.01
    app.tick().await;
    ingest(&app, &[order("acme", 11, "500.00", Currency::EUR)]).await; // up to 1400.01
    let r = app.tick().await;
    assert_eq!((r.milestones, r.accepted), (0, 0), "passed before: {r:?}");
    assert_eq!(app.smtp.messages().len(), 1);
}

/// Orders of a customer that is not in the plans are stored and evaluated without a row; the
/// customer's plan added later does not fire for thresholds passed before it existed. Orders
/// of a customer without orders rules change nothing in the outbox.
async fn orders_of_customers_without_rules_fire_nothing(engine: Engine) {
    let app = start(engine, "").await;
    let stranger: Vec<Order> = (1..=150).map(|n| order("globex", n, "10.00", Currency::EUR)).collect();
    ingest(&app, &stranger).await;
    ingest(&app, &orders(1..=150)).await;
    let r = app.tick().await;
    assert_eq!((r.milestones, r.accepted), (0, 0), "{r:?}");
    assert_eq!(app.app.store().order_totals("globex").await.unwrap().count, 150, "stored anyway");

    std::fs::write(app.dir.path().join("plans/acme.toml"), plan(COUNTS)).unwrap();
    app.app.reload("test").await;
    let r = app.tick().await;
    assert_eq!((r.milestones, r.accepted), (0, 0), "the rule came after the 100th: {r:?}");
    ingest(&app, &orders(151..=1000)).await;
    let r = app.tick().await;
    assert_eq!((r.milestones, r.accepted), (2, 2), "the 1000th: {r:?}");
}

/// The send time of an event: at the rule's `at` on the day it happened when that is still
/// ahead; at once when it has passed; on the next open day when the day is closed (a weekend
/// under `on_closed`), never dropped.
async fn the_send_time_follows_the_event_policy(engine: Engine) {
    let rule = r#"
[[occasion]]
name = "call"
on = "orders"
every_count = 10
send = "task"
template = "order_milestone"
at = "10:00"
weekend = ["sat", "sun"]
on_closed = "skip"
"#;
    let app = start(engine, rule).await;
    // Monday 09:00 Berlin: 10:00 is ahead.
    ingest(&app, &orders(1..=10)).await;
    assert_eq!(app.tick().await.milestones, 1);
    let pending = rows(&app, RowState::Pending).await;
    assert_eq!(pending[0].due.datetime(), utc("2026-11-30T09:00:00Z"), "10:00 in Berlin");
    assert_eq!(app.tick_at("2026-11-30T09:00:00Z").await.accepted, 1);

    // Monday 15:00 Berlin: 10:00 has passed, so at once.
    app.clock.set(utc("2026-11-30T14:00:00Z"));
    ingest(&app, &orders(11..=20)).await;
    let r = app.tick().await;
    assert_eq!((r.milestones, r.accepted), (1, 1), "{r:?}");

    // Saturday: the next open day, Monday 10:00; `skip` does not drop an event.
    app.clock.set(utc("2026-12-05T11:00:00Z"));
    ingest(&app, &orders(21..=30)).await;
    let r = app.tick().await;
    assert_eq!((r.milestones, r.accepted), (1, 0), "{r:?}");
    let pending = rows(&app, RowState::Pending).await;
    assert_eq!(keys(&pending), ["acme/call/owner/orders:30"]);
    assert_eq!(pending[0].due.datetime(), utc("2026-12-07T09:00:00Z"), "Monday 10:00 in Berlin");
}

/// The real ways in: `contactplan orders import` (a German CSV file with a bad row, then the same
/// file again, then a corrected file) and `contactplan orders add`, run as separate processes
/// while the daemon runs. The 100th order is thanked exactly once.
async fn orders_from_the_cli_fire_their_milestone_once(engine: Engine) {
    let app = start(engine, COUNTS).await;
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_contactplan"))
            .arg("--config")
            .arg(app.dir.path().join("contactplan.toml"))
            .args(args)
            .env_remove("CONTACTPLAN_DATABASE_URL")
            .env_remove("CONTACTPLAN_CONFIG")
            .output()
            .unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(!text.contains("_sqlx_migrations"), "no database notices on a CLI run: {text}");
        (out.status.code().unwrap_or(-1), text)
    };
    // 98 good rows and one bad one (line 100: an amount with a stray letter).
    let mut csv = String::from("Kundennummer;Bestellnummer;Datum;Betrag;Währung\n");
    for n in 1..=98 {
        csv.push_str(&format!("acme;B-{n};{:02}.11.2026;1.000,50;EUR\n", 1 + n % 28));
    }
    csv.push_str("acme;B-99;29.11.2026;12,5x;EUR\n");
    let file = app.dir.path().join("auftraege.csv");
    std::fs::write(&file, &csv).unwrap();
    let file = file.to_str().unwrap();
    let (code, err) = cli(&["orders", "import", file]);
    assert_eq!(code, 1, "some rows rejected: {err}");
    assert!(err.contains("line 100"), "the bad row's line: {err}");
    assert_eq!(app.tick().await.milestones, 0, "98 orders");

    // The fixed file: one more order and a new one make 100.
    let fixed = csv.replace("12,5x", "12,50") + "acme;B-100;30.11.2026;7,00;EUR\n";
    std::fs::write(file, &fixed).unwrap();
    let (code, err) = cli(&["orders", "import", file]);
    assert_eq!(code, 0, "{err}");
    // The CLI stamps the change with its own (wall) clock: the daemon's clock follows.
    app.clock.set(chrono::Utc::now() + chrono::TimeDelta::seconds(1));
    let r = app.tick().await;
    assert_eq!((r.milestones, r.accepted), (2, 2), "the 100th: {r:?}");

    // The same file again, a corrected amount, one more order by hand: nothing more.
    let (code, err) = cli(&["orders", "import", file]);
    assert_eq!(code, 0, "{err}");
    std::fs::write(file, fixed.replace("acme;B-7;08.11.2026;1.000,50", "acme;B-7;08.11.2026;2.000,00")).unwrap();
    let (code, err) = cli(&["orders", "import", file]);
    assert_eq!(code, 0, "{err}");
    let (code, err) = cli(&["orders", "add", "--customer", "acme", "--order", "B-101", "--amount", "5.00 EUR"]);
    assert_eq!(code, 0, "{err}");
    for days in [0, 1] {
        app.clock.set(chrono::Utc::now() + chrono::TimeDelta::days(days));
        let r = app.tick().await;
        assert_eq!((r.milestones, r.accepted), (0, 0), "+{days} d: {r:?}");
    }
    let totals = app.app.store().order_totals("acme").await.unwrap();
    assert_eq!(totals.count, 101);
    let expected: rust_decimal::Decimal = "99073.00".parse().unwrap();
    assert_eq!(totals.revenue[&Currency::EUR], expected, "97 × 1000.50 + 2000.00 + 12.50 + 7.00 + 5.00");
    assert_eq!(app.smtp.messages().len(), 2, "exactly once");
}

on_both_engines!(
    a_jump_over_the_threshold_fires_it_exactly_once,
    several_thresholds_in_one_change_follow_on_multiple,
    revenue_thresholds_count_the_customers_currency_once,
    orders_of_customers_without_rules_fire_nothing,
    the_send_time_follows_the_event_policy,
    orders_from_the_cli_fire_their_milestone_once,
);

/// Three `contactplan run` daemons on one PostgreSQL database; another process (this test, as
/// `orders import` or the API would) writes 10,000 orders for 1,000 customers in four rounds
/// (3 + 3 + 2 + 2 orders each, so every customer passes 5 in round two and 10 in round four)
/// and repeats round two at the end. Each milestone (2,000) reaches the SMTP server exactly
/// once, with no restart.
#[test]
fn three_daemons_on_one_postgres_database_fire_each_milestone_exactly_once() {
    use crate::crash::{accepted, daemon, wait_until};
    use std::time::Duration;
    const CUSTOMERS: usize = 1_000;
    let peer = crate::peer::Peer::start(crate::peer::PeerOptions::default());
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("plans")).unwrap();
    for i in 0..CUSTOMERS {
        let plan = format!(
            "[customer]\nid = \"c{i:04}\"\nname = \"C{i}\"\nsince = 2015-06-01\nowner = \"sales@example.com\"\ntimezone = \"Europe/Berlin\"\nlanguage = \"en\"\nphase = \"growth\"\n\n[[contact]]\nid = \"p\"\nname = \"Pat Doe\"\nemail = \"p{i}@example.net\"\ntone = \"formal\"\nprimary = true\n\n[[occasion]]\nname = \"call\"\non = \"orders\"\ncounts = [5, 10]\nsend = \"task\"\ntemplate = \"order_milestone\"\nat = \"00:00\"\n"
        );
        std::fs::write(dir.path().join("plans").join(format!("c{i:04}.toml")), plan).unwrap();
    }
    let config = dir.path().join("contactplan.toml");
    std::fs::write(
        &config,
        format!(
            "database_url = \"sqlite://outbox.db\"\nhttp_bind = \"127.0.0.1:0\"\ntemplates = \"{}\"\nbatch_size = 100\n[sender]\nemail = \"team@example.com\"\nname = \"Team\"\n[ops]\nemail = \"ops@example.com\"\n[delivery]\nkind = \"smtp\"\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\ntimeout_secs = 10\nconnections = 2\n",
            crate::helpers::templates_dir().display(),
            peer.port
        ),
    )
    .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(crate::store::TestDb::postgres());
    let store = rt.block_on(db.connect());
    let mut daemons: Vec<_> = (0..3).map(|_| daemon(&config, Some(db.url()))).collect();

    let round = |r: usize| -> Vec<Order> {
        let (from, n) = [(0, 3), (3, 3), (6, 2), (8, 2)][r];
        (0..CUSTOMERS)
            .flat_map(|c| (from..from + n).map(move |k| (c, k)))
            .map(|(c, k)| {
                let mut o = order(&format!("c{c:04}"), k as u32 + 1, "19.99", Currency::EUR);
                o.id = format!("c{c:04}-{k}");
                o
            })
            .collect()
    };
    let mut written = 0;
    for r in [0, 1, 2, 3, 1] {
        let orders = round(r);
        // As an import does: a few commits of whole customers each.
        for chunk in orders.chunks(750) {
            let now = UnixSecs::from(chrono::Utc::now());
            rt.block_on(store.ingest_orders(chunk, "test", now)).unwrap();
        }
        written += orders.len();
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(written, 10_000 + 3_000, "10,000 orders and round two again");

    let done = wait_until(Duration::from_secs(180), || {
        let counts = rt.block_on(store.counts()).unwrap();
        counts.iter().find(|(s, _)| *s == RowState::Accepted).map_or(0, |(_, n)| *n) as usize >= 2 * CUSTOMERS
    });
    // Settle: anything sent twice would arrive now.
    std::thread::sleep(Duration::from_secs(2));
    for d in &mut daemons {
        let _ = std::process::Command::new("kill").arg("-TERM").arg(d.id().to_string()).status();
    }
    for d in &mut daemons {
        assert!(d.wait().unwrap().success(), "each daemon exits 0 on SIGTERM");
    }
    assert!(done, "all milestones accepted within 180 s");
    let counts = rt.block_on(store.counts()).unwrap();
    let get = |s: RowState| counts.iter().find(|(x, _)| *x == s).map_or(0, |(_, n)| *n);
    assert_eq!(get(RowState::Accepted), 2 * CUSTOMERS as i64, "{counts:?}");
    assert_eq!(get(RowState::Suppressed), 0, "no round passes two thresholds: {counts:?}");
    let totals = rt.block_on(store.order_totals("c0999")).unwrap();
    assert_eq!(totals.count, 10);
    let accepted = accepted(&peer);
    assert_eq!(accepted.len(), 2 * CUSTOMERS, "every milestone reached the server");
    let twice: Vec<_> = accepted.iter().filter(|(_, c)| **c > 1).collect();
    assert!(twice.is_empty(), "accepted more than once: {twice:?}");
}

/// Orders posted to `POST /api/v1/orders` while the daemon runs: the scheduler is woken, and the
/// 100th order's thanks reaches the SMTP server at once, not at the next tick a minute later.
#[tokio::test(flavor = "multi_thread")]
async fn orders_posted_to_the_api_send_their_milestone_at_once() {
    use contactplan::app::Services;
    const TOKEN: &str = "milestone-test-token-0123456789";
    let mut t = spawn_app_on(Engine::Sqlite, &[("acme", &plan(COUNTS))], &[], utc(START), Delivery::Smtp).await;
    crate::helpers::with_api_token(&mut t, TOKEN).await;
    ingest(&t, &orders(1..=99)).await;
    let running = t.app.start(Services { scheduler: true, http: true, ..Services::NONE }).await.unwrap();
    let addr = running.http_addr().unwrap();
    // The first tick runs at start; give it a moment, then the loop sleeps (nothing is due).
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    assert!(t.smtp.messages().is_empty());

    let body =
        r#"{"customer": "acme", "order": "PO-00100", "date": "2026-11-30", "amount": "10.00", "currency": "EUR"}"#;
    let (code, _, answer) =
        contactplan::http::request(addr, "POST", "/api/v1/orders", Some(TOKEN), Some(body.as_bytes().to_vec()))
            .await
            .unwrap();
    assert_eq!(code, 200, "{answer}");
    let started = std::time::Instant::now();
    while t.smtp.messages().len() < 2 && started.elapsed() < std::time::Duration::from_secs(20) {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let to: Vec<Vec<String>> = t.smtp.messages().into_iter().map(|m| m.to).collect();
    assert_eq!(to.len(), 2, "the thanks and the task, long before the loop's minute: {to:?}");
    running.stop().await;
}
