//! The durable outbox. One interface, two engines chosen by the database URL: SQLite
//! (`sqlite://path`, embedded default) and PostgreSQL (`postgres://…` or `postgresql://…`,
//! several daemons on one database: claims use `FOR UPDATE SKIP LOCKED`, leases run on the
//! database clock). Both engines have the same semantics and run the same test suite
//! (`tests/it/store.rs`). Each state change is its own committed statement; no transaction is
//! ever held across network I/O.
//!
//! States: `pending` → `claimed` (in a batch, lease held) → `sending` (this row's SMTP
//! transaction is about to start; committed before it does) → `accepted`; or `retry` (transient
//! failure, `next_attempt_utc` set), `failed` (permanent), `missed` (deadline passed),
//! `suppressed` (no longer wanted: customer, rule or contact removed), `unknown` (an
//! at-most-once send whose outcome cannot be known: reported to ops, never resent).
//! `failed`, `missed` and `unknown` rows are reported to ops once (`reported_utc`).

mod postgres;
mod sqlite;
mod upkeep;

use chrono::{DateTime, Utc};

pub use postgres::PgStore;
pub use sqlite::SqliteStore;
pub use upkeep::{Backlog, NextDue};

/// An occurrence ready to be written into the outbox.
#[derive(Debug, Clone)]
pub struct NewItem {
    pub key: String,
    pub customer: String,
    pub rule: String,
    pub kind: &'static str,
    pub action: &'static str,
    pub recipient: String,
    pub recipient_domain: String,
    pub nominal: String,
    pub occasion_date: String,
    pub years: Option<i64>,
    pub timezone: String,
    pub due: i64,
    pub deadline: i64,
    pub message_id: String,
    /// `at_least_once` or `at_most_once`: what to do when an outcome is unknown.
    pub delivery: &'static str,
    /// `pending`, or `missed` when it was due while no daemon ran.
    pub state: &'static str,
    pub reason: Option<String>,
}

/// A row claimed for sending; `fence` must be presented to record the outcome.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Claimed {
    pub id: i64,
    pub key: String,
    pub customer: String,
    pub rule: String,
    /// The rule's `on` (`birthday`, `every`, …), for per-kind metrics.
    pub kind: String,
    pub recipient: String,
    pub nominal: String,
    pub occasion_date: String,
    pub years: Option<i64>,
    pub message_id: String,
    pub attempts: i64,
    pub fence: i64,
    pub due_utc: i64,
    pub deadline_utc: i64,
    pub delivery: String,
}

/// One outbox row as shown to ops.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct Row {
    pub id: i64,
    pub key: String,
    pub customer: String,
    pub rule: String,
    pub kind: String,
    pub recipient: String,
    pub state: String,
    pub attempts: i64,
    pub due_utc: i64,
    pub reason: Option<String>,
    pub smtp_reply: Option<String>,
    pub message_id: String,
}

/// The outcome to record for a claimed row.
#[derive(Debug, Clone)]
pub enum Outcome {
    Accepted {
        reply: String,
    },
    Retry {
        at: i64,
        reason: String,
    },
    Failed {
        reason: String,
    },
    Suppressed {
        reason: String,
    },
    /// At-most-once and the server may or may not have the message: never resent.
    Unknown {
        reason: String,
    },
}

/// The columns an outcome sets, shared by both engines.
pub(crate) struct OutcomeFields<'a> {
    pub state: &'static str,
    pub reply: Option<&'a str>,
    pub reason: Option<&'a str>,
    pub next_attempt: Option<i64>,
    pub sent: Option<i64>,
}

impl Outcome {
    pub(crate) fn fields(&self, now: i64) -> OutcomeFields<'_> {
        let none = OutcomeFields { state: "", reply: None, reason: None, next_attempt: None, sent: None };
        match self {
            Outcome::Accepted { reply } => {
                OutcomeFields { state: "accepted", reply: Some(reply), sent: Some(now), ..none }
            }
            Outcome::Retry { at, reason } => {
                OutcomeFields { state: "retry", reason: Some(reason), next_attempt: Some(*at), ..none }
            }
            Outcome::Failed { reason } => OutcomeFields { state: "failed", reason: Some(reason), ..none },
            Outcome::Suppressed { reason } => OutcomeFields { state: "suppressed", reason: Some(reason), ..none },
            Outcome::Unknown { reason } => OutcomeFields { state: "unknown", reason: Some(reason), ..none },
        }
    }
}

