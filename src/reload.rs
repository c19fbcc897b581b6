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
