//! What the daemon and the CLI work on: the templates and the plans, loaded together, because
//! validating a plan needs to know which templates exist. The layer that has both.
//!
//! - [`Workspace::load`]: templates, playbooks and plans with every diagnostic (`check`,
//!   `agenda`, `preview`, `explain`).
//! - [`load_serving`]: the same for the daemon, where a broken file keeps its last good
//!   version from the previous [`Snapshot`]: a template variant (all its parts), a playbook, or
//!   the customers a plan file last defined validly, unless another file now defines that id.
//!   On the first load there is no last good version: a broken plan is left out.
//! - [`reload_plan_files`]: a reload when only plan files changed: those files are read and
//!   validated against the playbooks and templates in force, and the next plans share every
//!   other customer with the served ones (with the same last-good and duplicate-id rules).
//! - [`Served`]: the snapshot the daemon serves right now, swapped whole on every reload.
//! - [`Changes`]: which customers a snapshot changed against the revision it replaced, so that
//!   the scheduler looks at those alone.

use crate::config::Config;
use crate::diagnostics::Diagnostic;
use crate::plan::{self, Customer, Plans};
use crate::render::Renderer;
use rayon::prelude::*;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use tokio::sync::Notify;

/// Templates and plans as loaded from the configured directories, with every problem found.
pub struct Workspace {
    /// The compiled templates.
    pub renderer: Arc<Renderer>,
    /// The valid plans, counts and every diagnostic (templates' first, then playbooks' and plans').
    pub loaded: plan::Loaded,
    /// How many of `loaded.diagnostics` (at the front) are the templates'.
    pub template_diagnostics: usize,
}

/// Whether `dir` can be listed now.
fn readable(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok()
}

/// A source directory that cannot be read on a reload: its last good state `kept` stays in
/// force, and that is reported.
fn unreadable<T>(dir: &Path, kept: T, what: &str) -> (T, Vec<Diagnostic>, Vec<PathBuf>) {
    let why =
        std::fs::read_dir(dir).err().map_or_else(|| "it changed while it was read".to_string(), |e| e.to_string());
    let d = Diagnostic::whole_file(dir, format!("cannot read directory: {why}; the last good {what} stay in force"))
        .hint("check the directory (a deploy that swaps it by rename, permissions); the next reload reads it again");
    (kept, vec![d], vec![dir.to_path_buf()])
}

impl Workspace {
    /// Loads templates then plans; never fails — problems are in `diagnostics()`.
    /// `progress` is called once per plan file read (from worker threads).
    pub fn load(config: &Config, progress: &(dyn Fn() + Sync)) -> Workspace {
        Self::load_with_last_good(config, None, progress).0
    }

    /// Plan files and playbook files read (templates not counted).
    pub fn files_read(&self) -> usize {
        self.loaded.plan_files + self.loaded.playbook_files
    }

    /// [`Workspace::load`] for a reload: broken templates and playbooks keep their version from
    /// `previous`, and so does a whole templates directory that cannot be read (the plans are
    /// then validated against the templates in force). Also returns the files and directories
    /// whose last good version is kept. (Plans: see [`load_serving`].)
    pub fn load_with_last_good(
        config: &Config,
        previous: Option<&Snapshot>,
        progress: &(dyn Fn() + Sync),
    ) -> (Workspace, Vec<PathBuf>) {
        let dir = &config.templates_dir;
        let (renderer, template_diags, mut kept) = match previous {
            Some(p) if !readable(dir) => unreadable(dir, p.renderer.clone(), "templates"),
            _ => {
                let (r, d, k) =
                    Renderer::load_with_overrides(dir, Some(&config.plans_dir), previous.map(|p| &*p.renderer));
                match previous {
                    // The directory went away while it was read: what was read is not whole.
                    Some(p) if !readable(dir) => unreadable(dir, p.renderer.clone(), "templates"),
                    _ => (Arc::new(r), d, k),
                }
            }
        };
        let mut loaded = plan::load_with_last_good(
            &plan::Sources {
                plans_dir: &config.plans_dir,
                playbooks_dir: &config.playbooks_dir,
                templates: renderer.catalog(),
                default_timezone: config.default_timezone,
                default_calendar: &config.calendar,
            },
            previous.map(|p| &*p.playbooks),
            previous.map(|p| &*p.plans),
            progress,
        );
        let template_diagnostics = template_diags.len();
        let mut diags = template_diags;
        diags.append(&mut loaded.diagnostics);
        loaded.diagnostics = diags;
        kept.append(&mut loaded.kept_playbooks);
        (Workspace { renderer, loaded, template_diagnostics }, kept)
    }

