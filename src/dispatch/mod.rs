//! The scheduler: materialise occasions, expire stale ones, claim what is due, deliver,
//! record — then sleep until the next due time, a reload, or shutdown.
//!
//! The loop never sleeps longer than [`MAX_SLEEP`]: tokio timers are monotonic and stop during
//! suspend, so it re-reads the clock at least once a minute and aims at stored due times.
//! It owns only what it needs (store, mailer, clock, the served snapshot, its settings) and
//! reports to `health` and `metrics`; the other services (reload, file watcher, HTTP,
//! retention) run beside it, wired in `app.rs`.

mod call_instead;
mod capacity;
mod deliver;
mod event_log;
pub mod handover;
mod materialize;
pub mod milestones;
pub mod moments;
mod notice;
mod ops;
pub mod reconcile;
pub mod relay;
mod workers;

pub use deliver::{MAX_ATTEMPTS, backoff};
pub use materialize::{CUSTOMERS_PER_PASS_STEP, WATERMARK, event_item, new_item};

use crate::clock::SharedClock;
use crate::config::{Config, Sender};
use crate::health::Health;
use crate::mail::Mailer;
use crate::metrics::Metrics;
use crate::plan::Email;
use crate::store::{Store, secs};
use crate::workspace::{Changes, Served, Snapshot};
use chrono::{DateTime, TimeDelta, Utc};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Longest sleep between ticks.
pub const MAX_SLEEP: Duration = Duration::from_secs(60);
/// A spent budget that reopens within this many milliseconds is waited for inside the tick.
const SHORT_WAIT_MS: i64 = 2000;
/// Under a per-second cap, a claimed row is not started later than this many milliseconds
/// before the second it counts in ends (a message in flight then, and a session's row started
/// early, still land in that second).
const SEND_MARGIN_MS: i64 = 20;
/// Re-materialise at least this often even when nothing changed (the window moves).
pub const REMATERIALIZE_EVERY: TimeDelta = TimeDelta::minutes(10);

/// How long the loop waits after `failures` failed ticks in a row: 1 s, 2 s, 4 s … at most 30 s,
/// so a storage fault (a full disk, a database that is restarting) is retried promptly but
/// not five times a second.
pub fn retry_pause(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.clamp(1, 6).saturating_sub(1)).min(Duration::from_secs(30))
}

/// The outbox the daemon opened is gone: its SQLite file was deleted or replaced. The
/// scheduler then halts (sends nothing, writes nothing) until the file is back or the daemon is
/// restarted by ops: see [`Scheduler::run`].
#[derive(Debug, thiserror::Error)]
#[error(
    "{0}; sending is halted (nothing is written to the old file); restore the file, or restart the daemon to start over with the new one"
)]
pub struct OutboxGone(pub String);

/// Counters of one tick, for logs and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TickReport {
    /// Rows newly written into the outbox as `pending`.
    pub materialized: u64,
    /// Order milestone rows written (pending, or suppressed under `on_multiple = "highest"`).
    pub milestones: u64,
    /// Customer changes recorded at this tick's plan revision (handovers, owner and phase
    /// changes; 0 when another daemon recorded them first).
    pub changes: u64,
    /// Handover, owner-change and phase-change rows written.
    pub handovers: u64,
    /// Rows of custom events, quiet spells (inactivity) and ends written.
    pub moments: u64,
    /// Departure tasks written (a contact's address refused as unknown).
    pub departures: u64,
    /// Rows that became `missed`: written as missed (due while no daemon ran) or expired.
    pub missed: u64,
    /// Messages the server (or the Maildir) accepted.
    pub accepted: u64,
    /// Sends that failed transiently and were put back as `retry`.
    pub retried: u64,
    /// Rows that failed permanently: a 5xx reply, [`MAX_ATTEMPTS`] reached, or a message that
    /// could not be built.
    pub failed: u64,
    /// Rows suppressed because the plans no longer produce them (customer, rule, contact or
    /// occasion changed or removed), at reconciliation or just before sending.
    pub suppressed: u64,
    /// Open rows re-timed to the current plans (send time, deadline, occasion date or years
    /// changed).
    pub retimed: u64,
    /// Rows the plans had suppressed and produce again (back to `pending`).
    pub revived: u64,
    /// Rows taken over from a sender whose lease expired (released, resent or marked `unknown`).
    pub recovered: u64,
    /// At-most-once rows whose outcome cannot be known.
    pub unknown: u64,
    /// Failed/missed/unknown rows reported to ops this tick.
    pub reported: u64,
    /// Claimed rows given back unsent, to be claimed again: the second their claim counted in
    /// under `max_per_second` ended before they could start, a quota pause, or shutdown.
    pub given_back: u64,
    /// "Call instead" digests the relay accepted this tick (one per salesperson with rows
    /// announced as not fitting under the relay's limits).
    pub call_digests: u64,
}