/// Unix seconds.
pub fn secs(t: DateTime<Utc>) -> i64 {
    t.timestamp()
}

/// The store, by engine.
#[derive(Clone)]
pub enum Store {
    Sqlite(SqliteStore),
    Postgres(PgStore),
}

/// What a group commit achieved.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BatchResult {
    /// Outcomes recorded (their fence still held).
    pub finished: u64,
    /// Ids now `sending` (the others lost their claim and must not be sent).
    pub started: Vec<i64>,
}

impl BatchResult {
    /// From the `(id, new state)` pairs a group update returned: `sending` rows were started,
    /// the others finished.
    pub(crate) fn from_updated(updated: Vec<(i64, String)>) -> BatchResult {
        let mut result = BatchResult::default();
        for (id, state) in updated {
            if state == "sending" {
                result.started.push(id);
            } else {
                result.finished += 1;
            }
        }
        result
    }
}

/// One row of a group update, as both engines bind it: id, fence, new state, reply, reason,
/// next attempt, sent time. A start is `(id, fence, "sending", None…)`.
pub(crate) type GroupRow<'a> = (i64, i64, &'static str, Option<&'a str>, Option<&'a str>, Option<i64>, Option<i64>);

/// The rows of one group commit: outcomes, then starts. A row is never in both (a worker
/// records a row's outcome only after the commit that started it).
pub(crate) fn group_rows<'a>(outcomes: &'a [(i64, i64, Outcome)], start: &[(i64, i64)], now: i64) -> Vec<GroupRow<'a>> {
    let finished = outcomes.iter().map(|(id, fence, o)| {
        let f = o.fields(now);
        (*id, *fence, f.state, f.reply, f.reason, f.next_attempt, f.sent)
    });
    let started = start.iter().map(|(id, fence)| (*id, *fence, "sending", None, None, None, None));
    finished.chain(started).collect()
}

/// Rows taken over from a sender whose lease expired.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Recovered {
    /// Claimed rows never attempted, put back to `pending` (safe under both policies).
    pub released: u64,
    /// At-least-once rows put back for a resend with the same Message-ID.
    pub retried: u64,
    /// At-most-once rows marked `unknown` (reported, not resent).
    pub unknown: u64,
}

/// Results of one materialisation pass.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Materialized {
    pub inserted: u64,
    pub missed: u64,
    /// The kind of each row inserted as `missed` (for per-kind metrics).
    pub missed_kinds: Vec<String>,
}

macro_rules! engine {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            Store::Sqlite($s) => $e,
            Store::Postgres($s) => $e,
        }
    };
}

/// The engine a database URL selects (the URL alone decides).
enum Engine {
    Sqlite,
    Postgres,
}

impl Engine {
    fn of(url: &str) -> anyhow::Result<Engine> {
        if url.starts_with("sqlite:") {
            Ok(Engine::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Engine::Postgres)
        } else {
            anyhow::bail!("unsupported database URL `{url}`: use sqlite://path or postgres://user@host/database")
        }
    }
}

impl Store {
    /// Connects by URL and applies migrations: `sqlite://…` (creates the file) or
    /// `postgres://…` / `postgresql://…` (migrations are safe when several daemons start at once).
    pub async fn connect(url: &str) -> anyhow::Result<Store> {
        Ok(match Engine::of(url)? {
            Engine::Sqlite => Store::Sqlite(SqliteStore::connect(url).await?),
            Engine::Postgres => Store::Postgres(PgStore::connect(url).await?),
        })
    }