    /// Every problem found: templates' first, then playbooks' and plans'.
    pub fn diagnostics(&self) -> &[Diagnostic] {
        &self.loaded.diagnostics
    }
}

/// What the daemon currently serves: valid plans and compiled templates, swapped whole. The
/// parts are shared, so a reload that keeps one (a directory it cannot read) costs no copy.
pub struct Snapshot {
    /// The valid customers.
    pub plans: Arc<Plans>,
    /// The compiled templates.
    pub renderer: Arc<Renderer>,
    /// The playbooks the plans were validated against: the last good versions a reload falls
    /// back to when a playbook file breaks.
    pub playbooks: Arc<HashMap<String, plan::Playbook>>,
    /// Bumped on every reload so the scheduler re-materialises.
    pub revision: u64,
    /// The customers that differ from the revision this one replaced: all the scheduler has to
    /// reconcile, compare and materialise again when it processed that revision.
    pub changes: Changes,
}

/// Most changed customers a snapshot names one by one; more are [`Changes::All`] (a playbook
/// edit, a checkout of many plans): the scheduler's pass over every customer is then cheaper
/// than one query per customer.
pub const MAX_CHANGED_CUSTOMERS: usize = 1_000;

/// Which customers a snapshot changed against the revision it replaced.
///
/// *Invariant*: with [`Changes::Customers`], every customer id of the snapshot that is not
/// named is the very same `Arc<Customer>` as in revision `since` (the same plan, validated to
/// the same customer), and every id of revision `since` that is not named is still served;
/// removed and added customers are named. [`Served::replace`] keeps the promise: a snapshot
/// whose `since` is not the revision it replaces is served with [`Changes::All`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Changes {
    /// Anything may have changed (the first load, more than [`MAX_CHANGED_CUSTOMERS`]).
    All,
    /// Only these customers, sorted by id, differ from revision `since`.
    Customers {
        /// The revision the snapshot was loaded over.
        since: u64,
        /// Ids of the customers added, removed or changed.
        ids: Arc<[Box<str>]>,
    },
}

impl Changes {
    /// The customers of `next` that differ from `previous` (revision `since`), by a walk over
    /// both id-sorted lists comparing pointers: a customer validated to what was served is
    /// shared with it ([`plan::share_unchanged`]), so an unchanged one is the same `Arc`.
    pub fn between(previous: &Plans, next: &Plans, since: u64) -> Changes {
        let (mut a, mut b) = (previous.customers.iter().peekable(), next.customers.iter().peekable());
        let mut ids: Vec<Box<str>> = Vec::new();
        loop {
            let id = match (a.peek(), b.peek()) {
                (None, None) => break,
                (Some(x), Some(y)) if Arc::ptr_eq(x, y) => {
                    a.next();
                    b.next();
                    continue;
                }
                (Some(x), Some(y)) => match x.id.cmp(&y.id) {
                    std::cmp::Ordering::Less => a.next().map(|c| c.id.clone()),
                    std::cmp::Ordering::Greater => b.next().map(|c| c.id.clone()),
                    std::cmp::Ordering::Equal => {
                        b.next();
                        a.next().map(|c| c.id.clone())
                    }
                },
                (Some(_), None) => a.next().map(|c| c.id.clone()),
                (None, Some(_)) => b.next().map(|c| c.id.clone()),
            };
            ids.extend(id);
            if ids.len() > MAX_CHANGED_CUSTOMERS {
                return Changes::All;
            }
        }
        Changes::Customers { since, ids: ids.into() }
    }

    /// The changed ids, when they are named.
    pub fn customers(&self) -> Option<&[Box<str>]> {
        match self {
            Changes::All => None,
            Changes::Customers { ids, .. } => Some(ids),
        }
    }
}

/// A load ready to be served.
pub struct Serving {
    /// The plans, templates and playbooks to serve (revision 0 until [`Served::replace`] numbers it).
    pub snapshot: Snapshot,
    /// Every problem found (errors and warnings).
    pub diagnostics: Vec<Diagnostic>,
    /// Broken files whose last good version is served.
    pub kept: HashSet<PathBuf>,
    /// What the next reload of plan files alone needs besides the snapshot.
    pub ledger: Ledger,
    /// Plan and playbook files this load read (a full load: all of them; plan files alone:
    /// the changed ones).
    pub files_read: usize,
    /// Whether only the changed plan files were read.
    pub incremental: bool,
}

