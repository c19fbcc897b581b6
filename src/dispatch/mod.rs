//! The daemon loop: materialise occasions, expire stale ones, claim what is due, deliver,
//! record — then sleep until the next due time, a wake-up (reload), or shutdown.
//!
//! The loop never sleeps longer than [`MAX_SLEEP`]: tokio timers are monotonic and stop during
//! suspend, so it re-reads the clock at least once a minute and aims at stored due times.

mod deliver;
mod materialize;
mod ops;
mod workers;

pub use deliver::{MAX_ATTEMPTS, backoff};
pub use materialize::{CUSTOMERS_PER_PASS_STEP, WATERMARK, new_item};

use crate::clock::SharedClock;
use crate::config::Config;
use crate::mail::Mailer;
use crate::plan::Plans;
use crate::render::Renderer;
use crate::store::{Store, secs};
use chrono::{DateTime, TimeDelta, Utc};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::{Notify, watch};

/// Longest sleep between ticks.
pub const MAX_SLEEP: Duration = Duration::from_secs(60);
/// How long a lease (a claim, or a send in progress) lasts unless renewed. A live sender renews
/// its leases every [`RENEW_LEASES_EVERY`], so only a stopped one's run out: its rows are taken
/// over at most this long (plus a second) after it stopped, within a minute as promised.
pub const LEASE_SECS: i64 = 45;
/// How often a delivering daemon renews its leases: a third of [`LEASE_SECS`], so two renewals
/// in a row may fail (a busy database) before a live sender's lease could end.
pub const RENEW_LEASES_EVERY: Duration = Duration::from_secs(15);
/// Re-materialise at least this often even when nothing changed (the window moves).
pub const REMATERIALIZE_EVERY: TimeDelta = TimeDelta::minutes(10);
/// How often old outbox rows and Maildir files are purged.
pub const RETENTION_EVERY: Duration = Duration::from_secs(3600);

/// What the daemon currently serves: valid plans and compiled templates, swapped whole.
pub struct Snapshot {
    pub plans: Plans,
    pub renderer: Renderer,
    /// The playbooks the plans were validated against: the last good versions a reload falls
    /// back to when a playbook file breaks.
    pub playbooks: std::collections::HashMap<String, crate::plan::Playbook>,
    /// Bumped on every reload so the next tick re-materialises.
    pub revision: u64,
}

impl std::ops::AddAssign for TickReport {
    fn add_assign(&mut self, o: TickReport) {
        self.materialized += o.materialized;
        self.missed += o.missed;
        self.accepted += o.accepted;
        self.retried += o.retried;
        self.failed += o.failed;
        self.suppressed += o.suppressed;
        self.recovered += o.recovered;
        self.unknown += o.unknown;
        self.reported += o.reported;
    }
}

/// Counters of one tick, for logs and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TickReport {
    pub materialized: u64,
    pub missed: u64,
    pub accepted: u64,
    pub retried: u64,
    pub failed: u64,
    pub suppressed: u64,
    pub recovered: u64,
    /// At-most-once rows whose outcome cannot be known.
    pub unknown: u64,
    /// Failed/missed/unknown rows reported to ops this tick.
    pub reported: u64,
}

pub struct Daemon {
    /// The durable outbox.
    pub store: Store,
    /// Where messages go.
    pub mailer: Mailer,
    /// The only source of "now".
    pub clock: SharedClock,
    /// Paths, sender, horizon, batch size.
    pub config: Config,
    /// Current plans and templates; a reload replaces the `Arc`.
    pub snapshot: RwLock<Arc<Snapshot>>,
    /// Identifies this process in leases.
    pub instance: String,
    /// Wakes the loop early (reload, tests advancing the clock).
    pub wake: Arc<Notify>,
    /// Counters, readiness and the systemd watchdog (pinged from this loop's progress).
    pub monitor: Arc<crate::monitor::Monitor>,
    /// When retention last ran (monotonic; it runs at most every [`RETENTION_EVERY`]).
    last_retention: std::sync::Mutex<Option<std::time::Instant>>,
    /// Revision and clock time of the last materialisation pass.
    last_materialized: std::sync::Mutex<Option<(u64, DateTime<Utc>)>>,
}

impl Daemon {
    pub fn new(store: Store, mailer: Mailer, clock: SharedClock, config: Config, snapshot: Snapshot) -> Daemon {
        let instance = format!("{}-{}-{}", hostname(), std::process::id(), clock.now().timestamp_millis());
        Daemon {
            store,
            mailer,
            clock,
            config,
            snapshot: RwLock::new(Arc::new(snapshot)),
            instance,
            wake: Arc::new(Notify::new()),
            monitor: Arc::new(crate::monitor::Monitor::new(crate::notify::Notifier::from_env())),
            last_retention: std::sync::Mutex::new(None),
            last_materialized: std::sync::Mutex::new(None),
        }
    }

    /// How long shutdown waits for sends in flight: the SMTP timeout plus a margin.
    pub fn shutdown_grace(&self) -> Duration {
        match &self.config.delivery {
            crate::config::Delivery::Smtp(s) => s.timeout + Duration::from_secs(5),
            crate::config::Delivery::Maildir { .. } => Duration::from_secs(10),
        }
    }

