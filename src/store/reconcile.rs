//! The rows reconciliation looks at, and the changes it writes (see
//! `dispatch::reconcile`): open rows not yet in a batch (`pending`, `retry`) are re-timed or
//! suppressed; rows the plans suppressed are revived when the plans produce them again before
//! their deadline. Every change is guarded by the state it was decided on, so a row claimed in
//! the meantime (or changed by another daemon) is left alone. Written once for both engines.

use super::rows::{MappingError, RowState, UnixSecs};
use super::{PgStore, SqliteStore, Store};
use crate::occasion::OutboxKey;
use crate::plan::TriggerKind;
use chrono::NaiveDate;

/// A row reconciliation checks against the plans.
#[derive(Debug, Clone)]
pub struct Reconcilable {
    /// Row id.
    pub id: i64,
    /// The outbox key.
    pub key: OutboxKey,
    /// The rule's `on` when the row was written.
    pub kind: TriggerKind,
    /// `Pending` or `Retry` (may be re-timed or suppressed), or `Suppressed` by the plans (may
    /// be revived).
    pub state: RowState,
    /// Civil date of the occasion itself.
    pub occasion_date: NaiveDate,
    /// Years of the relationship (anniversaries only).
    pub years: Option<u32>,
    /// Send instant.
    pub due: UnixSecs,
    /// Deadline.
    pub deadline: UnixSecs,
}

#[derive(sqlx::FromRow)]
struct Columns {
    id: i64,
    key: String,
    kind: String,
    state: String,
    occasion_date: String,
    years: Option<i64>,
    due_utc: i64,
    deadline_utc: i64,
}

impl TryFrom<Columns> for Reconcilable {
    type Error = MappingError;
    fn try_from(c: Columns) -> Result<Reconcilable, MappingError> {
        let bad = |what: String| MappingError { id: c.id, what };
        Ok(Reconcilable {
            key: c.key.parse().map_err(bad)?,
            kind: TriggerKind::parse(&c.kind).ok_or_else(|| bad(format!("unknown kind `{}`", c.kind)))?,
            state: RowState::parse(&c.state).ok_or_else(|| bad(format!("unknown state `{}`", c.state)))?,
            occasion_date: c
                .occasion_date
                .parse()
                .map_err(|_| bad(format!("unknown occasion date `{}`", c.occasion_date)))?,
            years: c.years.and_then(|y| u32::try_from(y).ok()),
            due: UnixSecs(c.due_utc),
            deadline: UnixSecs(c.deadline_utc),
            id: c.id,
        })
    }
}

/// When and what a row is now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retiming {
    /// Send instant.
    pub due: UnixSecs,
    /// Deadline.
    pub deadline: UnixSecs,
    /// Civil date of the occasion itself.
    pub occasion_date: NaiveDate,
    /// Years of the relationship (anniversaries only).
    pub years: Option<u32>,
}

/// One change reconciliation writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A `pending`/`retry` row whose timing changed.
    Retime(Retiming),
    /// A `pending`/`retry` row the plans no longer produce (`suppressed`, revivable).
    Suppress {
        /// What changed, e.g. "birthday of `anna` changed from 12-01 to 12-03".
        reason: String,
    },
    /// A row the plans had suppressed and produce again: back to `pending`.
    Revive(Retiming),
}

/// What a reconciliation wrote.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Reconciled {
    /// Rows re-timed.
    pub retimed: u64,
    /// Rows suppressed.
    pub suppressed: u64,
    /// Rows revived.
    pub revived: u64,
}

/// Rows per statement batch (one transaction).
const CHUNK: usize = 500;