/// What a load found besides the snapshot, kept by the reloader for the next reload of plan
/// files alone ([`reload_plan_files`]).
#[derive(Debug, Default)]
pub struct Ledger {
    /// Every error of the load (warnings are logged once, when their file is read, and not
    /// kept: 100,000 plans with a warning each would hold hundreds of megabytes), the
    /// templates' first (`template_diagnostics` of them), the rest sorted by file, line and
    /// column.
    pub diagnostics: Vec<Diagnostic>,
    /// How many of `diagnostics` are the templates'.
    pub template_diagnostics: usize,
    /// Broken files whose last good version is served.
    pub kept: HashSet<PathBuf>,
    /// Valid customers left out for a duplicate id (a file sorting first defines it).
    pub duplicates: Vec<Arc<Customer>>,
    /// Broken playbooks without a last good version.
    pub broken_playbooks: Vec<String>,
}

/// Loads templates, playbooks and plans; with `previous`, broken files keep its versions, and a
/// source directory that cannot be read keeps its whole last good state: a reload is
/// all-or-nothing per source, never "the plans are now empty". Customers that validate to
/// what `previous` serves are shared with it rather than held twice.
pub fn load_serving(config: &Config, previous: Option<&Snapshot>) -> Serving {
    let (ws, mut kept) = Workspace::load_with_last_good(config, previous, &|| {});
    let files_read = ws.files_read();
    let Workspace { renderer, loaded, template_diagnostics } = ws;
    let mut diagnostics = loaded.diagnostics;
    let (plans, playbooks) = match previous {
        Some(p) if !readable(&config.plans_dir) || loaded.plans_dir_unreadable => {
            let (plans, mut d, mut k) = unreadable(&config.plans_dir, p.plans.clone(), "plans");
            diagnostics.retain(|x| x.file != config.plans_dir);
            diagnostics.append(&mut d);
            kept.append(&mut k);
            (plans, p.playbooks.clone())
        }
        Some(p) => {
            let (plans, mut kept_plans) = keep_last_good_plans(loaded.plans, &diagnostics, &p.plans);
            kept.append(&mut kept_plans);
            (Arc::new(plans), Arc::new(loaded.playbooks))
        }
        None => (Arc::new(loaded.plans), Arc::new(loaded.playbooks)),
    };
    let kept: HashSet<PathBuf> = kept.into_iter().collect();
    let changes = previous.map_or(Changes::All, |p| Changes::between(&p.plans, &plans, p.revision));
    let ledger = Ledger {
        diagnostics: Vec::new(),
        template_diagnostics,
        kept: HashSet::new(),
        duplicates: loaded.duplicates,
        broken_playbooks: loaded.broken_playbooks,
    };
    Serving {
        snapshot: Snapshot { plans, renderer, playbooks, revision: 0, changes },
        diagnostics,
        kept,
        ledger,
        files_read,
        incremental: false,
    }
}

impl Serving {
    /// The snapshot to serve and the ledger to keep for the next reload (which takes over the
    /// errors of `diagnostics`, and `kept`).
    pub fn into_parts(self) -> (Snapshot, Ledger) {
        let Serving { snapshot, diagnostics, kept, mut ledger, .. } = self;
        let split = ledger.template_diagnostics.min(diagnostics.len());
        ledger.template_diagnostics = diagnostics[..split].iter().filter(|d| d.is_error()).count();
        ledger.diagnostics = diagnostics.into_iter().filter(Diagnostic::is_error).collect();
        ledger.kept = kept;
        (snapshot, ledger)
    }
}

