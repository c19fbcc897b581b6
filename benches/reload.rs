//! Hot reload at scale (issue 15): the real `contactplan run` binary serving N generated plans
//! (default 100,000; the `load_plans` ones, hard-linked into a scratch directory so edits never
//! touch the cache), SQLite outbox, Maildir, file watches on. Once the daemon is idle:
//!
//! - **one plan edited** (an editor's rename-save), several times: the time from the rename to
//!   the daemon's "plans reloaded" log line (the new plan in force; includes the 300 ms
//!   debounce), the reload's own time (`elapsed_ms` in that line: from the end of the debounce
//!   to the swap), and peak RSS during the reload (VmHWM reset through `/proc/<pid>/clear_refs`
//!   just before the edit) against the idle RSS; then the CPU time and wall time the scheduler
//!   spends on the new revision (reconcile, customer-change detection, re-materialisation)
//!   until the daemon is idle again, and the peak RSS including that;
//! - **a full reload by SIGHUP** (every file read and validated; customers that come out equal
//!   are shared with the plans in force);
//! - **a playbook edit that changes every customer** (all rules differ, so nothing can be
//!   shared): the worst case of a full reload.
//!
//! After each reload, the scheduler's own log line for the new revision (`plan revision
//! applied`: scope `changed` or `all`, customers looked at, its milliseconds) is printed as
//! `applied=…` when the binary writes it.
//!
//! Usage:
//!
//!     cargo bench --bench reload               # 100,000 plans, 5 edits
//!     cargo bench --bench reload -- 250000 3   # plans, edits
//!     CONTACTPLAN_BIN=path/to/contactplan cargo bench --bench reload   # another build (A/B runs)

#[path = "support/plans.rs"]
mod support;

use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const USER_HZ: f64 = 100.0;

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/<pid>/stat");
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime")
}

fn status_mb(pid: u32, key: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("/proc/<pid>/status")
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .expect("status field")
        / 1024.0
}

/// Resets VmHWM to the current RSS (Linux ≥ 4.0).
fn reset_peak(pid: u32) {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").expect("clear_refs");
}

/// Waits until the daemon used less than 2 ticks (20 ms) of CPU in a second, three seconds in
/// a row; returns the CPU seconds used and the wall time until the quiet seconds began.
fn settle(pid: u32, limit: Duration) -> (f64, f64) {
    let (start, c0) = (Instant::now(), cpu_ticks(pid));
    let (mut quiet, mut last, mut busy_until) = (0, c0, Instant::now());
    while quiet < 3 && start.elapsed() < limit {
        std::thread::sleep(Duration::from_secs(1));
        let now = cpu_ticks(pid);
        if now - last < 2 {
            quiet += 1;
        } else {
            quiet = 0;
            busy_until = Instant::now();
        }
        last = now;
    }
    ((last - c0) as f64 / USER_HZ, busy_until.duration_since(start).as_secs_f64())
}

/// A "plans reloaded" log line: (files read, the reload's own milliseconds, customers).
fn reloaded(line: &str) -> Option<(u64, f64, u64)> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    let f = v.get("fields")?;
    (f.get("message")?.as_str()? == "plans reloaded").then_some(())?;
    Some((f.get("files_read")?.as_u64()?, f.get("elapsed_ms")?.as_f64()?, f.get("customers")?.as_u64()?))
}

/// A "plan revision applied" log line of the scheduler: `scope/customers/ms`.
fn applied(line: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    let f = v.get("fields")?;
    (f.get("message")?.as_str()? == "plan revision applied to the outbox").then_some(())?;
    Some(format!(
        "{}/{}/{:.0}ms",
        f.get("scope")?.as_str()?,
        f.get("customers")?.as_u64()?,
        f.get("elapsed_ms")?.as_f64()?
    ))
}

/// The scheduler's "plan revision applied" lines logged so far (scope/customers/ms), or "n/a"
/// (a binary without that line).
fn drain_applied(lines: &mpsc::Receiver<(Instant, String)>) -> String {
    let seen: Vec<String> = std::iter::from_fn(|| lines.try_recv().ok()).filter_map(|(_, l)| applied(&l)).collect();
    if seen.is_empty() { "n/a".into() } else { seen.join(",") }
}

