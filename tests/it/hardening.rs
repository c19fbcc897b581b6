//! Unattended means unbreakable: the real binary against the faults an unlucky operator or a
//! hostile local user can cause — a full disk, special files in `plans/`, a directory swapped
//! away during a reload, signals during start-up, an empty secret, slow HTTP clients — and
//! the recovery afterwards. Each test names the fault it pins.

use crate::crash::{daytime_zone, wait_until};
use contactplan::store::RowState;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A free loopback port (bound, then released for the daemon).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A workspace: `n` customers with one `date` occasion due now (local midnight today in a zone
/// where today has hours left), Maildir delivery into `maildir/`, an HTTP port.
struct Workspace {
    dir: tempfile::TempDir,
    http_port: u16,
}

impl Workspace {
    fn new(n: usize, database: &str) -> Workspace {
        let dir = tempfile::tempdir().unwrap();
        let (zone, today) = daytime_zone();
        std::fs::create_dir_all(dir.path().join("plans")).unwrap();
        for i in 0..n {
            let plan = format!(
                "[customer]\nid = \"c{i:04}\"\nname = \"C{i}\"\nsince = 2015-06-01\nowner = \"sales@example.com\"\ntimezone = \"{zone}\"\nlanguage = \"en\"\nphase = \"growth\"\n\n[[contact]]\nid = \"p\"\nname = \"Pat Doe\"\nemail = \"p{i}@example.net\"\ntone = \"formal\"\nprimary = true\n\n[[occasion]]\nname = \"thanks\"\non = \"date\"\ndate = {today}\nat = \"00:00\"\ntemplate = \"anniversary\"\n"
            );
            std::fs::write(dir.path().join(format!("plans/c{i:04}.toml")), plan).unwrap();
        }
        let templates = dir.path().join("templates");
        crate::ops::copy_dir(&crate::helpers::templates_dir(), &templates);
        let http_port = free_port();
        let config = format!(
            "database_url = \"{database}\"\nhttp_bind = \"127.0.0.1:{http_port}\"\ntemplates = \"templates\"\n[sender]\nemail = \"team@example.com\"\nname = \"Team\"\n[delivery]\nkind = \"maildir\"\npath = \"maildir\"\n"
        );
        std::fs::write(dir.path().join("contactplan.toml"), config).unwrap();
        Workspace { dir, http_port }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn config(&self) -> PathBuf {
        self.path("contactplan.toml")
    }

    /// Messages delivered into the Maildir.
    fn delivered(&self) -> usize {
        std::fs::read_dir(self.path("maildir/new")).map_or(0, |d| d.count())
    }

    fn readyz(&self) -> (u16, String) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let addr: std::net::SocketAddr = format!("127.0.0.1:{}", self.http_port).parse().unwrap();
        rt.block_on(async {
            match tokio::time::timeout(Duration::from_secs(5), contactplan::http::get(addr, "/readyz", None)).await {
                Ok(Ok(r)) => r,
                _ => (0, String::new()),
            }
        })
    }
}

/// The real daemon with a notify socket of the test's own (every datagram kept, with when it
/// came) and its log in a file.
struct Daemon {
    child: Child,
    notes: Arc<Mutex<Vec<(Instant, String)>>>,
    log: PathBuf,
}

impl Daemon {
    /// `wrap`: a command line to run the daemon through (e.g. `unshare …`), ending in the
    /// binary's path as `{bin}`; empty: the binary itself.
    fn start(ws: &Workspace, wrap: &[&str], env: &[(&str, &str)]) -> Daemon {
        let sock_path = ws.path("notify.sock");
        let _ = std::fs::remove_file(&sock_path);
        let sock = UnixDatagram::bind(&sock_path).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        let notes = Arc::new(Mutex::new(Vec::new()));
        let sink = notes.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                match sock.recv(&mut buf) {
                    Ok(n) => {
                        sink.lock().unwrap().push((Instant::now(), String::from_utf8_lossy(&buf[..n]).into_owned()))
                    }
                    Err(e)
                        if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut =>
                    {
                        if Arc::strong_count(&sink) == 1 {
                            return;
                        }
                    }
                    Err(_) => return,
                }
            }
        });
        let bin = env!("CARGO_BIN_EXE_contactplan");
        let mut cmd = match wrap.split_first() {
            None => Command::new(bin),
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest.iter().map(|a| a.replace("{bin}", bin)));
                c
            }
        };
        let log = ws.path("daemon.log");
        cmd.args(["run", "--config"])
            .arg(ws.config())
            .current_dir(ws.dir.path())
            .env("RUST_LOG", "warn")
            .env("NOTIFY_SOCKET", &sock_path)
            .env("WATCHDOG_USEC", "2000000")
            .env_remove("CONTACTPLAN_DATABASE_URL")
            .env_remove("CONTACTPLAN_API_TOKEN")
            .env_remove("CREDENTIALS_DIRECTORY")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        for (k, v) in env {
            cmd.env(k, v);
        }
        Daemon { child: cmd.spawn().unwrap(), notes, log }
    }

    fn notes_since(&self, since: Instant) -> Vec<String> {
        self.notes.lock().unwrap().iter().filter(|(t, _)| *t >= since).map(|(_, m)| m.clone()).collect()
    }

    #[allow(dead_code)]
    fn said(&self, line: &str) -> bool {
        self.notes.lock().unwrap().iter().any(|(_, m)| m.lines().any(|l| l == line))
    }

    fn watchdogs_since(&self, since: Instant) -> usize {
        self.notes_since(since).iter().filter(|m| m.lines().any(|l| l == "WATCHDOG=1")).count()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill").args([sig, &self.child.id().to_string()]).status().unwrap().success();
        assert!(ok, "kill {sig}");
    }

    /// SIGTERM and the exit status (None: still running after 30 s).
    fn stop(&mut self) -> Option<std::process::ExitStatus> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return Some(status);
        }
        self.signal("-TERM");
        let mut status = None;
        wait_until(Duration::from_secs(30), || {
            status = self.child.try_wait().ok().flatten();
            status.is_some()
        });
        status
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Fault 1: a full disk. SQLite on a 16 MiB tmpfs (a private mount namespace: `unshare
/// --mount`, so the machine sees nothing of it) that a filler leaves too little room for the
/// first materialisation: `database or disk is full`. While that lasts, ticks fail, `/readyz`
/// says why, and the watchdog gets no ping (so systemd would restart a wedged daemon). Once
/// the filler is removed (from inside the daemon's namespace, with `nsenter`), the next tick
/// succeeds and every email goes out. (Before the fix the connection kept a transaction depth
/// of 1 after the failed commit, and every later tick failed with "attempted to call begin_with
/// at non-zero transaction depth", forever.)
#[test]
fn a_full_disk_fails_ticks_visibly_and_the_daemon_recovers_once_space_is_freed() {
    const N: usize = 300;
    let ws = Workspace::new(N, "sqlite://db/outbox.db");
    let db = ws.path("db");
    std::fs::create_dir_all(&db).unwrap();
    // A migrated outbox made beforehand, copied onto the tmpfs; then a filler leaves 48 KiB:
    // the daemon opens it, but the first materialisation (300 rows) does not fit, however
    // many migrations there are.
    let migrated = ws.path("migrated.db");
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let url = format!("sqlite://{}", migrated.display());
        let store = contactplan::store::Store::connect(&url).await.unwrap();
        drop(store);
    });
    let script = "mount -t tmpfs -o size=16m tmpfs \"$1\" && cp \"$2\" \"$1/outbox.db\" && \
                  avail=$(df --output=avail -B1 \"$1\" | tail -1) && \
                  head -c $((avail - 49152)) /dev/zero > \"$1/filler\" && shift 2 && exec \"$@\"";
    let db_arg = db.display().to_string();
    let migrated_arg = migrated.display().to_string();
    let mut d = Daemon::start(
        &ws,
        &["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", &db_arg, &migrated_arg, "{bin}"],
        &[],
    );
    let full = wait_until(Duration::from_secs(30), || d.log().contains("disk is full"));
    assert!(full, "the disk filled up: {}", d.log());
    assert_eq!(ws.delivered(), 0, "nothing could be recorded, so nothing was sent");
    let failing = Instant::now();
    std::thread::sleep(Duration::from_secs(4));
    let (code, body) = ws.readyz();
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("disk is full"), "/readyz says why: {body}");
    assert_eq!(d.watchdogs_since(failing), 0, "no watchdog ping while ticks fail: {:?}", d.notes_since(failing));
    let attempts = d.log().matches("tick failed").count();
    assert!((2..=6).contains(&attempts), "failing ticks back off (1 s, 2 s, 4 s …), not five a second: {attempts}");

    let freed = Command::new("nsenter")
        .arg(format!("--mount=/proc/{}/ns/mnt", d.child.id()))
        .args(["rm", "-f"])
        .arg(db.join("filler"))
        .status()
        .unwrap();
    assert!(freed.success(), "removed the filler inside the daemon's namespace");
    let recovered = Instant::now();
    let all = wait_until(Duration::from_secs(60), || ws.delivered() == N);
    assert!(all, "every email sent after the space came back: {} of {N}\n{}", ws.delivered(), d.log());
    assert!(!d.log().contains("non-zero transaction depth"), "{}", d.log());
    assert!(wait_until(Duration::from_secs(10), || ws.readyz().0 == 200), "ready again: {:?}", ws.readyz());
    assert!(wait_until(Duration::from_secs(5), || d.watchdogs_since(recovered) > 0), "the watchdog is fed again");
    assert!(d.stop().is_some_and(|s| s.success()), "SIGTERM stops it: {}", d.log());
}