/// `fresh` plus, for each plan file with an error that now yields no customer, the customers
/// `previous` loaded from that file (when their ids are still free). Returns those files.
pub fn keep_last_good_plans(fresh: Plans, diags: &[Diagnostic], previous: &Plans) -> (Plans, Vec<PathBuf>) {
    // Most reloads have no error: then no set of 100,000 files is built beside the plans.
    let mut broken: HashSet<&Path> = diags.iter().filter(|d| d.is_error()).map(|d| d.file.as_path()).collect();
    if broken.is_empty() {
        return (fresh, Vec::new());
    }
    for c in &fresh.customers {
        broken.remove(&*c.source);
    }
    if broken.is_empty() {
        return (fresh, Vec::new());
    }
    let kept: Vec<_> = previous
        .customers
        .iter()
        .filter(|c| broken.contains(&*c.source) && fresh.get(&c.id).is_none())
        .cloned()
        .collect();
    let files: Vec<PathBuf> = kept.iter().map(|c| c.source.to_path_buf()).collect();
    if kept.is_empty() {
        return (fresh, files);
    }
    let mut customers = fresh.customers;
    customers.extend(kept);
    (Plans::shared(customers), files)
}

/// The plan files among `changed` when every path is one (`<plans>/<name>.toml`, not hidden,
/// not a directory), named as the loader names them (`plans_dir` as configured, joined with the
/// file name); `None` when anything else changed (a playbook, a template, a customer's
/// template override, the plans directory itself): that needs a full reload.
///
/// The watcher names files under an absolute form of the directory it watches (notify joins a
/// relative one to the working directory), while `plans_dir` is relative when `--config` was: the
/// two are compared as absolute, lexically normalised paths (without that, every save under a
/// relative `--config` was a full reload).
pub fn plan_files_only(config: &Config, changed: &[PathBuf]) -> Option<BTreeSet<PathBuf>> {
    let absolute = |p: &Path| std::path::absolute(p).ok().map(|a| crate::config::normalize(&a));
    let dir = absolute(&config.plans_dir)?;
    let plan_file = |p: &Path| -> Option<PathBuf> {
        let name = p.file_name()?;
        let in_dir = p.parent() == Some(config.plans_dir.as_path())
            || p.parent().and_then(absolute).as_deref() == Some(dir.as_path());
        let plan = in_dir
            && Path::new(name).extension().is_some_and(|x| x == "toml")
            && name.to_str().is_some_and(|n| !n.starts_with('.'))
            && !p.is_dir();
        plan.then(|| config.plans_dir.join(name))
    };
    if changed.is_empty() {
        return None;
    }
    changed.iter().map(|p| plan_file(p)).collect()
}

/// More changed plan files than this are read by a full reload (a checkout of the whole
/// directory): every file is read anyway, and the full load reads in parallel.
pub const MAX_INCREMENTAL_FILES: usize = 1_000;

/// One changed plan file as read now.
struct Reread {
    file: PathBuf,
    /// The valid customer it defines now.
    customer: Option<Arc<Customer>>,
    /// Its problems now (none when it was removed).
    diagnostics: Vec<Diagnostic>,
    /// Whether it exists (was read).
    exists: bool,
}

