//! What the daemon and the CLI work on: the templates and the plans, loaded together, because
//! validating a plan needs to know which templates exist. The layer that has both.
//!
//! - [`Workspace::load`]: templates, playbooks and plans with every diagnostic (`check`,
//!   `agenda`, `preview`, `explain`).
//! - [`load_serving`]: the same for the daemon, where a broken file keeps its last good
//!   version from the previous [`Snapshot`]: a template variant (all its parts), a playbook, or
//!   the customers a plan file last defined validly, unless another file now defines that id.
//!   On the first load there is no last good version: a broken plan is left out.
//! - [`Served`]: the snapshot the daemon serves right now, swapped whole on every reload.

use crate::config::Config;
use crate::diagnostics::Diagnostic;
use crate::plan::{self, Plans};
use crate::render::Renderer;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use tokio::sync::Notify;

/// Templates and plans as loaded from the configured directories, with every problem found.
pub struct Workspace {
    /// The compiled templates.
    pub renderer: Arc<Renderer>,
    /// The valid plans, counts and every diagnostic (templates' first, then playbooks' and plans').
    pub loaded: plan::Loaded,
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
            progress,
        );
        let mut diags = template_diags;
        diags.append(&mut loaded.diagnostics);
        loaded.diagnostics = diags;
        kept.append(&mut loaded.kept_playbooks);
        (Workspace { renderer, loaded }, kept)
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
}

/// A load ready to be served.
pub struct Serving {
    /// The plans, templates and playbooks to serve (revision 0 until [`Served::replace`] numbers it).
    pub snapshot: Snapshot,
    /// Every problem found (errors and warnings).
    pub diagnostics: Vec<Diagnostic>,
    /// Broken files whose last good version is served.
    pub kept: HashSet<PathBuf>,
}

/// Loads templates, playbooks and plans; with `previous`, broken files keep its versions, and a
/// source directory that cannot be read keeps its whole last good state: a reload is
/// all-or-nothing per source, never "the plans are now empty".
pub fn load_serving(config: &Config, previous: Option<&Snapshot>) -> Serving {
    let (ws, mut kept) = Workspace::load_with_last_good(config, previous, &|| {});
    let Workspace { renderer, loaded } = ws;
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
    Serving {
        snapshot: Snapshot { plans, renderer, playbooks, revision: 0 },
        diagnostics,
        kept: kept.into_iter().collect(),
    }
}

/// `fresh` plus, for each plan file with an error that now yields no customer, the customers
/// `previous` loaded from that file (when their ids are still free). Returns those files.
pub fn keep_last_good_plans(fresh: Plans, diags: &[Diagnostic], previous: &Plans) -> (Plans, Vec<PathBuf>) {
    let serving: HashSet<&Path> = fresh.customers.iter().map(|c| &*c.source).collect();
    let broken: HashSet<&Path> =
        diags.iter().filter(|d| d.is_error()).map(|d| d.file.as_path()).filter(|f| !serving.contains(f)).collect();
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
    (Plans::new(customers), files)
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

    /// Serves `snapshot` from now on (with the next revision number) and notifies.
    pub fn replace(&self, mut snapshot: Snapshot) {
        let mut guard = self.current.write().unwrap_or_else(|p| p.into_inner());
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
