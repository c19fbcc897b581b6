//! What the running daemon knows about itself: counters for `/metrics`, readiness and the last
//! tick for `/readyz` and `status`, plan problems of the last (re)load, the last SMTP error —
//! and the systemd watchdog, which is pinged from the scheduler loop's own progress
//! ([`Monitor::beat`]), never from a timer of its own, so a stuck loop gets restarted.
//!
//! **Architecture Invariant:** the monitor only records what the daemon tells it; it never reads
//! the database, files or the wall clock (times come from the daemon's `Clock`; intervals for
//! staleness and the watchdog use the monotonic `Instant`, which is not business time).

use crate::diagnostics::Diagnostic;
use crate::mail::FailureClass;
use crate::metrics::{Exposition, Histogram};
use crate::notify::Notifier;
use crate::store::Outcome;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Counters of one occasion kind (`birthday`, `every`, …).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KindCounts {
    /// Rows that came due and were claimed for the first time.
    pub due: u64,
    /// Accepted by the server (or written to the Maildir).
    pub sent: u64,
    /// Failed permanently.
    pub failed: u64,
    /// Failed transiently; retried later.
    pub deferred: u64,
    /// No longer wanted (customer, rule or contact removed).
    pub suppressed: u64,
    /// Deadline passed before they could be sent.
    pub missed: u64,
    /// At-most-once sends whose outcome cannot be known.
    pub unknown: u64,
}

/// How a reload ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReloadResult {
    /// Every file valid.
    Ok,
    /// Some files broken: their last good version (or nothing, on first load) stays in force.
    Partial,
}

impl ReloadResult {
    pub fn code(self) -> &'static str {
        match self {
            ReloadResult::Ok => "ok",
            ReloadResult::Partial => "partial",
        }
    }
}

/// All counters, behind one mutex (a few increments per message; never contended for long).
#[derive(Debug, Default)]
struct Counters {
    /// Occasion kind → counts.
    by_kind: BTreeMap<String, KindCounts>,
    /// Time spent in the transport per message (SMTP transaction or Maildir write).
    send_latency: Histogram,
    /// Time per group commit of delivery outcomes and starts: the disk's (or PostgreSQL's)
    /// share of every message's latency, and the first thing to look at when sending is slow.
    commit_latency: Histogram,
    /// Rows recorded by those commits (divided by their count: the average group size).
    commit_rows: u64,
    /// Reload result → count (the initial load counts too).
    reloads: BTreeMap<ReloadResult, u64>,
    /// Transport failure class (`transient`, `permanent`, `unknown`) → count.
    smtp_errors: BTreeMap<&'static str, u64>,
}

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
    /// Last sign of life of the scheduler loop.
    last_beat: Instant,
    /// Last `WATCHDOG=1` sent.
    last_ping: Option<Instant>,
    /// The last (re)load's result.
    plans: PlanHealth,
    /// For `status`: the most recent transport failure.
    last_smtp_error: Option<SmtpErrorInfo>,
}

/// The daemon's live record of itself. Shared by the loop, the HTTP listener and reloads.
#[derive(Debug)]
pub struct Monitor {
    /// systemd notifications (a no-op outside systemd).
    pub notifier: Notifier,
    /// Set once migrations ran and plans were loaded.
    ready: AtomicBool,
    counters: Mutex<Counters>,
    state: Mutex<State>,
}

/// `/readyz`: a tick older than this means the loop is stuck (it wakes at least every minute).
pub const STALE_AFTER: Duration = Duration::from_secs(180);

impl Monitor {
    pub fn new(notifier: Notifier) -> Monitor {
        Monitor {
            notifier,
            ready: AtomicBool::new(false),
            counters: Mutex::default(),
            state: Mutex::new(State {
                last_tick: None,
                last_beat: Instant::now(),
                last_ping: None,
                plans: PlanHealth::default(),
                last_smtp_error: None,
            }),
        }
    }

    fn counters(&self) -> std::sync::MutexGuard<'_, Counters> {
        self.counters.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The scheduler loop made progress: record it and ping the systemd watchdog, at most
    /// every quarter of its timeout (or once a second), so busy delivery does not flood it.
    pub fn beat(&self) {
        let now = Instant::now();
        let mut s = self.state();
        s.last_beat = now;
        let every = self.notifier.watchdog().map_or(Duration::from_secs(1), |w| (w / 4).max(Duration::from_secs(1)));
        if s.last_ping.is_none_or(|p| now.duration_since(p) >= every) {
            s.last_ping = Some(now);
            drop(s);
            self.notifier.watchdog_ping();
        }
    }

