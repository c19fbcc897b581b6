//! The daemon's counters and gauges for `/metrics`, kept in a `prometheus-client` registry
//! (one per daemon, so several daemons in one process, as in tests, never share counters) and
//! written in the Prometheus text format 0.0.4. Metric names and labels are a documented,
//! stable interface (README, "Health, metrics and status"). Counters are per process and start
//! at 0. Gauges about the outbox are read from the store by the caller at scrape time
//! ([`Gauges`]) and left out when the database does not answer.

use crate::mail::FailureClass;
use crate::plan::TriggerKind;
use crate::store::Outcome;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The content type of the Prometheus text format 0.0.4.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Upper bounds (seconds) of the latency histograms: an outbox commit on a local disk takes a
/// fraction of a millisecond, loopback relays answer in milliseconds, remote ones in up to the
/// SMTP timeout.
pub const LATENCY_BUCKETS: [f64; 16] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    /// The rule's `on` (`birthday`, `every`, …).
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClassLabel {
    /// `transient`, `permanent` or `unknown`.
    class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    /// `ok` or `partial`.
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ScopeLabel {
    /// `changed` (the customers a reload changed) or `all`.
    scope: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    /// An open outbox state: `pending`, `retry`, `claimed`, `sending`.
    state: &'static str,
}

/// How a (re)load of plans, playbooks and templates ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadResult {
    /// Every file valid.
    Ok,
    /// Some files broken: their last good version (or nothing, on first load) stays in force.
    Partial,
}

impl ReloadResult {
    /// The `result` label value.
    pub fn code(self) -> &'static str {
        match self {
            ReloadResult::Ok => "ok",
            ReloadResult::Partial => "partial",
        }
    }
}

/// Gauges read from the store at scrape time.
#[derive(Debug, Clone, Default)]
pub struct Gauges {
    /// Whether the database answered in time (the other gauges are left out when not).
    pub database_up: bool,
    /// Open state → rows.
    pub depth: Vec<(crate::store::RowState, i64)>,
    /// Now minus the due time of the oldest open row that is due, in seconds; 0 when none is.
    pub oldest_due_age_secs: i64,
}

/// Per-kind outcome counters, in the order of [`OCCASION_FAMILIES`].
const DUE: usize = 0;
const SENT: usize = 1;
const FAILED: usize = 2;
const DEFERRED: usize = 3;
const SUPPRESSED: usize = 4;
const MISSED: usize = 5;
const UNKNOWN: usize = 6;

/// `contactplan_occasions_<name>_total{kind}`: name and help.
const OCCASION_FAMILIES: [(&str, &str); 7] = [
    ("due", "Outbox rows that came due and were claimed for the first time, by occasion kind"),
    ("sent", "Messages accepted by the transport, by occasion kind"),
    ("failed", "Messages that failed permanently, by occasion kind"),
    ("deferred", "Send attempts that failed transiently and will be retried, by occasion kind"),
    ("suppressed", "Rows no longer wanted (customer, rule or contact removed), by occasion kind"),
    ("missed", "Rows whose deadline passed before they could be sent, by occasion kind"),
    ("unknown", "At-most-once sends whose outcome cannot be known (not resent), by occasion kind"),
];

