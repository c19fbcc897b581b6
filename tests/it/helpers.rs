//! `spawn_app`: a daemon on a temp SQLite database with a manual clock, delivering over real
//! SMTP (TCP on 127.0.0.1) to an in-process server that records every message.

use chrono::{DateTime, Utc};
use contactplan::app::{Application, Edge};
use contactplan::clock::ManualClock;
use contactplan::config::{Config, Environment, Secrets};
use contactplan::dispatch::TickReport;
use mailin_embedded::{Handler, Response, Server};
use std::collections::VecDeque;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

/// One message as the SMTP server received it.
#[derive(Debug, Clone)]
pub struct Received {
    pub from: String,
    pub to: Vec<String>,
    pub data: Vec<u8>,
    /// When the server accepted it (wall clock of the test process).
    pub at: std::time::SystemTime,
}

impl Received {
    pub fn parsed(&self) -> mailparse::ParsedMail<'_> {
        mailparse::parse_mail(&self.data).expect("received message parses as RFC 5322")
    }

    pub fn header(&self, name: &str) -> String {
        use mailparse::MailHeaderMap;
        self.parsed().headers.get_first_value(name).unwrap_or_default()
    }

    /// Decoded bodies of the text/plain and text/html parts.
    pub fn parts(&self) -> (String, String) {
        let p = self.parsed();
        let mut text = String::new();
        let mut html = String::new();
        for sub in &p.subparts {
            match sub.ctype.mimetype.as_str() {
                "text/plain" => text = sub.get_body().unwrap(),
                "text/html" => html = sub.get_body().unwrap(),
                _ => {}
            }
        }
        (text, html)
    }
}

#[derive(Clone)]
struct Recorder {
    received: Arc<Mutex<Vec<Received>>>,
    /// Replies to give to the next RCPT commands, in order; empty means 250. (Scripted at
    /// RCPT because mailin stays in DATA after an error reply at end-of-data; RCPT is also
    /// where real servers greylist (451) and refuse unknown mailboxes (550).)
    script: Arc<Mutex<VecDeque<Response>>>,
    /// Recipients always refused at RCPT with 550.
    refused: Arc<Mutex<Vec<String>>>,
    latency: Arc<Mutex<std::time::Duration>>,
    current: Received,
}

impl Handler for Recorder {
    fn rcpt(&mut self, to: &str) -> Response {
        if self.refused.lock().unwrap().iter().any(|r| r == to) {
            return Response::custom(550, "5.1.1 mailbox unavailable".to_string());
        }
        self.script.lock().unwrap().pop_front().unwrap_or(mailin_embedded::response::OK)
    }
    fn data_start(&mut self, _domain: &str, from: &str, _is8bit: bool, to: &[String]) -> Response {
        self.current =
            Received { from: from.to_string(), to: to.to_vec(), data: Vec::new(), at: std::time::SystemTime::now() };
        mailin_embedded::response::OK
    }
    fn data(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.current.data.extend_from_slice(buf);
        Ok(())
    }
    fn data_end(&mut self) -> Response {
        let latency = *self.latency.lock().unwrap();
        if !latency.is_zero() {
            std::thread::sleep(latency);
        }
        self.current.at = std::time::SystemTime::now();
        self.received.lock().unwrap().push(self.current.clone());
        mailin_embedded::response::OK
    }
}

/// A real SMTP server on 127.0.0.1 (mailin-embedded, its own thread).
pub struct TestSmtp {
    pub addr: SocketAddr,
    pub received: Arc<Mutex<Vec<Received>>>,
    pub script: Arc<Mutex<VecDeque<Response>>>,
    pub refused: Arc<Mutex<Vec<String>>>,
    /// How long the server takes to accept a message's content (after its last byte).
    pub latency: Arc<Mutex<std::time::Duration>>,
}

