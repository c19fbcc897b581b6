//! End-to-end dispatch throughput: claim → render → SMTP → durable commit, for 20,000 due
//! emails, against Postfix's `smtp-sink` on 127.0.0.1, beside Postfix's own `smtp-source`
//! client on the same sink in the same run.
//!
//!     cargo bench --bench dispatch                 # SQLite and PostgreSQL, 1 and 4 sessions
//!     cargo bench --bench dispatch -- 5000         # another message count
//!     cargo bench --bench dispatch -- sqlite sessions=4 nosource   # one configuration only
//!     cargo bench --bench dispatch -- 100000 sqlite sessions=4 cap=2000   # under a relay cap
//!
//! With `cap=N` the daemon runs with `[delivery] max_per_second = N` against a second smtp-sink
//! that appends each message to a file in /dev/shm named after the second it arrived
//! (`-D %H%M%S`), and the run reports the achieved rate against the cap, the busiest second at
//! the server, and the send order by deadline there (half of the customers' greetings have an
//! earlier deadline).
//!
//! Needs Debian's `postfix` (only /usr/sbin/smtp-sink and smtp-source are used) and, for the
//! PostgreSQL rows, PostgreSQL at CONTACTPLAN_TEST_POSTGRES_URL (default
//! postgres://postgres@127.0.0.1:5432/test); each run gets a fresh schema.

use contactplan::app::Application;
use contactplan::clock::ManualClock;
use contactplan::config::{Config, Environment};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

fn smtp_source(port: u16, sessions: u32, n: usize) -> f64 {
    let start = Instant::now();
    let status = Command::new("/usr/sbin/smtp-source")
        .args(["-d", "-s", &sessions.to_string(), "-m", &n.to_string(), "-l", "4096"])
        .args(["-f", "bench@example.com", "-t", "sink@example.net", &format!("127.0.0.1:{port}")])
        .status()
        .expect("smtp-source (apt-get install postfix)");
    assert!(status.success());
    n as f64 / start.elapsed().as_secs_f64()
}

/// `n` plans with one greeting each, due 2027-06-01 09:00 Berlin. With `split`, the odd customers'
/// greeting has `deadline = "4h"` (13:00) and the even ones' the default (the end of the day), so
/// the send order by deadline shows at the server.
fn write_plans(dir: &Path, n: usize, split: bool) {
    std::fs::create_dir_all(dir.join("plans")).expect("plans dir");
    for i in 0..n {
        let deadline = if split && i % 2 == 1 { "deadline = \"4h\"\n" } else { "" };
        let plan = format!(
            "[customer]\nid = \"c{i:06}\"\nname = \"Kunde {i} GmbH\"\nsince = 2015-06-01\nowner = \"sales@example.com\"\ntimezone = \"Europe/Berlin\"\nlanguage = \"de\"\nphase = \"growth\"\n\n[[contact]]\nid = \"p\"\nname = \"Anna Beispiel{i}\"\ngender = \"female\"\nemail = \"anna{i}@kunde{i}.example\"\ntone = \"formal\"\nprimary = true\n\n[[occasion]]\nname = \"thanks\"\non = \"date\"\ndate = \"--06-01\"\ntemplate = \"anniversary\"\n{deadline}"
        );
        std::fs::write(dir.join("plans").join(format!("c{i:06}.toml")), plan).expect("plan");
    }
}

async fn fresh_pg_schema(base: &str) -> Option<String> {
    let pool = sqlx::PgPool::connect(base).await.ok()?;
    let schema = format!("bench_{}", std::process::id());
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))).execute(&pool).await.ok()?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}"))).execute(&pool).await.ok()?;
    let sep = if base.contains('?') { '&' } else { '?' };
    Some(format!("{base}{sep}options=-c%20search_path%3D{schema}"))
}

/// Drops this run's schema (left behind, every run would keep its 100,000 rows).
async fn drop_pg_schema(base: &str) {
    if let Ok(pool) = sqlx::PgPool::connect(base).await {
        let schema = format!("bench_{}", std::process::id());
        let _ =
            sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))).execute(&pool).await;
    }
}

