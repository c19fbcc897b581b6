//! Queries written once for both engines (only placeholders and the database clock differ):
//! a liveness ping (`/readyz`), the backlog (`/metrics`, `status`), retention (deleting old
//! finished rows), and lease upkeep (renewal while delivering, the next lease end for the
//! loop's sleep). The claim/finish path stays in `sqlite.rs`/`postgres.rs`; same semantics on
//! both engines, same test suite.
//!
//! Retention only ever deletes rows that are finished (`accepted`, `failed`, `missed`,
//! `suppressed`, `unknown`), already reported to ops where that applies, and whose deadline
//! *and* last change lie before the cut-off. Materialisation never re-creates a row whose
//! deadline has passed (except `missed` rows due after the watermark, which only moves
//! forward), so a purged occasion is never sent again.

use super::{MappingError, PgStore, RowState, SqliteStore, Store, UnixSecs};
use crate::occasion::OutboxKey;
use crate::plan::TriggerKind;
use serde::{Deserialize, Serialize};

/// The earliest open row. Serialised with the column names (`key`, `kind`, `due_utc`,
/// `state`), as `/status` and `status --format json` always gave it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NextDue {
    /// The outbox key (customer/rule/recipient/nominal).
    pub key: OutboxKey,
    /// The rule's `on`.
    pub kind: TriggerKind,
    /// When it is (or was) due, or its next retry.
    pub due_utc: UnixSecs,
    /// `pending` or `retry`.
    pub state: RowState,
}

#[derive(sqlx::FromRow)]
struct NextDueColumns {
    id: i64,
    key: String,
    kind: String,
    due_utc: i64,
    state: String,
}

impl TryFrom<NextDueColumns> for NextDue {
    type Error = MappingError;
    fn try_from(c: NextDueColumns) -> Result<NextDue, MappingError> {
        let bad = |what: String| MappingError { id: c.id, what };
        Ok(NextDue {
            key: c.key.parse().map_err(bad)?,
            kind: TriggerKind::parse(&c.kind).ok_or_else(|| bad(format!("unknown kind `{}`", c.kind)))?,
            due_utc: UnixSecs(c.due_utc),
            state: RowState::parse(&c.state).ok_or_else(|| bad(format!("unknown state `{}`", c.state)))?,
        })
    }
}

/// What is waiting to be sent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backlog {
    /// Open state (`pending`, `retry`, `claimed`, `sending`) → rows; every open state listed.
    pub depth: Vec<(RowState, i64)>,
    /// The due time of the oldest open row that is due at `now`.
    pub oldest_due: Option<UnixSecs>,
    /// The next `pending` or `retry` row to send (earliest of due time and next retry); `None`: none.
    pub next: Option<NextDue>,
}

/// Rows deleted per statement, so a purge never holds a write lock for long.
const PURGE_CHUNK: i64 = 5000;

fn fill_depth(found: Vec<(String, i64)>) -> Vec<(RowState, i64)> {
    RowState::OPEN.into_iter().map(|s| (s, found.iter().find(|(f, _)| f == s.code()).map_or(0, |(_, n)| *n))).collect()
}

/// One body for both engines; only placeholders and the name of the two-argument maximum differ.
macro_rules! upkeep {
    ($store:ty, p1 = $p1:literal, p2 = $p2:literal, greatest = $max:literal, db_now = $now:literal, ids_p3 = $ids:literal, bind_ids = $bind:expr) => {
        impl $store {
            async fn renew_leases(&self, owner: &str, ids: &[i64], lease_secs: i64) -> anyhow::Result<u64> {
                if ids.is_empty() {
                    return Ok(0);
                }
                Ok(sqlx::query(concat!(
                    "UPDATE outbox SET lease_until = ",
                    $now,
                    " + ",
                    $p2,
                    " WHERE lease_owner = ",
                    $p1,
                    " AND state IN ('claimed', 'sending') AND id ",
                    $ids
                ))
                .bind(owner)
                .bind(lease_secs)
                .bind($bind(ids)?)
                .execute(&self.pool)
                .await?
                .rows_affected())
            }

            async fn lease_expires_in(&self) -> anyhow::Result<Option<i64>> {
                Ok(sqlx::query_scalar::<_, Option<i64>>(concat!(
                    "SELECT MIN(lease_until) - ",
                    $now,
                    " FROM outbox WHERE state IN ('claimed', 'sending')"
                ))
                .fetch_one(&self.pool)
                .await?)
            }

            async fn ping(&self) -> anyhow::Result<()> {
                sqlx::query("SELECT 1").execute(&self.pool).await?;
                Ok(())
            }

            async fn backlog(&self, now: i64) -> anyhow::Result<Backlog> {
                let depth = sqlx::query_as::<_, (String, i64)>(
                    "SELECT state, COUNT(*) FROM outbox WHERE state IN ('pending','retry','claimed','sending') GROUP BY state",
                )
                .fetch_all(&self.pool)
                .await?;
                let oldest_due = sqlx::query_scalar::<_, Option<i64>>(concat!(
                    "SELECT MIN(due_utc) FROM outbox WHERE state IN ('pending','retry','claimed','sending') AND due_utc <= ",
                    $p1
                ))
                .bind(now)
                .fetch_one(&self.pool)
                .await?;
                let next = sqlx::query_as::<_, NextDueColumns>(concat!(
                    "SELECT id, key, kind, ",
                    $max,
                    "(due_utc, COALESCE(next_attempt_utc, 0)) AS due_utc, state FROM outbox
                     WHERE state IN ('pending', 'retry') ORDER BY 3, id LIMIT 1"
                ))
                .fetch_optional(&self.pool)
                .await?;
                let next = next.map(NextDue::try_from).transpose()?;
                Ok(Backlog { depth: fill_depth(depth), oldest_due: oldest_due.map(UnixSecs), next })
            }

            async fn purge_finished(&self, before: i64) -> anyhow::Result<u64> {
                let mut total = 0;
                loop {
                    let done = sqlx::query(concat!(
                        "DELETE FROM outbox WHERE id IN (
                             SELECT id FROM outbox
                             WHERE state IN ('accepted','failed','missed','suppressed','unknown')
                               AND (reported_utc IS NOT NULL OR state IN ('accepted','suppressed'))
                               AND deadline_utc < ",
                        $p1,
                        " AND updated_utc < ",
                        $p1,
                        " LIMIT ",
                        $p2,
                        ")"
                    ))
                    .bind(before)
                    .bind(PURGE_CHUNK)
                    .execute(&self.pool)
                    .await?
                    .rows_affected();
                    total += done;
                    if done < PURGE_CHUNK as u64 {
                        return Ok(total);
                    }
                }
            }
        }
    };
}

