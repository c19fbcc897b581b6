//! "Call instead" (issue 15): who is still to be told about rows announced `missed` under the
//! relay's caps (table `capacity_call`, migration 0009; why a table of its own is explained
//! there).
//!
//! An entry is written in the transaction that marks its row `missed`
//! ([`super::Store::announce_missed`]), so a row is never announced without someone to tell.
//! The salesperson's digest is claimed like outbox rows ([`super::Store::claim_call_digest`]):
//! one owner's untold entries at a time, with a lease on the database clock, serialised between
//! daemons (SQLite: `BEGIN IMMEDIATE`; PostgreSQL: the table locked for the claim's short
//! transaction, so two daemons never split one owner's entries into two digests), and marked
//! told only after the relay accepted the digest ([`super::Store::mark_call_told`]). A failed send
//! gives the lease back ([`super::Store::release_call_digest`]); a stopped daemon's lease ends
//! and another daemon takes the digest over. Either way the digest keeps its entries and its id
//! (column `digest`), so it is resent with the same Message-ID.

use super::{MappingError, PgStore, SqliteStore, Store, UnixSecs};
use crate::hash::Fnv1a;
use crate::occasion::OutboxKey;
use crate::plan::Language;

/// Who must be told about a row announced `missed`, and in which language.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tell {
    /// The salesperson's address (the customer's `owner` when the row was announced).
    pub owner: String,
    /// The customer's language.
    pub language: Language,
}

/// A row to mark `missed` ahead of its deadline ([`Store::announce_missed`]).
#[derive(Debug, Clone)]
pub struct Announcement {
    /// The outbox row.
    pub id: i64,
    /// Why (stored as the row's `reason`).
    pub reason: String,
    /// The row's deadline (Unix seconds, UTC), for the salesperson's digest.
    pub deadline: UnixSecs,
    /// Whom to tell; `None`: nobody (the customer is not in the plans; ops still get the row in
    /// their report).
    pub tell: Option<Tell>,
}

/// One entry of a salesperson's "call instead" digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallEntry {
    /// The outbox row announced `missed` (the row may have been purged since).
    pub row_id: i64,
    /// Its outbox key (customer, rule, recipient, occasion).
    pub key: OutboxKey,
    /// The salesperson to tell.
    pub owner: String,
    /// The customer's language when the row was announced.
    pub language: Language,
    /// The row's deadline (Unix seconds, UTC).
    pub deadline: UnixSecs,
    /// When the row was announced (Unix seconds, UTC; the daemon's clock).
    pub announced: UnixSecs,
    /// The digest the entry was claimed into, if it ever was.
    pub digest: Option<String>,
    /// When the relay accepted the digest that listed it (Unix seconds, UTC); `None`: untold.
    pub told: Option<UnixSecs>,
}

/// One salesperson's digest, claimed for sending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallDigest {
    /// The digest's id, derived from its entries (`call-instead/<first>-<last>-<n>-<hash>`): the
    /// key of its Message-ID, the same on every resend.
    pub id: String,
    /// The salesperson's address.
    pub owner: String,
    /// The untold entries it lists, by row id.
    pub entries: Vec<CallEntry>,
}

#[derive(sqlx::FromRow)]
pub(crate) struct CallColumns {
    row_id: i64,
    key: String,
    owner: String,
    language: String,
    deadline_utc: i64,
    announced_utc: i64,
    digest: Option<String>,
    told_utc: Option<i64>,
}

macro_rules! call_columns {
    () => {
        "row_id, key, owner, language, deadline_utc, announced_utc, digest, told_utc"
    };
}