impl std::ops::AddAssign for TickReport {
    fn add_assign(&mut self, o: TickReport) {
        self.materialized += o.materialized;
        self.milestones += o.milestones;
        self.departures += o.departures;
        self.missed += o.missed;
        self.accepted += o.accepted;
        self.retried += o.retried;
        self.failed += o.failed;
        self.suppressed += o.suppressed;
        self.retimed += o.retimed;
        self.revived += o.revived;
        self.given_back += o.given_back;
        self.recovered += o.recovered;
        self.unknown += o.unknown;
        self.reported += o.reported;
        self.call_digests += o.call_digests;
    }
}

/// What the scheduler takes from the daemon config.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How far ahead occasions are written into the outbox.
    pub horizon: TimeDelta,
    /// Largest number of rows claimed in one batch.
    pub batch_size: u32,
    /// The From: of every message.
    pub sender: Sender,
    /// Where failed, missed and unknown-outcome reports go; `None`: the log is the report.
    pub ops_email: Option<Email>,
    /// Language of the ops report.
    pub ops_language: crate::plan::Language,
    /// How long a claim or a send in progress stays locked without renewal (on the database
    /// clock); renewed every [`Settings::lease_renewal`] while this daemon delivers.
    pub lease: Duration,
    /// How often leases are renewed (a third of `lease`).
    pub lease_renewal: Duration,
    /// How long shutdown waits for sends in flight: the SMTP timeout plus a margin.
    pub shutdown_grace: Duration,
    /// `[delivery] max_per_*`: the relay's caps, for all daemons on the database together.
    pub budget: crate::store::Budget,
}

impl Settings {
    /// From the daemon config. The shutdown grace is the SMTP timeout plus 5 s (10 s for a
    /// Maildir).
    pub fn from_config(config: &Config) -> Settings {
        Settings {
            horizon: config.horizon,
            batch_size: config.batch_size,
            sender: config.sender.clone(),
            ops_email: config.ops_email.clone(),
            ops_language: config.ops_language,
            lease: config.lease,
            lease_renewal: config.lease_renewal(),
            shutdown_grace: match &config.delivery {
                crate::mail::Transport::Smtp(s) => s.timeout + Duration::from_secs(5),
                crate::mail::Transport::Maildir { .. } => Duration::from_secs(10),
            },
            budget: crate::store::Budget {
                per_second: config.relay_limits.per_second,
                per_minute: config.relay_limits.per_minute,
                per_hour: config.relay_limits.per_hour,
                per_day: config.relay_limits.per_day,
            },
        }
    }

    /// The lease in whole seconds, as the store takes it.
    fn lease_secs(&self) -> i64 {
        self.lease.as_secs() as i64
    }
}

