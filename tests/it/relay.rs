//! Relay limits (issue 15): caps per window held at the SMTP server (also by three daemons on
//! one PostgreSQL database), throttle replies lowering rate and sessions, quota replies pausing
//! and deferring without failing rows, and the order under pressure.

use crate::helpers::{Delivery, Engine, JANE, TestApp, edge, spawn_app, spawn_app_on, utc};
use contactplan::app::Application;
use contactplan::store::RowState;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::UNIX_EPOCH;
use tokio_util::sync::CancellationToken;

/// 2027-03-14 (Jane's birthday) 09:00 in Berlin, 30 s later.
const NOW: &str = "2027-03-14T08:00:30Z";

fn customers(n: usize) -> Vec<(String, String)> {
    (0..n)
        .map(|i| (format!("c{i:03}"), crate::helpers::birthday_plan(&format!("c{i:03}"), "Europe/Berlin", "en", JANE)))
        .collect()
}

/// Messages per wall-clock second at the server.
fn per_second(app: &TestApp) -> HashMap<u64, usize> {
    let mut counts = HashMap::new();
    for m in app.smtp.messages() {
        *counts.entry(m.at.duration_since(UNIX_EPOCH).unwrap().as_secs()).or_insert(0) += 1;
    }
    counts
}

async fn spawn(n: usize, engine: Engine, delivery_extra: &str) -> TestApp {
    let plans = customers(n);
    let plans: Vec<(&str, &str)> = plans.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    // The port is known only once the server runs: spawn with a placeholder, then rebuild.
    let mut app = spawn_app_on(engine, &plans, &[], utc(NOW), Delivery::Smtp).await;
    let text = std::fs::read_to_string(&app.config.path).unwrap();
    let text = text.replace("timeout_secs = 10\n", &format!("timeout_secs = 10\n{delivery_extra}"));
    std::fs::write(&app.config.path, text).unwrap();
    app.config = contactplan::config::Config::load(&app.config.path, &Default::default()).unwrap();
    app.restart().await;
    app
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peaks_first_sends_do_not_wait_for_the_periodic_pass() {
    // Materialised an hour before the greeting (the first tick's full pass); at the greeting's
    // minute the 10-minute periodic pass is due too, and runs after the claims. A failpoint
    // fails that pass: the tick fails, but only after its sends (before, the pass ran first and
    // a peak's first sends waited for a pass over every customer: 3.2 s at 100,000).
    let plan = crate::helpers::birthday_plan("peak-first", "Europe/Berlin", "en", JANE);
    let app =
        spawn_app_on(Engine::Sqlite, &[("peak-first", &plan)], &[], utc("2027-03-14T07:00:00Z"), Delivery::Smtp).await;
    let r = app.tick().await;
    assert_eq!((r.materialized, r.accepted), (1, 0), "{r:?}");
    app.clock.set(utc(NOW));
    fail::cfg("dispatch::materialize", "return(peak-first)").unwrap();
    let failed = app.app.scheduler().tick(&CancellationToken::new()).await;
    fail::remove("dispatch::materialize");
    assert!(failed.is_err(), "the failpoint fails the periodic pass");
    assert_eq!(app.smtp.messages().len(), 1, "the greeting went before the pass");
    // The next tick runs the pass, and sends nothing again.
    let r = app.tick().await;
    assert_eq!(r.accepted, 0, "sent once: {r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_a_cap_of_n_per_second_no_second_at_the_server_carries_more() {
    let app = spawn(45, Engine::Sqlite, "max_per_second = 10\nconnections = 2\n").await;
    let report = app.tick().await;
    assert_eq!(report.accepted, 45, "{report:?}");
    let counts = per_second(&app);
    assert!(counts.values().all(|n| *n <= 10), "{counts:?}");
    assert!(counts.len() >= 5, "45 messages at 10/s take at least 5 seconds: {counts:?}");
    let status = app.app.scheduler().relay_status();
    assert_eq!((status.rate_limit, status.max_per_second), (Some(10.0), Some(10)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_not_started_before_its_second_ends_goes_back_instead_of_spilling_into_the_next() {
    // A slow relay (0.4 s per message) and one session: a claim of three rows (a tenth of the
    // cap) made after the first fifth of a second would send its last row in the next second, on
    // top of that second's own budget.
    let app = spawn(12, Engine::Sqlite, "max_per_second = 30\nconnections = 1\n").await;
    app.smtp.slow_down(std::time::Duration::from_millis(400));
    let report = app.tick().await;
    assert_eq!(report.accepted, 12, "{report:?}");
    assert!(report.given_back > 0, "some row was claimed too late in its second to start in it: {report:?}");
    let accepted = app.app.store().rows(Some(RowState::Accepted), 100).await.unwrap();
    assert!(accepted.iter().all(|r| r.attempts == 1), "a row given back used no attempt");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_daemons_on_one_postgres_database_share_the_cap() {
    // One session each: the test server serves four connections at once.
    let app = spawn(60, Engine::Postgres, "max_per_second = 10\n").await;
    let mut others = Vec::new();
    for host in ["b", "c"] {
        let e = contactplan::app::Edge { hostname: host.into(), ..edge(&app.config) };
        others.push(Application::build(app.config.clone(), Arc::new(app.clock.clone()), e).await.unwrap());
    }
    let stop = CancellationToken::new();
    let (a, b, c) = tokio::join!(
        app.app.scheduler().tick(&stop),
        others[0].scheduler().tick(&stop),
        others[1].scheduler().tick(&stop)
    );
    let accepted = a.unwrap().accepted + b.unwrap().accepted + c.unwrap().accepted;
    assert_eq!(accepted, 60);
    let messages = app.smtp.messages();
    let ids: std::collections::HashSet<String> = messages.iter().map(|m| m.header("Message-ID")).collect();
    assert_eq!((messages.len(), ids.len()), (60, 60), "each once");
    let counts = per_second(&app);
    assert!(counts.values().all(|n| *n <= 10), "{counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttle_reply_halves_rate_and_sessions_and_they_come_back() {
    let app = spawn(3, Engine::Sqlite, "max_per_second = 8\nconnections = 2\n").await;
    app.smtp.reply_next(451, "4.7.1 Too many messages, slow down");
    let report = app.tick().await;
    assert_eq!((report.accepted, report.retried, report.failed), (2, 1, 0), "{report:?}");
    let s = app.app.scheduler().relay_status();
    assert_eq!((s.rate_limit, s.sessions), (Some(4.0), 1), "{s:?}");
    let retry = app.app.store().rows(Some(RowState::Retry), 10).await.unwrap();
    assert_eq!(retry[0].attempts, 0, "a throttle reply does not use up an attempt");
    // After a quiet interval with successful sends: one step up (a tenth of 8, at least 1).
    tokio::time::sleep(contactplan::dispatch::relay::INCREASE_EVERY).await;
    app.clock.set(utc(NOW) + chrono::TimeDelta::seconds(30));
    let report = app.tick().await;
    assert_eq!(report.accepted, 1, "{report:?}");
    let s = app.app.scheduler().relay_status();
    assert_eq!((s.rate_limit, s.sessions), (Some(5.0), 2), "{s:?}");
}

/// Clears the relay's pause in the database, as its window rolling over would.
async fn window_rolls_over(app: &TestApp) {
    let url = format!("sqlite://{}", app.dir.path().join("outbox.db").display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    sqlx::query("UPDATE relay_budget SET start = 0 WHERE kind = 'pause'").execute(&pool).await.unwrap();
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quota_reply_pauses_and_defers_without_failing_rows_then_sending_resumes() {
    for (code, text) in [
        (550, "5.4.5 Daily SMTP relay limit exceeded for user"),
        (454, "Throttling failure: Daily message quota exceeded."),
    ] {
        let mut app = spawn(3, Engine::Sqlite, "").await;
        app.smtp.reply_next(code, text);
        let report = app.tick().await;
        // The session's next row may have been started with the refused one (at_least_once rows
        // start one commit early); nothing else goes out.
        assert!(report.accepted <= 1 && report.failed == 0, "{code}: {report:?}");
        let states: HashMap<_, _> = app.states().await.into_iter().collect();
        assert_eq!(states.get(&RowState::Retry), Some(&1), "{code}: {states:?}");
        let pending = 2 - report.accepted as i64;
        assert_eq!(
            states.get(&RowState::Pending).copied().unwrap_or(0),
            pending,
            "{code}: the batch's other rows went back: {states:?}"
        );
        let sent_before = app.smtp.messages().len();
        assert!(app.app.scheduler().relay_status().paused_for_secs.is_some_and(|s| s >= 3500));
        // Still paused: nothing is claimed, nothing sent.
        assert_eq!(app.tick().await.accepted, 0);
        assert_eq!(app.smtp.messages().len(), sent_before);
        // The window rolls over (a daily text: an hour), the deferred row's retry comes.
        window_rolls_over(&app).await;
        app.restart().await;
        app.clock.set(utc(NOW) + chrono::TimeDelta::minutes(61));
        let report = app.tick().await;
        assert_eq!((report.accepted, report.failed), (3 - sent_before as u64, 0), "{code}: {report:?}");
        assert!(app.app.store().rows(Some(RowState::Failed), 10).await.unwrap().is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_too_much_due_earliest_deadline_first_and_a_fair_share_per_customer() {
    let contacts: String = (0..8)
        .map(|i| {
            format!(
                "[[contact]]\nid = \"p{i}\"\nname = \"Person {i}\"\nemail = \"p{i}@big.example\"\nbirthday = 1980-03-14\ntone = \"formal\"\nprimary = {}\n\n",
                i == 0
            )
        })
        .collect();
    let big = format!(
        "[customer]\nid = \"aaa-big\"\nname = \"Big\"\nsince = 2015-06-01\nowner = \"owner@example.com\"\ntimezone = \"Europe/Berlin\"\nlanguage = \"en\"\nphase = \"maturity\"\n\n{contacts}[[occasion]]\nname = \"birthday\"\non = \"birthday\"\ntemplate = \"birthday\"\nat = \"09:00\"\n"
    );
    let small = crate::helpers::birthday_plan("mmm-small", "Europe/Berlin", "en", JANE);
    // Due at the same time, but its deadline is two hours after the due time, not the day's end.
    let urgent = crate::helpers::birthday_plan("zzz-urgent", "Europe/Berlin", "en", JANE)
        .replace("at = \"09:00\"\n", "at = \"09:00\"\ndeadline = \"2h\"\n");
    let plans = [("aaa-big", big.as_str()), ("mmm-small", small.as_str()), ("zzz-urgent", urgent.as_str())];
    let mut app = spawn_app(&plans, &[], utc(NOW), Delivery::Smtp).await;
    let text = std::fs::read_to_string(&app.config.path).unwrap();
    std::fs::write(&app.config.path, text.replace("timeout_secs = 10\n", "timeout_secs = 10\nmax_per_second = 2\n"))
        .unwrap();
    app.config = contactplan::config::Config::load(&app.config.path, &Default::default()).unwrap();
    app.restart().await;
    let report = app.tick().await;
    assert_eq!(report.accepted, 10, "{report:?}");
    let order: Vec<String> = app.smtp.messages().iter().map(|m| m.to[0].clone()).collect();
    assert_eq!(order[0], "jane.smith@harbor.example", "the earliest deadline first: {order:?}");
    let small_at = order.iter().skip(1).position(|t| t == "jane.smith@harbor.example").unwrap() + 1;
    assert!(small_at == 1, "the small customer's single greeting does not wait for the big one's eight: {order:?}");
}
