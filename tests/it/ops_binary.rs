//! Operations with the real binary: the systemd notification protocol on a socket the test
//! binds (READY, WATCHDOG from the loop, RELOADING/READY on SIGHUP, STOPPING), `contactplan
//! status` against the running daemon and from the database, what the logs may contain, and
//! the man page and completions.

use crate::crash::{daytime_zone, wait_until};
use crate::helpers::TestSmtp;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_contactplan"))
}

/// A free loopback port (bound, then released for the daemon).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Config + one plan whose occasion is due now (a `date` rule at local midnight today).
fn setup(dir: &Path, smtp_port: u16, http_port: u16) -> std::path::PathBuf {
    let (zone, today) = daytime_zone();
    std::fs::create_dir_all(dir.join("plans")).unwrap();
    let plan = format!(
        "[customer]\nid = \"c1\"\nname = \"C1\"\nsince = 2015-06-01\nowner = \"sales@example.com\"\ntimezone = \"{zone}\"\nlanguage = \"en\"\nphase = \"growth\"\n\n[[contact]]\nid = \"p\"\nname = \"Pat Doe\"\nemail = \"pat.private@customer-one.example\"\ntone = \"formal\"\nprimary = true\n\n[[occasion]]\nname = \"thanks\"\non = \"date\"\ndate = {today}\nat = \"00:00\"\ntemplate = \"anniversary\"\n"
    );
    std::fs::write(dir.join("plans/c1.toml"), plan).unwrap();
    let config = format!(
        "database_url = \"sqlite://outbox.db\"\nhttp_bind = \"127.0.0.1:{http_port}\"\ntemplates = \"{}\"\n[sender]\nemail = \"team@example.com\"\nname = \"Team\"\n[delivery]\nkind = \"smtp\"\nhost = \"127.0.0.1\"\nport = {smtp_port}\ntls = \"none\"\ntimeout_secs = 10\n",
        crate::helpers::templates_dir().display()
    );
    let path = dir.join("contactplan.toml");
    std::fs::write(&path, config).unwrap();
    path
}

/// Receives notifications until `want` arrived (as one whole line) or the limit passes.
fn expect(sock: &UnixDatagram, want: &str, limit: Duration, seen: &mut Vec<String>) -> bool {
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    while start.elapsed() < limit {
        if let Ok(n) = sock.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            let hit = msg.lines().any(|l| l == want);
            seen.push(msg);
            if hit {
                return true;
            }
        }
    }
    false
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill").args([sig, &child.id().to_string()]).status().unwrap().success();
    assert!(ok, "kill {sig}");
}