/// The dispatch loop and everything it owns.
pub struct Scheduler {
    /// The durable outbox.
    store: Store,
    /// Where messages go.
    mailer: Mailer,
    /// The only source of "now".
    clock: SharedClock,
    /// Current plans and templates (a reload swaps them).
    served: Arc<Served>,
    settings: Settings,
    /// Identifies this process in leases (`host-pid-start`).
    instance: String,
    metrics: Arc<Metrics>,
    /// Readiness, last tick and the systemd watchdog (pinged from this loop's progress).
    health: Arc<Health>,
    /// The last plan revision processed whole, and the last pass over every customer.
    processed: Mutex<Processed>,
    /// Wakes the loop before its sleep ends ([`Scheduler::wake`]).
    wake: tokio::sync::Notify,
    /// The relay's limits: caps, adaptive rate and sessions, pauses.
    relay: relay::Relay,
    /// Nothing can be claimed before this (a spent budget, a pause): the loop sleeps until then
    /// even when rows are due.
    blocked_until: Mutex<Option<tokio::time::Instant>>,
    /// XOAUTH2: the ops notice about the current token problem.
    oauth_notice: Mutex<OauthNotice>,
}

/// The ops notice about an OAuth token problem: one per episode (from the problem's start to
/// its end), attempted again every ten minutes while it could not be sent.
#[derive(Debug, Default)]
struct OauthNotice {
    /// Since when a problem is going on (names the notice, so each episode's has its own
    /// Message-ID).
    since: Option<DateTime<Utc>>,
    /// The notice was accepted by the transport.
    sent: bool,
    /// The last attempt (daemon clock).
    tried_at: Option<DateTime<Utc>>,
}

/// What the scheduler has done with the served plans.
#[derive(Debug, Default, Clone, Copy)]
struct Processed {
    /// The revision whose reconciliation, customer-change detection and materialisation all
    /// finished; `None` before the first and while one is under way (so that a failed tick
    /// makes the next one look at every customer).
    revision: Option<u64>,
    /// When every customer was last materialised (clock time).
    full_pass_at: Option<DateTime<Utc>>,
}

/// Which customers a new plan revision makes the scheduler look at again.
enum Scope {
    /// Every customer: the first revision, one after a revision this scheduler did not process
    /// whole (skipped, or a failed tick), or one that changed too many to name.
    All,
    /// Only the customers the revision changed (ids; those no longer served included).
    Changed(Arc<[Box<str>]>),
}

impl Scope {
    /// The `scope` label and the log's word.
    fn code(&self) -> &'static str {
        match self {
            Scope::All => "all",
            Scope::Changed(_) => "changed",
        }
    }
}

/// What a [`Scheduler`] is built from.
pub struct Parts {
    /// The outbox.
    pub store: Store,
    /// Where messages go.
    pub mailer: Mailer,
    /// The only source of "now".
    pub clock: SharedClock,
    /// The served plans and templates (a reload swaps them in).
    pub served: Arc<Served>,
    /// What the loop takes from the config.
    pub settings: Settings,
    /// This process's lease owner id: hostname, process id and start time in Unix milliseconds
    /// (`host-pid-millis`), so a restarted daemon never holds its predecessor's leases.
    pub instance: String,
    /// Counters and histograms for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Readiness, last tick and the systemd watchdog.
    pub health: Arc<Health>,
}

impl Scheduler {
    /// Builds the scheduler; nothing runs until [`Scheduler::run`] (or a [`Scheduler::tick`]).
    pub fn new(p: Parts) -> Scheduler {
        let relay = relay::Relay::new(p.settings.budget, p.mailer.sessions());
        Scheduler {
            store: p.store,
            mailer: p.mailer,
            clock: p.clock,
            served: p.served,
            settings: p.settings,
            instance: p.instance,
            metrics: p.metrics,
            health: p.health,
            processed: Mutex::new(Processed::default()),
            wake: tokio::sync::Notify::new(),
            relay,
            blocked_until: Mutex::new(None),
            oauth_notice: Mutex::new(OauthNotice::default()),
        }
    }

