//! Where a reload's memory goes, counted by a wrapping global allocator (live heap bytes and
//! their peak; independent of the machine's load, unlike CPU figures): N generated plans
//! (default 100,000; the `load_plans` ones) loaded as the daemon loads them, then a full reload
//! with nothing changed (SIGHUP) and a reload after a playbook edit that changes every
//! customer's rules, each over the served plans. Prints the sizes of the model's structs, the
//! heap the plans hold, and per reload the peak above it and what the new plans hold beside the
//! served ones until the swap, and the process's CPU time for each load (all threads).
//!
//!     cargo bench --bench reload_heap             # 100,000 plans
//!     cargo bench --bench reload_heap -- 20000

#[path = "support/plans.rs"]
mod support;

use contactplan::config::{Config, Environment};
use contactplan::workspace;
use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// mimalloc (as the daemon) counting the bytes asked for.
struct Counting;
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static M: mimalloc::MiMalloc = mimalloc::MiMalloc;
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let n = LIVE.fetch_add(l.size(), Relaxed) + l.size();
        PEAK.fetch_max(n, Relaxed);
        unsafe { M.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size(), Relaxed);
        unsafe { M.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        if new > l.size() {
            let n = LIVE.fetch_add(new - l.size(), Relaxed) + new - l.size();
            PEAK.fetch_max(n, Relaxed);
        } else {
            LIVE.fetch_sub(l.size() - new, Relaxed);
        }
        unsafe { M.realloc(p, l, new) }
    }
}
#[global_allocator]
static G: Counting = Counting;

fn mb(n: usize) -> f64 {
    n as f64 / 1e6
}

fn main() {
    let n: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(100_000);
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let cache = root.join(format!("target/bench-plans/{n}"));
    support::generate(&cache, n, false).unwrap();
    let dir = tempfile::tempdir_in(root.join("target")).unwrap();
    for sub in ["plans", "playbooks"] {
        std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        for e in std::fs::read_dir(cache.join(sub)).unwrap() {
            let e = e.unwrap();
            std::fs::hard_link(e.path(), dir.path().join(sub).join(e.file_name())).unwrap();
        }
    }
    std::fs::write(
        dir.path().join("contactplan.toml"),
        format!(
            "database_url = \"sqlite://outbox.db\"\nplans = \"plans\"\nplaybooks = \"playbooks\"\ntemplates = \"{}\"\ntimezone = \"Europe/Berlin\"\n[sender]\nemail = \"team@example.com\"\nname = \"Team\"\n[delivery]\nkind = \"maildir\"\npath = \"maildir\"\n",
            root.join("templates").display()
        ),
    )
    .unwrap();
    let config = Config::load(&dir.path().join("contactplan.toml"), &Environment::default()).unwrap();
    println!(
        "sizes: Customer={} Contact={} Rule={} Settings={}",
        size_of::<contactplan::plan::Customer>(),
        size_of::<contactplan::plan::Contact>(),
        size_of::<contactplan::plan::Rule>(),
        size_of::<contactplan::calendar::Settings>()
    );
    let base = LIVE.load(Relaxed);
    let cpu = support::cpu_seconds();
    let (snap, ledger) = workspace::load_serving(&config, None).into_parts();
    let idle = LIVE.load(Relaxed);
    println!(
        "first load: cpu={:.2}s live {:.1} MB ({:.0} B/customer), peak {:.1} MB",
        support::cpu_seconds() - cpu,
        mb(idle - base),
        (idle - base) as f64 / n as f64,
        mb(PEAK.load(Relaxed) - base)
    );
    drop(ledger);
    for (what, edit) in [("sighup", false), ("sighup", false), ("sighup", false), ("playbook edit", true)] {
        if edit {
            let p = dir.path().join("playbooks/standard.toml");
            let t = std::fs::read_to_string(&p).unwrap();
            // A hard link to the cache: a new file, not a write through the link.
            std::fs::remove_file(&p).unwrap();
            std::fs::write(&p, t.replacen("at = \"09:00\"", "at = \"09:05\"", 1)).unwrap();
        }
        let before = LIVE.load(Relaxed);
        PEAK.store(before, Relaxed);
        let cpu = support::cpu_seconds();
        let next = workspace::load_serving(&config, Some(&snap));
        let cpu = support::cpu_seconds() - cpu;
        let after = LIVE.load(Relaxed);
        println!(
            "{what}: cpu={cpu:.2}s peak +{:.1} MB ({:.0} B/customer), held after the load +{:.1} MB ({:.0} B/customer)",
            mb(PEAK.load(Relaxed) - before),
            (PEAK.load(Relaxed) - before) as f64 / n as f64,
            mb(after - before),
            (after - before) as f64 / n as f64
        );
        drop(next);
    }
}