impl TryFrom<CallColumns> for CallEntry {
    type Error = MappingError;
    fn try_from(c: CallColumns) -> Result<CallEntry, MappingError> {
        let bad = |what: String| MappingError { id: c.row_id, what };
        Ok(CallEntry {
            key: c.key.parse().map_err(|e| bad(format!("capacity_call key: {e}")))?,
            language: Language::parse(&c.language)
                .ok_or_else(|| bad(format!("unknown capacity_call language `{}`", c.language)))?,
            row_id: c.row_id,
            owner: c.owner,
            deadline: UnixSecs(c.deadline_utc),
            announced: UnixSecs(c.announced_utc),
            digest: c.digest,
            told: c.told_utc.map(UnixSecs),
        })
    }
}

/// The id of a digest listing the entries `rows` (ascending row ids): first, last, count and a
/// hash of all of them, so a different set never gets the same id.
fn digest_id(rows: &[i64]) -> String {
    let mut h = Fnv1a::default();
    for id in rows {
        h.feed(&id.to_le_bytes());
    }
    let (first, last) = (rows.first().copied().unwrap_or(0), rows.last().copied().unwrap_or(0));
    format!("call-instead/{first}-{last}-{}-{:016x}", rows.len(), h.0)
}

/// What a claim took: the digest id, the owner, the entries.
type ClaimedDigest = (String, String, Vec<CallColumns>);

