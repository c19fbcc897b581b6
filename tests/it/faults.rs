//! SMTP faults against a real peer (python3-aiosmtpd, `tests/smtp/peer.py`), through the
//! daemon's own SMTP path (our sockets with TCP_NODELAY, STARTTLS/TLS/AUTH, timeouts).

use crate::helpers::{Delivery, spawn_app, utc};
use crate::peer::{Peer, PeerOptions};
use contactplan::store::RowState;
use std::collections::HashSet;

/// `n` customers, each with one contact whose birthday is 2027-03-14 (New York, 09:00).
fn plans(n: usize, reject_every: usize) -> Vec<(String, String)> {
    (0..n)
        .map(|i| {
            let user = if reject_every > 0 && i % reject_every == 0 { format!("nobody{i}") } else { format!("p{i}") };
            let plan = format!(
                "[customer]\nid = \"c{i}\"\nname = \"C{i}\"\nsince = 2015-06-01\nowner = \"owner@example.com\"\ntimezone = \"America/New_York\"\nlanguage = \"en\"\nphase = \"growth\"\n\n[[contact]]\nid = \"p\"\nname = \"Pat Doe\"\nemail = \"{user}@example.net\"\nbirthday = 1980-03-14\ntone = \"informal\"\nprimary = true\n\n[[occasion]]\nname = \"birthday\"\non = \"birthday\"\ntemplate = \"birthday\"\n"
            );
            (format!("c{i}"), plan)
        })
        .collect()
}

fn smtp(peer: &Peer, extra: &str) -> Delivery {
    Delivery::Custom(format!("kind = \"smtp\"\nhost = \"127.0.0.1\"\nport = {}\ntimeout_secs = 5\n{extra}", peer.port))
}

