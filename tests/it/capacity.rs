//! Capacity (issue 15): what the relay's caps cannot send before the deadline is announced well
//! before it (missed with the reason, one task per salesperson, one ops notice), and
//! `agenda --capacity`'s forecast is what the daemon then shows.

use crate::helpers::{Delivery, Engine, TestApp, spawn_app_on, utc};
use contactplan::store::{Budget, RowState};
use std::collections::HashMap;

/// A customer with one contact whose birthday is `birthday` (`MM-DD`), greeted at `at` with a
/// deadline of an hour, owned by `owner`.
fn plan(id: &str, owner: &str, birthday: &str, at: &str) -> String {
    format!(
        r#"[customer]
id = "{id}"
name = "Customer {id}"
since = 2015-06-01
owner = "{owner}"
timezone = "Europe/Berlin"
language = "en"
phase = "maturity"

[[contact]]
id = "anna"
name = "Anna {id}"
email = "anna@{id}.example"
birthday = 1980-{birthday}
tone = "formal"
primary = true

[[occasion]]
name = "birthday"
on = "birthday"
template = "birthday"
at = "{at}"
deadline = "1h"
"#
    )
}

async fn spawn(engine: Engine, plans: &[(String, String)], now: &str, limits: &str) -> TestApp {
    let plans: Vec<(&str, &str)> = plans.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let mut app = spawn_app_on(engine, &plans, &[], utc(now), Delivery::Smtp).await;
    let text = std::fs::read_to_string(&app.config.path).unwrap();
    std::fs::write(&app.config.path, text.replace("timeout_secs = 10\n", &format!("timeout_secs = 10\n{limits}")))
        .unwrap();
    app.config = contactplan::config::Config::load(&app.config.path, &Default::default()).unwrap();
    app.restart().await;
    app
}

/// The relay's windows roll over (the budget counts on the database clock; the test's clock is
/// injected): what the next window of the injected clock would allow.
async fn windows_roll_over(app: &TestApp) {
    let url = format!("sqlite://{}", app.dir.path().join("outbox.db").display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    sqlx::query("UPDATE relay_budget SET used = 0 WHERE kind <> 'pause'").execute(&pool).await.unwrap();
    pool.close().await;
}

fn count(states: &[(RowState, i64)], s: RowState) -> i64 {
    states.iter().find(|(k, _)| *k == s).map_or(0, |(_, n)| *n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_cannot_fit_is_announced_before_its_deadline_once_per_owner() {
    for engine in [Engine::Sqlite, Engine::Postgres] {
        announced_once_per_owner(engine).await;
    }
}

async fn announced_once_per_owner(engine: Engine) {
    // 20 greetings due at 09:00 Berlin (08:00Z), deadline 10:00 (09:00Z); the relay takes 5 an hour.
    let plans: Vec<(String, String)> = (0..20)
        .map(|i| {
            let id = format!("c{i:02}");
            let owner = if i % 2 == 0 { "eva@example.com" } else { "tom@example.com" };
            (id.clone(), plan(&id, owner, "03-14", "09:00"))
        })
        .collect();
    let app = spawn(engine, &plans, "2027-03-14T08:00:30Z", "max_per_hour = 5\n").await;
    let report = app.tick().await;
    assert_eq!((report.accepted, report.missed), (5, 15), "{report:?}");
    let states = app.states().await;
    assert_eq!((count(&states, RowState::Accepted), count(&states, RowState::Missed)), (5, 15), "{states:?}");
    let missed = app.app.store().rows(Some(RowState::Missed), 100).await.unwrap();
    for r in &missed {
        let reason = r.reason.clone().unwrap_or_default();
        assert!(
            reason.starts_with("would not fit under max_per_hour = 5 before its deadline: ")
                && reason.contains("deadline 2027-03-14T09:00:00Z, announced 2027-03-14T08:00:30Z"),
            "{reason}"
        );
    }
    let messages = app.smtp.messages();
    let to = |addr: &str| messages.iter().filter(|m| m.to[0] == addr).collect::<Vec<_>>();
    let (eva, tom) = (to("eva@example.com"), to("tom@example.com"));
    assert_eq!((eva.len(), tom.len()), (1, 1), "one task per owner");
    let (text, _) = eva[0].parts();
    assert!(eva[0].header("Subject").starts_with("Call instead: "), "{}", eva[0].header("Subject"));
    let listed = text.lines().filter(|l| l.starts_with("- ")).count();
    let (tom_text, _) = tom[0].parts();
    assert_eq!(listed + tom_text.lines().filter(|l| l.starts_with("- ")).count(), 15, "{text}\n{tom_text}");
    assert!(text.contains(": Anna c"), "contact named: {text}");
    assert!(text.contains(", birthday (deadline 2027-03-14 10:00 CET)"), "{text}");
    let notices: Vec<_> = to("ops@example.com")
        .into_iter()
        .filter(|m| m.header("Subject").contains("will not fit under the relay's limits"))
        .collect();
    assert_eq!(notices.len(), 1, "one ops notice");
    let greetings = messages.iter().filter(|m| m.to[0].starts_with("anna@")).count();
    assert_eq!(greetings, 5);

    // Later ticks announce nothing more; the rows that fit are sent, none is missed at the deadline.
    let before = app.smtp.messages().len();
    let report = app.tick_at("2027-03-14T08:30:00Z").await;
    assert_eq!((report.missed, report.accepted), (0, 0), "{report:?}");
    let report = app.tick_at("2027-03-14T09:00:30Z").await;
    assert_eq!(report.missed, 0, "{report:?}");
    assert_eq!(app.smtp.messages().len(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_forecast_shows_the_shortfall_the_daemon_then_has() {
    // A December peak: 30 birthdays on 2026-12-21, half greeted at 09:00, half at 09:30 (each
    // with an hour's deadline); the relay takes 10 an hour.
    let plans: Vec<(String, String)> = (0..30)
        .map(|i| {
            let id = format!("d{i:02}");
            (id.clone(), plan(&id, "eva@example.com", "12-21", if i % 2 == 0 { "09:00" } else { "09:30" }))
        })
        .collect();
    let app = spawn(Engine::Sqlite, &plans, "2026-12-21T08:00:30Z", "max_per_hour = 10\n").await;
    let budget = Budget { per_hour: Some(10), ..Budget::default() };
    let plans_now = app.app.current().plans.clone();
    let tz: chrono_tz::Tz = "Europe/Berlin".parse().unwrap();
    let forecast = contactplan::capacity::forecast(
        &budget,
        &plans_now.customers,
        utc("2026-12-20T23:00:00Z"),
        utc("2026-12-21T23:00:00Z"),
    );
    let text = contactplan::capacity::render(&forecast, &budget, tz);
    println!("{text}");
    assert_eq!((forecast.due, forecast.missed), (30, 10), "{text}");
    insta::assert_snapshot!(text);

    let mut missed = app.tick().await.missed;
    missed += app.tick_at("2026-12-21T08:30:30Z").await.missed;
    windows_roll_over(&app).await;
    for at in ["2026-12-21T09:00:30Z", "2026-12-21T09:30:30Z", "2026-12-21T10:00:30Z"] {
        missed += app.tick_at(at).await.missed;
    }
    let states = app.states().await;
    let mut by: HashMap<RowState, i64> = HashMap::new();
    by.extend(states.iter().copied());
    assert_eq!(by.get(&RowState::Missed).copied().unwrap_or(0), forecast.missed as i64, "{states:?}");
    assert_eq!(missed, forecast.missed as u64);
    assert_eq!(by.get(&RowState::Accepted).copied().unwrap_or(0), 20, "{states:?}");
}
