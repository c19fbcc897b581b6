//! The reload service: loads what the daemon serves again (plans, playbooks, templates) on
//! request — SIGHUP, a change in the watched directories, or a direct call — and swaps it in
//! whole ([`Served::replace`]). Everything is read and validated first; a broken file keeps its
//! last good version (see `workspace::load_serving`). Every problem is still reported: the
//! log, `/metrics`, `status`. One reload at a time, on a blocking thread, between systemd's
//! `RELOADING=1` and `READY=1`.

use crate::clock::SharedClock;
use crate::config::Config;
use crate::diagnostics::Diagnostic;
use crate::health::{Health, PlanHealth};
use crate::metrics::Metrics;
use crate::workspace::{self, Served};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Asks the reload service for a reload; the string says why (for the log).
pub type Requests = mpsc::Sender<String>;

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
    /// Serialises reloads (SIGHUP and the file watcher may fire together).
    pub one_at_a_time: Mutex<()>,
}

impl Reloader {
    /// Re-reads plans, playbooks and templates, validates everything, and serves the result.
    pub async fn reload(self: &Arc<Self>, cause: &str) {
        let this = self.clone();
        let cause = cause.to_string();
        let done = tokio::task::spawn_blocking(move || {
            let _one = this.one_at_a_time.lock().unwrap_or_else(|p| p.into_inner());
            let systemd = this.health.systemd();
            systemd.reloading(&format!("reloading plans ({cause})"));
            let loaded = workspace::load_serving(&this.config, Some(&this.served.current()));
            report(&loaded.diagnostics);
            let health = PlanHealth::new(
                loaded.snapshot.plans.len(),
                &loaded.diagnostics,
                &|f| loaded.kept.contains(f),
                this.clock.now(),
            );
            tracing::info!(%cause, customers = health.customers, errors = health.problems.len(), "plans reloaded");
            this.metrics.reloaded(health.customers, health.problems.len());
            this.health.reloaded(health);
            this.served.replace(loaded.snapshot);
        })
        .await;
        if let Err(e) = done {
            tracing::error!(error = %e, "reload panicked; the previous plans stay in force");
        }
        // Whatever happened, the reload is over: systemd must not see the service as reloading.
        self.health.systemd().ready(&self.health.status_line());
    }

    /// Serves reload requests until `stop`.
    pub async fn run(self: Arc<Self>, mut requests: mpsc::Receiver<String>, stop: CancellationToken) {
        loop {
            let cause = tokio::select! {
                r = requests.recv() => match r { Some(c) => c, None => return },
                _ = stop.cancelled() => return,
            };
            tracing::info!(%cause, "reloading plans, playbooks and templates");
            self.reload(&cause).await;
        }
    }
}

/// Logs plan problems (the daemon keeps serving the valid plans).
pub fn report(diags: &[Diagnostic]) {
    for d in diags {
        if d.is_error() {
            tracing::error!(location = %d.location(), problem = %d.message, "plan problem; until it is fixed the file's last good version stays in force (none on a first load)");
        } else {
            tracing::warn!(location = %d.location(), problem = %d.message, "plan warning");
        }
    }
}
