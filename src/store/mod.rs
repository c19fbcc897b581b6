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

mod budget;
mod calls;
mod customers;
mod events;
mod orders;
mod postgres;
mod reconcile;
mod rows;
mod sqlite;
mod upkeep;

pub use budget::{Budget, Claim, SECOND_GUARD_MS, SECOND_SLICE_MS, second_slice};
pub use calls::{Announcement, CallDigest, CallEntry, Tell};
pub use customers::{CUSTOMERS_PER_CHUNK, CustomerChange, Detected};
pub use events::{Declared, ORDER_DAYS_PER_CUSTOMER, StoredEvent};
pub use orders::{CustomerTotals, Ingested, OrderChange, Revenue};
pub use postgres::PgStore;
pub use reconcile::{Change, Reconcilable, Reconciled, Retiming};
pub use rows::{Claimed, MappingError, NewItem, Row, RowState, UnixSecs, secs};
pub(crate) use rows::{ClaimedColumns, ItemColumns, RowColumns, claimed_columns, row_columns, typed};
pub use sqlite::SqliteStore;
pub use upkeep::{Backlog, NextDue};

/// The outcome to record for a claimed row.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// The server accepted the message (`accepted`).
    Accepted {
        /// The server's final reply.
        reply: String,
    },
    /// A transient failure: tried again later (`retry`).
    Retry {
        /// Next attempt.
        at: UnixSecs,
        /// What failed.
        reason: String,
    },
    /// The relay refused for its own sending limit (a quota or rate reply): `retry` at `at`,
    /// and the attempt is not counted (a day of quota pauses never makes a row `failed`).
    Deferred {
        /// Next attempt (when the relay's window rolls over).
        at: UnixSecs,
        /// The relay's reply.
        reason: String,
    },
    /// A permanent failure, or too many attempts (`failed`, reported to ops).
    Failed {
        /// What failed (the server's reply, or why the message could not be built).
        reason: String,
    },
    /// No longer wanted: its customer, rule or contact was removed (`suppressed`).
    Suppressed {
        /// What was removed.
        reason: String,
    },
    /// At-most-once and the server may or may not have the message: never resent.
    Unknown {
        /// What happened (reported to ops).
        reason: String,
    },
}

/// The columns an outcome sets, shared by both engines.
pub(crate) struct OutcomeFields<'a> {
    pub state: RowState,
    pub reply: Option<&'a str>,
    pub reason: Option<&'a str>,
    pub next_attempt: Option<i64>,
    pub sent: Option<i64>,
    /// 1: the claim's attempt is given back (`Deferred`).
    pub refund: i64,
}

impl Outcome {
    pub(crate) fn fields(&self, now: UnixSecs) -> OutcomeFields<'_> {
        let with = |state, reason| OutcomeFields {
            state,
            reply: None,
            reason: Some(reason),
            next_attempt: None,
            sent: None,
            refund: 0,
        };
        match self {
            Outcome::Accepted { reply } => OutcomeFields {
                state: RowState::Accepted,
                reply: Some(reply),
                reason: None,
                next_attempt: None,
                sent: Some(now.0),
                refund: 0,
            },
            Outcome::Retry { at, reason } => {
                OutcomeFields { next_attempt: Some(at.0), ..with(RowState::Retry, reason) }
            }
            Outcome::Deferred { at, reason } => {
                OutcomeFields { next_attempt: Some(at.0), refund: 1, ..with(RowState::Retry, reason) }
            }
            Outcome::Failed { reason } => with(RowState::Failed, reason),
            Outcome::Suppressed { reason } => with(RowState::Suppressed, reason),
            Outcome::Unknown { reason } => with(RowState::Unknown, reason),
        }
    }
}

/// The store, by engine.
#[derive(Clone)]
pub enum Store {
    /// SQLite (`sqlite://…`).
    Sqlite(SqliteStore),
    /// PostgreSQL (`postgres://…`, `postgresql://…`).
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
            if RowState::parse(&state) == Some(RowState::Sending) {
                result.started.push(id);
            } else {
                result.finished += 1;
            }
        }
        result
    }
}