/// One body for both engines: placeholders, the database clock, the id list and the claim's
/// lock differ.
macro_rules! calls {
    ($store:ty, p1 = $p1:literal, p2 = $p2:literal, p3 = $p3:literal, db_now = $now:literal,
     ids_p4 = $ids:literal, bind_ids = $bind:expr, lock = [$($lock:literal)?]) => {
        impl $store {
            async fn claim_call_digest(
                &self,
                holder: &str,
                lease_secs: i64,
                limit: i64,
            ) -> anyhow::Result<Option<ClaimedDigest>> {
                // Nearly always nothing is owed: answered from the partial index, without the
                // write transaction (and, on PostgreSQL, the table lock) every tick.
                let owed: Option<i64> =
                    sqlx::query_scalar("SELECT row_id FROM capacity_call WHERE told_utc IS NULL LIMIT 1")
                        .fetch_optional(&self.pool)
                        .await?;
                if owed.is_none() {
                    return Ok(None);
                }
                let mut tx = self.write_tx().await?;
                $(sqlx::query($lock).execute(&mut *tx).await?;)?
                let now: i64 = sqlx::query_scalar(concat!("SELECT ", $now)).fetch_one(&mut *tx).await?;
                // The owner with the oldest untold entry none of whose entries is being sent.
                let owner: Option<String> = sqlx::query_scalar(concat!(
                    "SELECT owner FROM capacity_call WHERE told_utc IS NULL GROUP BY owner
                     HAVING MAX(COALESCE(lease_until, 0)) <= ",
                    $p1,
                    " ORDER BY MIN(row_id) LIMIT 1"
                ))
                .bind(now)
                .fetch_optional(&mut *tx)
                .await?;
                let Some(owner) = owner else {
                    tx.commit().await?;
                    return Ok(None);
                };
                // A digest tried before (failed, or its daemon stopped) goes again as it was.
                let earlier: Option<String> = sqlx::query_scalar(concat!(
                    "SELECT digest FROM capacity_call WHERE owner = ",
                    $p1,
                    " AND told_utc IS NULL AND digest IS NOT NULL ORDER BY row_id LIMIT 1"
                ))
                .bind(&owner)
                .fetch_optional(&mut *tx)
                .await?;
                let entries: Vec<CallColumns> = match &earlier {
                    Some(digest) => {
                        sqlx::query_as(concat!(
                            "SELECT ",
                            call_columns!(),
                            " FROM capacity_call WHERE owner = ",
                            $p1,
                            " AND told_utc IS NULL AND digest = ",
                            $p2,
                            " ORDER BY row_id"
                        ))
                        .bind(&owner)
                        .bind(digest)
                        .fetch_all(&mut *tx)
                        .await?
                    }
                    None => {
                        sqlx::query_as(concat!(
                            "SELECT ",
                            call_columns!(),
                            " FROM capacity_call WHERE owner = ",
                            $p1,
                            " AND told_utc IS NULL ORDER BY row_id LIMIT ",
                            $p2
                        ))
                        .bind(&owner)
                        .bind(limit)
                        .fetch_all(&mut *tx)
                        .await?
                    }
                };
                let ids: Vec<i64> = entries.iter().map(|e| e.row_id).collect();
                let digest = earlier.unwrap_or_else(|| digest_id(&ids));
                sqlx::query(concat!(
                    "UPDATE capacity_call SET digest = ",
                    $p1,
                    ", lease_owner = ",
                    $p2,
                    ", lease_until = ",
                    $p3,
                    " WHERE row_id ",
                    $ids
                ))
                .bind(&digest)
                .bind(holder)
                .bind(now.saturating_add(lease_secs))
                .bind($bind(&ids)?)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(Some((digest, owner, entries)))
            }

            async fn mark_call_told(&self, digest: &str, now: i64) -> anyhow::Result<u64> {
                Ok(sqlx::query(concat!(
                    "UPDATE capacity_call SET told_utc = ",
                    $p2,
                    ", lease_owner = NULL, lease_until = NULL WHERE digest = ",
                    $p1,
                    " AND told_utc IS NULL"
                ))
                .bind(digest)
                .bind(now)
                .execute(&self.pool)
                .await?
                .rows_affected())
            }

            async fn release_call_digest(&self, digest: &str, holder: &str, retry_in: i64) -> anyhow::Result<u64> {
                Ok(sqlx::query(concat!(
                    "UPDATE capacity_call SET lease_owner = NULL, lease_until = CASE WHEN ",
                    $p3,
                    " > 0 THEN ",
                    $now,
                    " + ",
                    $p3,
                    " END WHERE digest = ",
                    $p1,
                    " AND lease_owner = ",
                    $p2,
                    " AND told_utc IS NULL"
                ))
                .bind(digest)
                .bind(holder)
                .bind(retry_in)
                .execute(&self.pool)
                .await?
                .rows_affected())
            }

            async fn untold_call_owners(&self) -> anyhow::Result<i64> {
                Ok(sqlx::query_scalar("SELECT COUNT(DISTINCT owner) FROM capacity_call WHERE told_utc IS NULL")
                    .fetch_one(&self.pool)
                    .await?)
            }

            async fn call_entries(&self, limit: i64) -> anyhow::Result<Vec<CallColumns>> {
                Ok(sqlx::query_as(concat!(
                    "SELECT ",
                    call_columns!(),
                    " FROM capacity_call ORDER BY row_id LIMIT ",
                    $p1
                ))
                .bind(limit)
                .fetch_all(&self.pool)
                .await?)
            }

            async fn purge_told_calls(&self, before: i64) -> anyhow::Result<u64> {
                Ok(sqlx::query(concat!(
                    "DELETE FROM capacity_call WHERE told_utc IS NOT NULL AND told_utc < ",
                    $p1
                ))
                .bind(before)
                .execute(&self.pool)
                .await?
                .rows_affected())
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

calls!(
    SqliteStore,
    p1 = "?1",
    p2 = "?2",
    p3 = "?3",
    db_now = "unixepoch()",
    ids_p4 = "IN (SELECT value FROM json_each(?4))",
    bind_ids = json_ids,
    lock = []
);
// EXCLUSIVE: claims of all daemons serialise (it conflicts with itself and with writes), plain
// reads go on; held for the claim's few statements only, never across a send.
calls!(
    PgStore,
    p1 = "$1",
    p2 = "$2",
    p3 = "$3",
    db_now = "floor(extract(epoch from now()))::bigint",
    ids_p4 = "= ANY($4)",
    bind_ids = pg_ids,
    lock = ["LOCK TABLE capacity_call IN EXCLUSIVE MODE"]
);

impl SqliteStore {
    /// A write transaction: `BEGIN IMMEDIATE` (see `sqlite.rs`).
    async fn write_tx(&self) -> sqlx::Result<sqlx::Transaction<'_, sqlx::Sqlite>> {
        self.pool.begin_with("BEGIN IMMEDIATE").await
    }
}

impl PgStore {
    /// A write transaction.
    async fn write_tx(&self) -> sqlx::Result<sqlx::Transaction<'_, sqlx::Postgres>> {
        self.pool.begin().await
    }
}

macro_rules! engine {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            Store::Sqlite($s) => $e,
            Store::Postgres($s) => $e,
        }
    };
}

