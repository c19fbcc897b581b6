//! Reloads of changed plan files alone (issue 15): an edit of one plan among many reads that
//! file only, shares every other customer with the plans in force, and ends in exactly what a
//! full reload from the same state would serve — customers, problems, last good versions and
//! duplicate ids alike.

use crate::ops::{OpsApp, plan};
use contactplan::app::Services;
use contactplan::config::{Config, Environment};
use contactplan::workspace::{self, Ledger, Serving, Snapshot};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `n` plans `c0000` … named by their ids.
fn many(n: usize) -> Vec<(String, String)> {
    (0..n).map(|i| format!("c{i:04}")).map(|id| (id.clone(), plan(&id, &format!("pat@{id}-v1.example"), ""))).collect()
}

fn metric(t: &OpsApp, name: &str) -> Option<f64> {
    let text = t.app.metrics().encode(false, &Default::default());
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// A problem: file, line, column, message.
type Problem = (PathBuf, usize, usize, String);

/// What a reload serves and reports, comparable.
fn outcome(s: &Serving) -> (Vec<String>, Vec<Problem>, BTreeSet<PathBuf>) {
    let customers = s.snapshot.plans.customers.iter().map(|c| format!("{c:?}")).collect();
    let mut diags: Vec<_> = s
        .diagnostics
        .iter()
        .filter(|d| d.is_error())
        .map(|d| (d.file.clone(), d.line, d.column, d.message.clone()))
        .collect();
    diags.sort();
    (customers, diags, s.kept.iter().cloned().collect())
}

/// A workspace driven through `workspace` directly, so that every step's reload of changed
/// files can be compared with a full reload from the same served state.
struct Steps {
    dir: tempfile::TempDir,
    config: Config,
    served: Snapshot,
    ledger: Ledger,
}

impl Steps {
    fn new(plans: &[(&str, &str)]) -> Steps {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("plans")).unwrap();
        std::fs::create_dir_all(root.join("playbooks")).unwrap();
        for (name, text) in plans {
            std::fs::write(root.join("plans").join(format!("{name}.toml")), text).unwrap();
        }
        std::fs::write(
            root.join("contactplan.toml"),
            format!(
                "database_url = \"sqlite://outbox.db\"\ntemplates = \"{}\"\ntimezone = \"Europe/Berlin\"\n[sender]\nemail = \"team@example.com\"\nname = \"Team\"\n[delivery]\nkind = \"maildir\"\npath = \"maildir\"\n",
                crate::helpers::templates_dir().display()
            ),
        )
        .unwrap();
        let config = Config::load(&root.join("contactplan.toml"), &Environment::default()).unwrap();
        let (served, ledger) = workspace::load_serving(&config, None).into_parts();
        Steps { dir, config, served, ledger }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join("plans").join(name)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn remove(&self, name: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::remove_file(&p).unwrap();
        p
    }

    /// Reloads `changed` alone, checks that it equals a full reload from the same state and
    /// that the customers of unchanged files are shared, and serves it.
    /// Returns the warnings reported (the changed files').
    fn reload(&mut self, changed: &[PathBuf], step: &str) -> usize {
        let files: BTreeSet<PathBuf> = workspace::plan_files_only(&self.config, changed).expect("plan files only");
        let incremental = workspace::reload_plan_files(&self.config, &self.served, &self.ledger, &files)
            .expect("a reload of the changed files");
        let full = workspace::load_serving(&self.config, Some(&self.served));
        assert!(incremental.incremental && !full.incremental);
        assert_eq!(incremental.files_read, changed.iter().filter(|p| p.exists()).count(), "{step}");
        assert_eq!(outcome(&incremental), outcome(&full), "{step}: the same as a full reload");
        // The customers the scheduler looks at again: the same either way, and exactly the
        // ids whose customer is not the one served before.
        assert_eq!(incremental.snapshot.changes, full.snapshot.changes, "{step}: the same changed customers");
        let differs = |id: &str| match (self.served.plans.get_shared(id), incremental.snapshot.plans.get_shared(id)) {
            (Some(a), Some(b)) => !Arc::ptr_eq(a, b),
            (a, b) => a.is_some() || b.is_some(),
        };
        let ids: BTreeSet<&str> = self
            .served
            .plans
            .customers
            .iter()
            .chain(&incremental.snapshot.plans.customers)
            .map(|c| &*c.id)
            .filter(|id| differs(id))
            .collect();
        let named = incremental.snapshot.changes.customers().expect("a few customers are named");
        assert_eq!(named.iter().map(|id| &**id).collect::<BTreeSet<_>>(), ids, "{step}: the changed ids");
        let warnings = |s: &Serving, all: bool| -> Vec<String> {
            s.diagnostics
                .iter()
                .filter(|d| !d.is_error() && (all || files.contains(&d.file)))
                .map(|d| format!("{}: {}", d.location(), d.message))
                .collect()
        };
        assert_eq!(warnings(&incremental, true), warnings(&full, false), "{step}: the changed files' warnings");
        for c in &self.served.plans.customers {
            if files.contains(&*c.source) {
                continue;
            }
            if let Some(now) = incremental.snapshot.plans.get_shared(&c.id).filter(|now| now.source == c.source) {
                assert!(Arc::ptr_eq(now, c), "{step}: {} is shared, not read again", c.id);
            }
        }
        let reported = warnings(&incremental, true).len();
        let (served, ledger) = incremental.into_parts();
        self.served = served;
        self.ledger = ledger;
        reported
    }

    fn email(&self, id: &str) -> Option<String> {
        self.served.plans.get(id).map(|c| c.primary_contact().email.to_string())
    }

    fn source(&self, id: &str) -> Option<String> {
        self.served.plans.get(id).map(|c| c.source.file_name().unwrap().to_string_lossy().into_owned())
    }

    fn problems(&self, file: &str) -> Vec<String> {
        self.ledger
            .diagnostics
            .iter()
            .filter(|d| d.is_error() && d.file.file_name().is_some_and(|n| n == file))
            .map(|d| d.message.clone())
            .collect()
    }

    fn kept(&self, file: &str) -> bool {
        self.ledger.kept.contains(&self.path(file))
    }
}

#[test]
fn reloads_of_changed_plan_files_keep_last_good_versions_and_duplicate_ids_like_a_full_reload() {
    let a1 = plan("a", "pat@a-v1.example", "");
    let b1 = plan("b", "pat@b-v1.example", "");
    let m1 = plan("m", "pat@m-v1.example", "");
    let mut s = Steps::new(&[("a", &a1), ("b", &b1), ("m", &m1)]);
    assert_eq!(s.served.plans.len(), 3);

    // A valid edit.
    let p = s.write("a.toml", &plan("a", "pat@a-v2.example", ""));
    s.reload(&[p], "edit");
    assert_eq!(s.email("a").as_deref(), Some("pat@a-v2.example"));

    // The edit breaks the plan: its last good version stays in force and is reported.
    let p = s.write("a.toml", &plan("a", "pat@a-v3.example", "").replace("Europe/Berlin", "Mars/Olympus"));
    s.reload(&[p], "broken");
    assert_eq!(s.email("a").as_deref(), Some("pat@a-v2.example"), "last good version");
    assert!(s.kept("a.toml") && !s.problems("a.toml").is_empty());

    // Still broken, another edit: still the last good version.
    let p = s.write("a.toml", &plan("a", "pat@a-v4.example", "").replace("pat@a-v4.example", "no-address"));
    s.reload(&[p], "still broken");
    assert_eq!(s.email("a").as_deref(), Some("pat@a-v2.example"));

    // A valid new plan with a warning: the warning is reported with it.
    let p = s.write(
        "w.toml",
        &plan("w", "pat@w.example", "")
            .replace("Pat Doe", "Person0 Nachname10")
            .replace("tone = \"formal\"", "gender = \"female\"\ntone = \"formal\""),
    );
    assert!(s.reload(&[p], "warning") > 0, "the new file's warning is reported");
    assert_eq!(s.email("w").as_deref(), Some("pat@w.example"));
    let p = s.remove("w.toml");
    assert_eq!(s.reload(&[p], "warning gone"), 0);

    // A new file that was never valid: not served, reported.
    let p = s.write("n.toml", &plan("n", "nobody", ""));
    s.reload(&[p], "never valid");
    assert_eq!(s.email("n"), None);
    assert!(!s.kept("n.toml") && !s.problems("n.toml").is_empty());

    // A new file sorting after `b.toml` that defines `b`: b.toml keeps the id.
    let p = s.write("z.toml", &plan("b", "pat@b-from-z.example", ""));
    s.reload(&[p], "duplicate after");
    assert_eq!(s.source("b").as_deref(), Some("b.toml"));
    assert!(s.problems("z.toml").iter().any(|m| m.contains("is also used by")), "{:?}", s.problems("z.toml"));

    // A new file sorting first takes the id over; the unchanged b.toml is now the duplicate.
    let p = s.write("aa.toml", &plan("b", "pat@b-from-aa.example", ""));
    s.reload(&[p], "duplicate before");
    assert_eq!(s.source("b").as_deref(), Some("aa.toml"));
    assert!(s.problems("b.toml").iter().any(|m| m.contains("aa.toml")), "{:?}", s.problems("b.toml"));
    assert!(s.problems("z.toml").iter().any(|m| m.contains("aa.toml")), "{:?}", s.problems("z.toml"));

    // Removing it hands the id back to the next file, unchanged b.toml.
    let p = s.remove("aa.toml");
    s.reload(&[p], "owner removed");
    assert_eq!(s.source("b").as_deref(), Some("b.toml"));
    assert!(s.problems("b.toml").is_empty());

    // m.toml changes its id into a duplicate of `b`: it loses, so its file is broken and its
    // last good customer `m` stays in force.
    let p = s.write("m.toml", &plan("b", "pat@m-as-b.example", ""));
    s.reload(&[p], "id changed into a duplicate");
    assert_eq!(s.email("m").as_deref(), Some("pat@m-v1.example"));
    assert!(s.kept("m.toml"));

    // b.toml and z.toml go away: the unchanged m.toml now owns `b`, and its last good `m` ends.
    let (p, q) = (s.remove("b.toml"), s.remove("z.toml"));
    s.reload(&[p, q], "loser becomes owner");
    assert_eq!(s.source("b").as_deref(), Some("m.toml"));
    assert_eq!(s.email("m"), None);
    assert!(!s.kept("m.toml"));

    // The broken plan is fixed, renamed in the same reload (a rename names both paths).
    let from = s.path("a.toml");
    let to = s.write("a-renamed.toml", &plan("a", "pat@a-v5.example", ""));
    std::fs::remove_file(&from).unwrap();
    s.reload(&[from, to], "fixed and renamed");
    assert_eq!(s.email("a").as_deref(), Some("pat@a-v5.example"));
    assert_eq!(s.source("a").as_deref(), Some("a-renamed.toml"));
    assert!(!s.kept("a.toml") && s.problems("a.toml").is_empty());

    // A file that changes its id: the old id goes, the new one comes.
    let p = s.write("a-renamed.toml", &plan("a2", "pat@a2.example", ""));
    s.reload(&[p], "id changed");
    assert_eq!(s.email("a"), None);
    assert_eq!(s.email("a2").as_deref(), Some("pat@a2.example"));

    // Deleted: gone.
    let p = s.remove("a-renamed.toml");
    s.reload(&[p], "deleted");
    assert_eq!(s.email("a2"), None);
    assert_eq!(s.served.plans.len(), 1, "only `b` from m.toml");
}

#[test]
fn only_plan_files_are_reloaded_alone() {
    let s = Steps::new(&[]);
    let plans = s.dir.path().join("plans");
    assert!(workspace::plan_files_only(&s.config, &[plans.join("a.toml"), plans.join("b.toml")]).is_some());
    for other in [
        s.dir.path().join("playbooks/standard.toml"),
        plans.join("a/birthday/en-formal/subject.txt.j2"),
        plans.join("a"),
        plans.clone(),
        plans.join(".hidden.toml"),
    ] {
        assert!(workspace::plan_files_only(&s.config, &[plans.join("a.toml"), other.clone()]).is_none(), "{other:?}");
    }
    assert!(workspace::plan_files_only(&s.config, &[]).is_none(), "nothing named: everything");
}

#[test]
fn a_plan_saved_under_a_relative_config_path_is_reloaded_alone() {
    let s = Steps::new(&[("a", &plan("a", "ann@a.example", ""))]);
    // `--config` given relative to the working directory (`../../tmp/…/contactplan.toml`).
    let cwd = std::env::current_dir().unwrap();
    let up: PathBuf = cwd.components().skip(1).map(|_| "..").collect();
    let relative = up.join(s.dir.path().strip_prefix("/").unwrap()).join("contactplan.toml");
    assert!(relative.is_relative() && relative.exists(), "{relative:?}");
    let config = Config::load(&relative, &Environment::default()).unwrap();
    assert!(config.plans_dir.is_relative());
    // The watcher names the file under the watched directory made absolute (notify joins a
    // relative one to the working directory).
    let event = cwd.join(&config.plans_dir).join("a.toml");
    let files = workspace::plan_files_only(&config, &[event]).expect("one plan file: reloaded alone");
    assert_eq!(files, BTreeSet::from([config.plans_dir.join("a.toml")]), "named as the loader names it");
    let other = cwd.join(config.plans_dir.parent().unwrap()).join("playbooks/standard.toml");
    assert!(workspace::plan_files_only(&config, &[other]).is_none());
}

async fn wait_for(t: &OpsApp, what: &str, done: impl Fn(&OpsApp) -> bool) {
    let start = Instant::now();
    while !done(t) {
        assert!(start.elapsed() < Duration::from_secs(10), "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn saving_one_plan_among_many_reads_that_file_alone() {
    let plans = many(300);
    let refs: Vec<(&str, &str)> = plans.iter().map(|(n, t)| (n.as_str(), t.as_str())).collect();
    let playbook = "[[occasion]]\nname = \"birthday\"\non = \"birthday\"\ntemplate = \"birthday\"\nat = \"09:00\"\n";
    let t = OpsApp::start(&refs, &[("standard", playbook)], None).await;
    assert_eq!(metric(&t, "contactplan_reload_files_read"), Some(301.0), "the start-up load reads everything");
    let before = t.app.current();
    let watching = t.app.start(Services { watcher: true, ..Services::NONE }).await.unwrap();

    // An editor's rename-save of one plan.
    let tmp = t.path("plans/.c0123.toml.swp");
    std::fs::write(&tmp, plan("c0123", "pat@c0123-v2.example", "")).unwrap();
    std::fs::rename(&tmp, t.path("plans/c0123.toml")).unwrap();
    wait_for(&t, "the save is applied", |t| t.served_email("c0123").as_deref() == Some("pat@c0123-v2.example")).await;
    let after = t.app.current();
    assert_eq!(after.revision, before.revision + 1, "a new revision: the scheduler reconciles");
    assert_eq!(metric(&t, "contactplan_reload_files_read"), Some(1.0));
    assert_eq!(metric(&t, "contactplan_plan_reloads_incremental_total"), Some(1.0));
    assert_eq!(after.plans.len(), 300);
    let shared = after.plans.customers.iter().zip(&before.plans.customers).filter(|(a, b)| Arc::ptr_eq(a, b)).count();
    assert_eq!(shared, 299, "every other customer is shared with the plans before");

    // A playbook change reads everything.
    std::fs::write(t.path("playbooks/standard.toml"), format!("{playbook}# edited\n")).unwrap();
    wait_for(&t, "the playbook change reloads", |t| t.app.current().revision > after.revision).await;
    assert_eq!(metric(&t, "contactplan_reload_files_read"), Some(301.0));
    let full = t.app.current();
    // Customers that validate as before are still shared after a full reload.
    assert!(Arc::ptr_eq(full.plans.get_shared("c0001").unwrap(), after.plans.get_shared("c0001").unwrap()));

    // So does SIGHUP's reload (and `Application::reload`).
    t.app.reload("SIGHUP").await;
    assert_eq!(metric(&t, "contactplan_reload_files_read"), Some(301.0));
    assert_eq!(metric(&t, "contactplan_plan_reloads_incremental_total"), Some(1.0));

    // A broken edit through the watcher: last good version, reported, partial.
    std::fs::write(t.path("plans/c0007.toml"), plan("c0007", "broken", "")).unwrap();
    wait_for(&t, "the broken save is seen", |t| t.app.health().plans().problems.len() == 1).await;
    assert_eq!(t.served_email("c0007").as_deref(), Some("pat@c0007-v1.example"));
    let health = t.app.health().plans();
    assert!(health.problems[0].last_good_in_force, "{health:?}");
    assert_eq!(metric(&t, "contactplan_reload_files_read"), Some(1.0));
    assert!(watching.stop().await);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_changed_plan_file_reload_falls_back_to_a_full_one_when_the_plans_directory_is_gone() {
    let t = OpsApp::start(&[("a", &plan("a", "pat@a.example", "")), ("b", &plan("b", "pat@b.example", ""))], &[], None)
        .await;
    let plans = t.path("plans");
    let away = t.path("plans-away");
    std::fs::rename(&plans, &away).unwrap();
    t.app.reload_changed("files changed", vec![plans.join("a.toml")]).await;
    assert_eq!(t.app.current().plans.len(), 2, "the last good plans stay in force");
    let health = t.app.health().plans();
    assert!(health.problems.iter().any(|p| p.last_good_in_force), "{health:?}");
    std::fs::rename(&away, &plans).unwrap();
    std::fs::write(plans.join("a.toml"), plan("a", "pat@a-v2.example", "")).unwrap();
    t.app.reload_changed("files changed", vec![plans.join("a.toml")]).await;
    assert_eq!(t.served_email("a").as_deref(), Some("pat@a-v2.example"));
    assert_eq!(metric(&t, "contactplan_reload_files_read"), Some(2.0), "after that, a full reload");
}

#[test]
fn a_playbook_edit_rebuilds_the_rules_and_keeps_the_rest_shared() {
    let playbook = "[[occasion]]\nname = \"birthday\"\non = \"birthday\"\ntemplate = \"birthday\"\nat = \"09:00\"\n";
    // Each plan uses the playbook and adds the same rule of its own; `c` adds another one.
    let own = |name: &str| {
        format!(
            "\n[[occasion]]\nname = \"{name}\"\non = \"every\"\ncron = \"0 9 1 * *\"\nsend = \"task\"\nto = \"owner\"\ntemplate = \"checkin\"\n"
        )
    };
    let uses = |id: &str, name: &str| {
        plan(id, &format!("pat@{id}.example"), "playbook = \"standard\"").replace(
            "[[occasion]]\nname = \"birthday\"\non = \"birthday\"\ntemplate = \"birthday\"\nat = \"09:00\"\n",
            &own(name),
        )
    };
    let (a, b, c) = (uses("a", "checkin"), uses("b", "checkin"), uses("c", "monthly"));
    let s = {
        let mut s = Steps::new(&[("a", &a), ("b", &b), ("c", &c)]);
        std::fs::write(s.dir.path().join("playbooks/standard.toml"), playbook).unwrap();
        let (served, ledger) = workspace::load_serving(&s.config, None).into_parts();
        (s.served, s.ledger) = (served, ledger);
        s
    };
    assert_eq!(s.served.plans.len(), 3);
    let get = |p: &Snapshot, id: &str| p.plans.get_shared(id).unwrap().clone();
    // Customers with the same rules hold one list between them.
    assert!(Arc::ptr_eq(&get(&s.served, "a").rules, &get(&s.served, "b").rules), "one list for a and b");
    assert!(!Arc::ptr_eq(&get(&s.served, "a").rules, &get(&s.served, "c").rules), "c's own rule differs");
    assert_eq!(get(&s.served, "a").rules.len(), 2);

    std::fs::write(s.dir.path().join("playbooks/standard.toml"), playbook.replace("09:00", "09:05")).unwrap();
    let next = workspace::load_serving(&s.config, Some(&s.served));
    for id in ["a", "b", "c"] {
        let (old, new) = (get(&s.served, id), get(&next.snapshot, id));
        assert!(!Arc::ptr_eq(&old, &new), "{id}: its rules changed");
        assert_eq!(new.rules[0].at.to_string(), "09:05:00");
        assert!(Arc::ptr_eq(&old.profile, &new.profile), "{id}: everything but the rules is shared");
        assert!(Arc::ptr_eq(&old.contacts, &new.contacts), "{id}: the contacts are shared");
    }
    assert!(Arc::ptr_eq(&get(&next.snapshot, "a").rules, &get(&next.snapshot, "b").rules), "still one list");
    assert_eq!(
        next.snapshot.changes.customers().map(|ids| ids.len()),
        Some(3),
        "every customer changed: the scheduler looks at the three"
    );

    // An edit of a customer's own keys keeps its rule list.
    let edited = workspace::load_serving(&s.config, Some(&next.snapshot));
    assert!(Arc::ptr_eq(&get(&edited.snapshot, "a"), &get(&next.snapshot, "a")), "nothing changed: shared whole");
    std::fs::write(s.path("a.toml"), a.replace("pat@a.example", "pat@a-v2.example")).unwrap();
    let edited = workspace::load_serving(&s.config, Some(&next.snapshot));
    let (old, new) = (get(&next.snapshot, "a"), get(&edited.snapshot, "a"));
    assert!(!Arc::ptr_eq(&old.profile, &new.profile) && Arc::ptr_eq(&old.rules, &new.rules), "the rules are shared");
    assert_eq!(edited.snapshot.changes.customers().map(|ids| ids.to_vec()), Some(vec!["a".into()]));
}
