//! Loading what the daemon serves, at start and on every reload (SIGHUP or a change in the
//! watched directories). Everything is read and validated first; then the new state is swapped
//! in whole. A broken file never takes down what it replaced: a broken template variant or
//! playbook keeps its last good version (see `Renderer::load_keeping`, `plan::load_keeping`),
//! and a broken plan file keeps the customer(s) it last defined validly — unless another file
//! now defines that customer id. Every problem is still reported (log, `/metrics`, `status`).
//! On the first load there is no last good version: a broken plan is left out.

use crate::app::Workspace;
use crate::config::Config;
use crate::diagnostics::Diagnostic;
use crate::dispatch::Snapshot;
use crate::monitor::{PlanHealth, problems};
use crate::plan::Plans;
use chrono::{DateTime, Utc};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// A loaded state, ready to be served.
pub struct Loaded {
    pub snapshot: Snapshot,
    /// Every problem found (errors and warnings).
    pub diagnostics: Vec<Diagnostic>,
    /// What `status` and `/metrics` show about this load.
    pub health: PlanHealth,
}

/// Loads templates, playbooks and plans; with `previous`, broken files keep its versions.
pub fn load(config: &Config, previous: Option<&Snapshot>, now: DateTime<Utc>) -> Loaded {
    let (ws, mut kept) = Workspace::load_keeping(config, previous, &|| {});
    let Workspace { renderer, loaded } = ws;
    let plans = match previous {
        Some(p) => {
            let (plans, mut kept_plans) = keep_last_good_plans(loaded.plans, &loaded.diagnostics, &p.plans);
            kept.append(&mut kept_plans);
            plans
        }
        None => loaded.plans,
    };
    let kept: HashSet<PathBuf> = kept.into_iter().collect();
    let health = PlanHealth {
        customers: plans.len(),
        problems: problems(&loaded.diagnostics, &|f: &Path| kept.contains(f)),
        loaded_at: Some(now),
    };
    Loaded {
        snapshot: Snapshot { plans, renderer, playbooks: loaded.playbooks, revision: 0 },
        diagnostics: loaded.diagnostics,
        health,
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
