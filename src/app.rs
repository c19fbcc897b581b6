//! Wiring, in the zero-to-production style: `Application::build` connects the store, loads
//! what is served, and builds the services; `run_until_stopped` runs them until shutdown.
//! `main` only parses the CLI; tests build the same `Application` with an injected clock,
//! their own mailer and an empty [`Edge`].
//!
//! Services, each stopped by one [`CancellationToken`] and awaited through one
//! [`TaskTracker`] (mini-redis style: shutdown passed in, every task stopped and awaited):
//! - the scheduler (`dispatch`): materialise, claim, deliver, report;
//! - the reloader (`reload`): SIGHUP, file changes and [`Application::reload`];
//! - the file watcher (`watch`): inotify on plans, playbooks and templates;
//! - the HTTP listener (`http`): probes, metrics, status;
//! - retention (`retention`): hourly purge of old finished rows and Maildir files.

use crate::clock::SharedClock;
use crate::config::{Config, Environment, Secrets};
use crate::dispatch::{self, Scheduler};
use crate::health::{Health, PlanHealth};
use crate::mail::{Mailer, Transport};
use crate::metrics::Metrics;
use crate::reload::Reloader;
use crate::retention::Retention;
use crate::store::Store;
use crate::systemd::Systemd;
use crate::workspace::{self, Served, Snapshot};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// What the process's surroundings provide, read once at the edge (the CLI) and passed in:
/// nothing below reads the environment, credentials or `/proc` itself.
#[derive(Debug, Clone, Default)]
pub struct Edge {
    /// SMTP password and API token.
    pub secrets: Secrets,
    /// systemd notifications (disabled outside systemd and in tests).
    pub systemd: Systemd,
    /// The host's name, part of this daemon's lease owner id (`host-pid-start`).
    pub hostname: String,
}

impl Edge {
    /// Reads the secrets (environment, systemd credentials, password file), the systemd
    /// notification settings and the host name.
    ///
    /// # Errors
    /// A secret that is present but empty or unreadable (one diagnostic each).
    pub fn from_process(config: &Config, env: &Environment) -> Result<Edge, Vec<crate::diagnostics::Diagnostic>> {
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "host".into());
        Ok(Edge { secrets: Secrets::resolve(config, env)?, systemd: Systemd::from_environment(env), hostname })
    }
}

/// Where the XOAUTH2 token source's events go: `/readyz` (with the reason), the metrics, and
/// through health to the scheduler, which emails ops (`dispatch::Scheduler::tick`).
struct OauthReport {
    health: Arc<Health>,
    metrics: Arc<Metrics>,
}

impl crate::mail::oauth::TokenEvents for OauthReport {
    fn renewed(&self, expires_at: chrono::DateTime<chrono::Utc>) {
        self.health.oauth_renewal(None);
        self.metrics.oauth_token_renewed(expires_at.timestamp());
    }
    fn renewal_failed(&self, reason: &str) {
        self.health.oauth_renewal(Some(reason.to_string()));
        self.metrics.oauth_renewal_failed();
    }
    fn refused(&self, reason: &str) {
        self.health.oauth_refusal(Some(reason.to_string()));
    }
    fn accepted(&self) {
        self.health.oauth_refusal(None);
    }
}

/// Which services [`Application::start`] runs. The reloader always runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Services {
    /// The dispatch loop ([`crate::dispatch::Scheduler::run`]).
    pub scheduler: bool,
    /// The HTTP listener on `http_bind` (`/healthz`, `/readyz`, `/metrics`, `/status`), unless `off`.
    pub http: bool,
    /// The inotify watcher on the plan, playbook and template directories (reloads on change).
    pub watcher: bool,
    /// Hourly retention: purges old finished outbox rows (and old Maildir files when
    /// `maildir_days` is set).
    pub retention: bool,
}

impl Services {
    /// Everything: what `contactplan run` starts.
    pub const ALL: Services = Services { scheduler: true, http: true, watcher: true, retention: true };
    /// Only the reloader (tests add what they need).
    pub const NONE: Services = Services { scheduler: false, http: false, watcher: false, retention: false };
}

/// A daemon ready to run.
pub struct Application {
    config: Arc<Config>,
    clock: SharedClock,
    store: Store,
    served: Arc<Served>,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    scheduler: Arc<Scheduler>,
    reloader: Arc<Reloader>,
    api_token: Option<secrecy::SecretString>,
    /// Where reload requests go (SIGHUP, the watcher); [`Application::reload_requests`].
    reload_tx: crate::reload::Requests,
    /// Taken by the reloader service when it starts.
    reload_rx: Mutex<Option<mpsc::Receiver<crate::reload::Request>>>,
}