/// A reload of the plan files in `changed` alone: each is read and validated against the
/// playbooks and templates `previous` serves, and the next plans are `previous`'s with those
/// files' customers replaced, removed or added; every other customer is shared, not read
/// again. The outcome equals a full reload's when nothing else changed (its warnings: those of
/// the changed files; a full reload reports every file's): a broken file keeps
/// its last good customer (while its id is free), the file whose path sorts first keeps a
/// duplicate id (a removed or renamed file hands the id to the next one), and every other
/// file's problems stay reported. `None` when a full reload is needed instead (the plans
/// directory cannot be read or was not read whole last time, too many files changed).
pub fn reload_plan_files(
    config: &Config,
    previous: &Snapshot,
    ledger: &Ledger,
    changed: &BTreeSet<PathBuf>,
) -> Option<Serving> {
    if changed.len() > MAX_INCREMENTAL_FILES || ledger.kept.contains(&config.plans_dir) || !readable(&config.plans_dir)
    {
        return None;
    }
    let crontabs = plan::CrontabCache::default();
    let ctx = plan::Context {
        playbooks: &previous.playbooks,
        broken: &ledger.broken_playbooks,
        templates: previous.renderer.catalog(),
        default_tz: config.default_timezone,
        default_calendar: &config.calendar,
        crontabs: &crontabs,
        rules: &plan::RuleCache::default(),
    };
    let reread: Vec<Reread> = changed
        .par_iter()
        .map(|file| match std::fs::symlink_metadata(file) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Reread { file: file.clone(), customer: None, diagnostics: Vec::new(), exists: false }
            }
            _ => {
                let (customer, diagnostics) = plan::plan_file(file, &ctx);
                let customer = customer.map(|c| plan::share_unchanged(c, Some(&previous.plans)));
                Reread { file: file.clone(), customer, diagnostics, exists: true }
            }
        })
        .collect();
    // The directory went away while it was read: a full reload reports it.
    if !readable(&config.plans_dir) {
        return None;
    }
    let old = &previous.plans;
    let is_changed = |p: &Path| changed.contains(p);
    // The customer each changed file served until now (a file serves at most one: its valid
    // customer, or its last good one). Plans are usually named by their id; else one pass.
    let mut served_by: HashMap<&Path, &Arc<Customer>> = HashMap::new();
    for file in changed {
        let stem = file.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
        if let Some(c) = old.get_shared(stem).filter(|c| *c.source == **file) {
            served_by.insert(file.as_path(), c);
        }
    }
    if served_by.len() < changed.len() {
        for c in &old.customers {
            if is_changed(&c.source) && !served_by.contains_key(&*c.source) {
                served_by.insert(&c.source, c);
            }
        }
    }
    let was_kept = |c: &Customer| ledger.kept.contains(&*c.source);

    // Every id whose owner may change.
    let mut affected: BTreeSet<Box<str>> = served_by.values().map(|c| c.id.clone()).collect();
    affected.extend(ledger.duplicates.iter().filter(|d| is_changed(&d.source)).map(|d| d.id.clone()));
    affected.extend(reread.iter().filter_map(|r| r.customer.as_ref()).map(|c| c.id.clone()));

    // Owners: among the valid definitions of an id, the file that sorts first.
    let mut next: BTreeMap<Box<str>, Option<Arc<Customer>>> = BTreeMap::new();
    let mut duplicates: Vec<Arc<Customer>> = Vec::new();
    let mut no_owner: Vec<Box<str>> = Vec::new();
    // Unchanged files that lost an id before and own it now: a last good customer they kept
    // under another id is theirs no longer (their file is no longer broken).
    let mut now_owning: HashSet<&Path> = HashSet::new();
    let mut queue: Vec<Box<str>> = affected.iter().cloned().collect();
    while let Some(id) = queue.pop() {
        if next.contains_key(&id) || no_owner.contains(&id) {
            continue;
        }
        let mut candidates: Vec<&Arc<Customer>> = Vec::new();
        if let Some(c) = old.get_shared(&id).filter(|c| !is_changed(&c.source) && !was_kept(c)) {
            candidates.push(c);
        }
        candidates.extend(ledger.duplicates.iter().filter(|d| d.id == id && !is_changed(&d.source)));
        candidates.extend(reread.iter().filter_map(|r| r.customer.as_ref()).filter(|c| c.id == id));
        let Some(owner) = candidates.iter().min_by(|a, b| a.source.cmp(&b.source)).copied() else {
            no_owner.push(id);
            continue;
        };
        for c in &candidates {
            if !Arc::ptr_eq(c, owner) {
                duplicates.push((*c).clone());
            }
        }
        if !is_changed(&owner.source) && ledger.duplicates.iter().any(|d| Arc::ptr_eq(d, owner)) {
            now_owning.insert(&owner.source);
            if let Some(k) = old.customers.iter().find(|c| c.source == owner.source && was_kept(c)) {
                affected.insert(k.id.clone());
                queue.push(k.id.clone());
            }
        }
        next.insert(id, Some(owner.clone()));
    }
    // An id nobody defines validly now: its last good customer stays while its file is broken.
    let owns =
        |file: &Path, c: &Customer| next.get(&c.id).is_some_and(|o| o.as_ref().is_some_and(|o| *o.source == *file));
    let still_broken = |file: &Path| match reread.iter().find(|r| r.file == file) {
        Some(r) => match &r.customer {
            Some(c) => !owns(file, c),
            None => r.exists && r.diagnostics.iter().any(Diagnostic::is_error),
        },
        None => !now_owning.contains(file),
    };
    let mut kept = ledger.kept.clone();
    for id in &affected {
        if let Some(c) = old.get_shared(id).filter(|c| was_kept(c)) {
            kept.remove(&*c.source);
        }
    }
    let last_good: Vec<(Box<str>, Option<Arc<Customer>>)> = no_owner
        .into_iter()
        .map(|id| {
            let c = old.get_shared(&id).filter(|c| still_broken(&c.source)).cloned();
            (id, c)
        })
        .collect();
    for (id, c) in last_good {
        if let Some(c) = &c {
            kept.insert(c.source.to_path_buf());
        }
        next.insert(id, c);
    }

    // The next plans: the served ones with the affected ids replaced, in one ordered merge.
    let mut customers: Vec<Arc<Customer>> = Vec::with_capacity(old.len() + next.len());
    let mut updates = next.into_iter().peekable();
    for c in &old.customers {
        while let Some((_, new)) = updates.next_if(|(id, _)| **id < *c.id) {
            customers.extend(new);
        }
        match updates.next_if(|(id, _)| **id == *c.id) {
            Some((_, new)) => customers.extend(new),
            None => customers.push(c.clone()),
        }
    }
    customers.extend(updates.filter_map(|(_, new)| new));
    let plans = Plans::shared(customers);
    let changed: Vec<Box<str>> = affected
        .iter()
        .filter(|id| match (old.get_shared(id), plans.get_shared(id)) {
            (Some(a), Some(b)) => !Arc::ptr_eq(a, b),
            (None, None) => false,
            _ => true,
        })
        .cloned()
        .collect();
    let changes = if changed.len() > MAX_CHANGED_CUSTOMERS {
        Changes::All
    } else {
        Changes::Customers { since: previous.revision, ids: changed.into() }
    };

    // Problems: the changed files' anew (errors and warnings), duplicate ids anew, every other
    // file's errors as before (the ledger keeps no warnings).
    duplicates
        .extend(ledger.duplicates.iter().filter(|d| !is_changed(&d.source) && !affected.contains(&d.id)).cloned());
    let losers: HashSet<&Path> = ledger.duplicates.iter().chain(duplicates.iter()).map(|d| &*d.source).collect();
    let split = ledger.template_diagnostics.min(ledger.diagnostics.len());
    let mut diagnostics: Vec<Diagnostic> = ledger.diagnostics[..split].to_vec();
    let mut rest: Vec<Diagnostic> = ledger.diagnostics[split..]
        .iter()
        .filter(|d| !(is_changed(&d.file) || d.is_error() && losers.contains(d.file.as_path())))
        .cloned()
        .collect();
    let files_read = reread.iter().filter(|r| r.exists).count();
    for r in reread {
        rest.extend(r.diagnostics);
    }
    rest.extend(plan::duplicate_diagnostics(&plans, &duplicates));
    rest.sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
    diagnostics.append(&mut rest);

    Some(Serving {
        snapshot: Snapshot {
            plans: Arc::new(plans),
            renderer: previous.renderer.clone(),
            playbooks: previous.playbooks.clone(),
            revision: 0,
            changes,
        },
        diagnostics,
        kept,
        ledger: Ledger {
            diagnostics: Vec::new(),
            template_diagnostics: split,
            kept: HashSet::new(),
            duplicates,
            broken_playbooks: ledger.broken_playbooks.clone(),
        },
        files_read,
        incremental: true,
    })
}

