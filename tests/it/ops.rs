//! Operations, in process: last-good reloads (plans, playbooks, templates), reloads on a
//! rename-save, `/readyz` against a database that goes away, `/metrics` parsed as Prometheus
//! text while emails are sent over real SMTP.

use crate::helpers::{TestSmtp, utc};
use contactplan::app::Application;
use contactplan::app::Services;
use contactplan::clock::ManualClock;
use contactplan::config::{Config, Environment};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// A daemon in a temp dir with its own copy of the templates (tests edit them).
pub struct OpsApp {
    pub app: Application,
    pub clock: ManualClock,
    pub smtp: TestSmtp,
    pub dir: tempfile::TempDir,
}

pub(crate) fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

impl OpsApp {
    /// `database_url` of `None`: SQLite in the temp dir.
    pub async fn start(plans: &[(&str, &str)], playbooks: &[(&str, &str)], database_url: Option<&str>) -> OpsApp {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("plans")).unwrap();
        std::fs::create_dir_all(root.join("playbooks")).unwrap();
        copy_dir(&crate::helpers::templates_dir(), &root.join("templates"));
        for (name, text) in plans {
            std::fs::write(root.join("plans").join(format!("{name}.toml")), text).unwrap();
        }
        for (name, text) in playbooks {
            std::fs::write(root.join("playbooks").join(format!("{name}.toml")), text).unwrap();
        }
        let smtp = TestSmtp::start();
        let config = format!(
            "database_url = \"{}\"\nhttp_bind = \"127.0.0.1:0\"\ntemplates = \"templates\"\ntimezone = \"Europe/Berlin\"\n[sender]\nemail = \"team@example.com\"\nname = \"Team\"\n[delivery]\nkind = \"smtp\"\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\ntimeout_secs = 10\n",
            database_url.unwrap_or("sqlite://outbox.db"),
            smtp.addr.port()
        );
        std::fs::write(root.join("contactplan.toml"), config).unwrap();
        let config = Config::load(&root.join("contactplan.toml"), &Environment::default()).unwrap();
        let clock = ManualClock::new(utc("2027-03-10T12:00:00Z"));
        let app = Application::build(config, Arc::new(clock.clone()), Default::default()).await.unwrap();
        OpsApp { app, clock, smtp, dir }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// The email of a served customer's primary contact.
    pub fn served_email(&self, customer: &str) -> Option<String> {
        let snap = self.app.current();
        snap.plans.get(customer).map(|c| c.primary_contact().email.to_string())
    }
}