impl TestSmtp {
    pub fn start() -> TestSmtp {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(VecDeque::new()));
        let refused = Arc::new(Mutex::new(Vec::new()));
        let latency = Arc::new(Mutex::new(std::time::Duration::ZERO));
        let handler = Recorder {
            received: received.clone(),
            script: script.clone(),
            refused: refused.clone(),
            latency: latency.clone(),
            current: Received { from: String::new(), to: vec![], data: vec![], at: std::time::UNIX_EPOCH },
        };
        let mut server = Server::new(handler);
        server.with_name("smtp.test").with_num_threads(4).with_tcp_listener(listener);
        std::thread::spawn(move || {
            let _ = server.serve();
        });
        TestSmtp { addr, received, script, refused, latency }
    }

    pub fn messages(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// Refuses this recipient at RCPT with 550.
    pub fn refuse(&self, address: &str) {
        self.refused.lock().unwrap().push(address.to_string());
    }

    /// Takes `latency` to accept each message from now on (a slow relay).
    pub fn slow_down(&self, latency: std::time::Duration) {
        *self.latency.lock().unwrap() = latency;
    }

    /// Answers the next RCPT with this reply instead of 250.
    pub fn reply_next(&self, code: u16, text: &str) {
        self.script.lock().unwrap().push_back(Response::custom(code, text.to_string()));
    }
}

/// Delivery for the generated config.
pub enum Delivery {
    Smtp,
    Maildir,
    /// Lines for the `[delivery]` table, as written.
    Custom(String),
}

pub struct TestApp {
    pub app: Application,
    pub clock: ManualClock,
    pub smtp: TestSmtp,
    pub dir: tempfile::TempDir,
    pub config: Config,
    /// A PostgreSQL schema the daemon uses (dropped when the test ends); `None`: SQLite.
    pub _db: Option<crate::store::TestDb>,
}

/// Which engine a test daemon's outbox runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// `sqlite://outbox.db` in the test's directory.
    Sqlite,
    /// A fresh schema on the test PostgreSQL server.
    Postgres,
}

pub fn templates_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("templates")
}

/// Writes a config + plans into a temp dir and builds the daemon at `now` (SQLite outbox).
pub async fn spawn_app(
    plans: &[(&str, &str)],
    playbooks: &[(&str, &str)],
    now: DateTime<Utc>,
    delivery: Delivery,
) -> TestApp {
    spawn_app_on(Engine::Sqlite, plans, playbooks, now, delivery).await
}

/// [`spawn_app`] with the outbox on `engine`.
pub async fn spawn_app_on(
    engine: Engine,
    plans: &[(&str, &str)],
    playbooks: &[(&str, &str)],
    now: DateTime<Utc>,
    delivery: Delivery,
) -> TestApp {
    spawn_app_with(engine, plans, playbooks, ManualClock::new(now), delivery, Environment::default()).await
}

/// [`spawn_app_on`] on a given clock, with secrets resolved from `env` (e.g. the OAuth client
/// secret).
pub async fn spawn_app_with(
    engine: Engine,
    plans: &[(&str, &str)],
    playbooks: &[(&str, &str)],
    clock: ManualClock,
    delivery: Delivery,
    env: Environment,
) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("plans")).unwrap();
    std::fs::create_dir_all(dir.path().join("playbooks")).unwrap();
    for (name, text) in plans {
        std::fs::write(dir.path().join("plans").join(format!("{name}.toml")), text).unwrap();
    }
    for (name, text) in playbooks {
        std::fs::write(dir.path().join("playbooks").join(format!("{name}.toml")), text).unwrap();
    }
    let smtp = TestSmtp::start();
    let delivery = match delivery {
        Delivery::Smtp => format!(
            "kind = \"smtp\"\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\ntimeout_secs = 10\n",
            smtp.addr.port()
        ),
        Delivery::Maildir => "kind = \"maildir\"\npath = \"maildir\"\n".to_string(),
        Delivery::Custom(lines) => lines,
    };
    let db = match engine {
        Engine::Sqlite => None,
        Engine::Postgres => Some(crate::store::TestDb::postgres().await),
    };
    let database_url = db.as_ref().map_or("sqlite://outbox.db", |d| d.url());
    let config_text = format!(
        "database_url = \"{database_url}\"\ntemplates = \"{}\"\ntimezone = \"Europe/Berlin\"\n[sender]\nemail = \"team@example.com\"\nname = \"Beispiel GmbH\"\n[ops]\nemail = \"ops@example.com\"\n[delivery]\n{delivery}",
        templates_dir().display()
    );
    let config_path = dir.path().join("contactplan.toml");
    std::fs::write(&config_path, config_text).unwrap();
    let config = Config::load(&config_path, &Environment::default()).unwrap();
    let edge = Edge { secrets: Secrets::resolve(&config, &env).unwrap(), ..Edge::default() };
    let app = Application::build(config.clone(), Arc::new(clock.clone()), edge).await.unwrap();
    TestApp { app, clock, smtp, dir, config, _db: db }
}