/// Running services; [`Running::stop`] stops and awaits them all.
pub struct Running {
    stop: CancellationToken,
    tracker: TaskTracker,
    health: Arc<Health>,
    grace: Duration,
    http_addr: Option<SocketAddr>,
}

impl Application {
    /// Builds with the configured transport.
    ///
    /// # Errors
    /// The database cannot be opened or migrated, or the transport cannot be set up.
    pub async fn build(config: Config, clock: SharedClock, edge: Edge) -> anyhow::Result<Application> {
        let credentials = crate::mail::Credentials {
            password: edge.secrets.smtp_password.clone(),
            oauth_client_secret: edge.secrets.oauth_client_secret.clone(),
        };
        let mailer = Mailer::with_credentials(&config.delivery, credentials, clock.clone())?;
        Self::build_with(config, clock, edge, mailer).await
    }

    /// Builds with a given transport (tests, benchmarks).
    ///
    /// # Errors
    /// The database cannot be opened or migrated.
    pub async fn build_with(
        config: Config,
        clock: SharedClock,
        edge: Edge,
        mailer: Mailer,
    ) -> anyhow::Result<Application> {
        let store = Store::connect(&config.database_url).await?;
        let loaded = workspace::load_serving(&config, None);
        crate::reload::report(&loaded.diagnostics);
        let plan_health = PlanHealth::new(
            loaded.snapshot.plans.len(),
            &loaded.diagnostics,
            &|f| loaded.kept.contains(f),
            clock.now(),
        );
        tracing::info!(customers = plan_health.customers, errors = plan_health.problems.len(), "plans loaded");
        let health = Arc::new(Health::new(edge.systemd));
        let metrics = Arc::new(Metrics::new());
        metrics.reloaded(plan_health.customers, plan_health.problems.len());
        metrics.files_read(loaded.files_read, false);
        health.reloaded(plan_health);
        if let Some(source) = mailer.oauth() {
            source.observe(Arc::new(OauthReport { health: health.clone(), metrics: metrics.clone() }));
        }
        let (snapshot, ledger) = loaded.into_parts();
        let served = Arc::new(Served::new(snapshot));
        let config = Arc::new(config);
        let instance = format!("{}-{}-{}", edge.hostname, std::process::id(), clock.now().timestamp_millis());
        let scheduler = Arc::new(Scheduler::new(dispatch::Parts {
            store: store.clone(),
            mailer,
            clock: clock.clone(),
            served: served.clone(),
            settings: dispatch::Settings::from_config(&config),
            instance,
            metrics: metrics.clone(),
            health: health.clone(),
        }));
        let reloader = Arc::new(Reloader {
            config: config.clone(),
            served: served.clone(),
            health: health.clone(),
            metrics: metrics.clone(),
            clock: clock.clone(),
            one_at_a_time: Mutex::new(ledger),
        });
        let (reload_tx, reload_rx) = mpsc::channel(4);
        Ok(Application {
            config,
            clock,
            store,
            served,
            health,
            metrics,
            scheduler,
            reloader,
            api_token: edge.secrets.api_token,
            reload_tx,
            reload_rx: Mutex::new(Some(reload_rx)),
        })
    }

    /// The scheduler (tests drive single ticks with it).
    pub fn scheduler(&self) -> &Arc<Scheduler> {
        &self.scheduler
    }

    /// The outbox.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Readiness, the last tick and plan problems; the systemd notifier.
    pub fn health(&self) -> &Arc<Health> {
        &self.health
    }

    /// The counters and histograms `/metrics` shows.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The daemon config it was built from.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The plans and templates being served.
    pub fn current(&self) -> Arc<Snapshot> {
        self.served.current()
    }

    /// Re-reads plans, playbooks and templates now (see `reload`).
    pub async fn reload(&self, cause: &str) {
        self.reloader.reload(cause).await;
    }

    /// Reloads after a change of the files `changed` (as the file watcher does): only those
    /// are read when they are all plan files, else everything (see `reload`).
    pub async fn reload_changed(&self, cause: &str, changed: Vec<std::path::PathBuf>) {
        self.reloader.serve(crate::reload::Request { cause: cause.to_string(), changed: Some(changed) }).await;
    }