/// Fault 8 (and the poison row of the tone issue): a worker that fails on one row — here a
/// panic while building its message, injected with a failpoint — records that row `failed`
/// with the reason within the one attempt, tells ops, and goes on: the next row, which the
/// same session had already moved to `sending` with it (one session, at_least_once), is sent
/// in the same tick, though it belongs to another customer. Nothing is left `sending`.
#[tokio::test(flavor = "multi_thread")]
async fn a_row_that_fails_never_strands_the_next_one_and_ends_failed_with_a_reason() {
    use crate::helpers::{Delivery, JANE, birthday_plan, spawn_app, utc};
    let poison = birthday_plan("poison-a", "America/New_York", "en", JANE);
    let victim = birthday_plan("victim-b", "America/New_York", "en", JANE);
    let app =
        spawn_app(&[("poison-a", &poison), ("victim-b", &victim)], &[], utc("2027-03-14T12:00:00Z"), Delivery::Smtp)
            .await;
    app.tick().await;
    fail::cfg("dispatch::prepare", "return(poison-a)").unwrap();
    let r = app.tick_at("2027-03-14T13:00:00Z").await;
    fail::remove("dispatch::prepare");
    assert_eq!((r.failed, r.accepted), (1, 1), "{r:?}");
    let sent = app.smtp.messages();
    let to_customer: Vec<_> = sent.iter().filter(|m| m.to != ["ops@example.com"]).collect();
    assert_eq!(to_customer.len(), 1, "the other customer's greeting went out");
    let failed = app.app.store().rows(Some(RowState::Failed), 10).await.unwrap();
    assert_eq!(failed.len(), 1);
    assert!(failed[0].key.customer == "poison-a", "{failed:?}");
    let reason = failed[0].reason.as_deref().unwrap_or_default();
    assert!(reason.contains("internal error while building the message") && reason.contains("poison-a"), "{reason}");
    assert_eq!(failed[0].attempts, 1, "within one attempt");
    let ops: Vec<_> = sent.iter().filter(|m| m.to == ["ops@example.com"]).collect();
    assert_eq!(ops.len(), 1, "ops were told");
    assert!(String::from_utf8_lossy(&ops[0].data).contains(&failed[0].key.to_string()), "the report names the row");
    let states = app.states().await;
    assert!(states.iter().all(|(s, _)| !["sending", "claimed", "pending", "retry"].contains(&s.code())), "{states:?}");
}