/// Messages per second over the whole tick and up to the last outcome, and the group commits'
/// count, rows per commit and mean time.
async fn contactplan(
    port: u16,
    sessions: u32,
    n: usize,
    plans: &Path,
    database_url: &str,
    cap: Option<u32>,
) -> (f64, f64, String) {
    let dir = tempfile::tempdir().expect("tmp");
    let cap_line = cap.map(|c| format!("max_per_second = {c}\n")).unwrap_or_default();
    let config_text = format!(
        "database_url = \"sqlite://outbox.db\"\nplans = \"{}\"\ntemplates = \"{}\"\ntimezone = \"Europe/Berlin\"\nbatch_size = 1000\nhorizon_days = 1\n[sender]\nemail = \"team@example.com\"\nname = \"Team\"\n[delivery]\nkind = \"smtp\"\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"none\"\nconnections = {sessions}\n{cap_line}",
        plans.join("plans").display(),
        Path::new(env!("CARGO_MANIFEST_DIR")).join("templates").display()
    );
    let path = dir.path().join("contactplan.toml");
    std::fs::write(&path, config_text).expect("config");
    let mut config = Config::load(&path, &Environment::default()).expect("config");
    if database_url != "sqlite" {
        config.database_url = database_url.to_string();
    }
    // The occasion is 2027-06-01 09:00 Berlin (07:00 UTC). Materialise first, then time
    // the dispatch of everything due.
    let clock = ManualClock::new(chrono::DateTime::parse_from_rfc3339("2027-06-01T06:00:00Z").expect("t").into());
    let app = Application::build(config, Arc::new(clock.clone()), Default::default()).await.expect("build");
    let stop = tokio_util::sync::CancellationToken::new();
    let m = app.scheduler().tick(&stop).await.expect("materialise");
    assert_eq!(m.materialized as usize, n);
    clock.set(chrono::DateTime::parse_from_rfc3339("2027-06-01T07:00:00Z").expect("t").into());
    let start = Instant::now();
    // When the last outcome was recorded: every row is one start and one outcome in the group
    // commits, so the run is over when they have recorded `2 n` rows. The tick itself goes on
    // with its passes after the last send (under a cap: the periodic re-materialisation it put
    // off while rows were due), which is not sending time.
    let metrics = app.metrics().clone();
    let last = tokio::spawn(async move {
        while metrics.commits().2 < 2 * n as u64 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        start.elapsed()
    });
    // On a runtime worker thread, as in the daemon (`Scheduler::run` is a spawned task).
    let scheduler = app.scheduler().clone();
    let r = tokio::spawn(async move { scheduler.tick(&stop).await }).await.expect("join").expect("dispatch");
    let tick = start.elapsed();
    let to_last = if last.is_finished() {
        last.await.expect("join")
    } else {
        last.abort();
        tick
    }
    .as_secs_f64();
    let secs = tick.as_secs_f64();
    assert_eq!(r.accepted as usize, n, "{r:?}");
    let (commits, took, rows) = app.metrics().commits();
    let commits_line = format!(
        "{commits} commits, {:.1} rows each, {:.0} µs each",
        rows as f64 / commits.max(1) as f64,
        took.as_secs_f64() * 1e6 / commits.max(1) as f64
    );
    (n as f64 / secs, n as f64 / to_last, commits_line)
}