fn wait_reloaded(lines: &mpsc::Receiver<(Instant, String)>) -> (Instant, (u64, f64, u64)) {
    loop {
        let (at, line) = lines.recv_timeout(Duration::from_secs(300)).expect("a reload within 300 s");
        if let Some(r) = reloaded(&line) {
            return (at, r);
        }
    }
}

/// Hard-links every file of `from` into `to` (same file system).
fn link_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("dir");
    for e in std::fs::read_dir(from).expect("read dir") {
        let e = e.expect("entry");
        if e.file_type().expect("type").is_file() {
            std::fs::hard_link(e.path(), to.join(e.file_name())).expect("link");
        }
    }
}

/// An editor's save: a temp file renamed over the original (the original inode, shared with
/// the cache, is left alone).
fn save(path: &Path, text: &str) {
    let tmp = path.with_file_name(format!(".{}.swp", path.file_name().and_then(|n| n.to_str()).unwrap_or("x")));
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

/// Stops the daemon however the benchmark ends (a panic included).
struct Stop(u32);

impl Drop for Stop {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.0.to_string()]).status();
    }
}

fn main() {
    let args: Vec<u64> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let n = args.first().copied().unwrap_or(100_000) as usize;
    let edits = args.get(1).copied().unwrap_or(5) as usize;
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let cache = root.join(format!("target/bench-plans/{n}"));
    support::generate(&cache, n, false).expect("generate plans");
    let dir = tempfile::tempdir_in(root.join("target")).expect("scratch dir");
    let t = Instant::now();
    link_tree(&cache.join("plans"), &dir.path().join("plans"));
    link_tree(&cache.join("playbooks"), &dir.path().join("playbooks"));
    println!("linked {n} plans in {:.1}s", t.elapsed().as_secs_f64());

    let config = dir.path().join("contactplan.toml");
    std::fs::write(
        &config,
        format!(
            "database_url = \"sqlite://outbox.db\"\nhttp_bind = \"127.0.0.1:0\"\nplans = \"plans\"\nplaybooks = \"playbooks\"\ntemplates = \"{}\"\ntimezone = \"Europe/Berlin\"\n[sender]\nemail = \"team@example.com\"\nname = \"Team\"\n[delivery]\nkind = \"maildir\"\npath = \"maildir\"\n",
            root.join("templates").display()
        ),
    )
    .expect("config");
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).expect("notify socket");
    sock.set_read_timeout(Some(Duration::from_secs(300))).expect("timeout");
    let started = Instant::now();
    let bin = std::env::var_os("CONTACTPLAN_BIN")
        .map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_contactplan")), PathBuf::from);
    println!("binary: {}", bin.display());
    let mut child = Command::new(&bin)
        .args(["run", "--log-format", "json", "--config"])
        .arg(&config)
        .env("NOTIFY_SOCKET", &sock_path)
        .env(
            "RUST_LOG",
            "warn,contactplan::reload=info,contactplan::dispatch=info,contactplan::dispatch::reconcile=warn,contactplan::dispatch::workers=warn",
        )
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn contactplan");
    let pid = child.id();
    let _stop = Stop(pid);
    let (tx, lines) = mpsc::channel::<(Instant, String)>();
    let stderr = child.stderr.take().expect("stderr");
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send((Instant::now(), line)).is_err() {
                break;
            }
        }
    });
    let mut buf = [0u8; 512];
    loop {
        let len = sock.recv(&mut buf).expect("READY=1 within 300 s");
        if String::from_utf8_lossy(&buf[..len]).lines().any(|l| l == "READY=1") {
            break;
        }
    }
    let ready = started.elapsed().as_secs_f64();
    // Keep reading the notify socket: every reload sends RELOADING=1 and READY=1, and a full
    // queue (net.unix.max_dgram_qlen, 10 by default) would block the daemon's next notice.
    let notices = sock.try_clone().expect("notify socket");
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        loop {
            match notices.recv(&mut buf) {
                Ok(_) => {}
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(_) => break,
            }
        }
    });
    let (cpu, busy) = settle(pid, Duration::from_secs(600));
    let (idle_rss, startup_hwm) = (status_mb(pid, "VmRSS:"), status_mb(pid, "VmHWM:"));
    println!(
        "n={n} ready_after={ready:.2}s first_pass: cpu={cpu:.2}s busy={busy:.0}s idle_rss={idle_rss:.1}MB peak_rss_so_far={startup_hwm:.1}MB"
    );
    let first = drain_applied(&lines);
    println!("first revision: applied={first}");

    let mut in_force = Vec::new();
    for e in 0..edits {
        let i = (e * 7919 + 12345) % n;
        let path = dir.path().join(format!("plans/c{i:06}.toml"));
        let text = std::fs::read_to_string(&path).expect("plan");
        let rss0 = status_mb(pid, "VmRSS:");
        reset_peak(pid);
        let c0 = cpu_ticks(pid);
        let t0 = Instant::now();
        save(&path, &text.replacen("@kunde", &format!("@edit{e}.kunde"), 1));
        let (t1, (files, ms, customers)) = wait_reloaded(&lines);
        let hwm_reload = status_mb(pid, "VmHWM:");
        let reload_cpu = (cpu_ticks(pid) - c0) as f64 / USER_HZ;
        let (tick_cpu, tick_busy) = settle(pid, Duration::from_secs(600));
        let hwm_tick = status_mb(pid, "VmHWM:");
        let scope = drain_applied(&lines);
        let write_to_force = t1.duration_since(t0).as_secs_f64() * 1e3;
        in_force.push((write_to_force, ms));
        println!(
            "edit {e}: c{i:06} files_read={files} customers={customers} write->in_force={write_to_force:.0}ms reload={ms:.1}ms cpu_to_in_force={reload_cpu:.2}s rss_before={rss0:.1}MB peak_during_reload={hwm_reload:.1}MB ({:.3}x idle) | new revision in the scheduler: applied={scope} cpu={tick_cpu:.2}s busy~{tick_busy:.0}s peak_incl={hwm_tick:.1}MB ({:.2}x idle)",
            hwm_reload / idle_rss,
            hwm_tick / idle_rss
        );
    }
    in_force.sort_by(|a, b| a.0.total_cmp(&b.0));
    if let Some((w, ms)) = in_force.get(in_force.len() / 2) {
        println!("MEDIAN edit: write->in_force={w:.0}ms (debounce 300 ms included) reload={ms:.1}ms");
    }

    // A full reload (SIGHUP): every file read; equal customers shared.
    let rss0 = status_mb(pid, "VmRSS:");
    reset_peak(pid);
    let c0 = cpu_ticks(pid);
    let _ = Command::new("kill").args(["-HUP", &pid.to_string()]).status();
    let (_, (files, ms, _)) = wait_reloaded(&lines);
    let hwm = status_mb(pid, "VmHWM:");
    let cpu = (cpu_ticks(pid) - c0) as f64 / USER_HZ;
    let (tick_cpu, _) = settle(pid, Duration::from_secs(600));
    let scope = drain_applied(&lines);
    println!(
        "SIGHUP full reload: files_read={files} reload={ms:.0}ms cpu={cpu:.2}s rss_before={rss0:.1}MB peak={hwm:.1}MB ({:.2}x idle) | scheduler applied={scope} cpu after={tick_cpu:.2}s peak_incl={:.1}MB",
        hwm / idle_rss,
        status_mb(pid, "VmHWM:")
    );

    // A playbook edit that changes every customer's rules: nothing can be shared.
    let playbook = dir.path().join("playbooks/standard.toml");
    let text = std::fs::read_to_string(&playbook).expect("playbook");
    let rss0 = status_mb(pid, "VmRSS:");
    reset_peak(pid);
    let c0 = cpu_ticks(pid);
    save(&playbook, &text.replacen("at = \"09:00\"", "at = \"09:05\"", 1));
    let (_, (files, ms, _)) = wait_reloaded(&lines);
    let hwm = status_mb(pid, "VmHWM:");
    let cpu = (cpu_ticks(pid) - c0) as f64 / USER_HZ;
    let (tick_cpu, _) = settle(pid, Duration::from_secs(600));
    let scope = drain_applied(&lines);
    println!(
        "playbook edit (every customer changes): files_read={files} reload={ms:.0}ms cpu={cpu:.2}s rss_before={rss0:.1}MB peak={hwm:.1}MB ({:.2}x idle) rss_after={:.1}MB | scheduler applied={scope} cpu after={tick_cpu:.2}s peak_incl={:.1}MB",
        hwm / idle_rss,
        status_mb(pid, "VmRSS:"),
        status_mb(pid, "VmHWM:")
    );
    drop(_stop);
    let _ = child.wait();
}