/// Fault 5: a directory that is briefly unreadable. A deploy that swaps `plans/` (or
/// `templates/`, or `playbooks/`) by rename, and a SIGHUP meanwhile: the reload fails for that
/// source and keeps its last good state in force — every customer is still served, and the
/// occasions due meanwhile are sent (not `suppressed`, not `failed`) — and it is reported. Once
/// the directory is back, the next reload reads it again.
#[tokio::test(flavor = "multi_thread")]
async fn a_directory_swapped_away_during_a_reload_keeps_its_last_good_state() {
    use crate::ops::{OpsApp, plan};
    let playbook = "[[occasion]]\nname = \"checkin\"\non = \"every\"\ncron = \"0 10 * * *\"\nsend = \"task\"\ntemplate = \"checkin\"\n";
    let t = OpsApp::start(
        &[("a", &plan("a", "pat@a.example", "playbook = \"standard\"")), ("b", &plan("b", "pat@b.example", ""))],
        &[("standard", playbook)],
        None,
    )
    .await;
    assert_eq!(t.app.current().plans.len(), 2);
    t.clock.set(crate::helpers::utc("2027-03-10T12:00:00Z"));
    t.app.scheduler().tick(&tokio_util::sync::CancellationToken::new()).await.unwrap();

    for dir in ["plans", "templates", "playbooks"] {
        std::fs::rename(t.path(dir), t.path(&format!("{dir}.old"))).unwrap();
        t.app.reload("SIGHUP").await;
        let snap = t.app.current();
        assert_eq!(snap.plans.len(), 2, "{dir}: both customers still served");
        assert!(snap.plans.get("a").is_some_and(|a| a.rule("checkin").is_some()), "{dir}: the playbook's rule too");
        let health = t.app.health().plans();
        let p =
            health.problems.iter().find(|p| p.location.ends_with(dir)).unwrap_or_else(|| panic!("{dir}: {health:?}"));
        assert!(p.last_good_in_force && p.message.contains("last good"), "{dir}: {p:?}");
        assert_eq!(health.customers, 2, "{dir}");
        std::fs::rename(t.path(&format!("{dir}.old")), t.path(dir)).unwrap();
    }
    // While plans/ was away the templates were kept too, and the reverse: one more swap of all
    // three at once, then the occasions due meanwhile.
    for dir in ["plans", "templates", "playbooks"] {
        std::fs::rename(t.path(dir), t.path(&format!("{dir}.old"))).unwrap();
    }
    t.app.reload("SIGHUP").await;
    // 09:00 UTC: the birthdays (09:00 Berlin) and a's check-in task (10:00 Berlin) are due.
    t.clock.set(crate::helpers::utc("2027-03-11T09:00:00Z"));
    let r = t.app.scheduler().tick(&tokio_util::sync::CancellationToken::new()).await.unwrap();
    assert_eq!((r.accepted, r.suppressed, r.failed), (3, 0, 0), "two birthdays and a's check-in task: {r:?}");
    for dir in ["plans", "templates", "playbooks"] {
        std::fs::rename(t.path(&format!("{dir}.old")), t.path(dir)).unwrap();
    }
    t.app.reload("SIGHUP").await;
    assert!(t.app.health().plans().problems.is_empty(), "{:?}", t.app.health().plans());
}

