//! Wiring: config → templates → plans → store → mailer → daemon. `main` only parses the CLI;
//! tests build the same `Application` with an injected clock and their own mailer.

use crate::clock::SharedClock;
use crate::config::Config;
use crate::diagnostics::Diagnostic;
use crate::dispatch::{Daemon, Snapshot};
use crate::mail::Mailer;
use crate::plan::{self, Loaded};
use crate::render::Renderer;
use crate::store::Store;
use std::future::Future;
use std::sync::Arc;
use tokio::sync::watch;

/// Templates and plans as loaded from the configured directories, with every problem found.
pub struct Workspace {
    pub renderer: Renderer,
    pub loaded: Loaded,
}

impl Workspace {
    /// Loads templates then plans; never fails — problems are in `diagnostics()`.
    pub fn load(config: &Config, progress: &(dyn Fn() + Sync)) -> Workspace {
        let (renderer, template_diags) = Renderer::load(&config.templates_dir);
        let mut loaded = plan::load(
            &plan::Sources {
                plans_dir: &config.plans_dir,
                playbooks_dir: &config.playbooks_dir,
                templates: renderer.catalog(),
                default_timezone: config.default_timezone,
                default_calendar: &config.calendar,
            },
            progress,
        );
        let mut diags = template_diags;
        diags.append(&mut loaded.diagnostics);
        loaded.diagnostics = diags;
        Workspace { renderer, loaded }
    }

    pub fn diagnostics(&self) -> &[Diagnostic] {
        &self.loaded.diagnostics
    }

    pub fn into_snapshot(self) -> Snapshot {
        Snapshot { plans: self.loaded.plans, renderer: self.renderer, revision: 0 }
    }
}

/// A daemon ready to run. Cloning shares the daemon (e.g. for a SIGHUP handler).
#[derive(Clone)]
pub struct Application {
    pub daemon: Arc<Daemon>,
}

impl Application {
    /// Builds with the configured transport.
    pub async fn build(config: Config, clock: SharedClock) -> anyhow::Result<Application> {
        let mailer = Mailer::from_config(&config.delivery)?;
        Self::build_with(config, clock, mailer).await
    }

    /// Builds with a given transport (tests, preview).
    pub async fn build_with(config: Config, clock: SharedClock, mailer: Mailer) -> anyhow::Result<Application> {
        let store = Store::connect(&config.database_url).await?;
        let ws = Workspace::load(&config, &|| {});
        report(ws.diagnostics());
        tracing::info!(
            customers = ws.loaded.plans.len(),
            plan_files = ws.loaded.plan_files,
            errors = ws.loaded.error_count(),
            "plans loaded"
        );
        let daemon = Daemon::new(store, mailer, clock, config, ws.into_snapshot());
        Ok(Application { daemon: Arc::new(daemon) })
    }

    /// Re-reads plans and templates and serves the valid ones.
    pub fn reload(&self) {
        let ws = Workspace::load(&self.daemon.config, &|| {});
        report(ws.diagnostics());
        tracing::info!(customers = ws.loaded.plans.len(), errors = ws.loaded.error_count(), "plans reloaded");
        self.daemon.replace(ws.into_snapshot());
    }

    /// Runs until `shutdown` completes, then finishes the message in flight and returns.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let (tx, rx) = watch::channel(false);
        let daemon = self.daemon.clone();
        let worker = tokio::spawn(async move { daemon.run(rx).await });
        shutdown.await;
        tracing::info!("shutdown requested: finishing the messages in flight, releasing the rest");
        let _ = tx.send(true);
        // In-flight sends are bounded by the SMTP timeout; past this bound we exit anyway, and a
        // row left `sending` is taken over by the next start (resent with its Message-ID, or
        // reported for at_most_once).
        let grace = self.daemon.shutdown_grace();
        match tokio::time::timeout(grace, worker).await {
            Ok(joined) => joined?,
            Err(_) => tracing::warn!(?grace, "shutdown grace exceeded; exiting with sends in flight"),
        }
        Ok(())
    }
}

/// Logs plan problems (the daemon keeps serving the valid plans).
fn report(diags: &[Diagnostic]) {
    for d in diags {
        if d.is_error() {
            tracing::error!(location = %d.location(), problem = %d.message, "plan problem; the file is not served until fixed");
        } else {
            tracing::warn!(location = %d.location(), problem = %d.message, "plan warning");
        }
    }
}
