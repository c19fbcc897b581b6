//! The daemon end to end: occasions computed in the right zone, rendered, sent over SMTP,
//! recorded durably, never twice.

use crate::helpers::{Delivery, JANE, birthday_plan, spawn_app, utc};
use contactplan::dispatch::TickReport;
use contactplan::store::RowState;

#[tokio::test(flavor = "multi_thread")]
async fn birthday_email_arrives_once_on_the_local_day() {
    // 2027-03-14 is also the US spring-forward day: 09:00 EDT = 13:00 UTC.
    let plan = birthday_plan("harbor", "America/New_York", "en", JANE);
    let app = spawn_app(&[("harbor", &plan)], &[], utc("2027-03-13T12:00:00Z"), Delivery::Smtp).await;

    app.tick().await;
    app.tick_at("2027-03-14T12:59:59Z").await;
    assert!(app.smtp.messages().is_empty(), "nothing before 09:00 local");

    let report = app.tick_at("2027-03-14T13:00:00Z").await;
    assert_eq!(report.accepted, 1);
    let msgs = app.smtp.messages();
    assert_eq!(msgs.len(), 1);
    let m = &msgs[0];
    assert_eq!(m.to, vec!["jane.smith@harbor.example".to_string()]);
    assert_eq!(m.from, "team@example.com");
    let key = "harbor/birthday/contact:jane/2027-03-14";
    let sender = contactplan::plan::Email::parse("team@example.com").unwrap();
    assert_eq!(m.header("Message-ID"), contactplan::mail::message_id(key, sender.domain()));
    assert!(m.header("To").contains("Jane Smith"));
    assert!(m.header("Subject").to_lowercase().contains("birthday"), "{}", m.header("Subject"));
    assert!(m.parsed().ctype.mimetype == "multipart/alternative");
    let (text, html) = m.parts();
    assert!(text.starts_with("Dear Ms Smith,"), "{text}");
    assert!(html.contains("Dear Ms Smith,") && html.contains("<html lang=\"en\">"), "{html}");

    for t in ["2027-03-14T13:05:00Z", "2027-03-14T23:00:00Z", "2027-03-15T13:00:00Z"] {
        assert_eq!(app.tick_at(t).await.accepted, 0);
    }
    assert_eq!(app.smtp.messages().len(), 1, "exactly one email");
    assert_eq!(app.states().await, vec![(RowState::Accepted, 1)]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_on_the_same_database_sends_nothing_twice() {
    let plan = birthday_plan("harbor", "America/New_York", "en", JANE);
    let mut app = spawn_app(&[("harbor", &plan)], &[], utc("2027-03-14T12:00:00Z"), Delivery::Smtp).await;
    assert_eq!(app.tick_at("2027-03-14T13:00:00Z").await.accepted, 1);

    app.restart().await;
    let again = app.tick_at("2027-03-14T13:00:30Z").await;
    assert_eq!(again, TickReport::default(), "the new process finds the occasion already accepted");
    app.restart().await;
    // A clock that jumps backwards does not re-send either.
    app.tick_at("2027-03-14T12:00:00Z").await;
    app.tick_at("2027-03-14T14:00:00Z").await;
    assert_eq!(app.smtp.messages().len(), 1);
    assert_eq!(app.states().await, vec![(RowState::Accepted, 1)]);
}

#[tokio::test(flavor = "multi_thread")]
async fn german_umlauts_survive_headers_and_bodies() {
    let contact = r#"[[contact]]
id = "joerg"
name = "Jörg Weiß"
gender = "male"
email = "joerg@mueller.example"
birthday = "--07-04"
tone = "informal"
primary = true"#;
    let plan = birthday_plan("mueller", "Europe/Berlin", "de", contact);
    let app = spawn_app(&[("mueller", &plan)], &[], utc("2027-07-04T06:00:00Z"), Delivery::Smtp).await;
    // 09:00 CEST = 07:00 UTC.
    assert_eq!(app.tick_at("2027-07-04T07:00:00Z").await.accepted, 1);
    let m = &app.smtp.messages()[0];
    let raw = String::from_utf8_lossy(&m.data);
    let raw_subject = raw.lines().find(|l| l.starts_with("Subject:")).unwrap();
    assert!(raw_subject.is_ascii() && raw_subject.contains("=?utf-8?"), "encoded-word: {raw_subject}");
    assert!(m.header("Subject").contains("Glückwunsch"), "{}", m.header("Subject"));
    assert!(m.header("To").contains("Jörg Weiß"), "{}", m.header("To"));
    let (text, html) = m.parts();
    assert!(text.starts_with("Lieber Jörg,"), "{text}");
    assert!(html.contains("Lieber Jörg,"));
}

#[tokio::test(flavor = "multi_thread")]
async fn transient_smtp_failure_is_retried_and_then_accepted() {
    let plan = birthday_plan("harbor", "America/New_York", "en", JANE);
    let app = spawn_app(&[("harbor", &plan)], &[], utc("2027-03-14T12:00:00Z"), Delivery::Smtp).await;
    app.smtp.reply_next(451, "4.7.1 greylisted, try again later");
    let first = app.tick_at("2027-03-14T13:00:00Z").await;
    assert_eq!((first.accepted, first.retried), (0, 1));
    let rows = app.app.store().rows(Some(RowState::Retry), 10).await.unwrap();
    assert!(
        rows[0].reason.as_deref().unwrap_or_default().contains("greylisted"),
        "the server's reply is recorded: {:?}",
        rows[0].reason
    );
    // Backoff after attempt 1 is 30 s ± 20 %: not yet at +20 s, due by +40 s.
    assert_eq!(app.tick_at("2027-03-14T13:00:20Z").await.accepted, 0);
    assert_eq!(app.tick_at("2027-03-14T13:00:40Z").await.accepted, 1);
    assert_eq!(app.smtp.messages().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn permanent_smtp_failure_is_recorded_with_the_reply() {
    let plan = birthday_plan("harbor", "America/New_York", "en", JANE);
    let app = spawn_app(&[("harbor", &plan)], &[], utc("2027-03-14T12:00:00Z"), Delivery::Smtp).await;
    app.smtp.refuse("jane.smith@harbor.example");
    let r = app.tick_at("2027-03-14T13:00:00Z").await;
    assert_eq!(r.failed, 1, "{r:?} {:?}", app.app.store().rows(None, 10).await.unwrap());
    let rows = app.app.store().rows(Some(RowState::Failed), 10).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert!(rows[0].reason.as_deref().unwrap_or_default().contains("mailbox unavailable"), "{:?}", rows[0].reason);
    assert_eq!(app.tick_at("2027-03-14T14:00:00Z").await, TickReport::default(), "no resend after a permanent failure");
}

#[tokio::test(flavor = "multi_thread")]
async fn maildir_delivery_writes_one_eml_per_occasion() {
    let plan = birthday_plan("harbor", "America/New_York", "en", JANE);
    let mut app = spawn_app(&[("harbor", &plan)], &[], utc("2027-03-14T12:00:00Z"), Delivery::Maildir).await;
    assert_eq!(app.tick_at("2027-03-14T13:00:00Z").await.accepted, 1);
    app.restart().await;
    app.tick_at("2027-03-14T13:10:00Z").await;
    let new = app.dir.path().join("maildir/new");
    let files: Vec<_> = std::fs::read_dir(&new).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(files[0].extension().is_some_and(|e| e == "eml"));
    let raw = std::fs::read(&files[0]).unwrap();
    let parsed = mailparse::parse_mail(&raw).unwrap();
    use mailparse::MailHeaderMap;
    assert_eq!(parsed.headers.get_first_value("To").unwrap(), "\"Jane Smith\" <jane.smith@harbor.example>");
    assert!(std::fs::read_dir(app.dir.path().join("maildir/tmp")).unwrap().next().is_none(), "tmp/ is empty");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_loop_sends_when_due_and_stops_on_shutdown() {
    let plan = birthday_plan("harbor", "America/New_York", "en", JANE);
    let app = spawn_app(&[("harbor", &plan)], &[], utc("2027-03-14T13:00:00Z"), Delivery::Smtp).await;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(app.app.run_until_stopped(async move {
        let _ = stop_rx.await;
    }));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while app.smtp.messages().is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(app.smtp.messages().len(), 1);
    stop_tx.send(()).unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(5), run).await.expect("stops promptly").unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn removing_a_customer_suppresses_its_pending_occasions() {
    let plan = birthday_plan("harbor", "America/New_York", "en", JANE);
    let app = spawn_app(&[("harbor", &plan)], &[], utc("2027-03-14T12:00:00Z"), Delivery::Smtp).await;
    app.tick().await; // materialised as pending
    std::fs::remove_file(app.dir.path().join("plans/harbor.toml")).unwrap();
    app.app.reload("test").await;
    let r = app.tick_at("2027-03-14T13:00:00Z").await;
    assert_eq!((r.accepted, r.suppressed), (0, 1));
    assert!(app.smtp.messages().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pass_over_more_customers_than_one_step_writes_each_occasion_once() {
    // Two steps and one customer more, so the last step is a partial one.
    let n = 2 * contactplan::dispatch::CUSTOMERS_PER_PASS_STEP + 1;
    let plans: Vec<(String, String)> = (0..n)
        .map(|i| {
            let id = format!("c{i:05}");
            let plan = birthday_plan(&id, "Europe/Berlin", "de", JANE);
            (id, plan)
        })
        .collect();
    let refs: Vec<(&str, &str)> = plans.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let app = spawn_app(&refs, &[], utc("2027-03-13T12:00:00Z"), Delivery::Maildir).await;
    assert_eq!(app.tick().await.materialized as usize, n, "one birthday per customer, across three steps");
    // Ten minutes later the daemon materialises again (the window moved).
    assert_eq!(app.tick_at("2027-03-13T12:10:00Z").await.materialized, 0, "a second pass adds nothing");
    assert_eq!(app.states().await, vec![(RowState::Pending, n as i64)]);
}
