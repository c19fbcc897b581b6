//! SQLite engine: WAL, `synchronous=FULL` (no lost commits on power loss), a busy timeout,
//! and `BEGIN IMMEDIATE` for multi-statement writes (a deferred transaction that later writes
//! fails with SQLITE_BUSY regardless of the busy timeout).

use super::{BatchResult, GroupRow, Materialized, NewItem, Recovered, RowColumns, RowState, row_columns};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use std::str::FromStr;
use std::time::Duration;

/// The SQLite engine behind [`Store::Sqlite`](super::Store::Sqlite): a pool of up to 4
/// connections to one database file.
#[derive(Clone)]
pub struct SqliteStore {
    /// Connection pool; writers serialise on SQLite's lock, readers run beside them (WAL).
    pub(super) pool: SqlitePool,
    /// The database file and its identity (device, inode) when the store opened it; `None` for
    /// an in-memory database.
    file: Option<(std::path::PathBuf, u64, u64)>,
}

/// The file at `path` with its device and inode, if it is one (not `:memory:`).
fn identity(path: &std::path::Path) -> Option<(std::path::PathBuf, u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    Some((path.to_path_buf(), meta.dev(), meta.ino()))
}

impl SqliteStore {
    /// Whether the database file is still the one this store opened.
    ///
    /// # Errors
    /// The file was deleted, or replaced by another (a new inode at the path): writing on would
    /// go to an unlinked file, lost at the next start, which would then send everything again.
    pub(crate) fn verify_file(&self) -> Result<(), String> {
        let Some((path, dev, ino)) = &self.file else { return Ok(()) };
        match identity(path) {
            None => Err(format!("the SQLite outbox {} was deleted while the daemon ran", path.display())),
            Some((_, d, i)) if (d, i) != (*dev, *ino) => {
                Err(format!("the SQLite outbox {} was replaced by another file while the daemon ran", path.display()))
            }
            Some(_) => Ok(()),
        }
    }

    /// Opens (creating the file and its directory if missing) and migrates the database at
    /// `url` (`sqlite://path`); see [`Store::connect`](super::Store::connect).
    ///
    /// # Errors
    /// A malformed URL, a directory that cannot be created, a database that cannot be opened, or
    /// a failing migration.
    pub(crate) async fn connect(url: &str) -> anyhow::Result<SqliteStore> {
        let opts = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        if let Some(dir) = opts.get_filename().parent()
            && !dir.as_os_str().is_empty()
        {
            {
                std::fs::create_dir_all(dir)
                    .map_err(|e| anyhow::anyhow!("cannot create database directory {}: {e}", dir.display()))?;
            }
        }
        // Create the file and migrate on a connection of its own; the pool's connections are
        // then opened without `create_if_missing`, so a file deleted under a running daemon is
        // never silently replaced by a new, empty one.
        {
            use sqlx::ConnectOptions;
            let mut first = opts.clone().connect().await?;
            sqlx::migrate!("./migrations/sqlite").run(&mut first).await?;
            sqlx::Connection::close(first).await?;
        }
        let file = identity(opts.get_filename());
        // No ping before each acquire: the database is a local file, and a broken connection
        // fails its statement anyway. The ping was one more thread round trip per commit.
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .test_before_acquire(false)
            // A connection whose transaction could not be ended (a COMMIT or ROLLBACK that failed,
            // e.g. with "database or disk is full", after which SQLite may have rolled back on its
            // own) keeps sqlx's transaction depth above zero for good, and every later
            // `BEGIN IMMEDIATE` on it fails ("attempted to call begin_with at non-zero transaction
            // depth"). Such a connection is closed instead of reused, so the daemon recovers once
            // the cause is gone. (Checked here, after the pool's on-release ping has flushed the
            // rollback of a dropped transaction; an atomic load, no round trip.)
            .before_acquire(|conn, _| Box::pin(async move { Ok(!sqlx::Connection::is_in_transaction(conn)) }))
            .connect_with(opts.create_if_missing(false))
            .await?;
        Ok(SqliteStore { pool, file })
    }