/// One run under `max_per_second = cap` against an smtp-sink that files each message under the
/// second it arrived: the achieved rate and the busiest second at the server.
fn capped(rt: &tokio::runtime::Runtime, sessions: u32, n: usize, plans: &Path, url: &str, engine: &str, cap: u32) {
    // The sink's dump lives in memory (/dev/shm), one file per second appended to (`-D`): a
    // file per message on the disk the outbox commits to stalled the sink itself (smtp-source
    // alone got 650-990 msg/s for 20 s against it) and the outbox's fsyncs behind its writeback.
    let shm = Path::new("/dev/shm");
    let dumps = if shm.is_dir() { tempfile::tempdir_in(shm) } else { tempfile::tempdir() }.expect("tmp");
    // smtp-sink writes as the user it runs as (`-u nobody` when started by root).
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dumps.path(), std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let port = free_port();
    let template = format!("{}/%H%M%S", dumps.path().display());
    let mut sink = Command::new("/usr/sbin/smtp-sink")
        .args(["-u", "nobody", "-D", &template, &format!("127.0.0.1:{port}"), "1024"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("smtp-sink (apt-get install postfix)");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let (_, rate, _) = rt.block_on(contactplan(port, sessions, n, plans, url, Some(cap)));
    let _ = sink.kill();
    let _ = sink.wait();
    let mut per_second: std::collections::BTreeMap<String, usize> = std::collections::BTreeMap::new();
    // Per second: the messages to customers with the early deadline (odd numbers) and the late.
    let mut by_deadline: std::collections::BTreeMap<String, (usize, usize)> = std::collections::BTreeMap::new();
    for e in std::fs::read_dir(dumps.path()).expect("dumps").flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        // Every dumped message starts with smtp-sink's own `X-Client-Addr:` record, and names
        // its recipient in `X-Rcpt-Args:` (`<annaN@kundeN.example>`).
        let text = std::fs::read(e.path()).expect("dump");
        let lines = || text.split(|b| *b == b'\n');
        let messages = lines().filter(|l| l.starts_with(b"X-Client-Addr:")).count();
        *per_second.entry(name.clone()).or_default() += messages;
        let entry = by_deadline.entry(name).or_default();
        for l in lines().filter(|l| l.starts_with(b"X-Rcpt-Args:")) {
            let l = String::from_utf8_lossy(l);
            let i: Option<usize> =
                l.split_once("anna").and_then(|(_, r)| r.split_once('@')).and_then(|(d, _)| d.parse().ok());
            match i {
                Some(i) if i % 2 == 1 => entry.0 += 1,
                Some(_) => entry.1 += 1,
                None => {}
            }
        }
    }
    // Send order by deadline: no later-deadline message in a second before the last one that
    // carried an earlier-deadline message (the two meet in one second at most).
    let last_early = by_deadline.iter().rev().find(|(_, c)| c.0 > 0).map(|(k, _)| k.clone());
    let late_before: usize =
        by_deadline.iter().filter(|(k, _)| last_early.as_ref().is_some_and(|l| *k < l)).map(|(_, c)| c.1).sum();
    let (early, late) = by_deadline.values().fold((0, 0), |a, c| (a.0 + c.0, a.1 + c.1));
    let received: usize = per_second.values().sum();
    if std::env::var_os("CAP_TRACE").is_some() {
        println!("    per second: {:?}", per_second.values().collect::<Vec<_>>());
    }
    let busiest = per_second.values().copied().max().unwrap_or(0);
    let over = per_second.values().filter(|c| **c > cap as usize).count();
    // Full seconds only (the first and the last are partial).
    let inner: Vec<usize> = per_second.values().copied().skip(1).collect();
    let inner = &inner[..inner.len().saturating_sub(1)];
    let mean_inner = inner.iter().sum::<usize>() as f64 / inner.len().max(1) as f64;
    // At the server: everything received over the seconds from the first message's to the
    // last one's, both counted whole (so a little under the true rate). The overall figure is
    // from the tick's start (the passes before the first claim included) to the last outcome.
    let secs_of = |k: &str| -> Option<i64> {
        let v: i64 = k.parse().ok()?;
        Some(v / 10_000 * 3600 + v / 100 % 100 * 60 + v % 100)
    };
    let spanned =
        match (per_second.keys().next().and_then(|k| secs_of(k)), per_second.keys().last().and_then(|k| secs_of(k))) {
            (Some(a), Some(b)) => (b - a).rem_euclid(86_400) + 1,
            _ => 1,
        };
    let at_server = received as f64 / spanned as f64;
    println!(
        "  contactplan  sessions={sessions} {engine:<8} cap={cap}/s: {rate:>6.0} msg/s from the tick's start to the last outcome ({:.1} % of the cap), {at_server:.0} msg/s at the server, first to last second ({:.1} %), {mean_inner:.0} msg/s in full seconds ({:.1} %), busiest second {busiest}, seconds over the cap: {over}, received {received} of {n}",
        100.0 * rate / cap as f64,
        100.0 * at_server / cap as f64,
        100.0 * mean_inner / cap as f64,
    );
    println!(
        "    send order by deadline: {early} messages with the earlier deadline, {late} with the later; later-deadline messages in a second before the last earlier-deadline one: {late_before}"
    );
}

fn main() {
    // Arguments (all optional): a message count, `sqlite` / `postgres` to run one engine,
    // `sessions=N` to run one session count, `nosource` to skip smtp-source.
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let n: usize = args.iter().find_map(|a| a.parse().ok()).unwrap_or(20_000);
    let engines: Vec<&str> = match args.iter().find(|a| *a == "sqlite" || *a == "postgres") {
        Some(e) => vec![e.as_str()],
        None => vec!["sqlite", "postgres"],
    };
    let sessions_list: Vec<u32> = match args.iter().find_map(|a| a.strip_prefix("sessions=")) {
        Some(s) => vec![s.parse().expect("sessions=N")],
        None => vec![1, 4],
    };
    let cap: Option<u32> = args.iter().find_map(|a| a.strip_prefix("cap=")).map(|c| c.parse().expect("cap=N"));
    let with_source = cap.is_none() && !args.iter().any(|a| a == "nosource");
    let port = free_port();
    let mut sink = Command::new("/usr/sbin/smtp-sink")
        .args(["-u", "nobody", &format!("127.0.0.1:{port}"), "1024"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("smtp-sink (apt-get install postfix)");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let plans = tempfile::tempdir().expect("tmp");
    write_plans(plans.path(), n, cap.is_some());
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let pg_base = std::env::var("CONTACTPLAN_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());

    println!("dispatch n={n} (4 KB-ish multipart messages; smtp-source -l 4096)");
    for sessions in sessions_list {
        let source = if with_source { smtp_source(port, sessions, n) } else { f64::NAN };
        if with_source {
            println!("  smtp-source  sessions={sessions}: {source:>8.0} msg/s");
        }
        for engine in &engines {
            let url = match *engine {
                "sqlite" => Some("sqlite".to_string()),
                _ => rt.block_on(fresh_pg_schema(&pg_base)),
            };
            let Some(url) = url else {
                println!("  contactplan  sessions={sessions} {engine}: skipped (no PostgreSQL at {pg_base})");
                continue;
            };
            if let Some(cap) = cap {
                capped(&rt, sessions, n, plans.path(), &url, engine, cap);
                continue;
            }
            let (rate, _, commits) = rt.block_on(contactplan(port, sessions, n, plans.path(), &url, None));
            println!(
                "  contactplan  sessions={sessions} {engine:<8} {rate:>8.0} msg/s ({:.0}% of smtp-source; {commits})",
                100.0 * rate / source
            );
        }
    }
    if engines.contains(&"postgres") {
        rt.block_on(drop_pg_schema(&pg_base));
    }
    let _ = sink.kill();
    let _ = sink.wait();
}
