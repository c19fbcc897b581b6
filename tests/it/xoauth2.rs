//! SMTP AUTH XOAUTH2 end to end, in process: a local OAuth token endpoint (axum on 127.0.0.1,
//! the client-credentials grant, tokens with a short lifetime on the test's `ManualClock`, told
//! to fail when the test says so) and the aiosmtpd peer with STARTTLS and XOAUTH2, which
//! accepts only the tokens the test lists as currently valid.

use crate::helpers::{Delivery, Engine, spawn_app_with, utc};
use crate::peer::{Peer, PeerOptions};
use chrono::{DateTime, TimeDelta, Utc};
use contactplan::clock::{Clock, ManualClock};
use contactplan::config::Environment;
use contactplan::store::RowState;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

const CLIENT_ID: &str = "app-1234";
const SECRET: &str = "s3cret~value";
const MAILBOX: &str = "team@example.com";
const SCOPE: &str = "https://outlook.office365.com/.default";

/// The token endpoint's state, shared with its handler.
struct Issuer {
    clock: ManualClock,
    /// Lifetime of every token, in seconds.
    expires_in: i64,
    /// Requests received (any outcome).
    requests: AtomicUsize,
    /// Answer 503 `temporarily_unavailable`.
    fail: AtomicBool,
    /// The next N tokens are issued but not listed as valid at the peer (revoked at once).
    withhold: AtomicUsize,
    /// Tokens issued and listed, with their expiry on the test clock.
    issued: Mutex<Vec<(String, DateTime<Utc>)>>,
    /// Form fields that were wrong, for the test to assert on.
    bad_forms: Mutex<Vec<String>>,
    /// The peer's list of valid tokens.
    tokens_file: PathBuf,
}

impl Issuer {
    /// Lists, for the peer, the tokens that are valid now on the test clock.
    fn publish(&self) {
        let now = self.clock.now();
        let text: String =
            self.issued.lock().unwrap().iter().filter(|(_, exp)| *exp > now).map(|(t, _)| format!("{t}\n")).collect();
        std::fs::write(&self.tokens_file, text).unwrap();
    }

    fn answer(&self, body: &[u8]) -> (u16, String) {
        self.requests.fetch_add(1, Ordering::SeqCst);
        let form: std::collections::HashMap<String, String> = form_urlencoded::parse(body).into_owned().collect();
        for (key, want) in [("grant_type", "client_credentials"), ("client_id", CLIENT_ID), ("scope", SCOPE)] {
            if form.get(key).map(String::as_str) != Some(want) {
                self.bad_forms.lock().unwrap().push(format!("{key}={:?}", form.get(key)));
            }
        }
        if self.fail.load(Ordering::SeqCst) {
            return (503, r#"{"error":"temporarily_unavailable","error_description":"AADSTS90033: A transient error has occurred."}"#.into());
        }
        if form.get("client_secret").map(String::as_str) != Some(SECRET) {
            return (
                401,
                r#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the client secret value.\r\nTrace ID: 00000000"}"#.into(),
            );
        }
        let n = self.requests.load(Ordering::SeqCst);
        let token = format!("tok-{n}-{}", self.clock.now().timestamp());
        let withheld = self.withhold.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |w| w.checked_sub(1)).is_ok();
        if !withheld {
            self.issued.lock().unwrap().push((token.clone(), self.clock.now() + TimeDelta::seconds(self.expires_in)));
            self.publish();
        }
        (
            200,
            format!(
                r#"{{"token_type":"Bearer","expires_in":{},"ext_expires_in":{0},"access_token":"{token}"}}"#,
                self.expires_in
            ),
        )
    }
}

/// Starts the token endpoint on 127.0.0.1; its URL.
async fn start_issuer(issuer: Arc<Issuer>) -> String {
    use axum::body::Bytes;
    use axum::extract::State;
    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse;
    async fn token(State(issuer): State<Arc<Issuer>>, headers: header::HeaderMap, body: Bytes) -> impl IntoResponse {
        if headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) != Some("application/x-www-form-urlencoded")
        {
            issuer.bad_forms.lock().unwrap().push("content-type".into());
        }
        let (status, json) = issuer.answer(&body);
        (StatusCode::from_u16(status).unwrap(), [(header::CONTENT_TYPE, "application/json")], json)
    }
    let app = axum::Router::new().route("/contoso/oauth2/v2.0/token", axum::routing::post(token)).with_state(issuer);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/contoso/oauth2/v2.0/token")
}

