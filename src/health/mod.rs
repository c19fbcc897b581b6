//! What the running daemon knows about its own health: readiness, the last tick, the plan
//! problems of the last (re)load, the last SMTP error — for `/readyz`, `/status`, the
//! `STATUS=` line and `contactplan status` (`report.rs`) — and the systemd watchdog, which is
//! pinged from the scheduler loop's own progress ([`Health::beat`]), never from a timer of
//! its own, so a stuck loop gets restarted. Counters live in `metrics`.
//!
//! **Architecture Invariant:** health only records what the daemon tells it; it never reads
//! the database, files or the wall clock (times come from the daemon's `Clock`; intervals for
//! staleness and the watchdog use the monotonic `Instant`, which is not business time).

mod report;

pub use report::{DB_TIMEOUT, Status, not_ready, of_daemon, outbox, ping};

use crate::diagnostics::Diagnostic;
use crate::mail::FailureClass;
use crate::systemd::Systemd;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// One problem in an ops-edited file, as `status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanProblem {
    /// `file:line:col`.
    pub location: String,
    /// What is wrong, as `check` words it.
    pub message: String,
    /// True when an earlier, valid version of this file is still being served.
    pub last_good_in_force: bool,
}

/// The last (re)load of plans, playbooks and templates.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanHealth {
    /// Customers served.
    pub customers: usize,
    /// Error diagnostics (warnings are not listed).
    pub problems: Vec<PlanProblem>,
    /// When that load finished (daemon clock).
    pub loaded_at: Option<DateTime<Utc>>,
}

impl PlanHealth {
    /// The health of a load that serves `customers`, with its error diagnostics as problems;
    /// `kept` says which files still serve a last good version.
    pub fn new(
        customers: usize,
        diags: &[Diagnostic],
        kept: &dyn Fn(&std::path::Path) -> bool,
        at: DateTime<Utc>,
    ) -> PlanHealth {
        let problems = diags
            .iter()
            .filter(|d| d.is_error())
            .map(|d| PlanProblem {
                location: d.location(),
                message: d.message.clone(),
                last_good_in_force: kept(&d.file),
            })
            .collect();
        PlanHealth { customers, problems, loaded_at: Some(at) }
    }
}

/// The last transport error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SmtpErrorInfo {
    /// When it happened (daemon clock).
    pub at: DateTime<Utc>,
    /// `transient`, `permanent` or `unknown`.
    pub class: String,
    /// The server's reply or the connection error (never the message or credentials).
    pub detail: String,
}

/// What `/status` shows about the relay.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RelayStatus {
    /// Messages per second this daemon claims at most now (the configured `max_per_second`
    /// or the adaptive rate after a throttle reply); `None`: no rate limit.
    pub rate_limit: Option<f64>,
    /// SMTP sessions this daemon uses now (at most `[delivery] connections`).
    pub sessions: usize,
    /// The configured caps per window (from all daemons together).
    pub max_per_second: Option<u32>,
    /// See `max_per_second`.
    pub max_per_minute: Option<u32>,
    /// See `max_per_second`.
    pub max_per_hour: Option<u32>,
    /// See `max_per_second`.
    pub max_per_day: Option<u32>,
    /// Claims are paused (a quota reply) for this many more seconds, as last seen.
    pub paused_for_secs: Option<u64>,
}

/// The last finished tick.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TickInfo {
    /// When it started (daemon clock).
    pub at: DateTime<Utc>,
    /// Its error, when it failed.
    pub error: Option<String>,
}

#[derive(Debug)]
struct State {
    /// The last finished tick, and when it finished (monotonic, for staleness).
    last_tick: Option<(TickInfo, Instant)>,
    /// Last `WATCHDOG=1` sent.
    last_ping: Option<Instant>,
    /// The last (re)load's result.
    plans: PlanHealth,
    /// For `status`: the most recent transport failure.
    last_smtp_error: Option<SmtpErrorInfo>,
    /// XOAUTH2: why the OAuth token could not be renewed (cleared by a renewal).
    oauth_renewal: Option<String>,
    /// XOAUTH2: why the relay refused a fresh token (cleared by an accepted one).
    oauth_refusal: Option<String>,
    /// For `status`: the relay's limits as the scheduler last applied them.
    relay: Option<RelayStatus>,
}

/// The daemon's live record of its health. Shared by the scheduler, the HTTP listener and
/// reloads.
#[derive(Debug)]
pub struct Health {
    /// systemd notifications (a no-op outside systemd).
    systemd: Systemd,
    /// Set once migrations ran and plans were loaded; cleared when stopping.
    ready: AtomicBool,
    state: Mutex<State>,
}

/// `/readyz`: a tick older than this means the loop is stuck (it wakes at least every minute).
pub const STALE_AFTER: Duration = Duration::from_secs(180);