/// One row of a group update, as both engines bind it: id, fence, new state (its column value),
/// reply, reason, next attempt, sent time, attempts given back. A start is `(id, fence, "sending",
/// None…, 0)`.
pub(crate) type GroupRow<'a> =
    (i64, i64, &'static str, Option<&'a str>, Option<&'a str>, Option<i64>, Option<i64>, i64);

/// The rows of one group commit: outcomes, then starts. A row is never in both (a worker
/// records a row's outcome only after the commit that started it).
pub(crate) fn group_rows<'a>(
    outcomes: &'a [(i64, i64, Outcome)],
    start: &[(i64, i64)],
    now: UnixSecs,
) -> Vec<GroupRow<'a>> {
    let finished = outcomes.iter().map(|(id, fence, o)| {
        let f = o.fields(now);
        (*id, *fence, f.state.code(), f.reply, f.reason, f.next_attempt, f.sent, f.refund)
    });
    let started = start.iter().map(|(id, fence)| (*id, *fence, RowState::Sending.code(), None, None, None, None, 0));
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

impl Recovered {
    /// Counts the new states of rows given up (`pending`, `retry`, `unknown`).
    pub(crate) fn count(states: &[String]) -> Recovered {
        let n = |s: RowState| states.iter().filter(|x| RowState::parse(x) == Some(s)).count() as u64;
        Recovered { released: n(RowState::Pending), retried: n(RowState::Retry), unknown: n(RowState::Unknown) }
    }
}

/// Why an abandoned at_least_once row is sent again.
pub(crate) const ABANDONED_RESEND: &str =
    "the delivery worker ended without recording an outcome; resending with the same Message-ID";
/// Why an abandoned at_most_once row is not.
pub(crate) const ABANDONED_UNKNOWN: &str =
    "the delivery worker ended during delivery; the server may or may not have the message (at_most_once: not resent)";

