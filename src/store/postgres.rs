//! PostgreSQL engine: several daemons share one database. Claims use `FOR UPDATE SKIP LOCKED`
//! so concurrent claimers never take the same row; leases are computed and checked against the
//! database clock (`now()`), never a node clock; every outcome is fenced. Migrations take
//! sqlx's advisory lock (per database), so daemons starting together apply them once.
//!
//! Semantics are those of the SQLite engine (`sqlite.rs`), statement for statement.

use super::{BatchResult, GroupRow, ItemColumns, Materialized, NewItem, Recovered, RowColumns, row_columns};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Connection};
use std::str::FromStr;
use std::time::Duration;

/// The PostgreSQL engine behind [`Store::Postgres`](super::Store::Postgres): a pool of up to 8
/// connections (30 s acquire timeout).
#[derive(Clone)]
pub struct PgStore {
    pub(super) pool: PgPool,
}

/// Items per multi-row INSERT in `materialize`.
const CHUNK: usize = 1000;

/// How often a statement that lost a deadlock (`40P01`) or a serialization conflict (`40001`,
/// only under a stricter default isolation level) is retried before giving up.
const DEADLOCK_RETRIES: u32 = 5;

pub(super) fn is_transient_conflict(e: &sqlx::Error) -> bool {
    e.as_database_error().and_then(|d| d.code()).is_some_and(|c| c == "40P01" || c == "40001")
}

