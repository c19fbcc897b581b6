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
    pub renderer: Renderer,
    /// The valid plans, counts and every diagnostic (templates' first, then playbooks' and plans').
    pub loaded: plan::Loaded,
}

impl Workspace {
    /// Loads templates then plans; never fails — problems are in `diagnostics()`.
    /// `progress` is called once per plan file read (from worker threads).
    pub fn load(config: &Config, progress: &(dyn Fn() + Sync)) -> Workspace {
        Self::load_with_last_good(config, None, progress).0
    }

    /// [`Workspace::load`] for a reload: broken templates and playbooks keep their version from
    /// `previous`. Also returns those files. (Plans: see [`load_serving`].)
    pub fn load_with_last_good(
        config: &Config,
        previous: Option<&Snapshot>,
        progress: &(dyn Fn() + Sync),
    ) -> (Workspace, Vec<PathBuf>) {
        let (renderer, template_diags, mut kept) = Renderer::load_with_overrides(
            &config.templates_dir,
            Some(&config.plans_dir),
            previous.map(|p| &p.renderer),
        );
        let mut loaded = plan::load_with_last_good(
            &plan::Sources {
                plans_dir: &config.plans_dir,
                playbooks_dir: &config.playbooks_dir,
                templates: renderer.catalog(),
                default_timezone: config.default_timezone,
                default_calendar: &config.calendar,
            },
            previous.map(|p| &p.playbooks),
            progress,
        );
        let mut diags = template_diags;
        diags.append(&mut loaded.diagnostics);
        loaded.diagnostics = diags;
        kept.append(&mut loaded.kept_playbooks);
        (Workspace { renderer, loaded }, kept)
    }

    /// Every problem found, errors and warnings (templates first, then plans by file and line).
    pub fn diagnostics(&self) -> &[Diagnostic] {
        &self.loaded.diagnostics
    }
}

/// What the daemon currently serves: valid plans and compiled templates, swapped whole.
pub struct Snapshot {
    /// The valid customers served.
    pub plans: Plans,
    /// The compiled templates served.
    pub renderer: Renderer,
    /// The playbooks the plans were validated against: the last good versions a reload falls
    /// back to when a playbook file breaks.
    pub playbooks: HashMap<String, plan::Playbook>,
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

/// Loads templates, playbooks and plans; with `previous`, broken files keep its versions.
pub fn load_serving(config: &Config, previous: Option<&Snapshot>) -> Serving {
    let (ws, mut kept) = Workspace::load_with_last_good(config, previous, &|| {});
    let Workspace { renderer, loaded } = ws;
    let plans = match previous {
        Some(p) => {
            let (plans, mut kept_plans) = keep_last_good_plans(loaded.plans, &loaded.diagnostics, &p.plans);
            kept.append(&mut kept_plans);
            plans
        }
        None => loaded.plans,
    };
    Serving {
        snapshot: Snapshot { plans, renderer, playbooks: loaded.playbooks, revision: 0 },
        diagnostics: loaded.diagnostics,
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