    /// Opens an existing database file for reading, without creating or migrating it; see
    /// [`Store::open_existing`](super::Store::open_existing).
    ///
    /// # Errors
    /// A malformed URL, no file at the path, or a file that cannot be opened.
    pub(crate) async fn open_existing(url: &str) -> anyhow::Result<SqliteStore> {
        let opts = SqliteConnectOptions::from_str(url)?.busy_timeout(Duration::from_secs(10));
        let file = opts.get_filename();
        if !file.exists() {
            anyhow::bail!(
                "no outbox at {} (database_url `{url}`): the daemon creates it on its first start",
                file.display()
            );
        }
        let file = identity(opts.get_filename());
        let pool = SqlitePoolOptions::new().max_connections(1).connect_with(opts).await?;
        Ok(SqliteStore { pool, file })
    }

    /// [`Store::materialize`](super::Store::materialize): 500 items per `BEGIN IMMEDIATE`
    /// transaction.
    ///
    /// # Errors
    /// A database error; chunks committed before it stay written.
    pub(crate) async fn materialize(&self, items: &[NewItem], now: i64) -> anyhow::Result<Materialized> {
        let mut result = Materialized::default();
        for chunk in items.chunks(500) {
            let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
            for it in chunk {
                let c = it.columns();
                let done = sqlx::query(
                    "INSERT INTO outbox (key, customer, rule, kind, action, recipient, recipient_domain, nominal, occasion_date, years, timezone,
                                         due_utc, deadline_utc, message_id, delivery, state, reason, created_utc, updated_utc, facts, priority)
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                     ON CONFLICT (key) DO NOTHING",
                )
                .bind(c.key)
                .bind(c.customer)
                .bind(c.rule)
                .bind(c.kind)
                .bind(c.action)
                .bind(c.recipient)
                .bind(&it.recipient_domain)
                .bind(c.nominal)
                .bind(c.occasion_date)
                .bind(c.years)
                .bind(&it.timezone)
                .bind(it.due.0)
                .bind(it.deadline.0)
                .bind(&it.message_id)
                .bind(c.delivery)
                .bind(c.state)
                .bind(&it.reason)
                .bind(now)
                .bind(now)
                .bind(c.facts)
                .bind(it.priority)
                .execute(&mut *tx)
                .await?;
                if done.rows_affected() > 0 {
                    if it.state == RowState::Missed {
                        result.missed += 1;
                        result.missed_kinds.push(it.kind);
                    } else {
                        result.inserted += 1
                    }
                }
            }
            tx.commit().await?;
        }
        Ok(result)
    }

    /// [`Store::expire`](super::Store::expire) on SQLite.
    ///
    /// # Errors
    /// A database error.
    pub(crate) async fn expire(&self, now: i64) -> anyhow::Result<Vec<RowColumns>> {
        Ok(sqlx::query_as::<_, RowColumns>(concat!(
            "UPDATE outbox SET state = 'missed', reason = 'deadline passed before it could be sent', updated_utc = ?1,
                    lease_owner = NULL, lease_until = NULL
             WHERE state IN ('pending', 'retry', 'claimed') AND deadline_utc <= ?1
             RETURNING ",
            row_columns!()
        ))
        .bind(now)
        .fetch_all(&self.pool)
        .await?)
    }

    /// [`Store::recover_expired_leases`](super::Store::recover_expired_leases) on SQLite.
    ///
    /// # Errors
    /// A database error.
    pub(crate) async fn recover_expired_leases(&self) -> anyhow::Result<Recovered> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let released = sqlx::query(
            "UPDATE outbox SET state = 'pending', attempts = attempts - 1, lease_owner = NULL, lease_until = NULL
             WHERE state = 'claimed' AND lease_until < unixepoch()",
        )
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let retried = sqlx::query(
            "UPDATE outbox SET state = 'retry', lease_owner = NULL, lease_until = NULL, next_attempt_utc = NULL,
                    reason = 'previous attempt ended without a recorded outcome; resending with the same Message-ID'
             WHERE state = 'sending' AND lease_until < unixepoch() AND delivery = 'at_least_once'",
        )
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let unknown = sqlx::query(
            "UPDATE outbox SET state = 'unknown', lease_owner = NULL, lease_until = NULL,
                    reason = 'sender stopped during delivery; the server may or may not have the message (at_most_once: not resent)'
             WHERE state = 'sending' AND lease_until < unixepoch() AND delivery = 'at_most_once'",
        )
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(Recovered { released, retried, unknown })
    }

    /// One statement (one commit) for the whole group: the rows travel as one JSON array.
    ///
    /// [`Store::finish_batch`](super::Store::finish_batch) on SQLite.
    ///
    /// # Errors
    /// A database error.
    pub(crate) async fn finish_batch(
        &self,
        rows: &[GroupRow<'_>],
        now: i64,
        send_lease_secs: i64,
    ) -> anyhow::Result<BatchResult> {
        let json = serde_json::to_string(rows)?;
        let updated: Vec<(i64, String)> = sqlx::query_as(
            "WITH g AS (SELECT value ->> 0 AS id, value ->> 1 AS fence, value ->> 2 AS state, value ->> 3 AS reply,
                               value ->> 4 AS reason, value ->> 5 AS next_attempt, value ->> 6 AS sent,
                               value ->> 7 AS refund
                        FROM json_each(?1))
             UPDATE outbox SET
                 state = g.state,
                 plan_suppressed = (g.state = 'suppressed'),
                 smtp_reply = COALESCE(g.reply, outbox.smtp_reply),
                 reason = IIF(g.state = 'sending', outbox.reason, g.reason),
                 next_attempt_utc = IIF(g.state = 'sending', outbox.next_attempt_utc, g.next_attempt),
                 sent_utc = IIF(g.state = 'sending', outbox.sent_utc, g.sent),
                 lease_owner = IIF(g.state = 'sending', outbox.lease_owner, NULL),
                 lease_until = IIF(g.state = 'sending', unixepoch() + ?3, NULL),
                 attempts = outbox.attempts - g.refund,
                 updated_utc = ?2
             FROM g
             WHERE outbox.id = g.id AND outbox.fence = g.fence
               AND IIF(g.state = 'sending', outbox.state = 'claimed', outbox.state IN ('claimed', 'sending'))
             RETURNING outbox.id, outbox.state",
        )
        .bind(json)
        .bind(now)
        .bind(send_lease_secs)
        .fetch_all(&self.pool)
        .await?;
        Ok(BatchResult::from_updated(updated))
    }

    /// See [`super::Store::abandon`].
    ///
    /// # Errors
    /// A database error.
    pub(crate) async fn abandon(&self, rows: &[(i64, i64)], now: i64, retry_at: i64) -> anyhow::Result<Recovered> {
        if rows.is_empty() {
            return Ok(Recovered::default());
        }
        let states: Vec<String> = sqlx::query_scalar(
            "WITH g AS (SELECT value ->> 0 AS id, value ->> 1 AS fence FROM json_each(?1))
             UPDATE outbox SET
                 state = CASE WHEN outbox.state = 'claimed' THEN 'pending'
                              WHEN outbox.delivery = 'at_least_once' THEN 'retry' ELSE 'unknown' END,
                 attempts = CASE WHEN outbox.state = 'claimed' THEN outbox.attempts - 1 ELSE outbox.attempts END,
                 next_attempt_utc = CASE WHEN outbox.state = 'claimed' THEN outbox.next_attempt_utc ELSE ?5 END,
                 reason = CASE WHEN outbox.state = 'claimed' THEN outbox.reason
                               WHEN outbox.delivery = 'at_least_once' THEN ?3 ELSE ?4 END,
                 lease_owner = NULL, lease_until = NULL, updated_utc = ?2
             FROM g
             WHERE outbox.id = g.id AND outbox.fence = g.fence AND outbox.state IN ('claimed', 'sending')
             RETURNING outbox.state",
        )
        .bind(serde_json::to_string(rows)?)
        .bind(now)
        .bind(super::ABANDONED_RESEND)
        .bind(super::ABANDONED_UNKNOWN)
        .bind(retry_at)
        .fetch_all(&self.pool)
        .await?;
        Ok(Recovered::count(&states))
    }

    /// [`Store::unreported`](super::Store::unreported) on SQLite.
    ///
    /// # Errors
    /// A database error.
    pub(crate) async fn unreported(&self, limit: i64) -> anyhow::Result<Vec<RowColumns>> {
        Ok(sqlx::query_as::<_, RowColumns>(concat!(
            "SELECT ",
            row_columns!(),
            "
             FROM outbox WHERE state IN ('failed', 'missed', 'unknown') AND reported_utc IS NULL ORDER BY id LIMIT ?1"
        ))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// [`Store::mark_reported`](super::Store::mark_reported) on SQLite.
    ///
    /// # Errors
    /// A database error.
    pub(crate) async fn mark_reported(&self, ids: &[i64], now: i64) -> anyhow::Result<()> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        for id in ids {
            sqlx::query("UPDATE outbox SET reported_utc = ?1 WHERE id = ?2")
                .bind(now)
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// [`Store::release`](super::Store::release) on SQLite.
    ///
    /// # Errors
    /// A database error.
    pub(crate) async fn release(&self, rows: &[(i64, i64)]) -> anyhow::Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "WITH g AS (SELECT value ->> 0 AS id, value ->> 1 AS fence FROM json_each(?1))
             UPDATE outbox SET state = 'pending', attempts = attempts - 1, lease_owner = NULL, lease_until = NULL
             FROM g WHERE outbox.id = g.id AND outbox.fence = g.fence AND outbox.state IN ('claimed', 'sending')",
        )
        .bind(serde_json::to_string(rows)?)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// [`Store::next_due`](super::Store::next_due) on SQLite.
    ///
    /// # Errors
    /// A database error.
    pub(crate) async fn next_due(&self) -> anyhow::Result<Option<i64>> {
        Ok(sqlx::query_scalar::<_, Option<i64>>(super::rows::next_due_sql!("MAX")).fetch_one(&self.pool).await?)
    }

    /// [`Store::counts`](super::Store::counts) on SQLite.
    ///
    /// # Errors
    /// A database error.
    pub(crate) async fn counts(&self) -> anyhow::Result<Vec<(String, i64)>> {
        Ok(sqlx::query_as::<_, (String, i64)>("SELECT state, COUNT(*) FROM outbox GROUP BY state ORDER BY state")
            .fetch_all(&self.pool)
            .await?)
    }

    /// [`Store::rows`](super::Store::rows) on SQLite.
    ///
    /// # Errors
    /// A database error.
    pub(crate) async fn rows(&self, state: Option<&str>, limit: i64) -> anyhow::Result<Vec<RowColumns>> {
        Ok(sqlx::query_as::<_, RowColumns>(concat!(
            "SELECT ",
            row_columns!(),
            "
             FROM outbox WHERE (?1 IS NULL OR state = ?1) ORDER BY due_utc, id LIMIT ?2"
        ))
        .bind(state)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// [`Store::get_value`](super::Store::get_value) on SQLite.
    ///
    /// # Errors
    /// A database error.
    pub(crate) async fn get_value(&self, name: &str) -> anyhow::Result<Option<String>> {
        Ok(sqlx::query_scalar::<_, String>("SELECT value FROM daemon_state WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// [`Store::set_value`](super::Store::set_value) on SQLite.
    ///
    /// # Errors
    /// A database error.
    pub(crate) async fn set_value(&self, name: &str, value: &str) -> anyhow::Result<()> {
        sqlx::query(
            "INSERT INTO daemon_state (name, value) VALUES (?1, ?2) ON CONFLICT (name) DO UPDATE SET value = ?2",
        )
        .bind(name)
        .bind(value)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
