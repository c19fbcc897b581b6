//! The real `contactplan run` binary under kill -9 and with several instances on one
//! PostgreSQL database. Uses the wall clock (it is the real binary), so every occasion is a
//! fixed `date` rule due at local midnight today in a zone where "today" has hours left.

use crate::helpers::Rng;
use crate::peer::{Peer, PeerOptions};
use contactplan::store::RowState;
use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A zone whose local time is far from midnight now, and its local date.
pub(crate) fn daytime_zone() -> (&'static str, chrono::NaiveDate) {
    use chrono::Timelike;
    let zones = [
        "Pacific/Kiritimati",
        "Asia/Tokyo",
        "Asia/Kolkata",
        "Europe/Berlin",
        "America/New_York",
        "Pacific/Honolulu",
        "Pacific/Pago_Pago",
    ];
    let now = chrono::Utc::now();
    zones
        .iter()
        .map(|z| {
            let tz: chrono_tz::Tz = z.parse().unwrap();
            let local = now.with_timezone(&tz);
            let mins = local.hour() * 60 + local.minute();
            (mins.min(24 * 60 - mins), *z, local.date_naive())
        })
        .max_by_key(|(distance, _, _)| *distance)
        .map(|(_, z, d)| (z, d))
        .unwrap()
}

/// The lease these tests run with (`[delivery] lease_secs`; the default is 45 s): short, so a
/// killed daemon's rows are taken over within seconds and no test waits out a production lease.
const LEASE_SECS: u64 = 4;

/// Writes config + `n` plans; returns the config path.
fn setup(dir: &Path, n: usize, peer: &Peer, delivery_policy: &str, connections: u32) -> std::path::PathBuf {
    let (zone, today) = daytime_zone();
    std::fs::create_dir_all(dir.join("plans")).unwrap();
    for i in 0..n {
        let plan = format!(
            "[customer]\nid = \"c{i:05}\"\nname = \"C{i}\"\nsince = 2015-06-01\nowner = \"sales@example.com\"\ntimezone = \"{zone}\"\nlanguage = \"en\"\nphase = \"growth\"\n\n[[contact]]\nid = \"p\"\nname = \"Pat Doe\"\nemail = \"p{i}@example.net\"\ntone = \"formal\"\nprimary = true\n\n[[occasion]]\nname = \"thanks\"\non = \"date\"\ndate = {today}\nat = \"00:00\"\ntemplate = \"anniversary\"\ndelivery = \"{delivery_policy}\"\n"
        );
        std::fs::write(dir.join("plans").join(format!("c{i:05}.toml")), plan).unwrap();
    }
    let config = format!(
        "database_url = \"sqlite://outbox.db\"\nhttp_bind = \"127.0.0.1:0\"\ntemplates = \"{}\"\nbatch_size = 100\n[sender]\nemail = \"team@example.com\"\nname = \"Team\"\n[ops]\nemail = \"ops@example.com\"\n[delivery]\nkind = \"smtp\"\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\ntimeout_secs = 10\nconnections = {connections}\nlease_secs = {LEASE_SECS}\n",
        crate::helpers::templates_dir().display(),
        peer.port
    );
    let path = dir.join("contactplan.toml");
    std::fs::write(&path, config).unwrap();
    path
}

pub(crate) fn daemon(config: &Path, database_url: Option<&str>) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_contactplan"));
    cmd.args(["run", "--config"]).arg(config).env("RUST_LOG", "warn").stdout(Stdio::null()).stderr(Stdio::null());
    match database_url {
        Some(url) => cmd.env("CONTACTPLAN_DATABASE_URL", url),
        None => cmd.env_remove("CONTACTPLAN_DATABASE_URL"),
    };
    cmd.spawn().unwrap()
}

/// Starts the daemon and waits (≤ 30 s) until it tells systemd `READY=1` (over a
/// `NOTIFY_SOCKET` of our own): from then on, SIGTERM is a graceful stop.
fn daemon_ready(config: &Path) -> Child {
    let sock_path = config.with_file_name("notify.sock");
    let _ = std::fs::remove_file(&sock_path);
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_contactplan"))
        .args(["run", "--config"])
        .arg(config)
        .env("RUST_LOG", "warn")
        .env("NOTIFY_SOCKET", &sock_path)
        .env_remove("CONTACTPLAN_DATABASE_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 4096];
    let ready = wait_until(Duration::from_secs(30), || {
        sock.recv(&mut buf).is_ok_and(|n| String::from_utf8_lossy(&buf[..n]).lines().any(|l| l == "READY=1"))
    });
    assert!(ready, "the daemon said READY=1");
    child
}

/// Message-ID → how many times the peer accepted it (customer mails only, not ops reports).
pub(crate) fn accepted(peer: &Peer) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for r in peer.records().into_iter().filter(|r| r.rcpt.iter().all(|a| a != "ops@example.com")) {
        *m.entry(r.message_id).or_insert(0) += 1;
    }
    m
}