/// Whether the process has a handler for signal `signo` (`SigCgt` in /proc: bit `signo - 1`).
fn catches(pid: u32, signo: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status")).ok().is_some_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("SigCgt:"))
            .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
            .is_some_and(|mask| mask & (1 << (signo - 1)) != 0)
    })
}

/// Fault 6: a SIGHUP during start-up (migrations, loading every plan) no longer kills the
/// daemon (exit 129, which systemd's `Restart=on-failure` counts as clean): the handlers are
/// installed first, and the reload waits for the start-up.
#[test]
fn a_sighup_during_start_up_waits_for_it_and_then_reloads() {
    let ws = Workspace::new(5000, "sqlite://outbox.db");
    let spawned = Instant::now();
    let mut d = Daemon::start(&ws, &[], &[]);
    let pid = d.child.id();
    // As soon as the daemon takes SIGTERM (15): the first thing it does, before any slow
    // start-up work. (Before the fix, SIGHUP's handler came only after loading the plans.)
    while !catches(pid, 15) && spawned.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(catches(pid, 15), "the SIGTERM handler is installed at once");
    d.signal("-HUP");
    let hup_at = Instant::now();
    assert!(!d.said("READY=1"), "the SIGHUP came during the start-up (loading 5,000 plans)");
    assert!(wait_until(Duration::from_secs(60), || d.said("READY=1")), "started: {}", d.log());
    eprintln!("SIGHUP {:?} after the spawn; READY after {:?}", hup_at - spawned, spawned.elapsed());
    assert!(d.child.try_wait().unwrap().is_none(), "still running after the SIGHUP: {}", d.log());
    let reloaded = wait_until(Duration::from_secs(60), || {
        d.notes_since(hup_at).iter().any(|m| m.lines().any(|l| l == "RELOADING=1"))
    });
    assert!(reloaded, "the SIGHUP was served once the start-up was done: {:?}", d.notes_since(hup_at));
    assert!(d.stop().is_some_and(|s| s.success()), "SIGTERM ends it cleanly: {}", d.log());
}