#[tokio::test(flavor = "multi_thread")]
async fn transient_faults_end_accepted_permanent_ones_failed_nothing_lost() {
    // Down for the first 2 s, then: two 421 greetings, every 7th message deferred (451),
    // connections cut after DATA for messages 3 and 11, and 550 for "nobody…" recipients.
    let peer = Peer::start(PeerOptions {
        refuse_for_secs: Some(2),
        greet_421: 2,
        defer_every: 7,
        drop_after_data: vec![3, 11],
        reject_rcpt: vec!["nobody".into()],
        ..Default::default()
    });
    let owned = plans(40, 10);
    let refs: Vec<(&str, &str)> = owned.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let app = spawn_app(&refs, &[], utc("2027-03-14T13:00:00Z"), smtp(&peer, "tls = \"none\"\nconnections = 2")).await;
    let mut t = utc("2027-03-14T13:00:00Z");
    let mut ticks = 0;
    // Advance the clock past each backoff until nothing is open (bounded).
    while ticks < 80 {
        app.clock.set(t);
        app.tick().await;
        let open: i64 = app
            .states()
            .await
            .iter()
            .filter(|(s, _)| ["pending", "retry", "sending"].contains(&s.code()))
            .map(|(_, n)| n)
            .sum();
        if open == 0 {
            break;
        }
        ticks += 1;
        t += chrono::TimeDelta::minutes(10);
        // The outage is in real time; let some pass between ticks.
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    let states = app.states().await;
    let failed = app.app.store().rows(Some(RowState::Failed), 100).await.unwrap();
    let reasons: Vec<_> = failed.iter().map(|r| (r.key.clone(), r.attempts, r.reason.clone())).collect();
    // 36 greetings, and one departure task per contact refused at RCPT as unknown.
    assert_eq!(states, vec![(RowState::Accepted, 40), (RowState::Failed, 4)], "after {ticks} ticks: {reasons:#?}");
    // Every accepted row's Message-ID is at the server (recorded or dropped-after-DATA then resent).
    let at_server: HashSet<String> = peer.records().into_iter().chain(peer.dropped()).map(|r| r.message_id).collect();
    for row in app.app.store().rows(Some(RowState::Accepted), 100).await.unwrap() {
        assert!(at_server.contains(&row.message_id), "{} never reached the server", row.key);
    }
    for row in app.app.store().rows(Some(RowState::Failed), 100).await.unwrap() {
        assert!(row.reason.as_deref().unwrap_or_default().contains("mailbox unavailable"), "{:?}", row.reason);
    }
    // Cut-after-DATA customer messages were resent with the same Message-ID (at_least_once).
    // A cut ops report is not resent as such (its Message-ID names the rows it covers): its rows
    // go into a later report, so in the end every failed row was reported.
    let dropped = peer.dropped();
    assert_eq!(dropped.len(), 2);
    for d in dropped.iter().filter(|d| d.rcpt != ["ops@example.com"]) {
        let id = &d.message_id;
        assert!(peer.records().iter().any(|r| &r.message_id == id), "dropped {id} was resent and recorded");
    }
    for _ in 0..10 {
        if app.app.store().unreported(10).await.unwrap().is_empty() {
            break;
        }
        t += chrono::TimeDelta::minutes(10);
        app.clock.set(t);
        app.tick().await;
    }
    assert!(app.app.store().unreported(10).await.unwrap().is_empty(), "every failed row reported to ops");
    assert!(peer.records().iter().any(|r| r.rcpt == ["ops@example.com"]), "an ops report was accepted");
}

#[tokio::test(flavor = "multi_thread")]
async fn at_most_once_marks_a_cut_after_data_unknown_and_tells_ops() {
    let peer = Peer::start(PeerOptions { drop_after_data: vec![1], ..Default::default() });
    let plan = plans(1, 0)
        .remove(0)
        .1
        .replace("template = \"birthday\"", "template = \"birthday\"\ndelivery = \"at_most_once\"");
    let app = spawn_app(&[("c0", &plan)], &[], utc("2027-03-14T13:00:00Z"), smtp(&peer, "tls = \"none\"")).await;
    let r = app.tick().await;
    assert_eq!((r.unknown, r.accepted, r.reported), (1, 0, 1));
    let rows = app.app.store().rows(Some(RowState::Unknown), 10).await.unwrap();
    assert_eq!(rows.len(), 1);
    // Not resent later; ops got the report.
    app.tick_at("2027-03-14T14:00:00Z").await;
    let records = peer.records();
    assert_eq!(records.iter().filter(|r| r.message_id == rows[0].message_id).count(), 0, "never resent");
    assert!(records.iter().any(|r| r.rcpt == vec!["ops@example.com".to_string()]), "ops report delivered");
}

#[tokio::test(flavor = "multi_thread")]
async fn starttls_with_auth_on_our_nodelay_path() {
    let peer = Peer::start(PeerOptions {
        tls: true,
        require_starttls: true,
        auth: Some(("cp".into(), "s3cret".into())),
        ..Default::default()
    });
    let extra = format!(
        "tls = \"starttls\"\ntls_name = \"localhost\"\nca_file = \"{}\"\nusername = \"cp\"\npassword_file = \"{}\"",
        peer.cert_path().display(),
        write_secret(&peer, "s3cret").display()
    );
    let owned = plans(3, 0);
    let refs: Vec<(&str, &str)> = owned.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let app = spawn_app(&refs, &[], utc("2027-03-14T13:00:00Z"), smtp(&peer, &extra)).await;
    assert_eq!(app.tick().await.accepted, 3);
    assert_eq!(peer.records().len(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_password_is_a_failure_with_the_reply_not_a_silent_drop() {
    let peer = Peer::start(PeerOptions { tls: true, auth: Some(("cp".into(), "right".into())), ..Default::default() });
    let extra = format!(
        "tls = \"starttls\"\ntls_name = \"localhost\"\nca_file = \"{}\"\nusername = \"cp\"\npassword_file = \"{}\"",
        peer.cert_path().display(),
        write_secret(&peer, "wrong").display()
    );
    let owned = plans(1, 0);
    let app = spawn_app(&[("c0", &owned[0].1)], &[], utc("2027-03-14T13:00:00Z"), smtp(&peer, &extra)).await;
    let r = app.tick().await;
    assert_eq!(r.failed, 1, "{r:?}");
    let row = &app.app.store().rows(Some(RowState::Failed), 1).await.unwrap()[0];
    assert!(row.reason.as_deref().unwrap_or_default().contains("535"), "{:?}", row.reason);
}

#[tokio::test(flavor = "multi_thread")]
async fn implicit_tls_on_our_nodelay_path() {
    let peer = Peer::start(PeerOptions { tls: true, implicit_tls: true, ..Default::default() });
    let extra = format!("tls = \"tls\"\ntls_name = \"localhost\"\nca_file = \"{}\"", peer.cert_path().display());
    let owned = plans(2, 0);
    let refs: Vec<(&str, &str)> = owned.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let app = spawn_app(&refs, &[], utc("2027-03-14T13:00:00Z"), smtp(&peer, &extra)).await;
    assert_eq!(app.tick().await.accepted, 2);
    assert_eq!(peer.records().len(), 2);
}

fn write_secret(peer: &Peer, secret: &str) -> std::path::PathBuf {
    let p = peer.dir.path().join("smtp-password");
    std::fs::write(&p, secret).unwrap();
    p
}

/// The dispatcher's go-ahead (`Mailer::send_when`): a message withdrawn before DATA is never
/// delivered, the envelope is reset, and the session carries on with the next message.
#[tokio::test(flavor = "multi_thread")]
async fn a_withdrawn_message_is_never_delivered_and_the_session_goes_on() {
    use contactplan::mail::{FailureClass, Gate};
    let peer = Peer::start(PeerOptions::default());
    let mailer = mailer_for(&peer);
    let message = |id: &str| {
        lettre::Message::builder()
            .from("team@example.com".parse().unwrap())
            .to("pat@example.net".parse().unwrap())
            .subject("hello")
            .message_id(Some(format!("<{id}@example.com>")))
            .body(String::from("hello"))
            .unwrap()
    };
    mailer.send(&message("first")).await.unwrap();
    let withdrawn = mailer.send_when(&message("withdrawn"), async { false }, Gate::Data).await.unwrap_err();
    assert_eq!(withdrawn.class, FailureClass::Withdrawn);
    // The go-ahead may also come late: the envelope waits for it.
    let late = async {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        true
    };
    mailer.send_when(&message("late"), late, Gate::Data).await.unwrap();
    let ids: Vec<String> = peer.records().into_iter().map(|r| r.message_id).collect();
    assert_eq!(ids, ["<first@example.com>", "<late@example.com>"]);
}

/// A one-session mailer for `peer` (plain text, 5 s timeout).
fn mailer_for(peer: &Peer) -> contactplan::mail::Mailer {
    use contactplan::mail::{SmtpSettings, TlsMode};
    let settings = SmtpSettings {
        host: "127.0.0.1".into(),
        port: peer.port,
        tls: TlsMode::None,
        username: None,
        auth: contactplan::mail::SmtpAuth::Password,
        timeout: std::time::Duration::from_secs(5),
        connections: 1,
        ca_file: None,
        tls_name: None,
        quota_patterns: vec![],
    };
    contactplan::mail::Mailer::new(&contactplan::mail::Transport::Smtp(settings), None).unwrap()
}

/// A message whose body has lines that start with a dot (which SMTP must double on the wire).
fn dotted_message(id: &str, to: &str) -> lettre::Message {
    lettre::Message::builder()
        .from("team@example.com".parse().unwrap())
        .to(to.parse().unwrap())
        .subject("dots")
        .message_id(Some(format!("<{id}@example.com>")))
        .body(String::from(".starts with a dot\r\n..two dots\r\n.\r\nlast line\r\n"))
        .unwrap()
}

/// Both ways through a session, with and without the server's PIPELINING: the content
/// arrives byte for byte (dot-stuffing undone by the server), a refused recipient fails the
/// transaction permanently without delivering it, and the session goes on. With the row already
/// `sending` (`Gate::Content`), `DATA` goes out before the go-ahead; a go-ahead that says no
/// after `DATA` delivers nothing, and the next message still gets through.
#[tokio::test(flavor = "multi_thread")]
async fn content_arrives_intact_and_refusals_stay_contained_with_and_without_pipelining() {
    use contactplan::mail::{FailureClass, Gate};
    for pipelining in [false, true] {
        let peer = Peer::start(PeerOptions {
            pipelining,
            record_content: true,
            reject_rcpt: vec!["nobody".into()],
            ..PeerOptions::default()
        });
        let mailer = mailer_for(&peer);
        let first = dotted_message("first", "pat@example.net");
        let accepted = mailer.send_when(&first, async { true }, Gate::Content).await.unwrap();
        assert!(accepted.reply.starts_with("250 "), "pipelining={pipelining}: {accepted:?}");
        let refused = dotted_message("refused", "nobody@example.net");
        let refused = mailer.send_when(&refused, async { true }, Gate::Content).await.unwrap_err();
        assert_eq!(refused.class, FailureClass::Permanent, "pipelining={pipelining}: {refused:?}");
        assert!(refused.detail.contains("mailbox unavailable"), "{refused:?}");
        let held = dotted_message("held", "pat@example.net");
        let held = mailer.send_when(&held, async { false }, Gate::Content).await.unwrap_err();
        assert_eq!(held.class, FailureClass::Withdrawn);
        let late = async {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            true
        };
        let gated = dotted_message("gated", "pat@example.net");
        let accepted = mailer.send_when(&gated, late, Gate::Data).await.unwrap();
        assert!(accepted.reply.starts_with("250 "), "pipelining={pipelining}: {accepted:?}");

        let records = peer.records();
        let ids: Vec<&str> = records.iter().map(|r| r.message_id.as_str()).collect();
        assert_eq!(ids, ["<first@example.com>", "<gated@example.com>"], "pipelining={pipelining}");
        // The envelope is pipelined exactly when the server announced PIPELINING.
        assert!(records.iter().all(|r| r.pipelined == pipelining), "{records:?}");
        let sent = String::from_utf8(first.formatted()).unwrap();
        assert_eq!(records[0].content.trim_end(), sent.trim_end(), "pipelining={pipelining}");
        assert!(records[0].content.contains("\r\n.starts with a dot\r\n..two dots\r\n.\r\nlast line"));
    }
}