pub(crate) fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    done()
}

fn kill9(child: &mut Child) {
    let _ = child.kill(); // SIGKILL
    let _ = child.wait();
}

fn crash_run(policy: &str) -> (usize, HashMap<String, usize>, u32, tempfile::TempDir) {
    const N: usize = 2_000;
    const KILLS: u32 = 20;
    let peer = Peer::start(PeerOptions::default());
    let dir = tempfile::tempdir().unwrap();
    // One session: then a kill can leave at most one transaction with an unknown outcome.
    let config = setup(dir.path(), N, &peer, policy, 1);
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut kills = 0;
    let mut kills_while_sending = 0;
    for _ in 0..KILLS {
        let before = peer.records().len();
        let mut child = daemon(&config, None);
        // Wait until this process is delivering, then kill it at a random moment.
        let delivering = wait_until(Duration::from_secs(30), || peer.records().len() > before);
        std::thread::sleep(Duration::from_millis(rng.below(300).into()));
        kill9(&mut child);
        kills += 1;
        if delivering {
            kills_while_sending += 1;
        }
        if accepted(&peer).len() >= N {
            break;
        }
    }
    eprintln!(
        "{kills} kills, {kills_while_sending} while the daemon was delivering; {} accepted before the final run",
        accepted(&peer).len()
    );
    assert!(kills_while_sending >= KILLS / 2, "the kills must land during delivery to test anything");
    // A clean run finishes the rest; rows the killed processes held are taken over when their
    // lease ([`LEASE_SECS`], database clock) ends.
    let mut child = daemon_ready(&config);
    let url = format!("sqlite://{}", dir.path().join("outbox.db").display());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = rt.block_on(contactplan::store::Store::connect(&url)).unwrap();
    let open = || {
        rt.block_on(store.counts())
            .unwrap()
            .iter()
            .filter(|(s, _)| ["pending", "claimed", "sending", "retry"].contains(&s.code()))
            .map(|(_, n)| *n)
            .sum::<i64>()
    };
    let finished =
        wait_until(Duration::from_secs(150), || open() == 0 && rt.block_on(store.unreported(1)).unwrap().is_empty());
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let stopped = wait_until(Duration::from_secs(30), || child.try_wait().ok().flatten().is_some());
    assert!(stopped, "SIGTERM stops the daemon");
    assert!(finished, "nothing open within 150 s; {} accepted", accepted(&peer).len());
    let status = child.wait().unwrap();
    assert!(status.success(), "exit 0 after SIGTERM: {status:?}");
    (N, accepted(&peer), kills, dir)
}

#[test]
fn kill_9_twenty_times_loses_nothing_and_duplicates_at_most_once_per_kill() {
    let (n, accepted, kills, _dir) = crash_run("at_least_once");
    assert_eq!(accepted.len(), n, "every email accepted");
    let duplicates: usize = accepted.values().map(|c| c - 1).sum();
    assert!(duplicates <= kills as usize, "{duplicates} duplicates after {kills} kills");
    eprintln!("crash test: {n} emails, {kills} kills, {duplicates} duplicates");
}