    /// The longest the loop may sleep so that the watchdog is pinged in time: half its timeout.
    pub fn max_sleep(&self, default: Duration) -> Duration {
        self.notifier.watchdog().map_or(default, |w| default.min(w / 2))
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    pub fn tick_finished(&self, at: DateTime<Utc>, error: Option<String>) {
        let mut s = self.state();
        s.last_tick = Some((TickInfo { at, error }, Instant::now()));
    }

    pub fn last_tick(&self) -> Option<TickInfo> {
        self.state().last_tick.as_ref().map(|(t, _)| t.clone())
    }

    /// Whether the last tick succeeded recently; the reason when not.
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

    /// A row claimed for the first time.
    pub fn due(&self, kind: &str) {
        self.counters().by_kind.entry(kind.to_string()).or_default().due += 1;
    }

    /// Rows that became `missed`.
    pub fn missed(&self, kind: &str, n: u64) {
        if n > 0 {
            self.counters().by_kind.entry(kind.to_string()).or_default().missed += n;
        }
    }

    /// The outcome of one delivery; `latency` is the transport time when the transport was
    /// used, `failure` its error class. Also a sign of progress for the watchdog.
    pub fn delivered(
        &self,
        kind: &str,
        outcome: &Outcome,
        latency: Option<Duration>,
        failure: Option<FailureClass>,
        at: DateTime<Utc>,
    ) {
        {
            let mut c = self.counters();
            let k = c.by_kind.entry(kind.to_string()).or_default();
            match outcome {
                Outcome::Accepted { .. } => k.sent += 1,
                Outcome::Retry { .. } => k.deferred += 1,
                Outcome::Failed { .. } => k.failed += 1,
                Outcome::Suppressed { .. } => k.suppressed += 1,
                Outcome::Unknown { .. } => k.unknown += 1,
            }
            if let Some(l) = latency {
                c.send_latency.observe(l);
            }
        }
        if let Some(class) = failure {
            let detail = match outcome {
                Outcome::Retry { reason, .. } | Outcome::Failed { reason } | Outcome::Unknown { reason } => reason,
                _ => "",
            };
            self.transport_error(class, detail, at);
        }
        self.beat();
    }

    /// One group commit of `rows` outcomes and starts that took `took`.
    pub fn committed(&self, rows: usize, took: Duration) {
        let mut c = self.counters();
        c.commit_latency.observe(took);
        c.commit_rows += rows as u64;
    }

    /// Group commits so far: how many, their total time, and the rows they recorded.
    pub fn commits(&self) -> (u64, Duration, u64) {
        let c = self.counters();
        (c.commit_latency.count(), Duration::from_secs_f64(c.commit_latency.sum()), c.commit_rows)
    }

    /// A transport failure (also for ops reports).
    pub fn transport_error(&self, class: FailureClass, detail: &str, at: DateTime<Utc>) {
        let class = class_code(class);
        *self.counters().smtp_errors.entry(class).or_default() += 1;
        self.state().last_smtp_error = Some(SmtpErrorInfo { at, class: class.to_string(), detail: detail.to_string() });
    }

    /// A finished (re)load: its result and the problems found.
    pub fn reloaded(&self, plans: PlanHealth) {
        let result = if plans.problems.is_empty() { ReloadResult::Ok } else { ReloadResult::Partial };
        *self.counters().reloads.entry(result).or_default() += 1;
        self.state().plans = plans;
    }

    pub fn plans(&self) -> PlanHealth {
        self.state().plans.clone()
    }

    pub fn last_smtp_error(&self) -> Option<SmtpErrorInfo> {
        self.state().last_smtp_error.clone()
    }

    /// Counters of one kind (tests, status).
    pub fn kind(&self, kind: &str) -> KindCounts {
        self.counters().by_kind.get(kind).copied().unwrap_or_default()
    }

    /// The `/metrics` text: these counters plus the gauges read from the store by the caller.
    pub fn render(&self, gauges: &Gauges) -> String {
        let c = self.counters();
        let plans = self.plans();
        let mut e = Exposition::new();
        let families: [Family; 7] = [
            ("due", "Outbox rows that came due and were claimed for the first time", |k| k.due),
            ("sent", "Messages accepted by the transport", |k| k.sent),
            ("failed", "Messages that failed permanently", |k| k.failed),
            ("deferred", "Send attempts that failed transiently and will be retried", |k| k.deferred),
            ("suppressed", "Rows no longer wanted (customer, rule or contact removed)", |k| k.suppressed),
            ("missed", "Rows whose deadline passed before they could be sent", |k| k.missed),
            ("unknown", "At-most-once sends whose outcome cannot be known (not resent)", |k| k.unknown),
        ];
        for (what, help, f) in families {
            let samples: Vec<(Vec<(&str, &str)>, u64)> =
                c.by_kind.iter().map(|(k, v)| (vec![("kind", k.as_str())], f(v))).collect();
            e.counter(&format!("contactplan_occasions_{what}_total"), &format!("{help}, by occasion kind."), samples);
        }
        e.histogram(
            "contactplan_send_duration_seconds",
            "Time spent in the transport per message (SMTP transaction or Maildir write).",
            &c.send_latency,
        );
        e.histogram(
            "contactplan_outbox_commit_duration_seconds",
            "Time per group commit of delivery outcomes and starts (one per SMTP round of all sessions).",
            &c.commit_latency,
        );
        e.counter(
            "contactplan_outbox_commit_rows_total",
            "Rows recorded by group commits (divided by the commit count: the average group size).",
            [(vec![], c.commit_rows)],
        );
        e.counter(
            "contactplan_smtp_errors_total",
            "Transport failures by class: transient (retried), permanent, unknown (outcome not known).",
            ["transient", "permanent", "unknown"]
                .map(|class| (vec![("class", class)], c.smtp_errors.get(class).copied().unwrap_or(0))),
        );
        e.counter(
            "contactplan_plan_reloads_total",
            "Loads of plans, playbooks and templates by result: ok, or partial (broken files keep their last good version).",
            [ReloadResult::Ok, ReloadResult::Partial]
                .map(|r| (vec![("result", r.code())], c.reloads.get(&r).copied().unwrap_or(0))),
        );
        e.gauge(
            "contactplan_plan_errors",
            "Error diagnostics of the last reload.",
            [(vec![], plans.problems.len() as f64)],
        );
        e.gauge("contactplan_customers", "Customers served.", [(vec![], plans.customers as f64)]);
        e.gauge(
            "contactplan_ready",
            "1 when migrations ran and plans are loaded.",
            [(vec![], f64::from(u8::from(self.is_ready())))],
        );
        e.gauge(
            "contactplan_database_up",
            "1 when the database answered this scrape.",
            [(vec![], f64::from(u8::from(gauges.database_up)))],
        );
        if gauges.database_up {
            e.gauge(
                "contactplan_outbox_depth",
                "Open outbox rows by state (pending, retry, claimed, sending).",
                gauges.depth.iter().map(|(s, n)| (vec![("state", s.as_str())], *n as f64)),
            );
            e.gauge(
                "contactplan_oldest_due_age_seconds",
                "Age of the oldest open row that is due (0 when nothing is due).",
                [(vec![], gauges.oldest_due_age_secs as f64)],
            );
        }
        e.finish()
    }
}

/// One per-kind counter family: name part, help text, and which count it shows.
type Family = (&'static str, &'static str, fn(&KindCounts) -> u64);

/// Gauges read from the store at scrape time.
#[derive(Debug, Clone, Default)]
pub struct Gauges {
    /// Whether the database answered in time (the other gauges are left out when not).
    pub database_up: bool,
    /// Open state → rows.
    pub depth: Vec<(String, i64)>,
    /// Now minus the due time of the oldest open row that is due; 0 when none is.
    pub oldest_due_age_secs: i64,
}

pub fn class_code(class: FailureClass) -> &'static str {
    match class {
        FailureClass::Transient => "transient",
        FailureClass::Permanent => "permanent",
        FailureClass::Unknown => "unknown",
        FailureClass::Withdrawn => "withdrawn",
    }
}

/// Error diagnostics as plan problems; `kept` says which files still serve a last good version.
pub fn problems(diags: &[Diagnostic], kept: &dyn Fn(&std::path::Path) -> bool) -> Vec<PlanProblem> {
    diags
        .iter()
        .filter(|d| d.is_error())
        .map(|d| PlanProblem { location: d.location(), message: d.message.clone(), last_good_in_force: kept(&d.file) })
        .collect()
}
