//! The other moments of a relationship through the daemon (SQLite and PostgreSQL, real SMTP on
//! 127.0.0.1): a handover declared with `contactplan handover` (the real binary, while the
//! test daemon is live) gives one brief and no reverse handover while the plan still names the
//! old primary; a custom event recorded with `contactplan event` gives one task (with its
//! copy) carrying the note, and the same `--id` again gives nothing; a quiet spell fires once,
//! and again only after a new order and a new spell; `ended` stops everything after the
//! farewell; a mailbox refused as unknown gives one departure task however often it fails.

use crate::helpers::{Delivery, Engine, TestApp, spawn_app_on, utc};
use contactplan::money::{Currency, Money};
use contactplan::orders::Order;
use contactplan::store::{Row, RowState, UnixSecs};
use std::process::Command;

/// ACME with Anna (primary unless `primary` says otherwise) and Bob, `extra` lines in
/// `[customer]`, and `rules` appended.
fn plan(primary: &str, extra: &str, rules: &str) -> String {
    let mut text = format!(
        "[customer]\nid = \"acme\"\nname = \"ACME\"\nsince = 2015-06-01\nowner = \"owner@example.com\"\ntimezone = \"Europe/Berlin\"\nlanguage = \"de\"\nphase = \"maturity\"\n{extra}\n"
    );
    for (id, name, email) in [("anna", "Anna Schmidt", "anna@acme.example"), ("bob", "Bob Baker", "bob@acme.example")] {
        text.push_str(&format!(
            "[[contact]]\nid = \"{id}\"\nname = \"{name}\"\nemail = \"{email}\"\ntone = \"formal\"\nprimary = {}\n\n",
            id == primary
        ));
    }
    text.push_str(rules);
    text
}

const HANDOVER_RULES: &str = r#"
[[occasion]]
name = "brief"
on = "handover"
send = "task"
template = "handover_brief"
at = "00:00"
"#;

const EVENT_RULES: &str = r#"
[[occasion]]
name = "complaint"
on = "event"
event = "complaint"
send = "task"
cc = "sales-manager@example.com"
template = "event_task"
at = "00:00"
"#;

const QUIET_RULES: &str = r#"
[[occasion]]
name = "quiet"
on = "inactivity"
days = 30
send = "task"
template = "inactivity_task"
at = "00:00"
"#;

const END_RULES: &str = r#"
[[occasion]]
name = "thanks"
on = "date"
date = "--12-01"
to = "contacts"
template = "anniversary"

[[occasion]]
name = "farewell"
on = "end"
send = "task"
template = "occasion_task"
at = "10:00"

[[occasion]]
name = "complaint"
on = "event"
event = "complaint"
send = "task"
template = "event_task"
"#;

const EVERY_HOUR: &str = r#"
[[occasion]]
name = "hourly"
on = "every"
cron = "0 * * * *"
to = "contacts"
template = "anniversary"
"#;