impl Store {
    /// Claims the next salesperson's "call instead" digest for `holder` (this daemon's instance
    /// id), with a lease of `lease_secs` seconds on the database clock: the untold entries of
    /// the owner with the oldest one, if none of that owner's entries is leased now. A digest
    /// tried before is claimed again with exactly its entries and its id; otherwise the owner's
    /// oldest `limit` untold entries form a new one. `None`: nothing to tell (or every owner
    /// with untold entries is being told by another daemon).
    ///
    /// # Errors
    /// A database error, or an entry the contract cannot read (nothing claimed).
    pub async fn claim_call_digest(
        &self,
        holder: &str,
        lease_secs: i64,
        limit: i64,
    ) -> anyhow::Result<Option<CallDigest>> {
        let Some((id, owner, entries)) = engine!(self, s => s.claim_call_digest(holder, lease_secs, limit).await)?
        else {
            return Ok(None);
        };
        let entries = entries.into_iter().map(CallEntry::try_from).collect::<Result<Vec<_>, _>>()?;
        Ok(Some(CallDigest { id, owner, entries }))
    }

    /// Marks the entries of `digest` told (the relay accepted it) at `now` (Unix seconds, UTC);
    /// returns how many were still untold. Whoever sent it, it was sent: not fenced.
    ///
    /// # Errors
    /// A database error.
    pub async fn mark_call_told(&self, digest: &str, now: UnixSecs) -> anyhow::Result<u64> {
        engine!(self, s => s.mark_call_told(digest, now.0).await)
    }

    /// Gives the lease of `holder` on `digest` back (it was not sent), so a later pass of any
    /// daemon sends it again: at once, or, with `retry_in` > 0, not before `retry_in` seconds
    /// from now on the database clock. The entries keep their digest.
    ///
    /// # Errors
    /// A database error (the lease then ends by itself).
    pub async fn release_call_digest(&self, digest: &str, holder: &str, retry_in: i64) -> anyhow::Result<u64> {
        engine!(self, s => s.release_call_digest(digest, holder, retry_in).await)
    }

    /// How many salespeople have untold entries (each is one digest still to send).
    ///
    /// # Errors
    /// A database error.
    pub async fn untold_call_owners(&self) -> anyhow::Result<i64> {
        engine!(self, s => s.untold_call_owners().await)
    }

    /// Up to `limit` entries, told or not, by row id (tests, `status`).
    ///
    /// # Errors
    /// A database error, or an entry the contract cannot read.
    pub async fn call_entries(&self, limit: i64) -> anyhow::Result<Vec<CallEntry>> {
        super::typed(engine!(self, s => s.call_entries(limit).await)?)
    }

    /// Deletes entries told before `before` (Unix seconds, UTC); returns how many.
    ///
    /// # Errors
    /// A database error.
    pub async fn purge_told_calls(&self, before: UnixSecs) -> anyhow::Result<u64> {
        engine!(self, s => s.purge_told_calls(before.0).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_digest_id_names_its_entries() {
        assert_eq!(digest_id(&[3, 5, 9]), digest_id(&[3, 5, 9]));
        assert_ne!(digest_id(&[3, 5, 9]), digest_id(&[3, 6, 9]));
        assert!(digest_id(&[3, 5, 9]).starts_with("call-instead/3-9-3-"));
    }
}