    /// Opens an outbox that already exists, for reading (`contactplan status`): creates no
    /// file and runs no migration, so a mistyped path is reported, not answered with a new,
    /// empty outbox.
    pub async fn open_existing(url: &str) -> anyhow::Result<Store> {
        Ok(match Engine::of(url)? {
            Engine::Sqlite => Store::Sqlite(SqliteStore::open_existing(url).await?),
            Engine::Postgres => Store::Postgres(PgStore::open_existing(url).await?),
        })
    }

    /// Writes new occurrences; existing keys are left untouched.
    pub async fn materialize(&self, items: &[NewItem], now: i64) -> anyhow::Result<Materialized> {
        engine!(self, s => s.materialize(items, now).await)
    }

    /// Marks open rows whose deadline has passed as missed; returns them for reporting.
    pub async fn expire(&self, now: i64) -> anyhow::Result<Vec<Row>> {
        engine!(self, s => s.expire(now).await)
    }

    /// Takes over rows whose lease expired (a crashed sender): at-least-once rows go to
    /// `retry`, at-most-once rows to `unknown`.
    pub async fn recover_expired_leases(&self) -> anyhow::Result<Recovered> {
        engine!(self, s => s.recover_expired_leases().await)
    }

    /// Claims up to `limit` due rows for `owner`, holding a lease of `lease_secs` (on the
    /// database clock). The earliest due rows are taken and returned in due order (`due_utc`,
    /// then `id`), whatever order the engine's `UPDATE … RETURNING` produced.
    pub async fn claim(&self, now: i64, limit: u32, owner: &str, lease_secs: i64) -> anyhow::Result<Vec<Claimed>> {
        let mut claimed = engine!(self, s => s.claim(now, limit, owner, lease_secs).await)?;
        claimed.sort_by_key(|c| (c.due_utc, c.id));
        Ok(claimed)
    }

    /// Records the outcome of a claim; false when the fence no longer matches (lease lost).
    pub async fn finish(&self, id: i64, fence: i64, outcome: &Outcome, now: i64) -> anyhow::Result<bool> {
        engine!(self, s => s.finish(id, fence, outcome, now).await)
    }

    /// One group commit: records `outcomes` and moves the `start` rows from `claimed` to
    /// `sending` (their transactions begin once this returns), renewing their lease to
    /// `send_lease_secs` on the database clock: a row claimed early in a long batch still has a
    /// whole send ahead of it. Fenced throughout.
    pub async fn finish_batch(
        &self,
        outcomes: &[(i64, i64, Outcome)],
        start: &[(i64, i64)],
        now: i64,
        send_lease_secs: i64,
    ) -> anyhow::Result<BatchResult> {
        engine!(self, s => s.finish_batch(outcomes, start, now, send_lease_secs).await)
    }

    /// Failed, missed and unknown rows not yet reported to ops (oldest first).
    pub async fn unreported(&self, limit: i64) -> anyhow::Result<Vec<Row>> {
        engine!(self, s => s.unreported(limit).await)
    }

    /// Marks rows as reported to ops.
    pub async fn mark_reported(&self, ids: &[i64], now: i64) -> anyhow::Result<()> {
        engine!(self, s => s.mark_reported(ids, now).await)
    }

    /// Gives claimed rows back (shutdown) without counting an attempt.
    pub async fn release(&self, id: i64, fence: i64) -> anyhow::Result<()> {
        engine!(self, s => s.release(id, fence).await)
    }

    /// The earliest instant something open becomes due.
    pub async fn next_due(&self) -> anyhow::Result<Option<i64>> {
        engine!(self, s => s.next_due().await)
    }

    pub async fn counts(&self) -> anyhow::Result<Vec<(String, i64)>> {
        engine!(self, s => s.counts().await)
    }

    pub async fn rows(&self, state: Option<&str>, limit: i64) -> anyhow::Result<Vec<Row>> {
        engine!(self, s => s.rows(state, limit).await)
    }

    pub async fn get_value(&self, name: &str) -> anyhow::Result<Option<String>> {
        engine!(self, s => s.get_value(name).await)
    }

    pub async fn set_value(&self, name: &str, value: &str) -> anyhow::Result<()> {
        engine!(self, s => s.set_value(name, value).await)
    }
}