impl TestApp {
    /// One daemon pass, exactly as the loop runs it.
    pub async fn tick(&self) -> TickReport {
        self.app.scheduler().tick(&CancellationToken::new()).await.unwrap()
    }

    pub async fn tick_at(&self, now: &str) -> TickReport {
        self.clock.set(utc(now));
        self.tick().await
    }

    /// Drops the daemon and builds a new one on the same database and files.
    pub async fn restart(&mut self) {
        let app =
            Application::build(self.config.clone(), Arc::new(self.clock.clone()), edge(&self.config)).await.unwrap();
        self.app = app;
    }

    pub async fn states(&self) -> Vec<(contactplan::store::RowState, i64)> {
        self.app.store().counts().await.unwrap()
    }
}

/// What a test daemon gets from its surroundings: the secrets its config names (a password
/// file), nothing from the test process's environment, no systemd.
pub fn edge(config: &Config) -> Edge {
    Edge { secrets: Secrets::resolve(config, &Environment::default()).unwrap(), ..Edge::default() }
}

pub fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// The contact most tests use: birthday 2027-03-14 is a New York spring-forward day.
pub const JANE: &str = r#"[[contact]]
id = "jane"
name = "Jane Smith"
gender = "female"
email = "jane.smith@harbor.example"
birthday = 1982-03-14
tone = "formal"
primary = true"#;

/// A one-contact customer plan with a birthday rule.
pub fn birthday_plan(id: &str, tz: &str, language: &str, contact: &str) -> String {
    format!(
        r#"[customer]
id = "{id}"
name = "Customer {id}"
since = 2015-06-01
owner = "owner@example.com"
timezone = "{tz}"
language = "{language}"
phase = "maturity"

{contact}

[[occasion]]
name = "birthday"
on = "birthday"
template = "birthday"
at = "09:00"
"#
    )
}

/// Deterministic xorshift64, so a failure reproduces.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn below(&mut self, n: u32) -> u32 {
        (self.next() % u64::from(n)) as u32
    }
    pub fn between(&mut self, lo: u32, hi: u32) -> u32 {
        lo + self.below(hi - lo + 1)
    }
}

/// Rebuilds `t`'s daemon with the HTTP listener on a free loopback port and `token` as its API
/// token (the services are started by the caller: `t.app.start(...)`).
pub async fn with_api_token(t: &mut TestApp, token: &str) {
    let path = t.dir.path().join("contactplan.toml");
    let text = std::fs::read_to_string(&path).unwrap().replacen('\n', "\nhttp_bind = \"127.0.0.1:0\"\n", 1);
    std::fs::write(&path, text).unwrap();
    let config = Config::load(&path, &Environment::default()).unwrap();
    let mut e = edge(&config);
    e.secrets =
        Secrets::resolve(&config, &Environment::default().with(contactplan::config::ENV_API_TOKEN, token)).unwrap();
    t.app = Application::build(config.clone(), Arc::new(t.clock.clone()), e).await.unwrap();
    t.config = config;
}