    pub fn current(&self) -> Arc<Snapshot> {
        self.snapshot.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Serves new plans/templates from the next tick on.
    pub fn replace(&self, mut snapshot: Snapshot) {
        let mut guard = self.snapshot.write().unwrap_or_else(|p| p.into_inner());
        snapshot.revision = guard.revision + 1;
        *guard = Arc::new(snapshot);
        drop(guard);
        self.wake.notify_one();
    }

    /// One pass: recover, materialise, expire, send everything due. Stops claiming when
    /// `stop` turns true; a message already being sent is finished first.
    pub async fn tick(self: &Arc<Self>, stop: &watch::Receiver<bool>) -> anyhow::Result<TickReport> {
        let mut report = TickReport::default();
        let now = self.clock.now();
        let snap = self.current();
        let recovered = self.store.recover_expired_leases().await?;
        report.recovered = recovered.released + recovered.retried + recovered.unknown;
        report.unknown += recovered.unknown;
        if report.recovered > 0 {
            tracing::warn!(
                never_attempted = recovered.released,
                resend = recovered.retried,
                unknown = recovered.unknown,
                "took over rows whose sender stopped mid-delivery (at_least_once: resent with the same Message-ID; at_most_once: reported)"
            );
        }

        let due_for_pass = {
            let last = self.last_materialized.lock().unwrap_or_else(|p| p.into_inner());
            last.is_none_or(|(rev, at)| rev != snap.revision || now - at >= REMATERIALIZE_EVERY || now < at)
        };
        if due_for_pass {
            let m =
                materialize::run(&self.store, &snap.plans, now, self.config.horizon, &self.config.sender.email).await?;
            *self.last_materialized.lock().unwrap_or_else(|p| p.into_inner()) = Some((snap.revision, now));
            report.materialized = m.inserted;
            report.missed += m.missed;
            for kind in &m.missed_kinds {
                self.monitor.missed(kind, 1);
            }
            if m.inserted + m.missed > 0 {
                tracing::info!(new = m.inserted, missed = m.missed, "materialised occasions into the outbox");
            }
        }

        for row in self.store.expire(secs(now)).await? {
            report.missed += 1;
            self.monitor.missed(&row.kind, 1);
            tracing::warn!(key = %row.key, kind = %row.kind, "missed: deadline passed before it could be sent");
        }

        while !*stop.borrow() {
            let now = self.clock.now();
            let batch = self.store.claim(secs(now), self.config.batch_size, &self.instance, LEASE_SECS).await?;
            if batch.is_empty() {
                break;
            }
            self.monitor.beat();
            // The fence counts claims and never goes back (unlike attempts, which a release
            // undoes): fence 1 is the row's first claim, so "due" counts each occasion once.
            for row in batch.iter().filter(|r| r.fence == 1) {
                self.monitor.due(&row.kind);
            }
            report += workers::deliver_batch(self, &snap, batch, stop).await?;
        }
        report.reported = ops::report(self).await?;
        Ok(report)
    }

    /// How long to sleep before the next tick: until the next due row, or until a lease held
    /// by a stopped sender (a crashed or killed process) can be taken over, whichever is first.
    /// Without the second, a restarted daemon with nothing else due would notice such rows only
    /// a full [`MAX_SLEEP`] after their lease ended.
    async fn sleep_for(&self) -> Duration {
        let now = self.clock.now();
        let due = match self.store.next_due().await {
            Ok(Some(due)) => {
                let wait = due - secs(now);
                if wait <= 0 { Duration::from_millis(200) } else { Duration::from_secs(wait as u64).min(MAX_SLEEP) }
            }
            _ => MAX_SLEEP,
        };
        let lease = match self.store.lease_expires_in().await {
            // At least a second: a lease that ended is taken over by the tick that just ran
            // (or the next one), never by spinning.
            Ok(Some(ends_in)) => Duration::from_secs((ends_in + 1).clamp(1, MAX_SLEEP.as_secs() as i64) as u64),
            _ => MAX_SLEEP,
        };
        due.min(lease)
    }

    /// Runs retention when [`RETENTION_EVERY`] has passed; failures are logged and retried
    /// next time (retention never blocks sending).
    async fn retention_if_due(&self) {
        let due = self
            .last_retention
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_none_or(|t| t.elapsed() >= RETENTION_EVERY);
        if !due {
            return;
        }
        *self.last_retention.lock().unwrap_or_else(|p| p.into_inner()) = Some(std::time::Instant::now());
        if let Err(e) = crate::retention::run(self).await {
            tracing::warn!(error = %e, "retention failed; will try again in an hour");
        }
    }

    /// The loop; returns when `stop` turns true.
    pub async fn run(self: &Arc<Self>, mut stop: watch::Receiver<bool>) {
        tracing::info!(instance = %self.instance, transport = %self.mailer.describe(), "daemon running");
        loop {
            if *stop.borrow() {
                break;
            }
            // The watchdog is pinged from here and from delivery progress, never from a timer
            // of its own: a loop stuck anywhere stops pinging and systemd restarts it.
            self.monitor.beat();
            let started = self.clock.now();
            let result = self.tick(&stop).await;
            if let Err(e) = &result {
                tracing::error!(error = %e, "tick failed; retrying shortly");
            }
            self.monitor.tick_finished(started, result.err().map(|e| format!("{e:#}")));
            self.monitor.notifier.status(&self.monitor.status_line());
            self.retention_if_due().await;
            let pause = self.sleep_for().await.min(self.monitor.max_sleep(MAX_SLEEP));
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = self.wake.notified() => {}
                _ = stop.changed() => {}
            }
        }
        tracing::info!("daemon stopped");
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_string()).unwrap_or_else(|_| "host".into())
}