/// SQLite takes a list of ids as one JSON array parameter.
fn json_ids(ids: &[i64]) -> anyhow::Result<String> {
    Ok(serde_json::to_string(ids)?)
}

/// PostgreSQL takes a list of ids as a `bigint[]` parameter.
fn pg_ids(ids: &[i64]) -> anyhow::Result<Vec<i64>> {
    Ok(ids.to_vec())
}

upkeep!(
    SqliteStore,
    p1 = "?1",
    p2 = "?2",
    greatest = "MAX",
    db_now = "unixepoch()",
    ids_p3 = "IN (SELECT value FROM json_each(?3))",
    bind_ids = json_ids
);
upkeep!(
    PgStore,
    p1 = "$1",
    p2 = "$2",
    greatest = "GREATEST",
    db_now = "floor(extract(epoch from now()))::bigint",
    ids_p3 = "= ANY($3)",
    bind_ids = pg_ids
);

impl Store {
    /// One round trip (`/readyz`).
    ///
    /// # Errors
    /// The database does not answer or the statement fails.
    pub async fn ping(&self) -> anyhow::Result<()> {
        match self {
            Store::Sqlite(s) => s.ping().await,
            Store::Postgres(s) => s.ping().await,
        }
    }

    /// Extends the leases `owner` holds on the rows `ids` (those still `claimed` or `sending`)
    /// to `lease_secs` seconds from now on the database clock; returns the rows renewed. The
    /// dispatcher calls it for the batch it is delivering, so leases can stay short (a stopped
    /// sender's rows are taken over soon) and still never end under a live sender, however long
    /// its batch or a send takes — while a row a live daemon holds but no longer works on (one
    /// of a failed batch) is not renewed, and is taken over when its lease ends.
    ///
    /// # Errors
    /// A database error.
    pub async fn renew_leases(&self, owner: &str, ids: &[i64], lease_secs: i64) -> anyhow::Result<u64> {
        match self {
            Store::Sqlite(s) => s.renew_leases(owner, ids, lease_secs).await,
            Store::Postgres(s) => s.renew_leases(owner, ids, lease_secs).await,
        }
    }

    /// Seconds, on the database clock (the clock leases run on), until the earliest lease of a
    /// `claimed` or `sending` row ends (negative: ended already); `None` when no lease is held.
    /// A lease is taken over one second after it ends (`lease_until < now`).
    ///
    /// # Errors
    /// A database error.
    pub async fn lease_expires_in(&self) -> anyhow::Result<Option<i64>> {
        match self {
            Store::Sqlite(s) => s.lease_expires_in().await,
            Store::Postgres(s) => s.lease_expires_in().await,
        }
    }

    /// Open rows by state, the oldest due one (at `now`), and the next one to send.
    ///
    /// # Errors
    /// A database error, or a row the contract cannot read ([`MappingError`]).
    pub async fn backlog(&self, now: UnixSecs) -> anyhow::Result<Backlog> {
        match self {
            Store::Sqlite(s) => s.backlog(now.0).await,
            Store::Postgres(s) => s.backlog(now.0).await,
        }
    }

    /// Deletes finished rows whose deadline and last change are before `before`; failed,
    /// missed and unknown rows only once reported. Returns rows deleted. Also deletes the
    /// "call instead" entries told before `before` (never an untold one: an entry carries what
    /// its digest needs, so it does not need its outbox row).
    ///
    /// # Errors
    /// A database error; chunks of 5,000 rows deleted before it stay deleted.
    pub async fn purge_finished(&self, before: UnixSecs) -> anyhow::Result<u64> {
        let rows = match self {
            Store::Sqlite(s) => s.purge_finished(before.0).await,
            Store::Postgres(s) => s.purge_finished(before.0).await,
        }?;
        self.purge_told_calls(before).await?;
        Ok(rows)
    }
}