    /// Where to ask for a reload (SIGHUP handler); served while the reloader service runs.
    pub fn reload_requests(&self) -> crate::reload::Requests {
        self.reload_tx.clone()
    }

    /// Starts `which` services (the reloader always, once per application). With the
    /// scheduler, the daemon is ready from then on (`/readyz`, systemd `READY=1`).
    ///
    /// # Errors
    /// The HTTP listener cannot bind, or the file watcher cannot be set up; nothing is left
    /// running then.
    pub async fn start(&self, which: Services) -> anyhow::Result<Running> {
        let stop = CancellationToken::new();
        let tracker = TaskTracker::new();
        let running = |http_addr| Running {
            stop: stop.clone(),
            tracker: tracker.clone(),
            health: self.health.clone(),
            grace: self.scheduler.shutdown_grace(),
            http_addr,
        };
        // Set up everything that can fail before spawning anything.
        let http = match (which.http, self.config.http_bind) {
            (true, Some(addr)) => Some(crate::http::bind(addr).await?),
            _ => None,
        };
        let http_addr = http.as_ref().map(|l| l.local_addr()).transpose()?;
        let watcher = if which.watcher {
            let dirs = crate::watch::Dirs {
                plans: self.config.plans_dir.clone(),
                playbooks: self.config.playbooks_dir.clone(),
                templates: self.config.templates_dir.clone(),
            };
            Some(crate::watch::Watcher::start(&dirs, self.reload_tx.clone())?)
        } else {
            None
        };
        if let Some(rx) = self.reload_rx.lock().unwrap_or_else(|p| p.into_inner()).take() {
            tracker.spawn(self.reloader.clone().run(rx, stop.clone()));
        }
        if let Some(listener) = http {
            let router = crate::http::ops_router(crate::http::Ops {
                store: self.store.clone(),
                clock: self.clock.clone(),
                health: self.health.clone(),
                metrics: self.metrics.clone(),
                api_token: self.api_token.clone(),
                instance: self.scheduler.instance().into(),
                served: self.served.clone(),
                orders_stored: {
                    let scheduler = self.scheduler.clone();
                    Arc::new(move || scheduler.wake())
                },
            });
            tracker.spawn(crate::http::serve(listener, router, self.config.http_limits, stop.clone(), tracker.clone()));
        }
        if let Some(w) = watcher {
            tracker.spawn(w.run(stop.clone()));
        }
        if which.retention {
            let retention = Retention {
                store: self.store.clone(),
                clock: self.clock.clone(),
                policy: self.config.retention,
                maildir: match &self.config.delivery {
                    Transport::Maildir { path } => Some(path.clone()),
                    Transport::Smtp(_) => None,
                },
            };
            tracker.spawn(retention.run(stop.clone()));
        }
        if which.scheduler {
            tracker.spawn(self.scheduler.clone().run(stop.clone()));
            // Migrations ran and plans are loaded (in `build`); the loop runs from now on.
            self.health.set_ready(true);
            self.health.systemd().ready(&self.health.status_line());
        }
        Ok(running(http_addr))
    }

    /// Runs every service until `shutdown` completes, then stops them: the scheduler finishes
    /// the messages in flight (bounded by the SMTP timeout), the rest stop at once.
    ///
    /// # Errors
    /// A service could not start (see [`Application::start`]).
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let running = self.start(Services::ALL).await?;
        shutdown.await;
        tracing::info!("shutdown requested: finishing the messages in flight, releasing the rest");
        running.stop().await;
        Ok(())
    }
}

impl Running {
    /// The HTTP listener's bound address, when it runs.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// Stops every service and waits for them (at most the shutdown grace: in-flight sends are
    /// bounded by the SMTP timeout; a row left `sending` past it is taken over by the next start,
    /// resent with its Message-ID or reported for at_most_once). Returns whether all stopped.
    pub async fn stop(&self) -> bool {
        self.health.set_ready(false);
        self.health.systemd().stopping("finishing the messages in flight");
        self.stop.cancel();
        self.tracker.close();
        match tokio::time::timeout(self.grace, self.tracker.wait()).await {
            Ok(()) => true,
            Err(_) => {
                tracing::warn!(grace = ?self.grace, "shutdown grace exceeded; exiting with sends in flight");
                false
            }
        }
    }

    /// Tasks still running (0 once [`Running::stop`] returned true).
    pub fn tasks(&self) -> usize {
        self.tracker.len()
    }
}
