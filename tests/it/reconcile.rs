//! Plan edits while the daemon runs: after every reload the outbox agrees with the plans (and
//! with `agenda`) again. A corrected occasion is sent once, on its new date; a changed send
//! time is honoured; an undone edit brings the occasion back; whatever is no longer wanted is
//! suppressed with a reason naming the change. On SQLite and PostgreSQL, with a real SMTP
//! server on 127.0.0.1.

use crate::helpers::{Delivery, Engine, TestApp, spawn_app_on, utc};
use contactplan::store::{Row, RowState};

/// ACME in Berlin: Anna (primary, birthday `birthday`, greeted at `at`), Bob (no birthday), a
/// birthday rule and a crontab task for the salesperson (`cron`); `extra` is appended.
fn plan(birthday: &str, at: &str, cron: &str, extra: &str) -> String {
    format!(
        r#"[customer]
id = "acme"
name = "ACME"
since = 2015-06-01
owner = "owner@example.com"
timezone = "Europe/Berlin"
language = "en"
phase = "maturity"

[[contact]]
id = "anna"
name = "Anna Schmidt"
gender = "female"
email = "anna@acme.example"
birthday = {birthday}
tone = "formal"
primary = true

[[contact]]
id = "bob"
name = "Bob Meier"
gender = "male"
email = "bob@acme.example"
tone = "formal"

[[occasion]]
name = "birthday"
on = "birthday"
template = "birthday"
at = "{at}"

[[occasion]]
name = "weekly"
on = "every"
cron = "{cron}"
send = "task"
to = "owner"
template = "checkin"
{extra}"#
    )
}

/// Monday 2026-11-30, 09:00 in Berlin: Anna's 12-01 birthday and Tuesday's check-in are within
/// the two-day horizon.
const START: &str = "2026-11-30T08:00:00Z";

async fn start(engine: Engine, text: &str) -> TestApp {
    let app = spawn_app_on(engine, &[("acme", text)], &[], utc(START), Delivery::Smtp).await;
    let r = app.tick().await;
    assert_eq!(r.materialized, 2, "the birthday and the check-in are in the outbox: {r:?}");
    app
}

/// Saves the plan and reloads, as the file watcher would.
async fn edit(app: &TestApp, text: &str) {
    std::fs::write(app.dir.path().join("plans/acme.toml"), text).unwrap();
    app.app.reload("test").await;
}

async fn rows(app: &TestApp, state: RowState) -> Vec<Row> {
    app.app.store().rows(Some(state), 100).await.unwrap()
}

fn keys(rows: &[Row]) -> Vec<String> {
    rows.iter().map(|r| r.key.to_string()).collect()
}