/// One customer with a task to the owner every minute from 09:00 to 09:59 Berlin time.
const PLAN: &str = r#"[customer]
id = "acme"
name = "Acme"
since = 2015-06-01
owner = "owner@example.com"
timezone = "Europe/Berlin"
language = "en"
phase = "maturity"

[[contact]]
id = "jane"
name = "Jane Smith"
gender = "female"
email = "jane.smith@harbor.example"
tone = "formal"
primary = true

[[occasion]]
name = "minutely"
on = "every"
cron = "* 9 * * *"
send = "task"
template = "checkin"
"#;

struct World {
    t: crate::helpers::TestApp,
    peer: Peer,
    issuer: Arc<Issuer>,
    _tokens: tempfile::TempDir,
}

impl World {
    async fn start(expires_in: i64, secret: &str) -> World {
        let start = utc("2026-06-01T06:59:30Z");
        let tokens = tempfile::tempdir().unwrap();
        let tokens_file = tokens.path().join("valid-tokens");
        std::fs::write(&tokens_file, "").unwrap();
        let peer = Peer::start(PeerOptions {
            tls: true,
            require_starttls: true,
            xoauth2: Some((MAILBOX.into(), tokens_file.clone())),
            record_content: true,
            ..Default::default()
        });
        let clock = ManualClock::new(start);
        let issuer = Arc::new(Issuer {
            clock: clock.clone(),
            expires_in,
            requests: AtomicUsize::new(0),
            fail: AtomicBool::new(false),
            withhold: AtomicUsize::new(0),
            issued: Mutex::new(Vec::new()),
            bad_forms: Mutex::new(Vec::new()),
            tokens_file,
        });
        let url = start_issuer(issuer.clone()).await;
        let delivery = format!(
            "kind = \"smtp\"\nhost = \"127.0.0.1\"\nport = {}\ntls = \"starttls\"\nca_file = \"{}\"\ntls_name = \"localhost\"\n\
             timeout_secs = 10\nusername = \"{MAILBOX}\"\nauth = \"xoauth2\"\n\n\
             [delivery.oauth]\nprovider = \"microsoft\"\ntenant = \"contoso\"\ntoken_url = \"{url}\"\nclient_id = \"{CLIENT_ID}\"\n",
            peer.port,
            peer.cert_path().display()
        );
        let env = Environment::default().with("CONTACTPLAN_OAUTH_CLIENT_SECRET", secret);
        // The issuer's clock is the daemon's.
        let t = spawn_app_with(Engine::Sqlite, &[("acme", PLAN)], &[], clock, Delivery::Custom(delivery), env).await;
        World { t, peer, issuer, _tokens: tokens }
    }

    /// Moves the daemon's clock (and the peer's idea of which tokens are valid) and ticks.
    async fn tick_at(&self, now: &str) -> contactplan::dispatch::TickReport {
        self.t.clock.set(utc(now));
        self.issuer.publish();
        self.t.tick().await
    }

    /// The reasons `/readyz` gives about OAuth (the test drives ticks itself, so the daemon is
    /// not "ready" as a whole).
    async fn not_ready(&self) -> Vec<String> {
        let all = contactplan::health::not_ready(self.t.app.health(), self.t.app.store()).await;
        all.into_iter().filter(|r| r.contains("OAuth")).collect()
    }

    fn metric(&self, name: &str) -> f64 {
        let text = self.t.app.metrics().encode(true, &Default::default());
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
            .unwrap_or_else(|| panic!("{name} not in\n{text}"))
            .trim()
            .parse()
            .unwrap()
    }

    /// Messages the peer accepted for the owner (the tasks).
    fn tasks(&self) -> Vec<crate::peer::Record> {
        self.peer.records().into_iter().filter(|r| r.rcpt == ["owner@example.com"]).collect()
    }

    fn notices(&self) -> Vec<crate::peer::Record> {
        self.peer
            .records()
            .into_iter()
            .filter(|r| r.rcpt == ["ops@example.com"] && r.content.contains("XOAUTH2 is failing"))
            .collect()
    }