    /// XOAUTH2: renews the OAuth token when it is due (so an idle daemon keeps a valid one, and
    /// a broken secret or endpoint shows in `/readyz` before a message needs a token), and
    /// emails ops about a token problem once per episode (with the old token while it is still
    /// valid; when it is not, the notice cannot go out either, and the log says so).
    async fn oauth_upkeep(&self) {
        let Some(source) = self.mailer.oauth() else { return };
        // Failures are reported through the source's events (health, metrics, the log).
        let _ = source.refresh().await;
        let now = self.clock.now();
        let problem = self.health.oauth_problem();
        let attempt = {
            let mut n = self.oauth_notice.lock().unwrap_or_else(|p| p.into_inner());
            match &problem {
                None => {
                    if n.since.is_some() {
                        tracing::info!("the OAuth token for SMTP is renewed and accepted again");
                    }
                    *n = OauthNotice::default();
                    None
                }
                Some(_) => {
                    let since = *n.since.get_or_insert(now);
                    let due = !n.sent && n.tried_at.is_none_or(|t| now - t >= TimeDelta::minutes(10) || now < t);
                    if due {
                        n.tried_at = Some(now);
                    }
                    due.then_some(since)
                }
            }
        };
        if let (Some(since), Some(problem)) = (attempt, problem) {
            let subject = format!(
                "contactplan on {}: SMTP AUTH XOAUTH2 is failing since {}",
                self.instance,
                since.format("%Y-%m-%d %H:%M:%S UTC")
            );
            let text = format!(
                "{problem}.\n\nMessages wait in the outbox and are retried; none is marked failed for this. \
                 Check the client secret (credential oauth-client-secret or CONTACTPLAN_OAUTH_CLIENT_SECRET), \
                 [delivery.oauth] in the config, and the application's permission to send as the mailbox. \
                 `contactplan status` and /readyz show the current state.\n"
            );
            let sent = notice::send(self, &subject, &text).await;
            self.oauth_notice.lock().unwrap_or_else(|p| p.into_inner()).sent = sent;
        }
    }

    /// Ends the loop's current sleep: the next tick runs now (e.g. after the database is back).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// The relay's limits as this daemon applies them now (effective rate, sessions, caps, pause).
    pub fn relay_status(&self) -> relay::RelayStatus {
        self.relay.status(tokio::time::Instant::now())
    }

    /// This daemon's lease owner id.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// How long shutdown waits for the messages in flight.
    pub fn shutdown_grace(&self) -> Duration {
        self.settings.shutdown_grace
    }

    /// Records one delivery outcome in the metrics and health (a sign of progress for the
    /// watchdog too).
    fn record(&self, row: &crate::store::Claimed, d: &deliver::Delivery, at: DateTime<Utc>) {
        self.metrics.delivered(row.kind, &d.outcome, d.latency, d.failure);
        if let Some(class) = d.failure {
            let detail = match &d.outcome {
                crate::store::Outcome::Retry { reason, .. }
                | crate::store::Outcome::Deferred { reason, .. }
                | crate::store::Outcome::Failed { reason }
                | crate::store::Outcome::Unknown { reason } => reason.as_str(),
                _ => "",
            };
            self.health.transport_error(class, detail, at);
        }
        self.health.beat();
    }

    fn current(&self) -> Arc<Snapshot> {
        self.served.current()
    }