/// Fault 7: an empty `api-token` credential (a file holding only a newline, what
/// `install -m 0600 /dev/stdin …` makes from an empty stdin) is a start-up error naming the
/// credential — not an open `/metrics` that looks protected.
#[test]
fn an_empty_api_token_credential_stops_the_start_naming_it() {
    let ws = Workspace::new(1, "sqlite://outbox.db");
    let creds = ws.path("credentials");
    std::fs::create_dir_all(&creds).unwrap();
    std::fs::write(creds.join("api-token"), "\n").unwrap();
    let mut d = Daemon::start(&ws, &[], &[("CREDENTIALS_DIRECTORY", creds.to_str().unwrap())]);
    let mut status = None;
    assert!(wait_until(Duration::from_secs(20), || {
        status = d.child.try_wait().unwrap();
        status.is_some()
    }));
    assert_eq!(status.and_then(|s| s.code()), Some(2), "{}", d.log());
    let log = d.log();
    assert!(log.contains("credential `api-token`") && log.contains("is empty"), "{log}");
    assert!(!d.said("READY=1"));
    assert!(std::net::TcpStream::connect(("127.0.0.1", ws.http_port)).is_err(), "nothing listens");
}

/// Fault 4: a FIFO and a symlink to `/dev/zero` in `plans/`. A reload reads neither (they are
/// reported as not regular files), finishes (`RELOADING=1` … `READY=1`), keeps the valid plans
/// and later edits apply; SIGTERM still ends the daemon. (Before, the reload blocked forever on
/// the FIFO holding the reload lock, and `/dev/zero` grew memory until the OOM killer.)
#[test]
fn special_files_in_plans_are_refused_and_never_block_a_reload_or_shutdown() {
    let ws = Workspace::new(2, "sqlite://outbox.db");
    let mut d = Daemon::start(&ws, &[], &[]);
    assert!(wait_until(Duration::from_secs(30), || d.said("READY=1")), "{}", d.log());
    let fifo = ws.path("plans/zz-fifo.toml");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    std::os::unix::fs::symlink("/dev/zero", ws.path("plans/zz-zero.toml")).unwrap();
    let hup_at = Instant::now();
    d.signal("-HUP");
    let done = wait_until(Duration::from_secs(20), || {
        let notes = d.notes_since(hup_at);
        let reloading = notes.iter().position(|m| m.lines().any(|l| l == "RELOADING=1"));
        reloading.is_some_and(|i| notes[i..].iter().any(|m| m.lines().any(|l| l == "READY=1")))
    });
    assert!(done, "the reload finished: {:?}\n{}", d.notes_since(hup_at), d.log());
    let log = d.log();
    assert!(log.contains("not a regular file but a FIFO") && log.contains("character device"), "{log}");
    // A later edit still applies: the reload lock was released.
    let text = std::fs::read_to_string(ws.path("plans/c0000.toml")).unwrap();
    std::fs::write(ws.path("plans/c0000.toml"), text.replace("Pat Doe", "Pat Roe")).unwrap();
    let again = Instant::now();
    d.signal("-HUP");
    assert!(
        wait_until(Duration::from_secs(20), || d.notes_since(again).iter().any(|m| m.lines().any(|l| l == "READY=1"))),
        "a second reload finished too"
    );
    // Memory stayed bounded: /dev/zero was never read (peak resident set well under 200 MB).
    let peak_kb: u64 = std::fs::read_to_string(format!("/proc/{}/status", d.child.id()))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    assert!(peak_kb < 200 * 1024, "peak RSS {peak_kb} kB");
    let started = Instant::now();
    assert!(d.stop().is_some_and(|s| s.success()), "{}", d.log());
    assert!(started.elapsed() < Duration::from_secs(15), "SIGTERM was served at once");
}