/// A plan with one birthday rule; the contact's email tells versions apart.
pub fn plan(id: &str, email: &str, extra: &str) -> String {
    format!(
        "[customer]\nid = \"{id}\"\nname = \"Customer {id}\"\nsince = 2015-06-01\nowner = \"owner@example.com\"\ntimezone = \"Europe/Berlin\"\nlanguage = \"en\"\nphase = \"growth\"\n{extra}\n\n[[contact]]\nid = \"p\"\nname = \"Pat Doe\"\nemail = \"{email}\"\nbirthday = 1980-03-11\ntone = \"formal\"\nprimary = true\n\n[[occasion]]\nname = \"birthday\"\non = \"birthday\"\ntemplate = \"birthday\"\nat = \"09:00\"\n"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reload_with_one_broken_plan_keeps_its_last_good_version_and_applies_the_others() {
    let t = OpsApp::start(
        &[("a", &plan("a", "pat@a-v1.example", "")), ("b", &plan("b", "pat@b-v1.example", ""))],
        &[],
        None,
    )
    .await;
    assert_eq!(t.served_email("a").as_deref(), Some("pat@a-v1.example"));

    // a: a new version with an error (unknown zone); b: a valid new version; c: broken from the start.
    std::fs::write(t.path("plans/a.toml"), plan("a", "pat@a-v2.example", "").replace("Europe/Berlin", "Mars/Olympus"))
        .unwrap();
    std::fs::write(t.path("plans/b.toml"), plan("b", "pat@b-v2.example", "")).unwrap();
    std::fs::write(t.path("plans/c.toml"), plan("c", "not-an-address", "")).unwrap();
    let revision = t.app.current().revision;
    t.app.reload("test").await;

    let snap = t.app.current();
    assert_eq!(snap.revision, revision + 1);
    assert_eq!(t.served_email("a").as_deref(), Some("pat@a-v1.example"), "a: last good version in force");
    assert_eq!(t.served_email("b").as_deref(), Some("pat@b-v2.example"), "b: the new version applies");
    assert_eq!(t.served_email("c"), None, "c: never valid, not served");
    let health = t.app.health().plans();
    assert_eq!(health.customers, 2);
    let a = health.problems.iter().find(|p| p.location.contains("a.toml")).expect("a's problem is reported");
    assert!(a.last_good_in_force && a.message.contains("Mars/Olympus"), "{a:?}");
    let c = health.problems.iter().find(|p| p.location.contains("c.toml")).expect("c's problem is reported");
    assert!(!c.last_good_in_force, "{c:?}");
    let metrics = t.app.metrics().encode(false, &Default::default());
    assert!(metrics.contains("contactplan_plan_reloads_total{result=\"partial\"} 1"), "{metrics}");
    assert!(metrics.contains("contactplan_plan_errors 2"), "{metrics}");

    // The occasion of the kept version is still sent, to the last good address.
    let r = tick_at(&t, "2027-03-11T08:00:00Z").await;
    assert_eq!(r.accepted, 2, "{r:?}");
    let mut to: Vec<String> = t.smtp.messages().iter().flat_map(|m| m.to.clone()).collect();
    to.sort();
    assert_eq!(to, ["pat@a-v1.example", "pat@b-v2.example"]);

    // Fixing a applies its new version; the problem list shrinks to c.
    std::fs::write(t.path("plans/a.toml"), plan("a", "pat@a-v3.example", "")).unwrap();
    t.app.reload("test").await;
    assert_eq!(t.served_email("a").as_deref(), Some("pat@a-v3.example"));
    let health = t.app.health().plans();
    assert_eq!(health.problems.len(), 1, "{health:?}");
}

async fn tick_at(t: &OpsApp, now: &str) -> contactplan::dispatch::TickReport {
    t.clock.set(utc(now));
    t.app.scheduler().tick(&CancellationToken::new()).await.unwrap()
}

const PLAYBOOK: &str =
    "[[occasion]]\nname = \"birthday\"\non = \"birthday\"\ntemplate = \"birthday\"\nat = \"09:00\"\n";

#[tokio::test(flavor = "multi_thread")]
async fn broken_templates_and_playbooks_keep_their_last_good_version() {
    let uses_playbook = plan("a", "pat@a.example", "playbook = \"standard\"")
        .replace("[[occasion]]\nname = \"birthday\"\non = \"birthday\"\ntemplate = \"birthday\"\nat = \"09:00\"\n", "");
    let t = OpsApp::start(&[("a", &uses_playbook)], &[("standard", PLAYBOOK)], None).await;
    assert!(t.served_email("a").is_some());

    let subject = t.path("templates/birthday/en-formal/subject.txt.j2");
    std::fs::write(&subject, "{% if %}broken").unwrap();
    std::fs::write(t.path("playbooks/standard.toml"), format!("{PLAYBOOK}surprise = 1\n")).unwrap();
    t.app.reload("test").await;

    let health = t.app.health().plans();
    assert_eq!(health.problems.len(), 2, "{health:?}");
    assert!(health.problems.iter().all(|p| p.last_good_in_force), "{health:?}");
    assert!(health.problems.iter().any(|p| p.location.contains("subject.txt.j2")));
    assert!(health.problems.iter().any(|p| p.location.contains("standard.toml")));
    assert!(t.served_email("a").is_some(), "the plan still validates against the last good playbook");

    let r = tick_at(&t, "2027-03-11T08:00:00Z").await;
    assert_eq!(r.accepted, 1, "{r:?}");
    let subject_sent = t.smtp.messages()[0].header("Subject");
    assert_eq!(subject_sent, "Warmest wishes on your birthday", "the last good template renders");
}

#[tokio::test(flavor = "multi_thread")]
async fn saving_a_plan_by_rename_triggers_a_reload() {
    let t = OpsApp::start(&[("a", &plan("a", "pat@a-v1.example", ""))], &[], None).await;
    let watching = t.app.start(Services { watcher: true, ..Services::NONE }).await.unwrap();
    // What editors do: write a temp file next to it, then rename it over the original.
    let tmp = t.path("plans/.a.toml.swp");
    std::fs::write(&tmp, plan("a", "pat@a-v2.example", "")).unwrap();
    std::fs::rename(&tmp, t.path("plans/a.toml")).unwrap();
    let start = Instant::now();
    while t.served_email("a").as_deref() != Some("pat@a-v2.example") && start.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(t.served_email("a").as_deref(), Some("pat@a-v2.example"), "the rename-save was picked up");
    let revision = t.app.current().revision;
    assert_eq!(revision, 1, "one debounced reload for the write + rename");

    // A new file in the template tree (recursive watch) also reloads.
    std::fs::write(t.path("templates/birthday/en-formal/subject.txt.j2"), "Happy birthday, v2").unwrap();
    let start = Instant::now();
    while t.app.current().revision == revision && start.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(t.app.current().revision > revision, "a template change reloads");

    // So does a customer's template override, in a folder created after the watch began (the
    // folder's creation itself reloads; the file's write, deeper down, must too).
    std::fs::create_dir_all(t.path("plans/a/birthday/en-formal")).unwrap();
    tokio::time::sleep(WATCH_SETTLE).await;
    let revision = t.app.current().revision;
    std::fs::write(t.path("plans/a/birthday/en-formal/subject.txt.j2"), "Happy birthday from us").unwrap();
    let start = Instant::now();
    while t.app.current().revision == revision && start.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(t.app.current().revision > revision, "an override change reloads");
    assert!(watching.stop().await, "the watcher and reloader stop");
}

/// A TCP forwarder to PostgreSQL that can be cut (the database becomes unreachable) or
/// stalled (connections stay open, nothing moves: every query hangs).
pub(crate) struct Proxy {
    pub(crate) port: u16,
    up: Arc<AtomicBool>,
    stalled: Arc<AtomicBool>,
    links: Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
}

/// Copies one direction, holding the bytes back while the proxy is stalled.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    stalled: Arc<AtomicBool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        while stalled.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

impl Proxy {
    pub(crate) async fn start(target: &str) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let stalled = Arc::new(AtomicBool::new(false));
        let links = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (up2, stalled2, links2, target) = (up.clone(), stalled.clone(), links.clone(), target.to_string());
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                if !up2.load(Ordering::SeqCst) {
                    continue; // dropped: connection closed at once
                }
                let (target, stalled) = (target.clone(), stalled2.clone());
                let link = tokio::spawn(async move {
                    if let Ok(outbound) = tokio::net::TcpStream::connect(&target).await {
                        let (ir, iw) = inbound.into_split();
                        let (or, ow) = outbound.into_split();
                        tokio::join!(pump(ir, ow, stalled.clone()), pump(or, iw, stalled));
                    }
                });
                links2.lock().unwrap().push(link.abort_handle());
            }
        });
        Proxy { port, up, stalled, links }
    }

    /// The database URL of `db`, through this proxy.
    pub(crate) fn url(&self, db: &crate::store::TestDb) -> String {
        let url = db.url().replacen("127.0.0.1:5432", &format!("127.0.0.1:{}", self.port), 1);
        assert_ne!(url, db.url(), "the test database URL goes through 127.0.0.1:5432");
        url
    }

    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for l in self.links.lock().unwrap().drain(..) {
            l.abort();
        }
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }

    pub(crate) fn stall(&self, stalled: bool) {
        self.stalled.store(stalled, Ordering::SeqCst);
    }
}