/// Anna's birthday was entered as 12-01 and corrected to 12-03 after the 12-01 greeting entered
/// the outbox: she is greeted once, on 12-03.
async fn a_corrected_birthday_is_greeted_once_on_the_new_day(engine: Engine) {
    let app = start(engine, &plan("1980-12-01", "10:00", "0 9 * * 2", "")).await;
    edit(&app, &plan("1980-12-03", "10:00", "0 9 * * 2", "")).await;
    let r = app.tick().await;
    assert_eq!((r.suppressed, r.retimed), (1, 0), "{r:?}");
    let gone = rows(&app, RowState::Suppressed).await;
    assert_eq!(keys(&gone), ["acme/birthday/contact:anna/2026-12-01"]);
    assert_eq!(gone[0].reason.as_deref(), Some("birthday of `anna` changed from 12-01 to 12-03"));

    for t in ["2026-12-01T09:00:00Z", "2026-12-01T23:00:00Z", "2026-12-02T12:00:00Z"] {
        app.tick_at(t).await;
    }
    let greetings = |app: &TestApp| app.smtp.messages().into_iter().filter(|m| m.to == ["anna@acme.example"]).count();
    assert_eq!(greetings(&app), 0, "nothing on the wrong day");
    assert_eq!(app.tick_at("2026-12-03T09:00:00Z").await.accepted, 1, "10:00 in Berlin on the new day");
    for t in ["2026-12-03T12:00:00Z", "2026-12-04T09:00:00Z"] {
        app.tick_at(t).await;
    }
    assert_eq!(greetings(&app), 1, "greeted exactly once");
    let sent = rows(&app, RowState::Accepted).await;
    assert!(keys(&sent).contains(&"acme/birthday/contact:anna/2026-12-03".to_string()), "{sent:?}");

    // Ops can see why the first row was not sent.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_contactplan"))
        .args(["outbox", "--state", "suppressed", "--config"])
        .arg(app.dir.path().join("contactplan.toml"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        text,
        "2026-12-01T09:00:00Z  suppressed  acme/birthday/contact:anna/2026-12-01\n    reason: birthday of `anna` changed from 12-01 to 12-03\n"
    );
}

/// The check-in's crontab moves from Tuesdays to Wednesdays while Tuesday's firing waits in the
/// outbox: the salesperson gets one task, on Wednesday.
async fn a_changed_crontab_fires_once_on_the_new_schedule(engine: Engine) {
    let app = start(engine, &plan("1980-12-01", "10:00", "0 9 * * 2", "")).await;
    edit(&app, &plan("1980-12-01", "10:00", "0 9 * * 3", "")).await;
    assert_eq!(app.tick().await.suppressed, 1);
    let gone = rows(&app, RowState::Suppressed).await;
    assert_eq!(keys(&gone), ["acme/weekly/owner/2026-12-01T09:00"]);
    assert_eq!(
        gone[0].reason.as_deref(),
        Some("the crontab of rule `weekly` is now `0 9 * * 3`, which does not fire at 2026-12-01 09:00")
    );
    for t in ["2026-12-01T08:00:00Z", "2026-12-01T12:00:00Z", "2026-12-02T08:00:00Z", "2026-12-02T12:00:00Z"] {
        app.tick_at(t).await;
    }
    let tasks: Vec<_> = app.smtp.messages().into_iter().filter(|m| m.to == ["owner@example.com"]).collect();
    assert_eq!(tasks.len(), 1, "one task, on Wednesday");
    let sent = rows(&app, RowState::Accepted).await;
    assert!(keys(&sent).contains(&"acme/weekly/owner/2026-12-02T09:00".to_string()), "{sent:?}");
}

/// `at = "10:00"` becomes `"16:30"` while the greeting waits: it goes at 16:30, where `agenda`
/// puts it, not at 10:00.
async fn a_changed_send_time_is_honoured(engine: Engine) {
    let app = start(engine, &plan("1980-12-01", "10:00", "0 9 * * 2", "")).await;
    edit(&app, &plan("1980-12-01", "16:30", "0 9 * * 2", "")).await;
    let r = app.tick().await;
    assert_eq!((r.retimed, r.suppressed), (1, 0), "{r:?}");

    let pending = rows(&app, RowState::Pending).await;
    let row = pending.iter().find(|r| r.key.rule == "birthday").expect("the greeting is still pending");
    assert_eq!(row.due.datetime(), utc("2026-12-01T15:30:00Z"), "16:30 in Berlin");
    let snap = app.app.current();
    let agenda = contactplan::occasion::agenda(&snap.plans, utc(START), utc("2026-12-05T00:00:00Z"));
    let planned = agenda.iter().find(|o| o.rule.name.as_ref() == "birthday").expect("in the agenda");
    assert_eq!(planned.due.utc, row.due.datetime(), "the daemon and agenda agree");

    assert_eq!(app.tick_at("2026-12-01T09:00:00Z").await.accepted, 1, "only the check-in at 10:00");
    assert!(app.smtp.messages().iter().all(|m| m.to != ["anna@acme.example"]), "not at the old time");
    assert_eq!(app.tick_at("2026-12-01T15:30:00Z").await.accepted, 1, "the greeting at 16:30");
    app.tick_at("2026-12-01T20:00:00Z").await;
    assert_eq!(app.smtp.messages().len(), 2);
}

/// A correction undone before the day: the first date's greeting comes back and is sent once;
/// the corrected date's row is suppressed in turn.
async fn an_undone_edit_brings_the_occasion_back(engine: Engine) {
    let original = plan("1980-12-01", "10:00", "0 9 * * 2", "");
    let app = start(engine, &original).await;
    edit(&app, &plan("1980-11-30", "10:00", "0 9 * * 2", "")).await;
    let r = app.tick().await;
    assert_eq!((r.suppressed, r.materialized), (1, 1), "12-01 suppressed, 11-30 written: {r:?}");
    edit(&app, &original).await;
    let r = app.tick().await;
    assert_eq!((r.revived, r.suppressed), (1, 1), "12-01 back, 11-30 suppressed: {r:?}");
    let gone = rows(&app, RowState::Suppressed).await;
    assert_eq!(keys(&gone), ["acme/birthday/contact:anna/2026-11-30"]);
    assert_eq!(gone[0].reason.as_deref(), Some("birthday of `anna` changed from 11-30 to 12-01"));

    assert_eq!(app.tick_at("2026-11-30T09:00:00Z").await.accepted, 0, "not on the undone date");
    assert_eq!(app.tick_at("2026-12-01T09:00:00Z").await.accepted, 2, "the greeting and the check-in");
    for t in ["2026-12-02T09:00:00Z", "2026-12-03T09:00:00Z"] {
        assert_eq!(app.tick_at(t).await.accepted, 0);
    }
    assert_eq!(app.smtp.messages().iter().filter(|m| m.to == ["anna@acme.example"]).count(), 1);
}

/// A removed contact, a rule that no longer writes to a contact and a removed rule: each row is
/// suppressed with the reason, nothing is sent.
async fn what_is_no_longer_wanted_is_suppressed_with_the_reason(engine: Engine) {
    let bobs_day = r#"
[[occasion]]
name = "welcome"
on = "date"
date = "--12-01"
to = "contacts"
template = "checkin"
at = "11:00"
"#;
    let app = spawn_app_on(
        engine,
        &[("acme", &plan("1980-12-01", "10:00", "0 9 * * 2", bobs_day))],
        &[],
        utc(START),
        Delivery::Smtp,
    )
    .await;
    assert_eq!(app.tick().await.materialized, 4, "birthday, check-in, welcome to anna and bob");
    // Bob leaves, the welcome goes to the primary contact only, the check-in is dropped.
    let text = plan("1980-12-01", "10:00", "0 9 * * 2", &bobs_day.replace("\"contacts\"", "\"owner\""))
        .replace("[[contact]]\nid = \"bob\"\nname = \"Bob Meier\"\ngender = \"male\"\nemail = \"bob@acme.example\"\ntone = \"formal\"\n", "");
    let text = text.replace("[[occasion]]\nname = \"weekly\"", "[[occasion]]\nname = \"weekly-removed\"");
    edit(&app, &text).await;
    let r = app.tick().await;
    assert_eq!(r.suppressed, 3, "{r:?}");
    let mut gone: Vec<(String, String)> = rows(&app, RowState::Suppressed)
        .await
        .into_iter()
        .map(|r| (r.key.to_string(), r.reason.unwrap_or_default()))
        .collect();
    gone.sort();
    let expected = [
        ("acme/weekly/owner/2026-12-01T09:00", "rule `weekly` removed from the plan of `acme`"),
        (
            "acme/welcome/contact:anna/2026-12-01",
            "rule `welcome` no longer sends contact `anna` (to = \"owner\", send = \"email\")",
        ),
        ("acme/welcome/contact:bob/2026-12-01", "contact `bob` removed from the plan of `acme`"),
    ]
    .map(|(k, r)| (k.to_string(), r.to_string()));
    assert_eq!(gone, expected);
    for t in ["2026-12-01T08:00:00Z", "2026-12-01T12:00:00Z"] {
        app.tick_at(t).await;
    }
    let to: Vec<Vec<String>> = app.smtp.messages().into_iter().map(|m| m.to).collect();
    assert!(to.iter().all(|t| t != &["bob@acme.example"]), "nothing to Bob: {to:?}");
    assert_eq!(to.iter().filter(|t| *t == &["anna@acme.example"]).count(), 1, "only Anna's birthday: {to:?}");
}

/// A blackout added over the day moves the greeting nine days on (farther than the lead time
/// reaches: looked up as far as the closed-day policy can move it); then `on_closed = "skip"`
/// drops it, with the calendar's reason.
async fn a_closed_day_policy_moves_or_drops_the_occasion(engine: Engine) {
    let with = |policy: &str| {
        plan("1980-12-01", "10:00", "0 9 * * 2", "").replace(
            "at = \"10:00\"\n",
            &format!("at = \"10:00\"\nblackout = [\"2026-12-01..2026-12-09\"]\non_closed = \"{policy}\"\n"),
        )
    };
    let app = start(engine, &plan("1980-12-01", "10:00", "0 9 * * 2", "")).await;
    edit(&app, &with("after")).await;
    let r = app.tick().await;
    assert_eq!((r.retimed, r.suppressed), (1, 0), "{r:?}");
    let pending = rows(&app, RowState::Pending).await;
    let row = pending.iter().find(|r| r.key.rule == "birthday").expect("still pending");
    assert_eq!(row.due.datetime(), utc("2026-12-10T09:00:00Z"), "the first open day after the blackout");

    edit(&app, &with("skip")).await;
    assert_eq!(app.tick().await.suppressed, 1);
    let gone = rows(&app, RowState::Suppressed).await;
    let reason = gone[0].reason.clone().unwrap_or_default();
    assert!(reason.starts_with("not sent under the current plan: ") && reason.contains("on_closed = skip"), "{reason}");
    for t in ["2026-12-01T09:00:00Z", "2026-12-10T09:00:00Z"] {
        app.tick_at(t).await;
    }
    assert!(app.smtp.messages().iter().all(|m| m.to != ["anna@acme.example"]));
}

/// `contactplan_plan_revision_customers_total` and `…_revisions_applied_total` by scope:
/// ((customers, revisions) changed, (customers, revisions) all).
fn applied(app: &TestApp) -> ((u64, u64), (u64, u64)) {
    let text = app.app.metrics().encode(false, &Default::default());
    let value = |name: &str, scope: &str| -> u64 {
        let prefix = format!("{name}{{scope=\"{scope}\"}} ");
        text.lines().find_map(|l| l.strip_prefix(&prefix)?.trim().parse().ok()).unwrap_or_else(|| panic!("{prefix}"))
    };
    let (customers, revisions) =
        ("contactplan_plan_revision_customers_total", "contactplan_plan_revisions_applied_total");
    ((value(customers, "changed"), value(revisions, "changed")), (value(customers, "all"), value(revisions, "all")))
}

/// `plan(…)` for another customer id.
fn other(id: &str, text: &str) -> String {
    text.replace("id = \"acme\"", &format!("id = \"{id}\""))
}

/// The (key, state, due) of every row of the other customers.
async fn others(app: &TestApp) -> Vec<(String, String, i64)> {
    let mut all = app.app.store().rows(None, 100).await.unwrap();
    all.retain(|r| r.key.customer != "acme");
    all.sort_by_key(|r| r.id);
    all.into_iter().map(|r| (r.key.to_string(), r.state.to_string(), r.due.0)).collect()
}

/// Issue 15: after a reload that changed one customer among several, the scheduler
/// reconciles, compares and materialises that customer alone — the change applied (a row
/// re-timed, a row suppressed), the others' rows untouched — whether the reload read the one
/// file or everything. A revision it did not see, or a tick that failed on the new revision,
/// makes the next tick look at every customer again.
async fn a_one_plan_edit_is_applied_to_that_customer_alone(engine: Engine) {
    let text = plan("1980-12-01", "10:00", "0 9 * * 2", "");
    let plans = [("acme", text.clone()), ("beta", other("beta", &text)), ("gamma", other("gamma", &text))];
    let refs: Vec<(&str, &str)> = plans.iter().map(|(n, t)| (*n, t.as_str())).collect();
    let app = spawn_app_on(engine, &refs, &[], utc(START), Delivery::Smtp).await;
    assert_eq!(app.tick().await.materialized, 6);
    assert_eq!(applied(&app), ((0, 0), (3, 1)), "the first revision: every customer");
    let before = others(&app).await;
    assert_eq!(before.len(), 4);

    // The file watcher's reload of the one saved file: the greeting moves to 16:30.
    let acme = app.dir.path().join("plans/acme.toml");
    std::fs::write(&acme, plan("1980-12-01", "16:30", "0 9 * * 2", "")).unwrap();
    app.app.reload_changed("files changed", vec![acme.clone()]).await;
    let r = app.tick().await;
    assert_eq!((r.retimed, r.suppressed), (1, 0), "{r:?}");
    assert_eq!(applied(&app), ((1, 1), (3, 1)), "one customer looked at again");
    let pending = rows(&app, RowState::Pending).await;
    let greeting = pending.iter().find(|r| r.key.customer == "acme" && r.key.rule == "birthday").unwrap();
    assert_eq!(greeting.due.datetime(), utc("2026-12-01T15:30:00Z"), "16:30 in Berlin");
    assert_eq!(others(&app).await, before, "the other customers' rows are untouched");

    // A full reload (SIGHUP) that changed the same customer only: the birthday corrected.
    edit(&app, &plan("1980-12-03", "16:30", "0 9 * * 2", "")).await;
    let r = app.tick().await;
    assert_eq!((r.suppressed, r.retimed), (1, 0), "{r:?}");
    assert_eq!(applied(&app), ((2, 2), (3, 1)));
    let gone = rows(&app, RowState::Suppressed).await;
    assert_eq!(keys(&gone), ["acme/birthday/contact:anna/2026-12-01"]);
    assert_eq!(others(&app).await, before);
    // Nothing new: no revision, nothing looked at.
    assert_eq!(app.tick().await, Default::default());
    assert_eq!(applied(&app), ((2, 2), (3, 1)));

    // Two revisions before the next tick: it did not see the first, so it looks at all.
    edit(&app, &plan("1980-12-03", "16:00", "0 9 * * 2", "")).await;
    edit(&app, &plan("1980-12-03", "15:00", "0 9 * * 2", "")).await;
    app.tick().await;
    assert_eq!(applied(&app), ((2, 2), (6, 2)), "a skipped revision: every customer");

    // A tick that fails on the new revision: the next one looks at all.
    edit(&app, &plan("1980-12-01", "15:00", "0 9 * * 2", "")).await;
    fail::cfg("dispatch::reconcile_for", "return(acme)").unwrap();
    let failed = app.app.scheduler().tick(&tokio_util::sync::CancellationToken::new()).await;
    fail::remove("dispatch::reconcile_for");
    assert!(failed.is_err(), "the failpoint fails the tick");
    let r = app.tick().await;
    assert_eq!((r.revived, r.suppressed), (1, 0), "the edit is applied by the next tick: {r:?}");
    assert_eq!(applied(&app), ((2, 2), (9, 3)), "after a failed tick: every customer");
    assert_eq!(others(&app).await, before);
}

on_both_engines!(
    a_one_plan_edit_is_applied_to_that_customer_alone,
    a_corrected_birthday_is_greeted_once_on_the_new_day,
    a_changed_crontab_fires_once_on_the_new_schedule,
    a_changed_send_time_is_honoured,
    an_undone_edit_brings_the_occasion_back,
    what_is_no_longer_wanted_is_suppressed_with_the_reason,
    a_closed_day_policy_moves_or_drops_the_occasion,
);