/// Open file descriptors of a process.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// Fault 2: idle and trickling HTTP clients. 200 connections — half idle, half sending their
/// request head one byte a second — against a cap of 16: the daemon's file descriptors stay
/// bounded, `/healthz` keeps answering (a new connection at the cap closes the oldest), a plan
/// added meanwhile is loaded and its email delivered, and the timeout (2 s here) closes every
/// idle and trickling connection.
#[test]
fn slow_and_idle_http_clients_are_bounded_and_cut_off_while_probes_and_delivery_go_on() {
    use std::io::{Read, Write};
    let ws = Workspace::new(1, "sqlite://outbox.db");
    let config = std::fs::read_to_string(ws.config()).unwrap();
    std::fs::write(ws.config(), format!("http_max_connections = 16\nhttp_timeout_secs = 2\n{config}")).unwrap();
    let mut d = Daemon::start(&ws, &[], &[]);
    assert!(wait_until(Duration::from_secs(30), || d.said("READY=1") && ws.delivered() == 1), "{}", d.log());
    let pid = d.child.id();
    let baseline = open_fds(pid);
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], ws.http_port));

    let mut idle = Vec::new();
    let mut trickling = Vec::new();
    for i in 0..200 {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        if i % 2 == 0 {
            idle.push(s);
        } else {
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").unwrap();
            trickling.push(s);
        }
    }
    // A plan added during the flood: the file watcher reloads, its occasion is delivered.
    let plan = std::fs::read_to_string(ws.path("plans/c0000.toml")).unwrap();
    std::fs::write(ws.path("plans/c0001.toml"), plan.replace("c0000", "c0001").replace("p0@", "p1@")).unwrap();
    let start = Instant::now();
    let mut max_fds = 0;
    let mut probes = Vec::new();
    while start.elapsed() < Duration::from_secs(6) {
        for s in &mut trickling {
            let _ = s.write_all(b"X");
        }
        max_fds = max_fds.max(open_fds(pid));
        let asked = Instant::now();
        let (code, _) = ws.readyz();
        probes.push((code, asked.elapsed()));
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(max_fds <= baseline + 16 + 8, "file descriptors stay bounded: {baseline} → at most {max_fds}");
    assert!(
        probes.iter().all(|(code, took)| *code == 200 && *took < Duration::from_secs(3)),
        "every probe answered while the cap was reached: {probes:?}"
    );
    assert!(wait_until(Duration::from_secs(20), || ws.delivered() == 2), "delivery went on: {}", d.log());
    // Every idle and trickling connection was closed by the server (read gives EOF or an error).
    for s in idle.iter_mut().chain(trickling.iter_mut()) {
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let mut buf = [0u8; 512];
        let closed = loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break true,
                Ok(_) => continue, // a 408/400 before the close is fine
            }
        };
        assert!(closed);
    }
    assert!(open_fds(pid) <= baseline + 4, "all released: {} vs {baseline}", open_fds(pid));
    assert!(d.stop().is_some_and(|s| s.success()), "{}", d.log());
}

/// CLI output to a closed pipe (`contactplan check | head`) ends quietly: no panic message,
/// the process ends as Unix filters do (by SIGPIPE), never with a Rust panic's exit 101.
#[test]
fn cli_output_to_a_closed_pipe_ends_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let dir = tempfile::tempdir().unwrap();
    for args in [
        vec!["check", "--config", "tests/fixtures/broken/contactplan.toml"],
        vec!["agenda", "--days", "3660"],
        vec!["explain", "--customer", "mueller-maschinenbau", "--occasion", "checkin", "--year", "2027"],
    ] {
        let err = dir.path().join("stderr");
        let mut child = Command::new(env!("CARGO_BIN_EXE_contactplan"))
            .args(&args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env_remove("CONTACTPLAN_DATABASE_URL")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .unwrap();
        drop(child.stdout.take()); // the reader is gone before the first line
        let status = child.wait().unwrap();
        let stderr = std::fs::read_to_string(&err).unwrap();
        assert!(!stderr.contains("panicked") && !stderr.contains("Broken pipe"), "{args:?}: {stderr}");
        assert!(status.success() || status.signal() == Some(libc::SIGPIPE), "{args:?}: {status:?}");
    }
}