    async fn count(&self, state: RowState) -> i64 {
        self.t.states().await.into_iter().find(|(s, _)| *s == state).map_or(0, |(_, n)| n)
    }
}

// The daemon's clock starts at 06:59:30Z (08:59:30 in Berlin); tasks fire every minute from
// 07:00Z, each with a deadline one minute later.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_go_out_with_xoauth2_and_a_token_that_expires_mid_run_is_renewed_in_time() {
    // Tokens live 3 minutes (renewed after 90 s); messages go out over 15 minutes.
    let w = World::start(180, SECRET).await;
    w.t.tick().await;
    assert_eq!(w.issuer.requests.load(Ordering::SeqCst), 1, "the first tick obtained a token");
    for minute in 0..15 {
        let r = w.tick_at(&format!("2026-06-01T07:{minute:02}:05Z")).await;
        assert_eq!((r.accepted, r.retried, r.failed), (1, 0, 0), "minute {minute}: {r:?}");
    }
    let tasks = w.tasks();
    assert_eq!(tasks.len(), 15);
    assert!(tasks.iter().all(|r| r.auth == format!("XOAUTH2:{MAILBOX}")), "{tasks:?}");
    // Renewed before expiry every time: the relay never refused a token.
    let attempts = w.peer.xoauth2_attempts();
    assert!(attempts.iter().all(|a| a.ok && a.user == MAILBOX), "{attempts:?}");
    // Renewed about every 90 s over 15 minutes: not once per message, and not never.
    let requests = w.issuer.requests.load(Ordering::SeqCst);
    assert!((6..=12).contains(&requests), "{requests} token requests");
    assert!(attempts.len() >= 4, "new sessions after expiry authenticated with new tokens: {attempts:?}");
    assert!(w.issuer.bad_forms.lock().unwrap().is_empty(), "{:?}", w.issuer.bad_forms.lock().unwrap());
    assert_eq!(w.count(RowState::Failed).await + w.count(RowState::Retry).await, 0);
    assert!(w.not_ready().await.is_empty(), "{:?}", w.not_ready().await);
    assert_eq!(w.metric("contactplan_oauth_token_renewal_failures_total"), 0.0);
    let expiry = w.metric("contactplan_oauth_token_expiry_timestamp_seconds");
    assert!(expiry > utc("2026-06-01T07:14:05Z").timestamp() as f64, "{expiry}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_token_endpoint_is_reported_at_once_and_sending_resumes_when_it_recovers() {
    // Tokens live 10 minutes: renewed after 5.
    let w = World::start(600, SECRET).await;
    let r = w.tick_at("2026-06-01T07:00:05Z").await;
    assert_eq!(r.accepted, 1);
    w.issuer.fail.store(true, Ordering::SeqCst);

    // Renewal is due and fails: reported at once, while the old token still sends.
    let r = w.tick_at("2026-06-01T07:06:05Z").await;
    assert_eq!((r.accepted, r.failed), (1, 0), "{r:?}");
    let reasons = w.not_ready().await;
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    assert!(
        reasons[0].starts_with("the OAuth token for SMTP cannot be renewed:")
            && reasons[0].contains("HTTP 503: temporarily_unavailable"),
        "{reasons:?}"
    );
    assert_eq!(w.metric("contactplan_oauth_token_renewal_failures_total"), 1.0);
    let notices = w.notices();
    assert_eq!(notices.len(), 1, "one ops notice, sent with the still valid token");
    assert!(notices[0].content.contains("temporarily_unavailable"), "{}", notices[0].content);

    // The old token expired (07:10:05) and the endpoint still fails: the task waits (retry).
    let r = w.tick_at("2026-06-01T07:11:05Z").await;
    assert_eq!((r.accepted, r.retried, r.failed), (0, 1, 0), "{r:?}");
    assert_eq!(w.metric("contactplan_oauth_token_renewal_failures_total"), 2.0);
    assert_eq!(w.notices().len(), 1, "one notice per episode");
    assert!(!w.not_ready().await.is_empty());

    // The endpoint recovers: the next tick renews and sends the waiting task.
    w.issuer.fail.store(false, Ordering::SeqCst);
    let r = w.tick_at("2026-06-01T07:11:50Z").await;
    assert_eq!((r.accepted, r.failed), (1, 0), "{r:?}");
    assert!(w.not_ready().await.is_empty(), "{:?}", w.not_ready().await);
    assert_eq!(w.count(RowState::Failed).await, 0);
    let sent: Vec<String> = w.tasks().into_iter().map(|r| r.message_id).collect();
    assert_eq!(sent.len(), 3, "{sent:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_client_secret_is_a_clear_error_and_fails_no_message() {
    let w = World::start(600, "not-the-secret").await;
    let r = w.tick_at("2026-06-01T07:00:05Z").await;
    assert_eq!((r.accepted, r.retried, r.failed), (0, 1, 0), "{r:?}");
    let reasons = w.not_ready().await;
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    assert!(
        reasons[0].contains("HTTP 401: invalid_client: AADSTS7000215: Invalid client secret provided.")
            && reasons[0].contains("check client_id and the client secret (credential oauth-client-secret or CONTACTPLAN_OAUTH_CLIENT_SECRET)"),
        "{reasons:?}"
    );
    assert!(!reasons[0].contains("not-the-secret"), "{reasons:?}");
    assert!(w.metric("contactplan_oauth_token_renewal_failures_total") >= 1.0);
    let row = w.t.app.store().counts().await.unwrap();
    assert!(row.iter().any(|(s, n)| *s == RowState::Retry && *n == 1), "{row:?}");
    assert!(w.peer.records().is_empty(), "nothing can be sent, not even the notice");
    assert!(w.peer.xoauth2_attempts().is_empty(), "no AUTH without a token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_the_relay_refuses_is_renewed_once_and_the_message_is_sent() {
    let w = World::start(600, SECRET).await;
    // The first token the daemon gets is revoked before it is used.
    w.issuer.withhold.store(1, Ordering::SeqCst);
    let r = w.tick_at("2026-06-01T07:00:05Z").await;
    assert_eq!(
        (r.accepted, r.retried, r.failed),
        (1, 0, 0),
        "{r:?} {:?} {:?}",
        w.t.app.health().last_smtp_error(),
        w.peer.stderr()
    );
    let attempts: Vec<bool> = w.peer.xoauth2_attempts().into_iter().map(|a| a.ok).collect();
    assert_eq!(attempts, [false, true], "refused (535 after Google's 334 status), renewed, accepted");
    assert_eq!(w.issuer.requests.load(Ordering::SeqCst), 2);
    assert!(w.not_ready().await.is_empty(), "{:?}", w.not_ready().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_waiting_for_a_token_share_one_request() {
    let issuer_dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(utc("2026-06-01T07:00:00Z"));
    let issuer = Arc::new(Issuer {
        clock: clock.clone(),
        expires_in: 3,
        requests: AtomicUsize::new(0),
        fail: AtomicBool::new(false),
        withhold: AtomicUsize::new(0),
        issued: Mutex::new(Vec::new()),
        bad_forms: Mutex::new(Vec::new()),
        tokens_file: issuer_dir.path().join("tokens"),
    });
    let url = start_issuer(issuer.clone()).await;
    let settings = contactplan::mail::OauthSettings {
        provider: "custom".into(),
        token_url: url,
        client_id: CLIENT_ID.into(),
        scope: SCOPE.into(),
    };
    let source = Arc::new(
        contactplan::mail::oauth::TokenSource::new(&settings, SECRET.to_string().into(), Arc::new(clock.clone()))
            .unwrap(),
    );
    let many = (0..8).map(|_| {
        let s = source.clone();
        async move { s.token().await.unwrap().expires_at }
    });
    let expiries = futures_util::future::join_all(many).await;
    assert_eq!(issuer.requests.load(Ordering::SeqCst), 1, "one request for eight sessions");
    assert!(expiries.iter().all(|e| *e == utc("2026-06-01T07:00:03Z")), "{expiries:?}");
    // A 3 s token is renewed after 1.5 s, on the injected clock.
    clock.set(utc("2026-06-01T07:00:01Z"));
    source.token().await.unwrap();
    assert_eq!(issuer.requests.load(Ordering::SeqCst), 1);
    clock.set(utc("2026-06-01T07:00:02Z"));
    assert_eq!(source.token().await.unwrap().expires_at, utc("2026-06-01T07:00:05Z"));
    assert_eq!(issuer.requests.load(Ordering::SeqCst), 2);
}
