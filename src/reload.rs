//! The reload service: loads what the daemon serves again (plans, playbooks, templates) on
//! request — SIGHUP, a change in the watched directories, or a direct call — and swaps it in
//! whole ([`Served::replace`]). Everything is read and validated first; a broken file keeps its
//! last good version (see `workspace::load_serving`). Every problem is still reported: the
//! log, `/metrics`, `status`. One reload at a time, on a blocking thread, between systemd's
//! `RELOADING=1` and `READY=1`.
//!
//! When the watcher reports that only plan files changed, only those are read and validated
//! (`workspace::reload_plan_files`); the other customers are shared with the plans in force.
//! Anything else (a playbook, a template, SIGHUP, a change the watcher could not name) reads
//! everything.

use crate::clock::SharedClock;
use crate::config::Config;
use crate::diagnostics::Diagnostic;
use crate::health::{Health, PlanHealth};
use crate::metrics::Metrics;
use crate::workspace::{self, Ledger, Served};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// A reload request: why (for the log), and the files that changed when they are known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Why (for the log): "SIGHUP", "files changed".
    pub cause: String,
    /// The changed files; `None`: reload everything.
    pub changed: Option<Vec<PathBuf>>,
}

impl Request {
    /// Reload everything.
    pub fn full(cause: &str) -> Request {
        Request { cause: cause.to_string(), changed: None }
    }

    /// `self` and `other` as one request (everything when either is).
    fn merge(self, other: Request) -> Request {
        let changed = match (self.changed, other.changed) {
            (Some(mut a), Some(b)) => {
                a.extend(b);
                Some(a)
            }
            _ => None,
        };
        let cause = if self.cause == other.cause { self.cause } else { format!("{}, {}", self.cause, other.cause) };
        Request { cause, changed }
    }
}

/// Asks the reload service for a reload.
pub type Requests = mpsc::Sender<Request>;

/// Loads and swaps what the daemon serves.
pub struct Reloader {
    /// The daemon config: where plans, playbooks and templates live.
    pub config: Arc<Config>,
    /// What is served; a reload swaps it.
    pub served: Arc<Served>,
    /// Plan problems for `/readyz` and `status`, and the systemd `RELOADING=1`/`READY=1` notices.
    pub health: Arc<Health>,
    /// Reload results and plan problems for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// "Now", for the time of the last reload.
    pub clock: SharedClock,
    /// Serialises reloads (SIGHUP and the file watcher may fire together), and holds what the
    /// last load found besides the snapshot (for a reload of changed plan files alone).
    pub one_at_a_time: Mutex<Ledger>,
}

impl Reloader {
    /// Re-reads plans, playbooks and templates, validates everything, and serves the result.
    pub async fn reload(self: &Arc<Self>, cause: &str) {
        self.serve(Request::full(cause)).await;
    }

    /// Serves `request`: with changed files that are all plan files, reads just those (see
    /// `workspace::reload_plan_files`); else everything.
    pub async fn serve(self: &Arc<Self>, request: Request) {
        let this = self.clone();
        let done = tokio::task::spawn_blocking(move || {
            let mut ledger = this.one_at_a_time.lock().unwrap_or_else(|p| p.into_inner());
            let Request { cause, changed } = request;
            let systemd = this.health.systemd();
            systemd.reloading(&format!("reloading plans ({cause})"));
            let started = std::time::Instant::now();
            let previous = this.served.current();
            let plan_files = changed.as_deref().and_then(|c| workspace::plan_files_only(&this.config, c));
            let loaded = plan_files
                .and_then(|files| workspace::reload_plan_files(&this.config, &previous, &ledger, &files))
                .unwrap_or_else(|| workspace::load_serving(&this.config, Some(&previous)));
            drop(previous);
            report(&loaded.diagnostics);
            let health = PlanHealth::new(
                loaded.snapshot.plans.len(),
                &loaded.diagnostics,
                &|f| loaded.kept.contains(f),
                this.clock.now(),
            );
            let (files_read, incremental) = (loaded.files_read, loaded.incremental);
            tracing::info!(
                %cause,
                customers = health.customers,
                errors = health.problems.len(),
                files_read,
                scope = if incremental { "changed plan files" } else { "everything" },
                elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
                "plans reloaded"
            );
            this.metrics.reloaded(health.customers, health.problems.len());
            this.metrics.files_read(files_read, incremental);
            this.health.reloaded(health);
            let (snapshot, next) = loaded.into_parts();
            this.served.replace(snapshot);
            *ledger = next;
        })
        .await;
        if let Err(e) = done {
            tracing::error!(error = %e, "reload panicked; the previous plans stay in force");
        }
        // Whatever happened, the reload is over: systemd must not see the service as reloading.
        self.health.systemd().ready(&self.health.status_line());
    }

    /// Serves reload requests until `stop`; requests that queued up meanwhile are served as one.
    pub async fn run(self: Arc<Self>, mut requests: mpsc::Receiver<Request>, stop: CancellationToken) {
        loop {
            let mut request = tokio::select! {
                r = requests.recv() => match r { Some(r) => r, None => return },
                _ = stop.cancelled() => return,
            };
            while let Ok(more) = requests.try_recv() {
                request = request.merge(more);
            }
            tracing::info!(cause = %request.cause, "reloading plans, playbooks and templates");
            self.serve(request).await;
        }
    }
}

/// Problems logged one by one per load; the rest go into one summary line, so 100,000 broken
/// plans do not write 100,000 lines on every reload.
pub const LOGGED_PROBLEMS: usize = 20;

/// Logs plan problems (the daemon keeps serving the valid plans): the first
/// [`LOGGED_PROBLEMS`] one by one, then one summary line counting the rest by message.
pub fn report(diags: &[Diagnostic]) {
    for d in diags.iter().take(LOGGED_PROBLEMS) {
        if d.is_error() {
            tracing::error!(location = %crate::diagnostics::escape_controls(&d.location()), problem = %crate::diagnostics::escape_controls(&d.message), "plan problem; until it is fixed the file's last good version stays in force (none on a first load)");
        } else {
            tracing::warn!(location = %crate::diagnostics::escape_controls(&d.location()), problem = %crate::diagnostics::escape_controls(&d.message), "plan warning");
        }
    }
    let rest = &diags[diags.len().min(LOGGED_PROBLEMS)..];
    if rest.is_empty() {
        return;
    }
    let mut by_message: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for d in rest {
        *by_message.entry(d.message.as_str()).or_default() += 1;
    }
    let mut common: Vec<(&str, usize)> = by_message.into_iter().collect();
    common.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let most: Vec<String> =
        common.iter().take(3).map(|(m, n)| format!("{n} × {}", crate::diagnostics::escape_controls(m))).collect();
    tracing::error!(
        more = rest.len(),
        distinct = common.len(),
        most_common = %most.join("; "),
        "more plan problems not logged one by one; `contactplan check` lists them all"
    );
}