#[test]
fn kill_9_with_at_most_once_never_duplicates_and_reports_every_unknown() {
    let (n, accepted, kills, dir) = crash_run("at_most_once");
    let duplicates: usize = accepted.values().map(|c| c - 1).sum();
    assert_eq!(duplicates, 0);
    // Everything not accepted is `unknown` and reported; nothing is still open.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let url = format!("sqlite://{}", dir.path().join("outbox.db").display());
    let (counts, unreported) = rt.block_on(async {
        let store = contactplan::store::Store::connect(&url).await.unwrap();
        (store.counts().await.unwrap(), store.unreported(10_000).await.unwrap())
    });
    let get = |s: &str| counts.iter().find(|(k, _)| k.code() == s).map_or(0, |(_, v)| *v) as usize;
    assert_eq!(get("accepted") + get("unknown"), n, "{counts:?}");
    // `unknown` means exactly that: some of those reached the server before the kill, some not.
    assert!(
        get("accepted") <= accepted.len() && accepted.len() <= get("accepted") + get("unknown"),
        "the outbox agrees with the server ({} distinct there): {counts:?}",
        accepted.len()
    );
    assert!(get("unknown") <= kills as usize, "at most one unknown per kill (one session)");
    assert!(unreported.is_empty(), "every unknown outcome was reported to ops");
    eprintln!("crash test (at_most_once): {n} emails, {kills} kills, {} unknown, 0 duplicates", get("unknown"));
}

#[test]
fn three_daemons_on_one_postgres_database_send_each_email_exactly_once() {
    const N: usize = 5_000;
    let peer = Peer::start(PeerOptions::default());
    let dir = tempfile::tempdir().unwrap();
    let config = setup(dir.path(), N, &peer, "at_least_once", 2);
    let base = std::env::var("CONTACTPLAN_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let schema = format!("multi_{}", std::process::id());
    rt.block_on(async {
        let pool =
            sqlx::PgPool::connect(&base).await.unwrap_or_else(|e| panic!("PostgreSQL at {base} is required: {e}"));
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA IF EXISTS {schema} CASCADE")))
            .execute(&pool)
            .await
            .unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}"))).execute(&pool).await.unwrap();
    });
    let sep = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{sep}options=-c%20search_path%3D{schema}");
    let mut daemons: Vec<Child> = (0..3).map(|_| daemon(&config, Some(&url))).collect();
    let store = rt.block_on(contactplan::store::Store::connect(&url)).unwrap();
    let done = wait_until(Duration::from_secs(180), || {
        let counts = rt.block_on(store.counts()).unwrap();
        counts.iter().find(|(s, _)| *s == RowState::Accepted).map_or(0, |(_, n)| *n) as usize == N
    });
    for d in &mut daemons {
        let _ = Command::new("kill").arg("-TERM").arg(d.id().to_string()).status();
    }
    for d in &mut daemons {
        assert!(d.wait().unwrap().success(), "each daemon exits 0 on SIGTERM");
    }
    let accepted = accepted(&peer);
    rt.block_on(async {
        let pool = sqlx::PgPool::connect(&base).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA IF EXISTS {schema} CASCADE")))
            .execute(&pool)
            .await
            .unwrap();
    });
    assert!(done, "all {N} accepted within 180 s");
    assert_eq!(accepted.len(), N, "every email reached the server");
    let twice: Vec<_> = accepted.iter().filter(|(_, c)| **c > 1).collect();
    assert!(twice.is_empty(), "accepted more than once: {twice:?}");
}

/// Kills the daemon while the first of 3 messages waits for its reply (the peer never answers
/// it) and checks the rows' states at that moment (`at_kill`, sorted; the stalled row is
/// `sending`); restarts it and waits until every row is settled. Returns the stalled message's
/// Message-ID, each row's final state by Message-ID, and what the peer accepted.
fn kill_while_a_reply_is_outstanding(
    policy: &str,
    at_kill: [&str; 3],
) -> (String, HashMap<String, String>, HashMap<String, usize>) {
    let peer = Peer::start(PeerOptions { stall_after_data: vec![1], ..PeerOptions::default() });
    let dir = tempfile::tempdir().unwrap();
    let config = setup(dir.path(), 3, &peer, policy, 1);
    // The default SMTP timeout (60 s): the lease must not depend on it.
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace("timeout_secs = 10\n", "")).unwrap();
    let url = format!("sqlite://{}", dir.path().join("outbox.db").display());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let states = || -> HashMap<String, String> {
        rt.block_on(async {
            let store = contactplan::store::Store::open_existing(&url).await.unwrap();
            store
                .rows(None, 10)
                .await
                .unwrap()
                .into_iter()
                .map(|r| (r.message_id, r.state.code().to_string()))
                .collect()
        })
    };
    let mut child = daemon(&config, None);
    assert!(wait_until(Duration::from_secs(30), || peer.dropped().len() == 1), "the first message reached the peer");
    let seen = states();
    kill9(&mut child);
    let stalled = peer.dropped()[0].message_id.clone();
    assert_eq!(seen[&stalled], "sending", "{seen:?}");
    let mut seen: Vec<&str> = seen.values().map(String::as_str).collect();
    seen.sort();
    assert_eq!(seen, at_kill, "{policy}");

    // The restart takes the killed process's rows over once their lease (renewed only while
    // their sender lives) has ended: it wakes up for that, rather than a whole idle sleep
    // (60 s) later, and it does not wait for the SMTP timeout (60 s here) either.
    let mut child = daemon(&config, None);
    let restarted = Instant::now();
    let done = |s: &HashMap<String, String>| s.values().all(|st| ["accepted", "unknown"].contains(&st.as_str()));
    let finished = wait_until(Duration::from_secs(60), || done(&states()));
    let took = restarted.elapsed();
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    assert!(wait_until(Duration::from_secs(30), || child.try_wait().ok().flatten().is_some()), "SIGTERM stops it");
    assert!(finished, "all settled within 60 s: {:?}", states());
    assert!(
        took < Duration::from_secs(LEASE_SECS + 8),
        "taken over {took:?} after the restart (lease: {LEASE_SECS} s, SMTP timeout: 60 s)"
    );
    (stalled, states(), accepted(&peer))
}