macro_rules! reconcile {
    ($store:ty, begin = $begin:ident($($arg:expr),*), p = [$p1:literal, $p2:literal, $p3:literal, $p4:literal, $p5:literal, $p6:literal]) => {
        impl $store {
            async fn reconcilable(&self, now: i64, after_id: i64, limit: i64) -> anyhow::Result<Vec<Columns>> {
                Ok(sqlx::query_as::<_, Columns>(concat!(
                    "SELECT id, key, kind, state, occasion_date, years, due_utc, deadline_utc FROM outbox
                     WHERE id > ",
                    $p2,
                    " AND (state IN ('pending', 'retry')
                            OR (state = 'suppressed' AND plan_suppressed AND deadline_utc > ",
                    $p1,
                    ")) ORDER BY id LIMIT ",
                    $p3
                ))
                .bind(now)
                .bind(after_id)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?)
            }

            async fn reconcile(&self, changes: &[(i64, Change)], now: i64) -> anyhow::Result<Reconciled> {
                let mut done = Reconciled::default();
                for chunk in changes.chunks(CHUNK) {
                    let mut tx = self.pool.$begin($($arg),*).await?;
                    for (id, change) in chunk {
                        let (retime, revive) = match change {
                            Change::Retime(t) => (Some(t), false),
                            Change::Revive(t) => (Some(t), true),
                            Change::Suppress { reason } => {
                                let n = sqlx::query(concat!(
                                    "UPDATE outbox SET state = 'suppressed', plan_suppressed = TRUE, reason = ",
                                    $p2,
                                    ", next_attempt_utc = NULL, updated_utc = ",
                                    $p3,
                                    " WHERE id = ",
                                    $p1,
                                    " AND state IN ('pending', 'retry')"
                                ))
                                .bind(id)
                                .bind(reason)
                                .bind(now)
                                .execute(&mut *tx)
                                .await?
                                .rows_affected();
                                done.suppressed += n;
                                continue;
                            }
                        };
                        let Some(t) = retime else { continue };
                        let n = sqlx::query(if revive {
                            concat!(
                                "UPDATE outbox SET state = 'pending', plan_suppressed = FALSE, reason = NULL,
                                        next_attempt_utc = NULL, due_utc = ",
                                $p2,
                                ", deadline_utc = ",
                                $p3,
                                ", occasion_date = ",
                                $p4,
                                ", years = ",
                                $p5,
                                ", updated_utc = ",
                                $p6,
                                " WHERE id = ",
                                $p1,
                                " AND state = 'suppressed' AND plan_suppressed"
                            )
                        } else {
                            concat!(
                                "UPDATE outbox SET due_utc = ",
                                $p2,
                                ", deadline_utc = ",
                                $p3,
                                ", occasion_date = ",
                                $p4,
                                ", years = ",
                                $p5,
                                ", updated_utc = ",
                                $p6,
                                " WHERE id = ",
                                $p1,
                                " AND state IN ('pending', 'retry')"
                            )
                        })
                        .bind(id)
                        .bind(t.due.0)
                        .bind(t.deadline.0)
                        .bind(t.occasion_date.to_string())
                        .bind(t.years.map(i64::from))
                        .bind(now)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                        if revive {
                            done.revived += n;
                        } else {
                            done.retimed += n;
                        }
                    }
                    tx.commit().await?;
                }
                Ok(done)
            }
        }
    };
}

reconcile!(SqliteStore, begin = begin_with("BEGIN IMMEDIATE"), p = ["?1", "?2", "?3", "?4", "?5", "?6"]);
reconcile!(PgStore, begin = begin(), p = ["$1", "$2", "$3", "$4", "$5", "$6"]);

impl SqliteStore {
    async fn reconcilable_of(&self, customers: &[&str], now: i64) -> anyhow::Result<Vec<Columns>> {
        let mut rows = Vec::new();
        for customer in customers {
            // Every key of the customer lies in [`<customer>/`, `<customer>0`) ('0' follows
            // '/'): SQLite compares text bytewise, so this is a range of the unique key index.
            rows.extend(
                sqlx::query_as::<_, Columns>(
                    "SELECT id, key, kind, state, occasion_date, years, due_utc, deadline_utc FROM outbox
                     WHERE key > ?1 AND key < ?2 AND customer = ?3
                       AND (state IN ('pending', 'retry') OR (state = 'suppressed' AND plan_suppressed AND deadline_utc > ?4))",
                )
                .bind(format!("{customer}/"))
                .bind(format!("{customer}0"))
                .bind(customer)
                .bind(now)
                .fetch_all(&self.pool)
                .await?,
            );
        }
        rows.sort_by_key(|r| r.id);
        Ok(rows)
    }
}

impl PgStore {
    async fn reconcilable_of(&self, customers: &[&str], now: i64) -> anyhow::Result<Vec<Columns>> {
        // The index on `key` follows the database's collation, which need not be bytewise, so
        // the customers' rows are found among the open and revivable ones (partial indexes),
        // all the customers in one statement.
        Ok(sqlx::query_as::<_, Columns>(
            "SELECT id, key, kind, state, occasion_date, years, due_utc, deadline_utc FROM outbox
             WHERE customer = ANY($1)
               AND (state IN ('pending', 'retry') OR (state = 'suppressed' AND plan_suppressed AND deadline_utc > $2))
             ORDER BY id",
        )
        .bind(customers)
        .bind(now)
        .fetch_all(&self.pool)
        .await?)
    }
}

impl Store {
    /// Up to `limit` rows with an id above `after_id` (ascending) that reconciliation checks:
    /// `pending` and `retry` rows, and rows the plans suppressed whose deadline is after `now`.
    ///
    /// # Errors
    /// A database error, or a row the contract cannot read ([`MappingError`]).
    pub async fn reconcilable(&self, now: UnixSecs, after_id: i64, limit: i64) -> anyhow::Result<Vec<Reconcilable>> {
        let rows = match self {
            Store::Sqlite(s) => s.reconcilable(now.0, after_id, limit).await?,
            Store::Postgres(s) => s.reconcilable(now.0, after_id, limit).await?,
        };
        super::typed(rows)
    }

    /// The rows of `customers` that reconciliation checks (as [`Store::reconcilable`]), by id.
    /// SQLite reads each customer's range of the key index; PostgreSQL looks through the open
    /// and revivable rows once for all of them.
    ///
    /// # Errors
    /// A database error, or a row the contract cannot read ([`MappingError`]).
    pub async fn reconcilable_of(&self, customers: &[&str], now: UnixSecs) -> anyhow::Result<Vec<Reconcilable>> {
        let rows = match self {
            Store::Sqlite(s) => s.reconcilable_of(customers, now.0).await?,
            Store::Postgres(s) => s.reconcilable_of(customers, now.0).await?,
        };
        super::typed(rows)
    }

    /// Writes `changes` (`(row id, change)`), each only while the row is still in the state it
    /// was decided on (`pending`/`retry`; `suppressed` by the plans for a revival). `now` is
    /// stored as the rows' last change. Returns what was written.
    ///
    /// # Errors
    /// A database error; batches of 500 changes committed before it stay written (running it
    /// again is harmless: each change is idempotent).
    pub async fn reconcile(&self, changes: &[(i64, Change)], now: UnixSecs) -> anyhow::Result<Reconciled> {
        match self {
            Store::Sqlite(s) => s.reconcile(changes, now.0).await,
            Store::Postgres(s) => s.reconcile(changes, now.0).await,
        }
    }
}