/// The outbox key is unambiguous: a contact whose id is `customer` gets a task key of its own
/// (`owner:customer`), distinct from a task about the customer as a whole (`owner`), and its
/// task is about that contact (before, `owner:customer` was read back as "the whole customer"
/// and the task lost its contact).
#[tokio::test(flavor = "multi_thread")]
async fn a_contact_named_like_a_key_word_keeps_a_key_of_its_own() {
    use crate::helpers::{Delivery, spawn_app, utc};
    let plan = r#"[customer]
id = "acme"
name = "ACME"
since = 2015-06-01
owner = "owner@example.com"
timezone = "UTC"
language = "en"
phase = "growth"

[[contact]]
id = "customer"
name = "Cus Tomer"
email = "cus@acme.example"
birthday = 1980-03-14
tone = "formal"
primary = true

[[occasion]]
name = "call"
on = "birthday"
send = "task"
to = "contacts"
template = "occasion_task"

[[occasion]]
name = "whole"
on = "date"
date = "--03-14"
send = "task"
to = "owner"
template = "occasion_task"
"#;
    let app = spawn_app(&[("acme", plan)], &[], utc("2027-03-14T08:00:00Z"), Delivery::Smtp).await;
    let r = app.tick_at("2027-03-14T09:30:00Z").await;
    assert_eq!(r.accepted, 2, "{r:?}");
    let rows = app.app.store().rows(Some(RowState::Accepted), 10).await.unwrap();
    let mut keys: Vec<String> = rows.iter().map(|r| r.key.to_string()).collect();
    keys.sort();
    assert_eq!(keys, ["acme/call/owner:customer/2027-03-14", "acme/whole/owner/2027-03-14"]);
    let call = app.smtp.messages().into_iter().find(|m| m.parts().0.contains("birthday")).expect("the call task");
    assert!(call.parts().0.contains("Cus Tomer at ACME"), "the task is about the contact: {}", call.parts().0);
}

/// The SQLite file deleted or replaced under the running daemon: it notices at its next tick,
/// writes nothing more (not to the unlinked file, nor to a new empty one at the path), turns
/// unready with the reason, emails ops once and logs it clearly — and keeps feeding the
/// watchdog, since a restart would open a new outbox and send the last day again. When the
/// file is put back, it goes on.
#[test]
fn an_outbox_file_deleted_or_replaced_under_the_daemon_halts_sending_and_is_reported() {
    let ws = Workspace::new(1, "sqlite://outbox.db");
    let config = std::fs::read_to_string(ws.config()).unwrap();
    std::fs::write(ws.config(), format!("{config}[ops]\nemail = \"ops@example.com\"\n")).unwrap();
    let mut d = Daemon::start(&ws, &[], &[]);
    assert!(wait_until(Duration::from_secs(30), || ws.delivered() == 1), "{}", d.log());
    std::fs::rename(ws.path("outbox.db"), ws.path("outbox.db.away")).unwrap();
    let gone = Instant::now();
    // A plan added now: a reload, and the tick after it, must not write anywhere.
    let plan = std::fs::read_to_string(ws.path("plans/c0000.toml")).unwrap();
    std::fs::write(ws.path("plans/c0001.toml"), plan.replace("c0000", "c0001").replace("p0@", "p1@")).unwrap();
    d.signal("-HUP");
    assert!(wait_until(Duration::from_secs(20), || ws.readyz().0 == 503), "{:?}", ws.readyz());
    let body = ws.readyz().1;
    assert!(body.contains("was deleted") && body.contains("halted"), "/readyz says why: {body}");
    assert!(wait_until(Duration::from_secs(10), || ws.delivered() == 2), "ops were told: {}", d.log());
    let notice = std::fs::read_dir(ws.path("maildir/new"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .find(|m| m.contains("To: ops@example.com"))
        .expect("a notice to ops");
    assert!(notice.contains("outbox is gone"), "{notice}");
    assert!(d.log().contains("the outbox is gone") && d.log().contains("was deleted"), "{}", d.log());
    assert!(!ws.path("outbox.db").exists(), "no new, empty outbox was created at the path");
    std::thread::sleep(Duration::from_secs(3));
    assert!(d.watchdogs_since(gone) > 0, "the watchdog stays fed: no restart into a new outbox");
    assert_eq!(ws.delivered(), 2, "nothing sent while halted (c0001's greeting waits)");

    std::fs::rename(ws.path("outbox.db.away"), ws.path("outbox.db")).unwrap();
    d.signal("-HUP");
    assert!(wait_until(Duration::from_secs(20), || ws.delivered() == 3), "sending again once it is back: {}", d.log());
    assert!(wait_until(Duration::from_secs(10), || ws.readyz().0 == 200), "{:?}", ws.readyz());
    assert!(d.stop().is_some_and(|s| s.success()), "{}", d.log());
}