async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    contactplan::http::get(addr, path, None).await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn readyz_turns_unready_when_the_database_is_unreachable() {
    let db = crate::store::TestDb::postgres().await;
    let proxy = Proxy::start("127.0.0.1:5432").await;
    let url = proxy.url(&db);
    let t = OpsApp::start(&[("a", &plan("a", "pat@a.example", ""))], &[], Some(&url)).await;
    let serving = t.app.start(Services { http: true, ..Services::NONE }).await.unwrap();
    let addr = serving.http_addr().unwrap();
    assert_eq!(http_get(addr, "/healthz").await, (200, "ok\n".to_string()));
    let (code, body) = http_get(addr, "/readyz").await;
    assert_eq!(code, 503, "not ready before the loop runs: {body}");

    let running = t.app.start(Services { scheduler: true, ..Services::NONE }).await.unwrap();
    let ready = || async {
        let start = Instant::now();
        loop {
            let (code, body) = http_get(addr, "/readyz").await;
            if code == 200 || start.elapsed() > Duration::from_secs(15) {
                return (code, body);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    assert_eq!(ready().await, (200, "ready\n".to_string()));

    proxy.cut();
    let (code, body) = http_get(addr, "/readyz").await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("database"), "{body}");
    assert_eq!(http_get(addr, "/healthz").await.0, 200, "the process is still up");
    let metrics = http_get(addr, "/metrics").await.1;
    assert!(metrics.contains("contactplan_database_up 0"), "{metrics}");

    proxy.restore();
    t.app.scheduler().wake(); // the next tick succeeds again
    assert_eq!(ready().await.0, 200, "ready again once the database is back");
    assert!(running.stop().await, "the scheduler stops");
    assert!(serving.stop().await, "the listener stops");
}

fn sample(scrape: &prometheus_parse::Scrape, metric: &str, label: Option<(&str, &str)>) -> Option<f64> {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == metric && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
        .and_then(|s| match &s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => Some(*v),
            prometheus_parse::Value::Histogram(h) => h.iter().find(|b| b.less_than.is_infinite()).map(|b| b.count),
            prometheus_parse::Value::Summary(_) => None,
        })
}

async fn scrape(addr: std::net::SocketAddr) -> prometheus_parse::Scrape {
    let (code, body) = http_get(addr, "/metrics").await;
    assert_eq!(code, 200, "{body}");
    prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).expect("valid Prometheus text format")
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_parse_as_prometheus_text_and_count_sent_emails() {
    let t = OpsApp::start(&[("a", &plan("a", "pat@a.example", "")), ("b", &plan("b", "pat@b.example", ""))], &[], None)
        .await;
    let serving = t.app.start(Services { http: true, ..Services::NONE }).await.unwrap();
    let addr = serving.http_addr().unwrap();
    let before = scrape(addr).await;
    assert_eq!(sample(&before, "contactplan_occasions_sent_total", Some(("kind", "birthday"))), None);
    assert_eq!(sample(&before, "contactplan_customers", None), Some(2.0));

    tick_at(&t, "2027-03-10T12:00:00Z").await; // materialised, nothing due yet
    let pending = scrape(addr).await;
    assert_eq!(sample(&pending, "contactplan_outbox_depth", Some(("state", "pending"))), Some(2.0));
    assert_eq!(sample(&pending, "contactplan_oldest_due_age_seconds", None), Some(0.0));

    // The first RCPT (a, due first) is greylisted with 451; b is accepted.
    t.smtp.reply_next(451, "4.7.1 greylisted, try again later");
    t.clock.set(utc("2027-03-11T08:10:00Z"));
    let due = scrape(addr).await;
    assert_eq!(sample(&due, "contactplan_oldest_due_age_seconds", None), Some(600.0), "due since 08:00 UTC");
    let r = tick_at(&t, "2027-03-11T08:10:00Z").await;
    assert_eq!((r.accepted, r.retried), (1, 1), "{r:?}");

    let after = scrape(addr).await;
    let birthday = Some(("kind", "birthday"));
    assert_eq!(sample(&after, "contactplan_occasions_due_total", birthday), Some(2.0));
    assert_eq!(sample(&after, "contactplan_occasions_sent_total", birthday), Some(1.0));
    assert_eq!(sample(&after, "contactplan_occasions_deferred_total", birthday), Some(1.0));
    assert_eq!(sample(&after, "contactplan_occasions_failed_total", birthday), Some(0.0));
    assert_eq!(sample(&after, "contactplan_smtp_errors_total", Some(("class", "transient"))), Some(1.0));
    assert_eq!(sample(&after, "contactplan_send_duration_seconds", None), Some(2.0), "two transactions timed");
    // Each row passes through the group commits twice: its start (`sending`) and its outcome.
    assert_eq!(sample(&after, "contactplan_outbox_commit_rows_total", None), Some(4.0));
    let commits = sample(&after, "contactplan_outbox_commit_duration_seconds", None).unwrap_or(0.0);
    assert!((1.0..=4.0).contains(&commits), "{commits} group commits timed");
    assert_eq!(sample(&after, "contactplan_outbox_depth", Some(("state", "retry"))), Some(1.0));

    // The retry goes through: the counters move again.
    let r = tick_at(&t, "2027-03-11T08:30:00Z").await;
    assert_eq!(r.accepted, 1, "{r:?}");
    let last = scrape(addr).await;
    assert_eq!(sample(&last, "contactplan_occasions_sent_total", birthday), Some(2.0));
    assert_eq!(sample(&last, "contactplan_occasions_due_total", birthday), Some(2.0), "a retry is not due again");
    assert_eq!(t.smtp.messages().len(), 2);
    let status = t.app.health().last_smtp_error().expect("the 451 is remembered");
    assert!(status.detail.contains("451") && status.class == "transient", "{status:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_permanent_failures_and_missed_occasions() {
    let t = OpsApp::start(&[("a", &plan("a", "pat@a.example", "")), ("b", &plan("b", "pat@b.example", ""))], &[], None)
        .await;
    let serving = t.app.start(Services { http: true, ..Services::NONE }).await.unwrap();
    let addr = serving.http_addr().unwrap();
    t.smtp.refuse("pat@a.example");
    tick_at(&t, "2027-03-10T12:00:00Z").await;
    let r = tick_at(&t, "2027-03-11T08:00:00Z").await;
    // Pat of `a` is refused (5.1.1): failed, and the salesperson's departure task is sent.
    assert_eq!((r.failed, r.accepted, r.departures), (1, 2, 1), "{r:?}");
    // The next year's occasions are materialised later; b's 2028 birthday is never sent:
    // the daemon "sleeps" through its whole send day.
    tick_at(&t, "2028-03-09T12:00:00Z").await;
    let r = tick_at(&t, "2028-03-12T12:00:00Z").await;
    assert!(r.missed >= 1, "{r:?}");

    let m = scrape(addr).await;
    let birthday = Some(("kind", "birthday"));
    assert_eq!(sample(&m, "contactplan_occasions_failed_total", birthday), Some(1.0));
    assert_eq!(sample(&m, "contactplan_smtp_errors_total", Some(("class", "permanent"))), Some(1.0));
    assert_eq!(sample(&m, "contactplan_occasions_missed_total", birthday), Some(r.missed as f64));
    let err = t.app.health().last_smtp_error().unwrap();
    assert_eq!(err.class, "permanent");
    assert!(err.detail.contains("550"), "{err:?}");
}

/// Everything `tracing` writes, for assertions on log content.
#[derive(Clone, Default)]
struct LogBuffer(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

// Current-thread runtime: the daemon's tasks run on this thread, under this test's subscriber.
#[tokio::test]
async fn a_refusal_quoting_the_recipient_is_logged_with_its_domain_only() {
    let logs = LogBuffer::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let t = OpsApp::start(&[("a", &plan("a", "pat.private@a.example", ""))], &[], None).await;
    t.smtp.reply_next(550, "5.1.1 <pat.private@a.example>: Recipient address rejected");
    tick_at(&t, "2027-03-10T12:00:00Z").await;
    let r = tick_at(&t, "2027-03-11T08:00:00Z").await;
    assert_eq!(r.failed, 1, "{r:?}");
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(text.contains("send failed permanently"), "{text}");
    assert!(text.contains("<…@a.example>: Recipient address rejected"), "{text}");
    assert!(!text.contains("pat.private"), "address in the log: {text}");
    // The outbox keeps the server's reply as it was sent (ops need it).
    let failed = t.app.health().last_smtp_error().unwrap();
    assert!(failed.detail.contains("pat.private@a.example"), "{failed:?}");
}

/// Shutdown stops every service and awaits it: afterwards no task is left, nothing accepts on
/// the HTTP port (an idle keep-alive connection a client left open does not hold it up), the
/// file watcher no longer reloads and the scheduler no longer sends.
#[tokio::test(flavor = "multi_thread")]
async fn after_shutdown_every_service_has_stopped_and_nothing_listens() {
    let t = OpsApp::start(&[("a", &plan("a", "pat@a.example", ""))], &[], None).await;
    let running = t.app.start(Services::ALL).await.unwrap();
    let addr = running.http_addr().unwrap();
    let mut idle = tokio::net::TcpStream::connect(addr).await.unwrap();
    assert_eq!(http_get(addr, "/healthz").await.0, 200);
    assert!(running.tasks() >= 5, "scheduler, reloader, watcher, listener, retention: {}", running.tasks());

    let stopped = tokio::time::timeout(Duration::from_secs(10), running.stop()).await.expect("stop returns");
    assert!(stopped, "every service ended within the grace");
    assert_eq!(running.tasks(), 0, "no task is left");
    assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "nothing accepts on {addr} any more");
    let mut buf = [0u8; 16];
    use tokio::io::AsyncReadExt;
    let read = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut buf)).await.expect("the idle one is closed");
    assert!(matches!(read, Ok(0) | Err(_)), "closed by the server: {read:?}");

    // The watcher is gone: a saved plan is not picked up.
    let revision = t.app.current().revision;
    std::fs::write(t.path("plans/a.toml"), plan("a", "pat@a-v2.example", "")).unwrap();
    tokio::time::sleep(crate::ops::WATCH_SETTLE).await;
    assert_eq!(t.app.current().revision, revision, "no reload after shutdown");
    // The scheduler is gone: a due birthday is not sent.
    t.clock.set(utc("2027-03-11T08:00:00Z"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(t.smtp.messages().is_empty(), "nothing sent after shutdown");
}

/// Longer than the watcher's debounce (300 ms) and its longest delay (2 s).
pub(crate) const WATCH_SETTLE: Duration = Duration::from_millis(2500);