/// Runs the real binary against the test daemon's config (its database, its plans).
fn cli(app: &TestApp, args: &[&str]) -> (bool, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_contactplan"));
    for var in ["CONTACTPLAN_DATABASE_URL", "CONTACTPLAN_CONFIG", "RUST_LOG", "JOURNAL_STREAM"] {
        cmd.env_remove(var);
    }
    let out = cmd
        .arg("--config")
        .arg(app.dir.path().join("contactplan.toml"))
        .args(args)
        .current_dir(app.dir.path())
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

async fn edit(app: &TestApp, text: &str) {
    let tmp = app.dir.path().join("plans/.acme.toml.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(tmp, app.dir.path().join("plans/acme.toml")).unwrap();
    app.app.reload("test").await;
}

async fn rows(app: &TestApp, state: RowState) -> Vec<Row> {
    app.app.store().rows(Some(state), 1000).await.unwrap()
}

fn keys(rows: &[Row]) -> Vec<String> {
    let mut k: Vec<String> = rows.iter().map(|r| r.key.to_string()).collect();
    k.sort();
    k
}

fn order(id: &str, date: &str) -> Order {
    Order {
        customer: "acme".into(),
        id: id.into(),
        date: date.parse().unwrap(),
        amount: Some(Money { amount: "100.00".parse().unwrap(), currency: Currency::EUR }),
        reference: None,
    }
}

/// The wall clock (the CLI reads it at its edge), so `--date` defaults agree with the daemon.
fn wall() -> chrono::DateTime<chrono::Utc> {
    chrono::Utc::now()
}

/// `contactplan handover` while the daemon runs: one brief at the next tick, without a
/// restart. The plan still names Anna: no reverse handover, at a reload or a restart, until
/// the plan changes (to Bob: nothing; back to Anna: a handover).
async fn a_declared_handover_briefs_once_and_the_old_plan_is_no_reverse_handover(engine: Engine) {
    let now = wall();
    let mut app = spawn_app_on(engine, &[("acme", &plan("anna", "", HANDOVER_RULES))], &[], now, Delivery::Smtp).await;
    app.tick().await;
    let (ok, out) = cli(&app, &["handover", "--customer", "acme", "--to", "carl"]);
    assert!(!ok && out.contains("its contacts are: anna, bob"), "{out}");
    let (ok, out) = cli(&app, &["handover", "--customer", "acme", "--to", "bob"]);
    assert!(ok && out.contains("the plan still names `anna` as primary"), "{out}");
    app.clock.set(wall());
    let r = app.tick().await;
    assert_eq!((r.changes, r.handovers, r.accepted), (0, 1, 1), "{r:?}");
    assert_eq!(keys(&rows(&app, RowState::Accepted).await), ["acme/brief/owner/handover:1"]);
    let brief = &app.smtp.messages()[0];
    assert!(brief.parts().0.contains("Bob Baker"), "{}", brief.parts().0);
    let (ok, out) = cli(&app, &["handover", "--customer", "acme", "--to", "bob"]);
    assert!(!ok && out.contains("already the primary contact"), "{out}");

    // The plan still names Anna: no handover back, at a reload or a restart.
    app.app.reload("test").await;
    let r = app.tick().await;
    assert_eq!((r.changes, r.handovers), (0, 0), "{r:?}");
    app.restart().await;
    let r = app.tick().await;
    assert_eq!((r.changes, r.handovers), (0, 0), "{r:?}");
    // The plan catches up: nothing. Then it changes again: a handover like any other.
    edit(&app, &plan("bob", "", HANDOVER_RULES)).await;
    let r = app.tick().await;
    assert_eq!((r.changes, r.handovers), (0, 0), "{r:?}");
    edit(&app, &plan("anna", "", HANDOVER_RULES)).await;
    let r = app.tick().await;
    assert_eq!((r.changes, r.handovers), (1, 1), "{r:?}");
    assert_eq!(app.smtp.messages().len(), 2);
}

/// `contactplan event` records a complaint: one task to the salesperson with a copy to the
/// sales manager (one message, both in the envelope), carrying the note. The same `--id` again
/// records nothing and sends nothing.
async fn a_custom_event_sends_one_task_with_its_copy_and_the_same_id_nothing_more(engine: Engine) {
    let now = wall();
    let app = spawn_app_on(engine, &[("acme", &plan("anna", "", EVENT_RULES))], &[], now, Delivery::Smtp).await;
    app.tick().await;
    let args =
        ["event", "--customer", "acme", "--kind", "complaint", "--note", "Lieferung kam zu spät", "--id", "t-4711"];
    let (ok, out) = cli(&app, &args);
    assert!(ok && out.contains("recorded: event `t-4711`"), "{out}");
    app.clock.set(wall());
    let r = app.tick().await;
    assert_eq!((r.moments, r.accepted), (1, 1), "{r:?}");
    assert_eq!(keys(&rows(&app, RowState::Accepted).await), ["acme/complaint/owner/event:t-4711"]);
    let m = &app.smtp.messages()[0];
    let mut to = m.to.clone();
    to.sort();
    assert_eq!(to, ["owner@example.com", "sales-manager@example.com"]);
    assert_eq!(m.header("Cc"), "sales-manager@example.com");
    let (text, _) = m.parts();
    assert!(text.contains("Notiz: Lieferung kam zu spät") && text.contains("complaint"), "{text}");
    assert!(m.header("Subject").starts_with("ACME: complaint am "), "{}", m.header("Subject"));

    let (ok, out) = cli(&app, &args);
    assert!(ok && out.contains("was recorded before: nothing new"), "{out}");
    let r = app.tick().await;
    assert_eq!((r.moments, r.accepted), (0, 0), "{r:?}");
    let (ok, out) = cli(&app, &["event", "--customer", "acme", "--kind", "Complaint!"]);
    assert!(!ok && out.contains("is not an event kind"), "{out}");
    assert_eq!(app.smtp.messages().len(), 1);
}

/// No order for 30 days: one task per quiet spell (keyed by the last order's day); a later
/// tick adds nothing; a new order ends the spell, and 30 quiet days after it a new one fires.
async fn inactivity_fires_once_per_quiet_spell(engine: Engine) {
    let app = spawn_app_on(
        engine,
        &[("acme", &plan("anna", "", QUIET_RULES))],
        &[],
        utc("2026-10-20T08:00:00Z"),
        Delivery::Smtp,
    )
    .await;
    let store = app.app.store();
    let r = app.tick().await;
    assert_eq!(r.moments, 0, "no orders: not quiet");
    let orders = [order("1", "2026-08-01"), order("2", "2026-09-01"), order("3", "2026-10-01")];
    store.ingest_orders(&orders, "test", UnixSecs(0)).await.unwrap();
    let r = app.tick_at("2026-10-30T08:00:00Z").await;
    assert_eq!(r.moments, 0, "29 days: not yet {r:?}");
    let r = app.tick_at("2026-10-31T08:00:00Z").await;
    assert_eq!((r.moments, r.accepted), (1, 1), "{r:?}");
    let r = app.tick_at("2026-11-15T08:00:00Z").await;
    assert_eq!((r.moments, r.accepted), (0, 0), "once per spell {r:?}");
    let (text, _) = app.smtp.messages()[0].parts();
    assert!(text.contains("zuletzt am 1. Oktober 2026 bestellt") && text.contains("etwa alle 31 Tage"), "{text}");

    store.ingest_orders(&[order("4", "2026-11-20")], "test", UnixSecs(0)).await.unwrap();
    let r = app.tick_at("2026-12-19T08:00:00Z").await;
    assert_eq!(r.moments, 0, "{r:?}");
    let r = app.tick_at("2026-12-20T08:00:00Z").await;
    assert_eq!((r.moments, r.accepted), (1, 1), "{r:?}");
    assert_eq!(
        keys(&rows(&app, RowState::Accepted).await),
        ["acme/quiet/owner/inactivity:2026-10-01", "acme/quiet/owner/inactivity:2026-11-20"]
    );
}

/// `ended` stops everything after that day: the open thank-you of the next day is suppressed
/// with the reason, the `on = "end"` task goes out on the day, an event afterwards sends
/// nothing, and the history stays.
async fn an_ended_relationship_stops_after_the_farewell(engine: Engine) {
    let app = spawn_app_on(
        engine,
        &[("acme", &plan("anna", "", END_RULES))],
        &[],
        utc("2026-11-30T08:00:00Z"),
        Delivery::Smtp,
    )
    .await;
    app.tick().await;
    assert_eq!(keys(&rows(&app, RowState::Pending).await).len(), 2, "the thank-yous of 1 December");
    edit(&app, &plan("anna", "ended = 2026-11-30", END_RULES)).await;
    let r = app.tick().await;
    assert_eq!((r.suppressed, r.moments), (2, 1), "{r:?}");
    let suppressed = rows(&app, RowState::Suppressed).await;
    assert!(suppressed.iter().all(|r| r.reason.as_deref() == Some("the relationship ended on 2026-11-30")));
    let r = app.tick_at("2026-11-30T09:30:00Z").await;
    assert_eq!(r.accepted, 1, "{r:?}");
    assert_eq!(keys(&rows(&app, RowState::Accepted).await), ["acme/farewell/owner/end:2026-11-30"]);

    let event = contactplan::events::Event::new(
        "acme",
        "late",
        "complaint",
        None,
        "2026-12-01".parse().unwrap(),
        "2026-12-01".parse().unwrap(),
    )
    .unwrap();
    app.app.store().record_event(&event, "test", UnixSecs(0)).await.unwrap();
    let r = app.tick_at("2026-12-01T09:00:00Z").await;
    assert_eq!((r.moments, r.accepted, r.materialized), (0, 0, 0), "{r:?}");
    let r = app.tick_at("2027-12-01T09:00:00Z").await;
    assert_eq!((r.moments, r.accepted, r.materialized), (0, 0, 0), "{r:?}");
    assert_eq!(app.smtp.messages().len(), 1);
}

/// Anna's address is refused with 550 5.1.1 at every hourly send: one departure task to the
/// salesperson, however often it fails.
async fn a_refused_mailbox_gives_one_departure_task(engine: Engine) {
    let app = spawn_app_on(
        engine,
        &[("acme", &plan("anna", "", EVERY_HOUR))],
        &[],
        utc("2026-11-30T08:30:00Z"),
        Delivery::Smtp,
    )
    .await;
    app.smtp.refuse("anna@acme.example");
    let mut departures = app.tick().await.departures;
    for hour in ["09", "10", "11"] {
        let r = app.tick_at(&format!("2026-11-30T{hour}:00:30Z")).await;
        assert!(r.failed >= 1, "{r:?}");
        departures += r.departures;
    }
    let failed_rows = rows(&app, RowState::Failed).await;
    assert_eq!(departures, 1, "{:?}", failed_rows.iter().map(|r| r.reason.clone()).collect::<Vec<_>>());
    let failed = rows(&app, RowState::Failed).await;
    assert!(failed.len() >= 3, "{failed:?}");
    let tasks: Vec<_> = app.smtp.messages().into_iter().filter(|m| m.to == ["owner@example.com"]).collect();
    assert_eq!(tasks.len(), 1);
    let (text, _) = tasks[0].parts();
    assert!(text.contains("die Adresse von Anna Schmidt (anna@acme.example)") && text.contains("5.1.1"), "{text}");
    let accepted = keys(&rows(&app, RowState::Accepted).await);
    assert!(accepted.iter().any(|k| k.starts_with("acme/departure/owner:anna/departure:anna.")), "{accepted:?}");
}

/// `POST /api/v1/events` while the daemon runs: without or with a wrong token 401, an invalid
/// kind, an unknown customer and a future date 422 naming the field, nothing recorded; a valid
/// event is recorded and its task reaches the SMTP server at once (the request wakes the
/// scheduler); the same id again records and sends nothing.
async fn events_posted_to_the_api_send_one_task(engine: Engine) {
    use contactplan::app::Services;
    const TOKEN: &str = "events-test-token-0123456789";
    let mut app = spawn_app_on(engine, &[("acme", &plan("anna", "", EVENT_RULES))], &[], wall(), Delivery::Smtp).await;
    crate::helpers::with_api_token(&mut app, TOKEN).await;
    let running = app.app.start(Services { scheduler: true, http: true, ..Services::NONE }).await.unwrap();
    let addr = running.http_addr().unwrap();
    let post = |token: Option<&'static str>, body: &'static str| async move {
        let (code, _, text) =
            contactplan::http::request(addr, "POST", "/api/v1/events", token, Some(body.as_bytes().to_vec()))
                .await
                .unwrap();
        (code, serde_json::from_str::<serde_json::Value>(&text).unwrap_or_else(|e| panic!("{code} {e}: {text}")))
    };
    let good = r#"{"customer": "acme", "kind": "complaint", "note": "Lieferung kam zu spät", "id": "t-9"}"#;
    for token in [None, Some("wrong-token-0123456789")] {
        assert_eq!(post(token, good).await.0, 401, "{token:?}");
    }
    for (body, field) in [
        (r#"{"customer": "acme", "kind": "Complaint!"}"#, "kind"),
        (r#"{"customer": "globex", "kind": "complaint"}"#, "customer"),
        (r#"{"customer": "acme", "kind": "complaint", "date": "2099-01-01"}"#, "date"),
        (r#"{"customer": "acme", "kind": "complaint", "colour": "red"}"#, "colour"),
    ] {
        let (code, answer) = post(Some(TOKEN), body).await;
        assert_eq!(code, 422, "{body}: {answer}");
        assert_eq!(answer["errors"][0]["field"], field, "{answer}");
    }
    assert_eq!(post(Some(TOKEN), "{\"customer\": ").await.0, 400);
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(app.smtp.messages().is_empty(), "nothing recorded, nothing sent");

    let (code, answer) = post(Some(TOKEN), good).await;
    assert_eq!(code, 200, "{answer}");
    assert_eq!((answer["recorded"].as_bool(), answer["rules"].as_u64()), (Some(true), Some(1)), "{answer}");
    let started = std::time::Instant::now();
    while app.smtp.messages().is_empty() && started.elapsed() < std::time::Duration::from_secs(20) {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let messages = app.smtp.messages();
    assert_eq!(messages.len(), 1, "the task, at once");
    assert!(messages[0].parts().0.contains("Lieferung kam zu spät"));
    let (code, answer) = post(Some(TOKEN), good).await;
    assert_eq!((code, answer["recorded"].as_bool()), (200, Some(false)), "{answer}");
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    assert_eq!(app.smtp.messages().len(), 1, "the same id sends nothing more");
    running.stop().await;
}

on_both_engines!(
    events_posted_to_the_api_send_one_task,
    a_declared_handover_briefs_once_and_the_old_plan_is_no_reverse_handover,
    a_custom_event_sends_one_task_with_its_copy_and_the_same_id_nothing_more,
    inactivity_fires_once_per_quiet_spell,
    an_ended_relationship_stops_after_the_farewell,
    a_refused_mailbox_gives_one_departure_task,
);