impl PgStore {
    /// Connects to `url` and applies the migrations on a connection of their own (under sqlx's
    /// advisory lock, so daemons starting together migrate once); see
    /// [`Store::connect`](super::Store::connect).
    ///
    /// # Errors
    /// A malformed URL, a server that cannot be reached or refuses the login, or a failing
    /// migration.
    pub(crate) async fn connect(url: &str) -> anyhow::Result<PgStore> {
        let opts = PgConnectOptions::from_str(url)?;
        // Migrate on a connection of its own, closed afterwards: sqlx holds a session-level
        // advisory lock while migrating and does not release it when a migration fails, so a
        // pooled connection could keep it and block every other daemon.
        let mut conn = opts.connect().await?;
        sqlx::migrate!("./migrations/postgres").run(&mut conn).await?;
        conn.close().await?;
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(30))
            // As for SQLite: a connection left inside a transaction that could not be ended is
            // closed rather than reused (the pool's ping already drops broken connections, so a
            // restarted PostgreSQL costs one failed tick, not a wedged pool).
            .before_acquire(|conn, _| Box::pin(async move { Ok(!sqlx::Connection::is_in_transaction(conn)) }))
            .connect_with(opts)
            .await?;
        Ok(PgStore { pool })
    }

    /// Connects for reading (one connection, 10 s acquire timeout) without migrating; see
    /// [`Store::open_existing`](super::Store::open_existing).
    ///
    /// # Errors
    /// A malformed URL, or a server that cannot be reached or refuses the login.
    pub(crate) async fn open_existing(url: &str) -> anyhow::Result<PgStore> {
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(PgConnectOptions::from_str(url)?)
            .await?;
        Ok(PgStore { pool })
    }

    /// [`Store::materialize`](super::Store::materialize): 1,000 items per `INSERT … SELECT FROM
    /// UNNEST` statement, retried up to 5 times after a deadlock with another daemon.
    ///
    /// # Errors
    /// A database error, or a deadlock that persists; chunks written before it stay written.
    pub(crate) async fn materialize(&self, items: &[NewItem], now: i64) -> anyhow::Result<Materialized> {
        let mut result = Materialized::default();
        for chunk in items.chunks(CHUNK) {
            let cols: Vec<ItemColumns<'_>> = chunk.iter().map(NewItem::columns).collect();
            let key: Vec<&str> = cols.iter().map(|c| c.key.as_str()).collect();
            let customer: Vec<&str> = cols.iter().map(|c| c.customer).collect();
            let rule: Vec<&str> = cols.iter().map(|c| c.rule).collect();
            let kind: Vec<&str> = cols.iter().map(|c| c.kind).collect();
            let action: Vec<&str> = cols.iter().map(|c| c.action).collect();
            let recipient: Vec<&str> = cols.iter().map(|c| c.recipient.as_str()).collect();
            let recipient_domain: Vec<&str> = chunk.iter().map(|i| i.recipient_domain.as_str()).collect();
            let nominal: Vec<&str> = cols.iter().map(|c| c.nominal.as_str()).collect();
            let occasion_date: Vec<&str> = cols.iter().map(|c| c.occasion_date.as_str()).collect();
            let years: Vec<Option<i64>> = cols.iter().map(|c| c.years).collect();
            let timezone: Vec<&str> = chunk.iter().map(|i| i.timezone.as_str()).collect();
            let due: Vec<i64> = chunk.iter().map(|i| i.due.0).collect();
            let deadline: Vec<i64> = chunk.iter().map(|i| i.deadline.0).collect();
            let message_id: Vec<&str> = chunk.iter().map(|i| i.message_id.as_str()).collect();
            let delivery: Vec<&str> = cols.iter().map(|c| c.delivery).collect();
            let state: Vec<&str> = cols.iter().map(|c| c.state).collect();
            let reason: Vec<Option<&str>> = chunk.iter().map(|i| i.reason.as_deref()).collect();
            let facts: Vec<Option<&str>> = cols.iter().map(|c| c.facts.as_deref()).collect();
            let priority: Vec<i64> = chunk.iter().map(|i| i.priority).collect();
            let mut tries = 0;
            // One statement per chunk (its own transaction). Rows go in input order, so ids
            // follow it as in SQLite and a key repeated within the chunk keeps its first item.
            let (inserted, missed_kinds) = loop {
                let done = sqlx::query_as::<_, (i64, Vec<String>)>(
                    "WITH ins AS (
                         INSERT INTO outbox (key, customer, rule, kind, action, recipient, recipient_domain, nominal, occasion_date,
                                             years, timezone, due_utc, deadline_utc, message_id, delivery, state, reason,
                                             created_utc, updated_utc, facts, priority)
                         SELECT key, customer, rule, kind, action, recipient, recipient_domain, nominal, occasion_date,
                                years, timezone, due_utc, deadline_utc, message_id, delivery, state, reason, $18, $18, facts,
                                priority
                         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                                     $8::text[], $9::text[], $10::bigint[], $11::text[], $12::bigint[], $13::bigint[],
                                     $14::text[], $15::text[], $16::text[], $17::text[], $19::text[], $20::bigint[])
                              WITH ORDINALITY AS u(key, customer, rule, kind, action, recipient, recipient_domain, nominal,
                                                   occasion_date, years, timezone, due_utc, deadline_utc, message_id,
                                                   delivery, state, reason, facts, priority, ord)
                         ORDER BY ord
                         ON CONFLICT (key) DO NOTHING
                         RETURNING state, kind)
                     SELECT COUNT(*) FILTER (WHERE state <> 'missed'),
                            COALESCE(array_agg(kind) FILTER (WHERE state = 'missed'), '{}'::text[]) FROM ins",
                )
                .bind(&key)
                .bind(&customer)
                .bind(&rule)
                .bind(&kind)
                .bind(&action)
                .bind(&recipient)
                .bind(&recipient_domain)
                .bind(&nominal)
                .bind(&occasion_date)
                .bind(&years)
                .bind(&timezone)
                .bind(&due)
                .bind(&deadline)
                .bind(&message_id)
                .bind(&delivery)
                .bind(&state)
                .bind(&reason)
                .bind(now)
                .bind(&facts)
                .bind(&priority)
                .fetch_one(&self.pool)
                .await;
                match done {
                    // Two daemons inserting overlapping keys in different orders can deadlock;
                    // the loser's statement rolled back entirely, so running it again is safe.
                    Err(e) if is_transient_conflict(&e) && tries < DEADLOCK_RETRIES => tries += 1,
                    other => break other?,
                }
            };
            result.inserted += inserted as u64;
            result.missed += missed_kinds.len() as u64;
            for kind in missed_kinds {
                result.missed_kinds.push(
                    crate::plan::TriggerKind::parse(&kind)
                        .ok_or_else(|| anyhow::anyhow!("unknown outbox kind `{kind}` in a row just written"))?,
                );
            }
        }
        Ok(result)
    }

    /// [`Store::expire`](super::Store::expire) on PostgreSQL.
    ///
    /// # Errors
    /// A database error.
    pub(crate) async fn expire(&self, now: i64) -> anyhow::Result<Vec<RowColumns>> {
        Ok(sqlx::query_as::<_, RowColumns>(concat!(
            "UPDATE outbox SET state = 'missed', reason = 'deadline passed before it could be sent', updated_utc = $1,
                    lease_owner = NULL, lease_until = NULL
             WHERE state IN ('pending', 'retry', 'claimed') AND deadline_utc <= $1
             RETURNING ",
            row_columns!()
        ))
        .bind(now)
        .fetch_all(&self.pool)
        .await?)
    }

    /// [`Store::recover_expired_leases`](super::Store::recover_expired_leases) on PostgreSQL.
    ///
    /// # Errors
    /// A database error.
    pub(crate) async fn recover_expired_leases(&self) -> anyhow::Result<Recovered> {
        let mut tx = self.pool.begin().await?;
        // `now()` is the transaction's start on the database clock; leases were set with it.
        let released = sqlx::query(
            "UPDATE outbox SET state = 'pending', attempts = attempts - 1, lease_owner = NULL, lease_until = NULL
             WHERE state = 'claimed' AND lease_until < floor(extract(epoch from now()))::bigint",
        )
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let retried = sqlx::query(
            "UPDATE outbox SET state = 'retry', lease_owner = NULL, lease_until = NULL, next_attempt_utc = NULL,
                    reason = 'previous attempt ended without a recorded outcome; resending with the same Message-ID'
             WHERE state = 'sending' AND lease_until < floor(extract(epoch from now()))::bigint
               AND delivery = 'at_least_once'",
        )
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let unknown = sqlx::query(
            "UPDATE outbox SET state = 'unknown', lease_owner = NULL, lease_until = NULL,
                    reason = 'sender stopped during delivery; the server may or may not have the message (at_most_once: not resent)'
             WHERE state = 'sending' AND lease_until < floor(extract(epoch from now()))::bigint
               AND delivery = 'at_most_once'",
        )
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(Recovered { released, retried, unknown })
    }

    /// One statement (one commit) for the whole group: the rows travel as parallel arrays.
    ///
    /// [`Store::finish_batch`](super::Store::finish_batch) on PostgreSQL.
    ///
    /// # Errors
    /// A database error.
    pub(crate) async fn finish_batch(
        &self,
        rows: &[GroupRow<'_>],
        now: i64,
        send_lease_secs: i64,
    ) -> anyhow::Result<BatchResult> {
        let updated: Vec<(i64, String)> = sqlx::query_as(
            "UPDATE outbox SET
                 state = g.state,
                 plan_suppressed = (g.state = 'suppressed'),
                 smtp_reply = COALESCE(g.reply, outbox.smtp_reply),
                 reason = CASE WHEN g.state = 'sending' THEN outbox.reason ELSE g.reason END,
                 next_attempt_utc = CASE WHEN g.state = 'sending' THEN outbox.next_attempt_utc ELSE g.next_attempt END,
                 sent_utc = CASE WHEN g.state = 'sending' THEN outbox.sent_utc ELSE g.sent END,
                 lease_owner = CASE WHEN g.state = 'sending' THEN outbox.lease_owner ELSE NULL END,
                 lease_until = CASE WHEN g.state = 'sending' THEN floor(extract(epoch from now()))::bigint + $9 ELSE NULL END,
                 attempts = outbox.attempts - g.refund,
                 updated_utc = $8
             FROM UNNEST($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::bigint[], $7::bigint[],
                         $10::bigint[])
                  AS g(id, fence, state, reply, reason, next_attempt, sent, refund)
             WHERE outbox.id = g.id AND outbox.fence = g.fence
               AND CASE WHEN g.state = 'sending' THEN outbox.state = 'claimed'
                        ELSE outbox.state IN ('claimed', 'sending') END
             RETURNING outbox.id, outbox.state",
        )
        .bind(rows.iter().map(|r| r.0).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.1).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.2).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.3).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.4).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.5).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.6).collect::<Vec<_>>())
        .bind(now)
        .bind(send_lease_secs)
        .bind(rows.iter().map(|r| r.7).collect::<Vec<_>>())
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
            "UPDATE outbox SET
                 state = CASE WHEN outbox.state = 'claimed' THEN 'pending'
                              WHEN outbox.delivery = 'at_least_once' THEN 'retry' ELSE 'unknown' END,
                 attempts = CASE WHEN outbox.state = 'claimed' THEN outbox.attempts - 1 ELSE outbox.attempts END,
                 next_attempt_utc = CASE WHEN outbox.state = 'claimed' THEN outbox.next_attempt_utc ELSE $6 END,
                 reason = CASE WHEN outbox.state = 'claimed' THEN outbox.reason
                               WHEN outbox.delivery = 'at_least_once' THEN $4 ELSE $5 END,
                 lease_owner = NULL, lease_until = NULL, updated_utc = $3
             FROM UNNEST($1::bigint[], $2::bigint[]) AS g(id, fence)
             WHERE outbox.id = g.id AND outbox.fence = g.fence AND outbox.state IN ('claimed', 'sending')
             RETURNING outbox.state",
        )
        .bind(rows.iter().map(|r| r.0).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.1).collect::<Vec<_>>())
        .bind(now)
        .bind(super::ABANDONED_RESEND)
        .bind(super::ABANDONED_UNKNOWN)
        .bind(retry_at)
        .fetch_all(&self.pool)
        .await?;
        Ok(Recovered::count(&states))
    }

    /// [`Store::unreported`](super::Store::unreported) on PostgreSQL.
    ///
    /// # Errors
    /// A database error.
    pub(crate) async fn unreported(&self, limit: i64) -> anyhow::Result<Vec<RowColumns>> {
        Ok(sqlx::query_as::<_, RowColumns>(concat!(
            "SELECT ",
            row_columns!(),
            "
             FROM outbox WHERE state IN ('failed', 'missed', 'unknown') AND reported_utc IS NULL ORDER BY id LIMIT $1"
        ))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// [`Store::mark_reported`](super::Store::mark_reported) on PostgreSQL.
    ///
    /// # Errors
    /// A database error.
    pub(crate) async fn mark_reported(&self, ids: &[i64], now: i64) -> anyhow::Result<()> {
        sqlx::query("UPDATE outbox SET reported_utc = $1 WHERE id = ANY($2::bigint[])")
            .bind(now)
            .bind(ids)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// [`Store::release`](super::Store::release) on PostgreSQL.
    ///
    /// # Errors
    /// A database error.
    pub(crate) async fn release(&self, rows: &[(i64, i64)]) -> anyhow::Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "UPDATE outbox SET state = 'pending', attempts = outbox.attempts - 1, lease_owner = NULL, lease_until = NULL
             FROM UNNEST($1::bigint[], $2::bigint[]) AS g(id, fence)
             WHERE outbox.id = g.id AND outbox.fence = g.fence AND outbox.state IN ('claimed', 'sending')",
        )
        .bind(rows.iter().map(|r| r.0).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.1).collect::<Vec<_>>())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// [`Store::next_due`](super::Store::next_due) on PostgreSQL.
    ///
    /// # Errors
    /// A database error.
    pub(crate) async fn next_due(&self) -> anyhow::Result<Option<i64>> {
        Ok(sqlx::query_scalar::<_, Option<i64>>(super::rows::next_due_sql!("GREATEST")).fetch_one(&self.pool).await?)
    }

    /// [`Store::counts`](super::Store::counts) on PostgreSQL.
    ///
    /// # Errors
    /// A database error.
    pub(crate) async fn counts(&self) -> anyhow::Result<Vec<(String, i64)>> {
        Ok(sqlx::query_as::<_, (String, i64)>("SELECT state, COUNT(*) FROM outbox GROUP BY state ORDER BY state")
            .fetch_all(&self.pool)
            .await?)
    }

    /// [`Store::rows`](super::Store::rows) on PostgreSQL.
    ///
    /// # Errors
    /// A database error.
    pub(crate) async fn rows(&self, state: Option<&str>, limit: i64) -> anyhow::Result<Vec<RowColumns>> {
        Ok(sqlx::query_as::<_, RowColumns>(concat!(
            "SELECT ",
            row_columns!(),
            "
             FROM outbox WHERE ($1::text IS NULL OR state = $1::text) ORDER BY due_utc, id LIMIT $2"
        ))
        .bind(state)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// [`Store::get_value`](super::Store::get_value) on PostgreSQL.
    ///
    /// # Errors
    /// A database error.
    pub(crate) async fn get_value(&self, name: &str) -> anyhow::Result<Option<String>> {
        Ok(sqlx::query_scalar::<_, String>("SELECT value FROM daemon_state WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// [`Store::refresh_statistics`](super::Store::refresh_statistics) on PostgreSQL.
    ///
    /// # Errors
    /// A database error.
    pub(crate) async fn analyze_outbox(&self) -> anyhow::Result<()> {
        sqlx::query("ANALYZE outbox").execute(&self.pool).await?;
        Ok(())
    }

    /// [`Store::set_value`](super::Store::set_value) on PostgreSQL.
    ///
    /// # Errors
    /// A database error.
    pub(crate) async fn set_value(&self, name: &str, value: &str) -> anyhow::Result<()> {
        sqlx::query(
            "INSERT INTO daemon_state (name, value) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value",
        )
        .bind(name)
        .bind(value)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