/// The snapshot being served, shared by the scheduler (reads) and the reloader (swaps).
pub struct Served {
    current: RwLock<Arc<Snapshot>>,
    /// Notified on every swap (wakes the scheduler to re-materialise).
    changed: Arc<Notify>,
}

impl Served {
    /// Serves `snapshot` (its revision as given).
    pub fn new(snapshot: Snapshot) -> Served {
        Served { current: RwLock::new(Arc::new(snapshot)), changed: Arc::new(Notify::new()) }
    }

    /// The snapshot in force.
    pub fn current(&self) -> Arc<Snapshot> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Serves `snapshot` from now on (with the next revision number) and notifies. Its
    /// changes stand only against the revision it replaces: loaded over another one (a
    /// reload that raced with another swap), it is served with [`Changes::All`].
    pub fn replace(&self, mut snapshot: Snapshot) {
        let mut guard = self.current.write().unwrap_or_else(|p| p.into_inner());
        if matches!(snapshot.changes, Changes::Customers { since, .. } if since != guard.revision) {
            snapshot.changes = Changes::All;
        }
        snapshot.revision = guard.revision + 1;
        *guard = Arc::new(snapshot);
        drop(guard);
        self.changed.notify_one();
    }

    /// Notified whenever the snapshot is replaced.
    pub fn changed(&self) -> &Arc<Notify> {
        &self.changed
    }
}
