//! Shared by the benchmarks: generated customer plans, cached under target/bench-plans/<N>/.

use std::path::Path;

/// Writes N plans (3 contacts with birthdays, the `standard` playbook, one own `cron` rule each)
/// and the playbook into `dir`, once; later runs reuse them.
pub fn generate(dir: &Path, n: usize) -> std::io::Result<()> {
    let done = dir.join(".complete");
    if done.exists() {
        return Ok(());
    }
    std::fs::create_dir_all(dir.join("plans"))?;
    std::fs::create_dir_all(dir.join("playbooks"))?;
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("config/playbooks/standard.toml"),
        dir.join("playbooks/standard.toml"),
    )?;
    let zones = ["Europe/Berlin", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe", "Europe/London"];
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
        for c in 0..3 {
            s.push_str(&format!(
                "\n[[contact]]\nid = \"p{c}\"\nname = \"Person{c} Nachname{i}\"\ngender = \"{}\"\nemail = \"person{c}.n{i}@kunde{i}.example\"\nbirthday = {}-{:02}-{:02}\ntone = \"{}\"\n{}",
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
    std::fs::write(done, b"")
}