/// Results of one materialisation pass.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Materialized {
    /// Rows inserted as `pending`.
    pub inserted: u64,
    /// Rows inserted as `missed` (due while no daemon ran, deadline already passed).
    pub missed: u64,
    /// The kind of each row inserted as `missed` (for per-kind metrics).
    pub missed_kinds: Vec<crate::plan::TriggerKind>,
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
    ///
    /// # Errors
    /// An unsupported URL scheme, an unreachable or unopenable database (for SQLite also a database
    /// directory that cannot be created), or a failing migration.
    pub async fn connect(url: &str) -> anyhow::Result<Store> {
        Ok(match Engine::of(url)? {
            Engine::Sqlite => Store::Sqlite(SqliteStore::connect(url).await?),
            Engine::Postgres => Store::Postgres(PgStore::connect(url).await?),
        })
    }

    /// Opens an outbox that already exists, for reading (`contactplan status`): creates no
    /// file and runs no migration, so a mistyped path is reported, not answered with a new,
    /// empty outbox.
    ///
    /// # Errors
    /// An unsupported URL scheme, an SQLite file that does not exist, or a database that cannot be
    /// reached or opened.
    pub async fn open_existing(url: &str) -> anyhow::Result<Store> {
        Ok(match Engine::of(url)? {
            Engine::Sqlite => Store::Sqlite(SqliteStore::open_existing(url).await?),
            Engine::Postgres => Store::Postgres(PgStore::open_existing(url).await?),
        })
    }

    /// Whether the database is still the one the store opened: for SQLite, the file at the
    /// configured path must be the same file (device and inode); PostgreSQL always is.
    ///
    /// # Errors
    /// The SQLite file was deleted or replaced under the running daemon (the reason in words).
    pub fn verify_file(&self) -> Result<(), String> {
        match self {
            Store::Sqlite(s) => s.verify_file(),
            Store::Postgres(_) => Ok(()),
        }
    }

    /// Writes new occurrences; existing keys are left untouched.
    /// `now` (Unix seconds, UTC) is stored as the rows' creation time; each item's `state` is kept.
    /// Returns how many rows were inserted, by state.
    ///
    /// # Errors
    /// A database error. Items are written in chunks, each its own transaction, so chunks before
    /// the failing one stay written (a later pass adds the rest: inserts are idempotent).
    pub async fn materialize(&self, items: &[NewItem], now: UnixSecs) -> anyhow::Result<Materialized> {
        engine!(self, s => s.materialize(items, now.0).await)
    }

    /// Marks open rows whose deadline has passed as missed; returns them for reporting.
    /// A row whose `deadline_utc <= now` in `pending`, `retry` or
    /// `claimed` is expired (`sending` rows are left to lease recovery).
    ///
    /// # Errors
    /// A database error.
    pub async fn expire(&self, now: UnixSecs) -> anyhow::Result<Vec<Row>> {
        typed(engine!(self, s => s.expire(now.0).await)?)
    }

    /// Takes over rows whose lease expired (a crashed sender): at-least-once rows go to
    /// `retry`, at-most-once rows to `unknown`.
    /// "Expired" is judged on the database clock (`lease_until` before the database's now), and
    /// claimed rows that were never attempted go back to `pending`.
    ///
    /// # Errors
    /// A database error (nothing is changed: one transaction).
    pub async fn recover_expired_leases(&self) -> anyhow::Result<Recovered> {
        engine!(self, s => s.recover_expired_leases().await)
    }

    /// Claims up to `limit` due rows for `owner`, holding a lease of `lease_secs` (on the
    /// database clock). The earliest due rows are taken and returned in due order (`due_utc`,
    /// then `id`), whatever order the engine's `UPDATE … RETURNING` produced.
    /// `now` (Unix seconds, UTC) decides what is due: `pending` or `retry` rows with
    /// `due_utc <= now < deadline_utc` whose `next_attempt_utc`, if set, is not after `now`.
    /// `lease_secs` is in seconds.
    /// Each claimed row's fence and attempts go up by one.
    ///
    /// # Errors
    /// A database error.
    pub async fn claim(&self, now: UnixSecs, limit: u32, owner: &str, lease_secs: i64) -> anyhow::Result<Vec<Claimed>> {
        let mut claimed = self.claim_within(now, limit, owner, lease_secs, &Budget::default()).await?.rows;
        claimed.sort_by_key(|c| (c.due, c.id));
        Ok(claimed)
    }

    /// [`Store::claim`] within the relay's `budget` (shared by every daemon on the database;
    /// see `budget.rs`), and not while the relay is paused ([`Store::pause_relay`]). Takes the
    /// earliest deadlines first, by priority and round-robin over customers within a deadline
    /// hour, and returns the rows in that order. When nothing may be claimed now, says how long
    /// until something may.
    ///
    /// # Errors
    /// A database error (nothing claimed, nothing counted).
    pub async fn claim_within(
        &self,
        now: UnixSecs,
        limit: u32,
        owner: &str,
        lease_secs: i64,
        budget: &Budget,
    ) -> anyhow::Result<Claim> {
        let (rows, order, wait_ms, paused_until, send_within_ms) =
            engine!(self, s => s.claim_within(now.0, limit, owner, lease_secs, budget).await)?;
        let mut rows: Vec<Claimed> = typed(rows)?;
        let position: std::collections::HashMap<i64, usize> =
            order.iter().enumerate().map(|(i, id)| (*id, i)).collect();
        rows.sort_by_key(|r| position.get(&r.id).copied().unwrap_or(usize::MAX));
        Ok(Claim { rows, wait_ms, paused_until, send_within_ms })
    }

    /// Pauses claiming for every daemon on the database (a quota reply): until the database
    /// clock's now plus `min_secs`, rounded up to a multiple of `align` seconds (the next
    /// minute, hour …); an earlier end never shortens a pause already set. Returns the pause's
    /// end and the database's now (Unix seconds).
    ///
    /// # Errors
    /// A database error.
    pub async fn pause_relay(&self, min_secs: i64, align: i64) -> anyhow::Result<(UnixSecs, UnixSecs)> {
        let (until, now) = engine!(self, s => s.pause_relay(min_secs, align).await)?;
        Ok((UnixSecs(until), UnixSecs(now)))
    }

    /// Open rows (`pending`, `retry`) with a deadline in `(now, until]`: how many there are, and
    /// the first `limit` of them by deadline as `(id, key, due or next attempt, deadline)`.
    /// For the capacity projection (`dispatch/capacity.rs`); `limit` 0 only counts.
    ///
    /// # Errors
    /// A database error.
    pub async fn open_by_deadline(
        &self,
        now: UnixSecs,
        until: UnixSecs,
        limit: i64,
    ) -> anyhow::Result<(i64, Vec<(i64, String, i64, i64)>)> {
        engine!(self, s => s.open_by_deadline(now.0, until.0, limit).await)
    }

    /// Marks open rows `missed` with their reason: announced ahead of their deadline as not
    /// fitting under the relay's caps. Only rows still `pending` or `retry` change, and for each
    /// of them whose [`Announcement::tell`] names a salesperson, a "call instead" entry is
    /// written (see `calls.rs`), all in one transaction; returns the rows this call changed, so
    /// of several daemons only one announces a row and its salesperson is told exactly once.
    /// `now` (Unix seconds, UTC) is the row's last change and the entry's announcement time.
    ///
    /// # Errors
    /// A database error (nothing changed).
    pub async fn announce_missed(&self, rows: &[Announcement], now: UnixSecs) -> anyhow::Result<Vec<Row>> {
        typed(engine!(self, s => s.announce_missed(rows, now.0).await)?)
    }

    /// Takes `n` messages from every configured window of the relay's budget (`budget.rs`,
    /// shared by every daemon on the database) if all of them fit now and the relay is not
    /// paused; else takes nothing and returns how many milliseconds to wait before asking again
    /// (`Some`). For messages that are not outbox rows (digests, notices, the ops report), so
    /// that everything handed to the relay counts against its caps. Without a configured cap,
    /// only the pause is checked. With a per-second cap, take one message at a time (the
    /// second's pacing never allows more than a tenth of its cap at once).
    ///
    /// # Errors
    /// A database error (nothing taken).
    pub async fn take_budget(&self, n: u32, budget: &Budget) -> anyhow::Result<Option<i64>> {
        if n == 0 {
            return Ok(None);
        }
        engine!(self, s => s.take_budget(n, budget).await)
    }

    /// The stored budget rows `(kind, window start, used)` and the database's now.
    ///
    /// # Errors
    /// A database error.
    pub async fn relay_usage(&self) -> anyhow::Result<(Vec<(String, i64, i64)>, UnixSecs)> {
        let (rows, now) = engine!(self, s => s.relay_usage().await)?;
        Ok((rows, UnixSecs(now)))
    }

    /// Records the outcome of a claim; false when the fence no longer matches (lease lost).
    /// `now` is Unix seconds (UTC), stored as the row's last change.
    ///
    /// # Errors
    /// A database error.
    pub async fn finish(&self, id: i64, fence: i64, outcome: &Outcome, now: UnixSecs) -> anyhow::Result<bool> {
        Ok(self.finish_batch(&[(id, fence, outcome.clone())], &[], now, 0).await?.finished == 1)
    }

    /// One group commit: records `outcomes` and moves the `start` rows from `claimed` to
    /// `sending` (their transactions begin once this returns), renewing their lease to
    /// `send_lease_secs` on the database clock: a row claimed early in a long batch still has a
    /// whole send ahead of it. Fenced throughout.
    /// `outcomes` are `(id, fence, outcome)` and `start` is `(id, fence)`; `now` is Unix seconds (UTC)
    /// and `send_lease_secs` is in seconds.
    ///
    /// # Errors
    /// A database error; then nothing of the group was recorded.
    pub async fn finish_batch(
        &self,
        outcomes: &[(i64, i64, Outcome)],
        start: &[(i64, i64)],
        now: UnixSecs,
        send_lease_secs: i64,
    ) -> anyhow::Result<BatchResult> {
        if outcomes.is_empty() && start.is_empty() {
            return Ok(BatchResult::default());
        }
        let rows = group_rows(outcomes, start, now);
        engine!(self, s => s.finish_batch(&rows, now.0, send_lease_secs).await)
    }

    /// Failed, missed and unknown rows not yet reported to ops (oldest first).
    ///
    /// # Errors
    /// A database error.
    pub async fn unreported(&self, limit: i64) -> anyhow::Result<Vec<Row>> {
        typed(engine!(self, s => s.unreported(limit).await)?)
    }

    /// Marks rows as reported to ops.
    /// `now` is Unix seconds (UTC), stored as `reported_utc`.
    ///
    /// # Errors
    /// A database error.
    pub async fn mark_reported(&self, ids: &[i64], now: UnixSecs) -> anyhow::Result<()> {
        engine!(self, s => s.mark_reported(ids, now.0).await)
    }

    /// Gives up this daemon's hold on `rows` (`(id, fence)`) at once, when the worker that had
    /// them ended without recording an outcome (a failed group commit, a worker that died): a
    /// `claimed` row goes back to `pending` (never attempted), a `sending` row to `retry`
    /// (at_least_once: resent with the same Message-ID) or `unknown` (at_most_once: reported,
    /// not resent) — what a takeover after the lease would do, without waiting for it or
    /// leaving the row to this live daemon's renewals. Fenced: a row another claim took is
    /// untouched. A resend waits until `retry_at`, so a row that keeps ending its worker is not
    /// taken up again in the same tick. `now`, `retry_at`: Unix seconds (UTC).
    ///
    /// # Errors
    /// A database error (the rows are then taken over when their lease ends).
    pub async fn abandon(&self, rows: &[(i64, i64)], now: UnixSecs, retry_at: UnixSecs) -> anyhow::Result<Recovered> {
        engine!(self, s => s.abandon(rows, now.0, retry_at.0).await)
    }

    /// Gives claimed rows back (shutdown, a quota pause, the end of a capped second) without
    /// counting an attempt, in one statement. `rows`: `(id, fence)`; only while `fence` is still
    /// the row's does a row in `claimed` or `sending` go back to `pending`.
    ///
    /// # Errors
    /// A database error (nothing given back).
    pub async fn release(&self, rows: &[(i64, i64)]) -> anyhow::Result<()> {
        engine!(self, s => s.release(rows).await)
    }

    /// The earliest instant something open becomes due.
    /// Unix seconds (UTC): the smallest of `max(due_utc, next_attempt_utc)` over `pending` and `retry`
    /// rows; `None` when there are none.
    ///
    /// # Errors
    /// A database error.
    pub async fn next_due(&self) -> anyhow::Result<Option<UnixSecs>> {
        Ok(engine!(self, s => s.next_due().await)?.map(UnixSecs))
    }

    /// Rows per state, `(state, count)` ordered by state; states without rows are left out.
    ///
    /// # Errors
    /// A database error.
    pub async fn counts(&self) -> anyhow::Result<Vec<(RowState, i64)>> {
        let counts = engine!(self, s => s.counts().await)?;
        counts
            .into_iter()
            .map(|(state, n)| {
                RowState::parse(&state).map(|s| (s, n)).ok_or_else(|| anyhow::anyhow!("unknown outbox state `{state}`"))
            })
            .collect()
    }

    /// Up to `limit` rows, ordered by `due_utc` then id, all states or only `state`.
    ///
    /// # Errors
    /// A database error.
    pub async fn rows(&self, state: Option<RowState>, limit: i64) -> anyhow::Result<Vec<Row>> {
        typed(engine!(self, s => s.rows(state.map(RowState::code), limit).await)?)
    }

    /// A value kept in the `daemon_state` table (such as [`crate::dispatch::WATERMARK`]); `None` when
    /// never set.
    ///
    /// # Errors
    /// A database error.
    pub async fn get_value(&self, name: &str) -> anyhow::Result<Option<String>> {
        engine!(self, s => s.get_value(name).await)
    }

    /// Refreshes the query planner's statistics of the outbox after a bulk write (PostgreSQL:
    /// `ANALYZE outbox`; SQLite: nothing, its planner takes the partial indexes without them).
    /// Until autovacuum analyses a table that a pass filled, PostgreSQL plans the claim's
    /// candidate query without the deadline index: 55-98 ms per claim at 100,000 due rows,
    /// against 8-12 ms once analysed (the dispatch benchmark under a cap, BENCHMARKS.md).
    ///
    /// # Errors
    /// A database error.
    pub async fn refresh_statistics(&self) -> anyhow::Result<()> {
        match self {
            Store::Sqlite(_) => Ok(()),
            Store::Postgres(s) => s.analyze_outbox().await,
        }
    }

    /// Sets (inserts or replaces) a `daemon_state` value.
    ///
    /// # Errors
    /// A database error.
    pub async fn set_value(&self, name: &str, value: &str) -> anyhow::Result<()> {
        engine!(self, s => s.set_value(name, value).await)
    }
}