#[test]
fn the_real_daemon_talks_systemd_notify_and_status_reports_it() {
    let smtp = TestSmtp::start();
    let dir = tempfile::tempdir().unwrap();
    let http_port = free_port();
    let config = setup(dir.path(), smtp.addr.port(), http_port);
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let log = std::fs::File::create(dir.path().join("daemon.log")).unwrap();
    let mut child = bin()
        .args(["run", "--config"])
        .arg(&config)
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "2000000")
        .env("RUST_LOG", "info")
        .env("CONTACTPLAN_API_TOKEN", "tok-SECRET-4711")
        .env_remove("CONTACTPLAN_DATABASE_URL")
        .env_remove("JOURNAL_STREAM")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut seen = Vec::new();
    assert!(expect(&sock, "READY=1", Duration::from_secs(30), &mut seen), "READY=1: {seen:?}");
    assert!(seen.last().unwrap().contains("STATUS=serving 1 customers"), "{seen:?}");

    // WATCHDOG_USEC=2 s: the loop sleeps at most 1 s and pings on every pass.
    for _ in 0..3 {
        assert!(expect(&sock, "WATCHDOG=1", Duration::from_secs(3), &mut seen), "WATCHDOG=1: {seen:?}");
    }
    assert!(wait_until(Duration::from_secs(20), || !smtp.messages().is_empty()), "the due occasion is sent");
    assert!(
        seen.iter().any(|m| m.starts_with("STATUS=serving 1 customers; last tick ")),
        "a STATUS= line after each tick: {seen:?}"
    );

    signal(&child, "-HUP");
    assert!(expect(&sock, "RELOADING=1", Duration::from_secs(10), &mut seen), "RELOADING=1: {seen:?}");
    assert!(expect(&sock, "READY=1", Duration::from_secs(10), &mut seen), "READY=1 after reload: {seen:?}");

    // `status` asks the daemon (with the API token, which /status requires).
    let out = bin()
        .args(["status", "--config"])
        .arg(&config)
        .env("CONTACTPLAN_API_TOKEN", "tok-SECRET-4711")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains(&format!("source:          the daemon at 127.0.0.1:{http_port}")), "{text}");
    assert!(text.contains("ready:           yes"), "{text}");
    assert!(text.contains("accepted 1"), "{text}");
    assert!(text.contains("plans:           1 customers, 0 problem(s)"), "{text}");
    assert!(text.contains("last SMTP error: none"), "{text}");
    // Without the token the daemon refuses, and `status` says why.
    let out = bin().args(["status", "--config"]).arg(&config).env_remove("CONTACTPLAN_API_TOKEN").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("answered 401"), "{}", String::from_utf8_lossy(&out.stdout));

    signal(&child, "-TERM");
    assert!(expect(&sock, "STOPPING=1", Duration::from_secs(10), &mut seen), "STOPPING=1: {seen:?}");
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");

    // Daemon gone: `status` reads the database and is not ready.
    let out = bin().args(["status", "--format", "json", "--config"]).arg(&config).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["source"], "database");
    assert_eq!(json["ready"], false);
    assert_eq!(json["outbox"][0], serde_json::json!(["accepted", 1]));

    // The log: the recipient's domain, never the address, the body or the token.
    let log = std::fs::read_to_string(dir.path().join("daemon.log")).unwrap();
    assert!(log.contains("customer-one.example"), "{log}");
    assert!(!log.contains("pat.private"), "address in the log: {log}");
    assert!(!log.contains("tok-SECRET-4711"), "secret in the log");
    assert!(!log.contains("excellent cooperation"), "message body in the log");
}

#[test]
fn man_page_and_completions_are_generated_from_the_cli() {
    let man = bin().arg("man").output().unwrap();
    assert!(man.status.success());
    let man = String::from_utf8(man.stdout).unwrap();
    assert!(man.starts_with(".ie \\n(.g .ds Aq") || man.contains(".TH contactplan"), "{man}");
    for sub in ["check", "agenda", "preview", "run", "status", "outbox", "completions"] {
        assert!(man.contains(sub), "man page lists `{sub}`");
    }
    for (shell, marker) in
        [("bash", "complete -F"), ("zsh", "#compdef contactplan"), ("fish", "complete -c contactplan")]
    {
        let out = bin().args(["completions", shell]).output().unwrap();
        assert!(out.status.success(), "{shell}");
        let script = String::from_utf8(out.stdout).unwrap();
        assert!(script.contains(marker), "{shell}: {script}");
        assert!(script.contains("status"), "{shell} completes the status command");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stuck_scheduler_loop_stops_feeding_the_watchdog() {
    let db = crate::store::TestDb::postgres().await;
    let proxy = crate::ops::Proxy::start("127.0.0.1:5432").await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("plans")).unwrap();
    let config = dir.path().join("contactplan.toml");
    std::fs::write(
        &config,
        format!(
            "database_url = \"{}\"\nhttp_bind = \"off\"\ntemplates = \"{}\"\n[sender]\nemail = \"team@example.com\"\nname = \"Team\"\n[delivery]\nkind = \"maildir\"\npath = \"maildir\"\n",
            proxy.url(&db),
            crate::helpers::templates_dir().display()
        ),
    )
    .unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let mut child = bin()
        .args(["run", "--config"])
        .arg(&config)
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "1000000")
        .env("RUST_LOG", "warn")
        .env_remove("CONTACTPLAN_DATABASE_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let sock = std::sync::Arc::new(sock);
    let recv = |want: &'static str, limit: Duration| {
        let sock = sock.clone();
        tokio::task::spawn_blocking(move || {
            let mut seen = Vec::new();
            let hit = expect(&sock, want, limit, &mut seen);
            (hit, seen)
        })
    };
    let (ready, seen) = recv("READY=1", Duration::from_secs(30)).await.unwrap();
    assert!(ready, "{seen:?}");
    for _ in 0..2 {
        let (ping, seen) = recv("WATCHDOG=1", Duration::from_secs(3)).await.unwrap();
        assert!(ping, "pinged while the loop runs: {seen:?}");
    }

    // Every database call of the loop now hangs: it stops making progress, and so stops pinging
    // (systemd would kill and restart it after WatchdogSec). One ping may already be on its way.
    proxy.stall(true);
    let _ = recv("never", Duration::from_millis(1500)).await.unwrap();
    let (_, during) = recv("never", Duration::from_secs(4)).await.unwrap();
    assert!(!during.iter().any(|m| m.lines().any(|l| l == "WATCHDOG=1")), "no pings from a stuck loop: {during:?}");

    proxy.stall(false);
    let (ping, seen) = recv("WATCHDOG=1", Duration::from_secs(10)).await.unwrap();
    assert!(ping, "pings resume once the loop moves again: {seen:?}");
    signal(&child, "-TERM");
    let _ = child.wait();
}

