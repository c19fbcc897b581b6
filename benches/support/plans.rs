//! Generated customer plans for the benchmarks (`load_plans`, `agenda`): N plans with 3
//! contacts with birthdays each (`BENCH_CONTACTS=K`: K of them, 1–4; 4 at 250,000 customers are
//! the 1,000,000 contacts), the `standard` playbook (6 rules) and one override (a monthly
//! `cron`). With `calendars`, every other customer also names a German state's public
//! holidays and a Saturday/Sunday weekend. Cached under the given directory.

#![allow(dead_code)] // each benchmark uses a part of this file

use contactplan::calendar::Settings;
use contactplan::plan::{self, Sources};
use contactplan::render::TemplateCatalog;
use std::path::Path;

/// Writes the plans (once; `.complete` marks a finished directory; `.names-v2` those written
/// since contact names have no digits: older directories are written again).
pub fn generate(dir: &Path, n: usize, calendars: bool) -> std::io::Result<()> {
    let contacts = contacts_per_customer();
    // Which contact count a directory holds (`.contacts-K`; none: 3, written before the option).
    let marker = |k: usize| if k == 3 { dir.join(".names-v2") } else { dir.join(format!(".contacts-{k}")) };
    let done = dir.join(".complete");
    if done.exists() && marker(contacts).exists() && (contacts != 3 || !has_contacts_marker(dir)) {
        return Ok(());
    }
    let _ = std::fs::remove_file(&done);
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(".contacts-") || name == ".names-v2" {
            std::fs::remove_file(entry.path())?;
        }
    }
    if dir.join("plans").exists() {
        std::fs::remove_dir_all(dir.join("plans"))?;
    }
    std::fs::create_dir_all(dir.join("plans"))?;
    std::fs::create_dir_all(dir.join("playbooks"))?;
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("config/playbooks/standard.toml"),
        dir.join("playbooks/standard.toml"),
    )?;
    let zones = ["Europe/Berlin", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe", "Europe/London"];
    let states = ["BW", "BY", "BE", "BB", "HB", "HH", "HE", "MV", "NI", "NW", "RP", "SL", "SN", "ST", "SH", "TH"];
    for i in 0..n {
        let tz = zones[i % zones.len()];
        let lang = if i % 3 == 0 { "en" } else { "de" };
        let mut s = format!(
            "[customer]\nid = \"c{i:06}\"\nname = \"Kunde {i} GmbH & Co. KG\"\nsince = {}-{:02}-{:02}\nowner = \"sales{}@example.com\"\ntimezone = \"{tz}\"\nlanguage = \"{lang}\"\nphase = \"growth\"\nplaybook = \"standard\"\n",
            1990 + i % 35,
            1 + i % 12,
            1 + i % 28,
            i % 40
        );
        if calendars && i % 2 == 0 {
            s.push_str(&format!("region = \"DE-{}\"\nweekend = [\"sat\", \"sun\"]\n", states[i / 2 % states.len()]));
        }
        for c in 0..contacts {
            s.push_str(&format!(
                "\n[[contact]]\nid = \"p{c}\"\nname = \"{} {}\"\ngender = \"{}\"\nemail = \"person{c}.n{i}@kunde{i}.example\"\nbirthday = {}-{:02}-{:02}\ntone = \"{}\"\n{}",
                FIRST_NAMES[c % FIRST_NAMES.len()],
                family_name(i),
                if c % 2 == 0 { "female" } else { "male" },
                1960 + (i + c) % 40,
                1 + (i + c) % 12,
                1 + (i * 7 + c) % 28,
                if c == 1 { "informal" } else { "formal" },
                if c == 0 { "primary = true\n" } else { "" }
            ));
        }
        s.push_str("\n[[occasion]]\nname = \"checkin\"\ncron = \"0 9 1 * *\"\n");
        std::fs::write(dir.join("plans").join(format!("c{i:06}.toml")), s)?;
    }
    std::fs::write(marker(contacts), b"")?;
    std::fs::write(done, b"")
}

/// Given names of the generated contacts (letters only, like the family names).
const FIRST_NAMES: [&str; 4] = ["Anna", "Bernd", "Clara", "Dieter"];

/// Contacts per generated customer: `BENCH_CONTACTS` (1–4), else 3.
pub fn contacts_per_customer() -> usize {
    std::env::var("BENCH_CONTACTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|k| (1..=FIRST_NAMES.len()).contains(k))
        .unwrap_or(3)
}

/// Whether `dir` was written with a contact count other than 3.
fn has_contacts_marker(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().starts_with(".contacts-"))
}

/// A family name of letters only, different for every `i` ("Nachname" + `i` in base 26, a–z):
/// a name with digits cannot be split for certain, and its warning (three per plan, 300,000 at
/// 100,000 plans) would dominate what a load holds in memory.
fn family_name(mut i: usize) -> String {
    let mut letters = Vec::new();
    loop {
        letters.push(b'a' + (i % 26) as u8);
        i /= 26;
        if i == 0 {
            break;
        }
    }
    letters.reverse();
    format!("Nachname{}", String::from_utf8_lossy(&letters))
}

/// The shipped templates' catalog (what plans are validated against).
pub fn catalog() -> TemplateCatalog {
    TemplateCatalog::scan(&Path::new(env!("CARGO_MANIFEST_DIR")).join("templates")).0
}

/// Loads and validates the generated plans in `dir` exactly as `check` and the daemon do
/// (Berlin as the default zone, `calendar` as the daemon's calendar defaults), and checks that
/// all `n` are valid.
pub fn load(dir: &Path, n: usize, catalog: &TemplateCatalog, calendar: &Settings) -> plan::Loaded {
    let loaded = plan::load(
        &Sources {
            plans_dir: &dir.join("plans"),
            playbooks_dir: &dir.join("playbooks"),
            templates: catalog,
            default_timezone: chrono_tz::Europe::Berlin,
            default_calendar: calendar,
        },
        &|| {},
    );
    assert_eq!(loaded.plans.len(), n, "all generated plans are valid: {:?}", loaded.diagnostics.first());
    loaded
}

/// Peak resident set size of this process so far (VmHWM), in KiB.
pub fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(|l| l.split_whitespace().nth(1).unwrap_or("0").parse().unwrap_or(0))
        })
        .unwrap_or(0)
}

/// CPU time (user + system) this process has used so far, in seconds.
pub fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses): utime is the 12th, stime the 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// Runs this benchmark binary `runs` times as `child:N` (a fresh process each, so its peak
/// RSS is its own), prints each line, and prints the median of all but the first run (which
/// may meet a cold page cache) by the ` time=` figure.
pub fn median_of_children(n: usize, runs: usize) {
    let mut lines: Vec<(f64, String)> = Vec::new();
    for i in 0..runs {
        let out = std::process::Command::new(std::env::current_exe().expect("exe"))
            .arg(format!("child:{n}"))
            .output()
            .expect("child");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let secs: f64 = line
            .split(" time=")
            .nth(1)
            .and_then(|t| t.split('s').next())
            .and_then(|t| t.parse().ok())
            .unwrap_or(f64::NAN);
        println!("  run {i}{}: {line}", if i == 0 { " (maybe cold)" } else { "" });
        if i > 0 {
            lines.push((secs, line));
        }
    }
    lines.sort_by(|a, b| a.0.total_cmp(&b.0));
    println!("MEDIAN {}", lines[lines.len() / 2].1);
}