/// A session moves its next row to `sending` together with the current one, so that row's
/// `DATA` need not wait for a commit of its own, but only when a resend is right for it: a kill
/// while a reply is outstanding leaves the next at_least_once row `sending` (it is resent after
/// the restart, and arrives once) ...
#[test]
fn a_kill_mid_send_leaves_the_next_at_least_once_row_sending_and_it_arrives_once() {
    let (_, after, accepted) = kill_while_a_reply_is_outstanding("at_least_once", ["claimed", "sending", "sending"]);
    assert!(after.values().all(|s| s == "accepted"), "{after:?}");
    assert_eq!(accepted.len(), 3);
    assert!(accepted.values().all(|&n| n == 1), "each arrived once: {accepted:?}");
}

/// ... but leaves the next at_most_once row `claimed`: never attempted, so it is sent after the
/// restart instead of being reported as an unknown outcome. Only the stalled one is unknown.
#[test]
fn a_kill_mid_send_leaves_the_next_at_most_once_row_claimed_and_it_is_still_sent() {
    let (stalled, after, accepted) =
        kill_while_a_reply_is_outstanding("at_most_once", ["claimed", "claimed", "sending"]);
    assert_eq!(after[&stalled], "unknown", "{after:?}");
    assert_eq!(after.values().filter(|s| *s == "accepted").count(), 2, "{after:?}");
    assert_eq!(accepted.len(), 2);
    assert!(!accepted.contains_key(&stalled) && accepted.values().all(|&n| n == 1), "{accepted:?}");
}

/// A send that outlasts the lease (the peer never answers; the SMTP timeout is the default
/// 60 s, the lease a few seconds) keeps its lease while its sender lives: another instance
/// finds nothing to take over, so the message is not sent twice at once.
#[test]
fn a_live_sender_keeps_its_lease_through_a_send_longer_than_the_lease() {
    let peer = Peer::start(PeerOptions { stall_after_data: vec![1], ..PeerOptions::default() });
    let dir = tempfile::tempdir().unwrap();
    let config = setup(dir.path(), 1, &peer, "at_least_once", 1);
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace("timeout_secs = 10\n", "")).unwrap();
    let mut child = daemon(&config, None);
    assert!(wait_until(Duration::from_secs(30), || peer.dropped().len() == 1), "the message reached the peer");
    // Twice the lease: without renewal it would have ended by now.
    std::thread::sleep(Duration::from_secs(2 * LEASE_SECS));
    let url = format!("sqlite://{}", dir.path().join("outbox.db").display());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (recovered, rows, lease) = rt.block_on(async {
        let store = contactplan::store::Store::open_existing(&url).await.unwrap();
        // What another instance's tick does first.
        let recovered = store.recover_expired_leases().await.unwrap();
        (recovered, store.rows(None, 10).await.unwrap(), store.lease_expires_in().await.unwrap())
    });
    kill9(&mut child);
    assert_eq!(recovered, contactplan::store::Recovered::default(), "nothing taken over from a live sender");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].state, RowState::Sending);
    assert!(lease.is_some_and(|s| s > 0), "the lease was renewed: {lease:?}");
}