/// The daemon's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    occasions: [Family<KindLabel, Counter>; 7],
    /// Kinds that have their per-kind counters.
    kinds_seen: std::sync::Mutex<std::collections::HashSet<TriggerKind>>,
    send_latency: Histogram,
    commit_latency: Histogram,
    commit_rows: Counter,
    /// Group commits and their total time in nanoseconds (for benchmarks; the histogram holds
    /// the same for scrapes).
    commits: (AtomicU64, AtomicU64),
    smtp_errors: Family<ClassLabel, Counter>,
    reloads: Family<ResultLabel, Counter>,
    plan_errors: Gauge,
    reload_files_read: Gauge,
    incremental_reloads: Counter,
    revisions_applied: Family<ScopeLabel, Counter>,
    revision_customers: Family<ScopeLabel, Counter>,
    customers: Gauge,
    ready: Gauge,
    database_up: Gauge,
    outbox_depth: Family<StateLabel, Gauge>,
    oldest_due_age: Family<Vec<(String, String)>, Gauge>,
    oauth_renewal_failures: Counter,
    oauth_token_expiry: Gauge,
    relay_rate: Gauge<f64, AtomicU64>,
    relay_sessions: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every metric registered (and every fixed label value at 0).
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let occasions: [Family<KindLabel, Counter>; 7] = Default::default();
        for ((name, help), family) in OCCASION_FAMILIES.iter().zip(&occasions) {
            registry.register(format!("contactplan_occasions_{name}"), *help, family.clone());
        }
        let latency = || Histogram::new(LATENCY_BUCKETS);
        let m = Metrics {
            occasions,
            kinds_seen: Default::default(),
            send_latency: latency(),
            commit_latency: latency(),
            commit_rows: Counter::default(),
            commits: (AtomicU64::new(0), AtomicU64::new(0)),
            smtp_errors: Family::default(),
            reloads: Family::default(),
            plan_errors: Gauge::default(),
            reload_files_read: Gauge::default(),
            incremental_reloads: Counter::default(),
            revisions_applied: Family::default(),
            revision_customers: Family::default(),
            customers: Gauge::default(),
            ready: Gauge::default(),
            database_up: Gauge::default(),
            outbox_depth: Family::default(),
            oldest_due_age: Family::default(),
            oauth_renewal_failures: Counter::default(),
            oauth_token_expiry: Gauge::default(),
            relay_rate: Gauge::default(),
            relay_sessions: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register(
            "contactplan_send_duration_seconds",
            "Time spent in the transport per message (SMTP transaction or Maildir write)",
            m.send_latency.clone(),
        );
        registry.register(
            "contactplan_outbox_commit_duration_seconds",
            "Time per group commit of delivery outcomes and starts (one per SMTP round of all sessions)",
            m.commit_latency.clone(),
        );
        registry.register(
            "contactplan_outbox_commit_rows",
            "Rows recorded by group commits (divided by the commit count: the average group size)",
            m.commit_rows.clone(),
        );
        registry.register(
            "contactplan_smtp_errors",
            "Transport failures by class: transient (retried), permanent, unknown (outcome not known)",
            m.smtp_errors.clone(),
        );
        for class in ["transient", "permanent", "unknown", "quota"] {
            let _ = m.smtp_errors.get_or_create_owned(&ClassLabel { class });
        }
        registry.register(
            "contactplan_plan_reloads",
            "Loads of plans, playbooks and templates by result: ok, or partial (broken files keep their last good version)",
            m.reloads.clone(),
        );
        for r in [ReloadResult::Ok, ReloadResult::Partial] {
            let _ = m.reloads.get_or_create_owned(&ResultLabel { result: r.code() });
        }
        registry.register("contactplan_plan_errors", "Error diagnostics of the last reload", m.plan_errors.clone());
        registry.register(
            "contactplan_reload_files_read",
            "Plan and playbook files the last load or reload read (a reload of changed plan files alone reads those)",
            m.reload_files_read.clone(),
        );
        registry.register(
            "contactplan_plan_reloads_incremental",
            "Reloads that read only the changed plan files (the others shared with the plans in force)",
            m.incremental_reloads.clone(),
        );
        registry.register(
            "contactplan_plan_revisions_applied",
            "New plan revisions the scheduler applied to the outbox (reconciled, customer changes recorded, materialised), by scope: changed (only the customers the reload changed) or all",
            m.revisions_applied.clone(),
        );
        registry.register(
            "contactplan_plan_revision_customers",
            "Customers the scheduler looked at again for new plan revisions, by scope: changed (those a reload changed) or all (every customer)",
            m.revision_customers.clone(),
        );
        for scope in ["changed", "all"] {
            let _ = m.revisions_applied.get_or_create_owned(&ScopeLabel { scope });
            let _ = m.revision_customers.get_or_create_owned(&ScopeLabel { scope });
        }
        registry.register("contactplan_customers", "Customers served", m.customers.clone());
        registry.register("contactplan_ready", "1 when migrations ran and plans are loaded", m.ready.clone());
        registry.register("contactplan_database_up", "1 when the database answered this scrape", m.database_up.clone());
        registry.register(
            "contactplan_outbox_depth",
            "Open outbox rows by state (pending, retry, claimed, sending)",
            m.outbox_depth.clone(),
        );
        registry.register(
            "contactplan_oldest_due_age_seconds",
            "Age of the oldest open row that is due (0 when nothing is due)",
            m.oldest_due_age.clone(),
        );
        registry.register(
            "contactplan_oauth_token_renewal_failures",
            "Failed requests for an OAuth access token (SMTP AUTH XOAUTH2)",
            m.oauth_renewal_failures.clone(),
        );
        registry.register(
            "contactplan_oauth_token_expiry_timestamp_seconds",
            "When the current OAuth access token expires, in Unix seconds (0: none yet)",
            m.oauth_token_expiry.clone(),
        );
        registry.register(
            "contactplan_relay_rate_limit",
            "Messages per second this daemon sends at most now: the configured max_per_second or the adaptive rate after a throttle reply (0: no limit)",
            m.relay_rate.clone(),
        );
        registry.register(
            "contactplan_relay_sessions",
            "SMTP sessions this daemon uses now (halved by a throttle reply, then one more per quiet interval up to [delivery] connections)",
            m.relay_sessions.clone(),
        );
        Metrics { registry, ..m }
    }

    /// XOAUTH2: a token request failed.
    pub fn oauth_renewal_failed(&self) {
        self.oauth_renewal_failures.inc();
    }

    /// XOAUTH2: a new token expires at `unix_secs`.
    pub fn oauth_token_renewed(&self, unix_secs: i64) {
        self.oauth_token_expiry.set(unix_secs);
    }

    /// The relay's effective rate limit (`None`: none) and sessions.
    pub fn relay(&self, rate: Option<f64>, sessions: usize) {
        self.relay_rate.set(rate.unwrap_or(0.0));
        self.relay_sessions.set(sessions as i64);
    }

    /// The counter of `kind` in one per-kind family. A kind seen for the first time gets all
    /// seven families (at 0), so a scrape shows a kind's counters together.
    fn kind(&self, family: usize, kind: TriggerKind) -> Counter {
        let label = KindLabel { kind: kind.code().to_string() };
        let mut seen = self.kinds_seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.insert(kind) {
            for f in &self.occasions {
                let _ = f.get_or_create_owned(&label);
            }
        }
        drop(seen);
        self.occasions[family].get_or_create_owned(&label)
    }

    /// A row claimed for the first time.
    pub fn due(&self, kind: TriggerKind) {
        self.kind(DUE, kind).inc();
    }

    /// Rows suppressed without a send attempt (the plans no longer produce them).
    pub fn suppressed(&self, kind: TriggerKind, n: u64) {
        if n > 0 {
            self.kind(SUPPRESSED, kind).inc_by(n);
        }
    }

    /// Rows that became `missed`.
    pub fn missed(&self, kind: TriggerKind, n: u64) {
        if n > 0 {
            self.kind(MISSED, kind).inc_by(n);
        }
    }

    /// The outcome of one delivery; `latency` is the transport time when the transport was
    /// used, `failure` its error class.
    pub fn delivered(
        &self,
        kind: TriggerKind,
        outcome: &Outcome,
        latency: Option<Duration>,
        failure: Option<FailureClass>,
    ) {
        let family = match outcome {
            Outcome::Accepted { .. } => SENT,
            Outcome::Retry { .. } | Outcome::Deferred { .. } => DEFERRED,
            Outcome::Failed { .. } => FAILED,
            Outcome::Suppressed { .. } => SUPPRESSED,
            Outcome::Unknown { .. } => UNKNOWN,
        };
        self.kind(family, kind).inc();
        if let Some(l) = latency {
            self.send_latency.observe(l.as_secs_f64());
        }
        if let Some(class) = failure {
            self.transport_error(class);
        }
    }

    /// A transport failure (a delivery's, or the ops report's).
    pub fn transport_error(&self, class: FailureClass) {
        if class != FailureClass::Withdrawn {
            self.smtp_errors.get_or_create(&ClassLabel { class: class.code() }).inc();
        }
    }

    /// One group commit of `rows` outcomes and starts that took `took`.
    pub fn committed(&self, rows: usize, took: Duration) {
        self.commit_latency.observe(took.as_secs_f64());
        self.commit_rows.inc_by(rows as u64);
        self.commits.0.fetch_add(1, Ordering::Relaxed);
        self.commits.1.fetch_add(took.as_nanos().min(u128::from(u64::MAX)) as u64, Ordering::Relaxed);
    }

    /// Group commits so far: how many, their total time, and the rows they recorded.
    pub fn commits(&self) -> (u64, Duration, u64) {
        let nanos = self.commits.1.load(Ordering::Relaxed);
        (self.commits.0.load(Ordering::Relaxed), Duration::from_nanos(nanos), self.commit_rows.get())
    }

    /// A finished (re)load: serving `customers`, with `errors` error diagnostics.
    pub fn reloaded(&self, customers: usize, errors: usize) {
        let result = if errors == 0 { ReloadResult::Ok } else { ReloadResult::Partial };
        self.reloads.get_or_create(&ResultLabel { result: result.code() }).inc();
        self.plan_errors.set(errors as i64);
        self.customers.set(customers as i64);
    }

    /// What the last (re)load read: `files` plan and playbook files, only changed plan files
    /// when `incremental`.
    pub fn files_read(&self, files: usize, incremental: bool) {
        self.reload_files_read.set(files as i64);
        if incremental {
            self.incremental_reloads.inc();
        }
    }

    /// A new plan revision applied to the outbox: `customers` looked at again, `scope`
    /// `changed` (the ones the reload changed) or `all`.
    pub fn revision_applied(&self, scope: &'static str, customers: usize) {
        let label = ScopeLabel { scope };
        self.revisions_applied.get_or_create(&label).inc();
        self.revision_customers.get_or_create(&label).inc_by(customers as u64);
    }

    /// The `/metrics` text, with `ready` and the store's `gauges` of this scrape.
    pub fn encode(&self, ready: bool, gauges: &Gauges) -> String {
        self.ready.set(i64::from(ready));
        self.database_up.set(i64::from(gauges.database_up));
        self.outbox_depth.clear();
        self.oldest_due_age.clear();
        if gauges.database_up {
            for (state, n) in &gauges.depth {
                self.outbox_depth.get_or_create(&StateLabel { state: state.code() }).set(*n);
            }
            self.oldest_due_age.get_or_create(&Vec::new()).set(gauges.oldest_due_age_secs);
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_help_text_ends_in_one_period() {
        // prometheus-client appends the period itself: a help text ending in one gave "..".
        let text = Metrics::new().encode(false, &Default::default());
        let helps: Vec<&str> = text.lines().filter(|l| l.starts_with("# HELP")).collect();
        assert!(helps.len() > 10, "{text}");
        for l in helps {
            assert!(l.ends_with('.') && !l.ends_with(".."), "{l}");
        }
    }
}
