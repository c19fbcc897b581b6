//! Delivery guarantees driven in-process with an injected clock: downtime, deadlines and ops
//! reports. (Crash, fault and multi-instance tests that need separate processes or a faulty
//! SMTP peer live in `crash.rs` and `faults.rs`.)

use crate::helpers::{Delivery, JANE, birthday_plan, spawn_app, utc};
use contactplan::store::RowState;

/// Birthday 2027-03-14 in New York: due 13:00 UTC, deadline = end of the local day (04:00 UTC
/// on 03-15).
fn plan() -> String {
    birthday_plan("harbor", "America/New_York", "en", JANE)
}

#[tokio::test(flavor = "multi_thread")]
async fn downtime_past_the_deadline_is_missed_not_sent_late() {
    let mut app = spawn_app(&[("harbor", &plan())], &[], utc("2027-03-14T12:00:00Z"), Delivery::Smtp).await;
    assert_eq!(app.tick().await.materialized, 1);
    // The daemon stops before 13:00 and comes back the next local morning.
    app.restart().await;
    let r = app.tick_at("2027-03-15T12:00:00Z").await;
    assert_eq!((r.accepted, r.missed), (0, 1));
    let missed = app.app.store().rows(Some(RowState::Missed), 10).await.unwrap();
    assert!(missed[0].reason.as_deref().unwrap().contains("deadline passed"), "{:?}", missed[0].reason);
    // Ops got one report (the digest), the customer nothing.
    let msgs = app.smtp.messages();
    assert_eq!(msgs.len(), 1, "only the ops report");
    assert_eq!(msgs[0].to, vec!["ops@example.com".to_string()]);
    let (text, _) = msgs[0].parts();
    assert!(text.contains("missed: harbor/birthday/contact:jane/2027-03-14"), "{text}");
    assert_eq!(app.tick_at("2027-03-15T12:05:00Z").await.reported, 0, "reported once");
}

#[tokio::test(flavor = "multi_thread")]
async fn downtime_before_materialising_is_recorded_as_missed() {
    // First run materialises up to 03-12 (horizon 2 days); then nothing runs until 03-16.
    let mut app = spawn_app(&[("harbor", &plan())], &[], utc("2027-03-10T12:00:00Z"), Delivery::Smtp).await;
    assert_eq!(app.tick().await.materialized, 0);
    app.restart().await;
    let r = app.tick_at("2027-03-16T12:00:00Z").await;
    assert_eq!((r.accepted, r.missed), (0, 1));
    let rows = app.app.store().rows(Some(RowState::Missed), 10).await.unwrap();
    assert!(rows[0].reason.as_deref().unwrap().contains("no daemon was running"), "{:?}", rows[0].reason);
}

#[tokio::test(flavor = "multi_thread")]
async fn downtime_shorter_than_the_deadline_sends_once() {
    let mut app = spawn_app(&[("harbor", &plan())], &[], utc("2027-03-14T12:00:00Z"), Delivery::Smtp).await;
    app.tick().await;
    app.restart().await;
    // Back at 20:00 UTC (16:00 local): still the birthday, so it goes out now, once.
    assert_eq!(app.tick_at("2027-03-14T20:00:00Z").await.accepted, 1);
    app.restart().await;
    assert_eq!(app.tick_at("2027-03-14T20:01:00Z").await.accepted, 0);
    assert_eq!(app.smtp.messages().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_first_start_does_not_report_the_past() {
    // A fresh database started after today's send time but before the deadline sends it;
    // yesterday's occasions are neither sent nor reported.
    let app = spawn_app(&[("harbor", &plan())], &[], utc("2027-03-15T14:00:00Z"), Delivery::Smtp).await;
    let r = app.tick().await;
    assert_eq!((r.accepted, r.missed, r.reported), (0, 0, 0));
    assert!(app.smtp.messages().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn permanent_failures_reach_ops_with_the_servers_reply() {
    let app = spawn_app(&[("harbor", &plan())], &[], utc("2027-03-14T12:00:00Z"), Delivery::Smtp).await;
    app.smtp.refuse("jane.smith@harbor.example");
    let r = app.tick_at("2027-03-14T13:00:00Z").await;
    assert_eq!((r.failed, r.reported), (1, 1));
    let msgs = app.smtp.messages();
    // The ops report, and (5.1.1: the mailbox is unknown) one departure task to the salesperson.
    assert_eq!(msgs.len(), 2);
    assert_eq!(msgs.iter().filter(|m| m.to == ["owner@example.com"]).count(), 1, "the departure task");
    let msgs: Vec<_> = msgs.into_iter().filter(|m| m.to == ["ops@example.com"]).collect();
    assert_eq!(msgs.len(), 1);
    let (body, _) = msgs[0].parts();
    assert!(
        body.contains("failed: harbor/birthday/contact:jane/2027-03-14") && body.contains("5.1.1 mailbox unavailable"),
        "{body}"
    );
    assert!(!body.contains("jane.smith@"), "the report names keys, not addresses");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_per_rule_deadline_is_honoured() {
    let plan = plan().replace("at = \"09:00\"", "at = \"09:00\"\ndeadline = \"30m\"");
    let mut app = spawn_app(&[("harbor", &plan)], &[], utc("2027-03-14T12:00:00Z"), Delivery::Smtp).await;
    app.tick().await;
    app.restart().await;
    // 40 minutes late: past the 30-minute deadline.
    let r = app.tick_at("2027-03-14T13:40:00Z").await;
    assert_eq!((r.accepted, r.missed), (0, 1));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_ops_report_is_in_the_configured_language() {
    let mut app = spawn_app(&[("harbor", &plan())], &[], utc("2027-03-14T12:00:00Z"), Delivery::Smtp).await;
    let path = app.dir.path().join("contactplan.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replace("[ops]\nemail = \"ops@example.com\"\n", "[ops]\nemail = \"ops@example.com\"\nlanguage = \"de\"\n"),
    )
    .unwrap();
    app.config = contactplan::config::Config::load(&path, &contactplan::config::Environment::default()).unwrap();
    app.restart().await;
    app.smtp.refuse("jane.smith@harbor.example");
    assert_eq!(app.tick_at("2027-03-14T13:00:00Z").await.reported, 1);
    let msgs: Vec<_> = app.smtp.messages().into_iter().filter(|m| m.to == ["ops@example.com"]).collect();
    assert_eq!(msgs[0].header("Subject"), "contactplan: 1 Anlass/Anlässe brauchen Aufmerksamkeit");
}