    /// One pass: recover, materialise, expire, send everything due. Stops claiming when
    /// `stop` is cancelled; a message already being sent is finished first.
    ///
    /// # Errors
    /// A store error (the loop logs it, reports it in `/readyz` and tries again).
    pub async fn tick(self: &Arc<Self>, stop: &CancellationToken) -> anyhow::Result<TickReport> {
        self.store.verify_file().map_err(OutboxGone)?;
        self.oauth_upkeep().await;
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

        // A new revision: reconcile the outbox with it and record customer changes, for the
        // customers it changed when the revision before was processed here whole (see
        // `workspace::Changes`), else for all; then materialise them. Every customer is
        // materialised again at least every REMATERIALIZE_EVERY (the window moves).
        let (scope, periodic) = {
            let p = *self.processed.lock().unwrap_or_else(|p| p.into_inner());
            let scope = (p.revision != Some(snap.revision)).then(|| match &snap.changes {
                Changes::Customers { since, ids } if p.revision == Some(*since) => Scope::Changed(ids.clone()),
                _ => Scope::All,
            });
            (scope, p.full_pass_at.is_none_or(|at| now - at >= REMATERIALIZE_EVERY || now < at))
        };
        let started = std::time::Instant::now();
        let mut looked_at = 0;
        // The changed customers still served (with `Scope::Changed`).
        let mut changed: Vec<Arc<crate::plan::Customer>> = Vec::new();
        if let Some(scope) = &scope {
            self.processed.lock().unwrap_or_else(|p| p.into_inner()).revision = None;
            // Before materialising: a corrected occasion's old row is suppressed first, then
            // its new key is written.
            let (r, d) = match scope {
                Scope::All => {
                    looked_at = snap.plans.len();
                    let r = reconcile::run(&self.store, &snap.plans, now, &self.metrics).await?;
                    (r, handover::detect(&self.store, &snap.plans.customers, now).await?)
                }
                Scope::Changed(ids) => {
                    looked_at = ids.len();
                    changed = ids.iter().filter_map(|id| snap.plans.get_shared(id).cloned()).collect();
                    let r = reconcile::run_for(&self.store, &snap.plans, ids, now, &self.metrics).await?;
                    (r, handover::detect(&self.store, &changed, now).await?)
                }
            };
            report.suppressed += r.suppressed;
            report.retimed += r.retimed;
            report.revived += r.revived;
            if r != crate::store::Reconciled::default() {
                tracing::info!(
                    retimed = r.retimed,
                    suppressed = r.suppressed,
                    revived = r.revived,
                    "reconciled the outbox with the plans"
                );
            }
            report.changes = d.changes;
            if d.changes > 0 {
                tracing::info!(
                    changes = d.changes,
                    first_seen = d.first_seen,
                    "recorded customer changes (handover, owner, phase)"
                );
            }
        }
        let (horizon, sender) = (self.settings.horizon, &self.settings.sender.email);
        // The periodic pass alone (no new revision) waits while rows are due: the rows due now
        // were written by earlier passes (the horizon is at least a day), and a pass over every
        // customer (seconds at 100,000) would hold back every send of a peak's first tick. It
        // runs after this tick's claims (BENCHMARKS.md, "Relay caps reached").
        let defer_periodic =
            periodic && scope.is_none() && self.store.next_due().await?.is_some_and(|d| d <= secs(now));
        let m = if (periodic && !defer_periodic) || matches!(scope, Some(Scope::All)) {
            let m = materialize::run(&self.store, &snap.plans, now, horizon, sender).await?;
            self.processed.lock().unwrap_or_else(|p| p.into_inner()).full_pass_at = Some(now);
            m
        } else if let Some(Scope::Changed(_)) = &scope {
            materialize::run_for(&self.store, &changed, now, horizon, sender).await?
        } else {
            Default::default()
        };
        self.count_materialized(&mut report, &m);
        if let Some(scope) = &scope {
            self.processed.lock().unwrap_or_else(|p| p.into_inner()).revision = Some(snap.revision);
            self.metrics.revision_applied(scope.code(), looked_at);
            tracing::info!(
                revision = snap.revision,
                scope = scope.code(),
                customers = looked_at,
                elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
                "plan revision applied to the outbox"
            );
        }

        let beat = || self.health.beat();
        let m = milestones::run(&self.store, &snap.plans, now, &self.settings.sender.email, &beat).await?;
        report.milestones = m.written;
        if m.evaluated > 0 {
            tracing::info!(
                changes = m.evaluated,
                rows = m.written,
                unknown_customers = m.unknown_customers,
                "evaluated order milestones"
            );
        }

        let h = handover::run(&self.store, &snap.plans, now, &self.settings.sender.email, &beat).await?;
        report.handovers = h.written;
        if h.evaluated > 0 {
            tracing::info!(changes = h.evaluated, rows = h.written, "evaluated customer changes");
        }

        let mo = moments::run(&self.store, &snap.plans, now, self.settings.horizon, &self.settings.sender.email, &beat)
            .await?;
        report.moments = mo.written;
        if mo.events > 0 || mo.written > 0 {
            tracing::info!(events = mo.events, rows = mo.written, "evaluated events, quiet spells and ends");
        }

        for row in self.store.expire(secs(now)).await? {
            report.missed += 1;
            self.metrics.missed(row.kind, 1);
            tracing::warn!(key = %row.key, kind = %row.kind, "missed: deadline passed before it could be sent");
        }
        for row in capacity::announce(self, &snap, now).await? {
            report.missed += 1;
            self.metrics.missed(row.kind, 1);
        }
        // Before any row is claimed: the room the projection kept for the salespeople's
        // "call instead" digests goes to them (and a digest a failed send left is retried).
        report.call_digests = call_instead::run(self, &snap).await?;

        while !stop.is_cancelled() {
            let now = self.clock.now();
            let mono = tokio::time::Instant::now();
            self.relay.maybe_increase(mono);
            self.publish_relay(mono);
            let claim = match self.relay.allowance(self.relay.claim_size(self.settings.batch_size), mono) {
                Ok(n) => {
                    self.store
                        .claim_within(secs(now), n, &self.instance, self.settings.lease_secs(), self.relay.budget())
                        .await?
                }
                Err(wait) => crate::store::Claim {
                    wait_ms: Some(wait.as_millis().try_into().unwrap_or(i64::MAX)),
                    ..Default::default()
                },
            };
            if let Some(until) = claim.paused_until {
                let wait = Duration::from_millis(claim.wait_ms.unwrap_or(0).max(0) as u64);
                self.relay.pause(wait, mono);
                tracing::info!(until = %crate::store::UnixSecs(until), "the relay is paused after a quota reply; nothing is claimed until then");
            }
            let batch = claim.rows;
            if batch.is_empty() {
                match claim.wait_ms {
                    // A spent per-second budget (or the adaptive rate): wait for the next window
                    // within this tick, as long as something is due.
                    Some(ms) if ms <= SHORT_WAIT_MS && self.store.next_due().await?.is_some_and(|d| d <= secs(now)) => {
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_millis(ms.max(1) as u64)) => {}
                            _ = stop.cancelled() => {}
                        }
                        continue;
                    }
                    Some(ms) => {
                        *self.blocked_until.lock().unwrap_or_else(|p| p.into_inner()) =
                            Some(mono + Duration::from_millis(ms.max(0) as u64));
                    }
                    None => {}
                }
                break;
            }
            self.relay.claimed(batch.len());
            self.health.beat();
            // The fence counts claims and never goes back (unlike attempts, which a release
            // undoes): fence 1 is the row's first claim, so "due" counts each occasion once.
            for row in batch.iter().filter(|r| r.fence == 1) {
                self.metrics.due(row.kind);
            }
            let rows = batch.len();
            let send_by = claim
                .send_within_ms
                .map(|ms| mono + Duration::from_millis(ms.saturating_sub(SEND_MARGIN_MS).max(0) as u64));
            report += workers::deliver_batch(self, &snap, batch, send_by, stop).await?;
            self.relay.delivered(rows, mono.elapsed());
        }
        if defer_periodic && !stop.is_cancelled() {
            let now = self.clock.now();
            let m = materialize::run(&self.store, &snap.plans, now, horizon, sender).await?;
            self.processed.lock().unwrap_or_else(|p| p.into_inner()).full_pass_at = Some(now);
            self.count_materialized(&mut report, &m);
        }
        report.reported = ops::report(self).await?;
        Ok(report)
    }

    /// Adds a materialisation pass to the tick's report, the metrics and the log.
    fn count_materialized(&self, report: &mut TickReport, m: &crate::store::Materialized) {
        report.materialized += m.inserted;
        report.missed += m.missed;
        for kind in &m.missed_kinds {
            self.metrics.missed(*kind, 1);
        }
        if m.inserted + m.missed > 0 {
            tracing::info!(new = m.inserted, missed = m.missed, "materialised occasions into the outbox");
        }
    }

    /// Shows the relay's current limits in the metrics and `/status`.
    fn publish_relay(&self, now: tokio::time::Instant) {
        let status = self.relay.status(now);
        self.metrics.relay(status.rate_limit, status.sessions);
        self.health.set_relay(status);
    }

    /// How long to sleep before the next tick: until the next due row, or until a lease held
    /// by a stopped sender (a crashed or killed process) can be taken over, whichever is first.
    /// Without the second, a restarted daemon with nothing else due would notice such rows only
    /// a full [`MAX_SLEEP`] after their lease ended.
    async fn sleep_for(&self) -> Duration {
        let now = self.clock.now();
        let blocked = self
            .blocked_until
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .map(|until| until.saturating_duration_since(tokio::time::Instant::now()));
        let due = match self.store.next_due().await {
            Ok(Some(due)) => {
                let wait = due - secs(now);
                let wait = if wait <= 0 {
                    Duration::from_millis(200)
                } else {
                    Duration::from_secs(wait as u64).min(MAX_SLEEP)
                };
                // Due rows the relay's limits hold back: not before the limit allows more.
                wait.max(blocked.unwrap_or_default()).min(MAX_SLEEP)
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

    /// The loop; returns when `stop` is cancelled (after finishing the messages in flight).
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        tracing::info!(instance = %self.instance, transport = %self.mailer.describe(), "daemon running");
        let changed = self.served.changed().clone();
        let mut failures = 0u32;
        let mut halted_since: Option<std::time::Instant> = None;
        while !stop.is_cancelled() {
            let started = self.clock.now();
            let result = self.tick(&stop).await;
            match &result {
                // The watchdog is fed by progress only — a tick that completed, and delivery
                // outcomes — never by a timer or by the loop merely running: a loop that is stuck
                // or keeps failing stops pinging, and systemd restarts the daemon.
                Ok(_) => {
                    failures = 0;
                    if halted_since.take().is_some() {
                        tracing::warn!("the outbox file is back; sending again");
                    }
                    self.health.beat();
                }
                // Halted on purpose, not stuck: a restart would open a different (new, empty)
                // outbox and send the last day's occasions again, so the watchdog stays fed and
                // ops decide. Logged at once and then every ten minutes; ops are emailed once.
                Err(e) if let Some(gone) = e.downcast_ref::<OutboxGone>() => {
                    self.health.beat();
                    if halted_since.is_none_or(|t| t.elapsed() >= Duration::from_secs(600)) {
                        tracing::error!(error = %gone, "the outbox is gone");
                        if halted_since.is_none() {
                            let subject =
                                format!("contactplan on {}: the outbox is gone, sending is halted", self.instance);
                            notice::send(&self, &subject, &gone.to_string()).await;
                        }
                        halted_since = Some(std::time::Instant::now());
                    }
                }
                Err(e) => {
                    failures += 1;
                    tracing::error!(error = %e, failures, "tick failed; trying again");
                }
            }
            self.health.tick_finished(started, result.err().map(|e| format!("{e:#}")));
            self.health.systemd().status(&self.health.status_line());
            let pause = if failures > 0 {
                retry_pause(failures)
            } else if halted_since.is_some() {
                self.health.max_sleep(MAX_SLEEP)
            } else {
                self.sleep_for().await.min(self.health.max_sleep(MAX_SLEEP))
            };
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = changed.notified() => {}
                _ = self.wake.notified() => {}
                _ = stop.cancelled() => {}
            }
        }
        tracing::info!("daemon stopped");
    }
}