impl Health {
    /// Not ready, no tick, no plans; notifies through `systemd`.
    pub fn new(systemd: Systemd) -> Health {
        Health {
            systemd,
            ready: AtomicBool::new(false),
            state: Mutex::new(State {
                last_tick: None,
                last_ping: None,
                plans: PlanHealth::default(),
                last_smtp_error: None,
                oauth_renewal: None,
                oauth_refusal: None,
                relay: None,
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The systemd notification channel.
    pub fn systemd(&self) -> &Systemd {
        &self.systemd
    }

    /// The scheduler loop made progress: ping the systemd watchdog, at most every quarter of
    /// its timeout (or once a second), so busy delivery does not flood it.
    pub fn beat(&self) {
        let now = Instant::now();
        let mut s = self.state();
        let every = self.systemd.watchdog().map_or(Duration::from_secs(1), |w| (w / 4).max(Duration::from_secs(1)));
        if s.last_ping.is_none_or(|p| now.duration_since(p) >= every) {
            s.last_ping = Some(now);
            drop(s);
            self.systemd.watchdog_ping();
        }
    }

    /// The longest the loop may sleep so that the watchdog is pinged in time: half its timeout.
    pub fn max_sleep(&self, default: Duration) -> Duration {
        self.systemd.watchdog().map_or(default, |w| default.min(w / 2))
    }

    /// Marks the daemon ready (the scheduler runs) or not (starting, stopping); `/readyz` and
    /// `status` report it.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    /// Whether [`Health::set_ready`] last said ready.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// A tick that started at `at` (daemon clock) finished, with its error if it failed.
    pub fn tick_finished(&self, at: DateTime<Utc>, error: Option<String>) {
        self.state().last_tick = Some((TickInfo { at, error }, Instant::now()));
    }

    /// The last finished tick: when it started (daemon clock, UTC) and its error, if any.
    pub fn last_tick(&self) -> Option<TickInfo> {
        self.state().last_tick.as_ref().map(|(t, _)| t.clone())
    }

    /// Whether the last tick succeeded recently; the reason when not.
    ///
    /// # Errors
    /// The reason, as a sentence: no tick has finished yet, the last one failed (with its error),
    /// or it finished more than [`STALE_AFTER`] ago (measured on the monotonic clock).
    pub fn tick_health(&self) -> Result<(), String> {
        match &self.state().last_tick {
            None => Err("no tick has finished yet".into()),
            Some((t, _)) if t.error.is_some() => {
                Err(format!("the last tick failed: {}", t.error.as_deref().unwrap_or("")))
            }
            Some((_, when)) if when.elapsed() > STALE_AFTER => {
                Err(format!("the last tick finished {} s ago", when.elapsed().as_secs()))
            }
            Some(_) => Ok(()),
        }
    }

    /// The one-line `STATUS=` systemd shows: customers, plan problems, the last tick.
    pub fn status_line(&self) -> String {
        let plans = self.plans();
        let mut line = format!("serving {} customers", plans.customers);
        if !plans.problems.is_empty() {
            line.push_str(&format!("; {} plan problem(s), see `contactplan status`", plans.problems.len()));
        }
        match self.last_tick() {
            Some(t) if t.error.is_some() => line.push_str(&format!("; last tick {} FAILED", t.at.format("%H:%M:%SZ"))),
            Some(t) => line.push_str(&format!("; last tick {}", t.at.format("%H:%M:%SZ"))),
            None => {}
        }
        line
    }

    /// A transport failure (for `status`).
    pub fn transport_error(&self, class: FailureClass, detail: &str, at: DateTime<Utc>) {
        self.state().last_smtp_error =
            Some(SmtpErrorInfo { at, class: class.code().to_string(), detail: detail.to_string() });
    }

    /// A finished (re)load.
    pub fn reloaded(&self, plans: PlanHealth) {
        self.state().plans = plans;
    }

    /// The last (re)load's result: customers served and plan problems.
    pub fn plans(&self) -> PlanHealth {
        self.state().plans.clone()
    }

    /// Records the relay's limits as the scheduler applies them (for `/status`).
    pub fn set_relay(&self, relay: RelayStatus) {
        self.state().relay = Some(relay);
    }

    /// The relay's limits as the scheduler last applied them.
    pub fn relay(&self) -> Option<RelayStatus> {
        self.state().relay.clone()
    }

    /// XOAUTH2: the last token renewal failed with `reason`, or (`None`) a renewal succeeded.
    pub fn oauth_renewal(&self, reason: Option<String>) {
        self.state().oauth_renewal = reason;
    }

    /// XOAUTH2: the relay refused a fresh token with `reason`, or (`None`) accepted one.
    pub fn oauth_refusal(&self, reason: Option<String>) {
        self.state().oauth_refusal = reason;
    }

    /// XOAUTH2: what is wrong with the OAuth token, as `/readyz` says it; `None` when nothing is.
    pub fn oauth_problem(&self) -> Option<String> {
        let s = self.state();
        match (&s.oauth_renewal, &s.oauth_refusal) {
            (None, None) => None,
            (Some(r), None) => Some(format!("the OAuth token for SMTP cannot be renewed: {r}")),
            (None, Some(r)) => Some(format!("the SMTP relay refuses the OAuth token: {r}")),
            (Some(a), Some(b)) => Some(format!(
                "the OAuth token for SMTP cannot be renewed: {a}; the SMTP relay refuses the OAuth token: {b}"
            )),
        }
    }

    /// The most recent transport failure, if any since the start.
    pub fn last_smtp_error(&self) -> Option<SmtpErrorInfo> {
        self.state().last_smtp_error.clone()
    }
}
