//! Wiring: config → templates → plans → store → mailer → daemon. `main` only parses the CLI;
//! tests build the same `Application` with an injected clock and their own mailer.

use crate::clock::SharedClock;
use crate::config::Config;
use crate::diagnostics::Diagnostic;
use crate::dispatch::{Daemon, Snapshot};
use crate::mail::Mailer;
use crate::plan::{self, Loaded};
use crate::reload;
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
        Self::load_keeping(config, None, progress).0
    }

    /// [`Workspace::load`] for a reload: broken templates and playbooks keep their version from
    /// `previous`. Also returns those files. (Plans: see `reload`.)
    pub fn load_keeping(
        config: &Config,
        previous: Option<&Snapshot>,
        progress: &(dyn Fn() + Sync),
    ) -> (Workspace, Vec<std::path::PathBuf>) {
        let (renderer, template_diags, mut kept) =
            Renderer::load_keeping(&config.templates_dir, previous.map(|p| &p.renderer));
        let mut loaded = plan::load_keeping(
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

    pub fn diagnostics(&self) -> &[Diagnostic] {
        &self.loaded.diagnostics
    }
}

/// A daemon ready to run. Cloning shares the daemon (e.g. for a SIGHUP handler).
#[derive(Clone)]
pub struct Application {
    pub daemon: Arc<Daemon>,
    /// Serialises reloads (SIGHUP and the file watcher may fire together).
    reloading: Arc<std::sync::Mutex<()>>,
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
        let loaded = reload::load(&config, None, clock.now());
        report(&loaded.diagnostics);
        tracing::info!(customers = loaded.health.customers, errors = loaded.health.problems.len(), "plans loaded");
        let daemon = Daemon::new(store, mailer, clock, config, loaded.snapshot);
        daemon.monitor.reloaded(loaded.health);
        Ok(Application { daemon: Arc::new(daemon), reloading: Arc::default() })
    }

    /// Re-reads plans, playbooks and templates, validates everything, and serves the result;
    /// broken files keep their last good version (see `reload`). Tells systemd
    /// `RELOADING=1` … `READY=1`.
    pub async fn reload(&self, cause: &str) {
        let app = self.clone();
        let cause = cause.to_string();
        let done = tokio::task::spawn_blocking(move || {
            let _one_at_a_time = app.reloading.lock().unwrap_or_else(|p| p.into_inner());
            let daemon = &app.daemon;
            daemon.monitor.notifier.reloading(&format!("reloading plans ({cause})"));
            let loaded = reload::load(&daemon.config, Some(&daemon.current()), daemon.clock.now());
            report(&loaded.diagnostics);
            tracing::info!(%cause, customers = loaded.health.customers, errors = loaded.health.problems.len(), "plans reloaded");
            daemon.replace(loaded.snapshot);
            daemon.monitor.reloaded(loaded.health);
            daemon.monitor.notifier.ready(&daemon.monitor.status_line());
        })
        .await;
        if let Err(e) = done {
            tracing::error!(error = %e, "reload panicked; the previous plans stay in force");
        }
    }

    /// Starts the HTTP listener (`/healthz`, `/readyz`, `/metrics`, `/status`) when
    /// `http_bind` is set; returns the bound address.
    pub async fn serve_http(&self) -> anyhow::Result<Option<std::net::SocketAddr>> {
        match self.daemon.config.http_bind {
            None => Ok(None),
            Some(addr) => Ok(Some(crate::http::serve(self.daemon.clone(), addr).await?)),
        }
    }

    /// Watches the plan, playbook and template directories and reloads on change.
    pub fn watch_files(&self) -> anyhow::Result<()> {
        crate::watch::spawn(self.clone())
    }

    /// Runs until `shutdown` completes, then finishes the message in flight and returns.
    /// Tells systemd `READY=1` first (migrations ran and plans are loaded by now).
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let (tx, rx) = watch::channel(false);
        let daemon = self.daemon.clone();
        daemon.monitor.set_ready(true);
        daemon.monitor.notifier.ready(&daemon.monitor.status_line());
        let worker = tokio::spawn(async move { daemon.run(rx).await });
        shutdown.await;
        tracing::info!("shutdown requested: finishing the messages in flight, releasing the rest");
        self.daemon.monitor.set_ready(false);
        self.daemon.monitor.notifier.stopping("finishing the messages in flight");
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
            tracing::error!(location = %d.location(), problem = %d.message, "plan problem; until it is fixed the file's last good version stays in force (none on a first load)");
        } else {
            tracing::warn!(location = %d.location(), problem = %d.message, "plan warning");
        }
    }
}