#[test]
fn status_on_a_missing_outbox_says_so_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // No daemon ever ran with this config: the HTTP listener is off and the outbox path is a typo.
    let config = dir.path().join("contactplan.toml");
    std::fs::write(
        &config,
        format!(
            "database_url = \"sqlite://typo/outbox.db\"\nhttp_bind = \"off\"\ntemplates = \"{}\"\n[sender]\nemail = \"team@example.com\"\nname = \"Team\"\n[delivery]\nkind = \"maildir\"\npath = \"mail\"\n",
            crate::helpers::templates_dir().display()
        ),
    )
    .unwrap();
    let out = bin().args(["status", "--config"]).arg(&config).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("no outbox at") && stderr.contains("typo/outbox.db"), "{stderr}");
    assert!(!dir.path().join("typo").exists(), "status created a database directory");
}

#[test]
fn status_and_outbox_need_no_oauth_client_secret() {
    // A daemon's config with XOAUTH2: the client secret is a systemd credential the operator's
    // shell does not have. Reading the outbox must work without it; `run` must refuse.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("contactplan.toml");
    std::fs::write(
        &config,
        format!(
            "database_url = \"sqlite://outbox.db\"\nhttp_bind = \"off\"\ntemplates = \"{}\"\n[sender]\nemail = \"team@example.com\"\nname = \"Team\"\n\
             [delivery]\nkind = \"smtp\"\nhost = \"127.0.0.1\"\nport = 2525\ntls = \"starttls\"\nusername = \"team@example.com\"\nauth = \"xoauth2\"\n\
             [delivery.oauth]\nprovider = \"microsoft\"\ntenant = \"contoso\"\nclient_id = \"00000000-0000-0000-0000-000000000001\"\n",
            crate::helpers::templates_dir().display()
        ),
    )
    .unwrap();
    let no_secret = |args: &[&str]| {
        bin()
            .args(args)
            .arg("--config")
            .arg(&config)
            .env_remove("CONTACTPLAN_OAUTH_CLIENT_SECRET")
            .env_remove("CREDENTIALS_DIRECTORY")
            .output()
            .unwrap()
    };
    // The outbox exists once a daemon created it; here `check` does not, so create it the way
    // `run` would (the store's migrations) through the library.
    let url = format!("sqlite://{}", dir.path().join("outbox.db").display());
    tokio::runtime::Runtime::new().unwrap().block_on(async { contactplan::store::Store::connect(&url).await.unwrap() });
    for args in [&["status"][..], &["outbox", "--limit", "3"]] {
        let out = no_secret(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("client secret"), "{args:?}: {stderr}");
        assert!(out.status.code().is_some_and(|c| c < 2), "{args:?}: {:?} {stderr}", out.status);
    }
    let out = no_secret(&["run"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("needs the OAuth client secret"), "{stderr}");
}
