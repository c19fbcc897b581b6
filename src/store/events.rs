//! Custom events, declared handovers and the order days inactivity reads (migration 0006).
//!
//! - [`Store::record_event`]: one row per customer and event id (`INSERT … ON CONFLICT DO
//!   NOTHING`), so re-sending an event with the same id records nothing;
//!   `dispatch::moments` evaluates the unrecorded ones like order changes.
//! - [`Store::declare_handover`]: `contactplan handover`: in one transaction, the customer's
//!   stored state takes the new primary contact with a compare-and-set on the primary read
//!   (with the declared previous one and the day, see `customers.rs`), and one
//!   `customer_changes` row with source `cli` is written, which the daemon evaluates like a
//!   plan edit at its next tick.
//! - [`Store::order_days`]: the latest order days of many customers in one query.

use super::rows::UnixSecs;
use super::{PgStore, SqliteStore, Store};
use crate::events::Event;
use crate::handover::{ContactCard, State};
use chrono::NaiveDate;
use std::collections::HashMap;

/// Order days read per customer for the median interval (the latest ones).
pub const ORDER_DAYS_PER_CUSTOMER: i64 = 101;

/// A recorded custom event, to evaluate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    /// Its position (for marking it evaluated).
    pub seq: i64,
    /// The event.
    pub event: Event,
    /// When it was recorded.
    pub at: UnixSecs,
}

/// What [`Store::declare_handover`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Declared {
    /// Recorded: the change's sequence number.
    Recorded(i64),
    /// `to` is already the stored primary contact: nothing recorded.
    AlreadyPrimary,
}

#[derive(sqlx::FromRow)]
struct EventColumns {
    seq: i64,
    customer: String,
    event_id: String,
    kind: String,
    note: Option<String>,
    event_date: String,
    created_utc: i64,
}

impl EventColumns {
    fn typed(self) -> anyhow::Result<StoredEvent> {
        let date = NaiveDate::parse_from_str(&self.event_date, "%Y-%m-%d")
            .map_err(|_| anyhow::anyhow!("event {}: unreadable date `{}`", self.seq, self.event_date))?;
        Ok(StoredEvent {
            seq: self.seq,
            event: Event { customer: self.customer, id: self.event_id, kind: self.kind, note: self.note, date },
            at: UnixSecs(self.created_utc),
        })
    }
}

fn card_json(c: &ContactCard) -> String {
    serde_json::to_string(c).unwrap_or_else(|_| "{}".into())
}

macro_rules! engine {
    ($store:ty, |$pool:ident| $begin:expr, $p:literal, $bind_ids:expr, $mark:literal, $days:literal) => {
        impl $store {
            async fn record_event(&self, e: &Event, source: &str, now: i64) -> anyhow::Result<bool> {
                let r = sqlx::query(concat!(
                    "INSERT INTO customer_events (customer, event_id, kind, note, event_date, source, created_utc) VALUES (",
                    $p, "1, ", $p, "2, ", $p, "3, ", $p, "4, ", $p, "5, ", $p, "6, ", $p, "7) ON CONFLICT (customer, event_id) DO NOTHING"
                ))
                .bind(&e.customer)
                .bind(&e.id)
                .bind(&e.kind)
                .bind(&e.note)
                .bind(e.date.format("%Y-%m-%d").to_string())
                .bind(source)
                .bind(now)
                .execute(&self.pool)
                .await?;
                Ok(r.rows_affected() > 0)
            }

            async fn unevaluated_events(&self, limit: i64) -> anyhow::Result<Vec<EventColumns>> {
                Ok(sqlx::query_as(concat!(
                    "SELECT seq, customer, event_id, kind, note, event_date, created_utc
                     FROM customer_events WHERE evaluated_utc IS NULL ORDER BY seq LIMIT ", $p, "1"
                ))
                .bind(limit)
                .fetch_all(&self.pool)
                .await?)
            }

            async fn mark_events_evaluated(&self, seqs: &[i64], now: i64) -> anyhow::Result<()> {
                sqlx::query($mark).bind($bind_ids(seqs)?).bind(now).execute(&self.pool).await?;
                Ok(())
            }

            async fn order_days(&self, customers: &[&str]) -> anyhow::Result<Vec<(String, String)>> {
                Ok(sqlx::query_as($days)
                    .bind($bind_ids(customers)?)
                    .bind(ORDER_DAYS_PER_CUSTOMER)
                    .fetch_all(&self.pool)
                    .await?)
            }

            async fn declare_handover(
                &self,
                plan: &State,
                from: &ContactCard,
                to: &ContactCard,
                on: NaiveDate,
                at: i64,
                now: i64,
            ) -> anyhow::Result<Declared> {
                let $pool = &self.pool;
                let mut tx = $begin.await?;
                let stored: Option<(String,)> = sqlx::query_as(concat!(
                    "SELECT primary_id FROM customer_state WHERE customer = ", $p, "1"
                ))
                .bind(&plan.customer)
                .fetch_optional(&mut *tx)
                .await?;
                let on_text = on.format("%Y-%m-%d").to_string();
                match stored {
                    Some((primary,)) if primary == to.id => return Ok(Declared::AlreadyPrimary),
                    Some((primary,)) => {
                        let r = sqlx::query(concat!(
                            "UPDATE customer_state SET primary_id = ", $p, "1, primary_card = ", $p, "2, declared_from = ", $p, "3,
                             declared_on = ", $p, "4, updated_utc = ", $p, "5 WHERE customer = ", $p, "6 AND primary_id = ", $p, "7"
                        ))
                        .bind(&to.id)
                        .bind(card_json(to))
                        .bind(&from.id)
                        .bind(&on_text)
                        .bind(now)
                        .bind(&plan.customer)
                        .bind(&primary)
                        .execute(&mut *tx)
                        .await?;
                        if r.rows_affected() == 0 {
                            anyhow::bail!("the stored state of `{}` changed meanwhile; try again", plan.customer);
                        }
                    }
                    None => {
                        sqlx::query(concat!(
                            "INSERT INTO customer_state (customer, primary_id, primary_card, owner, phase, updated_utc, declared_from, declared_on) VALUES (",
                            $p, "1, ", $p, "2, ", $p, "3, ", $p, "4, ", $p, "5, ", $p, "6, ", $p, "7, ", $p, "8)"
                        ))
                        .bind(&plan.customer)
                        .bind(&to.id)
                        .bind(card_json(to))
                        .bind(&plan.owner)
                        .bind(&plan.phase)
                        .bind(now)
                        .bind(&from.id)
                        .bind(&on_text)
                        .execute(&mut *tx)
                        .await?;
                    }
                }
                let (seq,): (i64,) = sqlx::query_as(concat!(
                    "INSERT INTO customer_changes (customer, kind, from_value, to_value, departed, source, created_utc) VALUES (",
                    $p, "1, 'handover', ", $p, "2, ", $p, "3, ", $p, "4, 'cli', ", $p, "5) RETURNING seq"
                ))
                .bind(&plan.customer)
                .bind(&from.id)
                .bind(&to.id)
                .bind(card_json(from))
                .bind(at)
                .fetch_one(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(Declared::Recorded(seq))
            }
        }
    };
}

fn json_ids<T: serde::Serialize>(ids: &[T]) -> anyhow::Result<String> {
    Ok(serde_json::to_string(ids)?)
}

fn pg_ids<T: Clone>(ids: &[T]) -> anyhow::Result<Vec<T>> {
    Ok(ids.to_vec())
}

engine!(
    SqliteStore,
    |pool| pool.begin_with("BEGIN IMMEDIATE"),
    "?",
    json_ids,
    "UPDATE customer_events SET evaluated_utc = ?2
     WHERE seq IN (SELECT value FROM json_each(?1)) AND evaluated_utc IS NULL",
    "SELECT customer, order_date FROM (
         SELECT customer, order_date, ROW_NUMBER() OVER (PARTITION BY customer ORDER BY order_date DESC) AS n
         FROM (SELECT DISTINCT o.customer, o.order_date FROM orders o JOIN json_each(?1) j ON o.customer = j.value)
     ) WHERE n <= ?2"
);

engine!(
    PgStore,
    |pool| pool.begin(),
    "$",
    pg_ids,
    "UPDATE customer_events SET evaluated_utc = $2 WHERE seq = ANY($1) AND evaluated_utc IS NULL",
    "SELECT customer, order_date FROM (
         SELECT customer, order_date, ROW_NUMBER() OVER (PARTITION BY customer ORDER BY order_date DESC) AS n
         FROM (SELECT DISTINCT customer, order_date FROM orders WHERE customer = ANY($1)) d
     ) r WHERE n <= $2"
);

macro_rules! by_engine {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            Store::Sqlite($s) => $e,
            Store::Postgres($s) => $e,
        }
    };
}

impl Store {
    /// Records a custom event (`source`: `cli` or `api`); `false` when an event with its id
    /// was recorded for the customer before (nothing changes: re-sending is idempotent).
    ///
    /// # Errors
    /// A database error.
    pub async fn record_event(&self, event: &Event, source: &str, now: UnixSecs) -> anyhow::Result<bool> {
        by_engine!(self, s => s.record_event(event, source, now.0).await)
    }

    /// Up to `limit` recorded events not yet evaluated, oldest first.
    ///
    /// # Errors
    /// A database error, or a row that cannot be read.
    pub async fn unevaluated_events(&self, limit: i64) -> anyhow::Result<Vec<StoredEvent>> {
        let rows = by_engine!(self, s => s.unevaluated_events(limit).await)?;
        rows.into_iter().map(EventColumns::typed).collect()
    }

    /// Marks events evaluated (their rows are in the outbox).
    ///
    /// # Errors
    /// A database error.
    pub async fn mark_events_evaluated(&self, seqs: &[i64], now: UnixSecs) -> anyhow::Result<()> {
        if seqs.is_empty() {
            return Ok(());
        }
        by_engine!(self, s => s.mark_events_evaluated(seqs, now.0).await)
    }

    /// The latest [`ORDER_DAYS_PER_CUSTOMER`] distinct order days of each of `customers` (those
    /// without orders are absent), in one query.
    ///
    /// # Errors
    /// A database error.
    pub async fn order_days(&self, customers: &[&str]) -> anyhow::Result<HashMap<String, Vec<NaiveDate>>> {
        let mut out: HashMap<String, Vec<NaiveDate>> = HashMap::new();
        if customers.is_empty() {
            return Ok(out);
        }
        for (customer, day) in by_engine!(self, s => s.order_days(customers).await)? {
            if let Ok(d) = NaiveDate::parse_from_str(&day, "%Y-%m-%d") {
                out.entry(customer).or_default().push(d);
            }
        }
        Ok(out)
    }

    /// Declares a handover from `from` to `to` (contacts of the customer's plan, whose state
    /// the plans give as `plan`) on the local day `on`: the stored primary becomes `to` (with a
    /// compare-and-set), the declaration is kept so that a plan still naming `from` as primary
    /// is no reverse handover, and one change row (source `cli`, event instant `at`) is
    /// written, all in one transaction.
    ///
    /// # Errors
    /// A database error, or the stored primary changed between the read and the write.
    pub async fn declare_handover(
        &self,
        plan: &State,
        from: &ContactCard,
        to: &ContactCard,
        on: NaiveDate,
        at: UnixSecs,
        now: UnixSecs,
    ) -> anyhow::Result<Declared> {
        by_engine!(self, s => s.declare_handover(plan, from, to, on, at.0, now.0).await)
    }

    /// The stored primary contact of `customer` (what the last plan load or declaration
    /// recorded), if any.
    ///
    /// # Errors
    /// A database error.
    pub async fn stored_primary(&self, customer: &str) -> anyhow::Result<Option<String>> {
        let row: Option<(String,)> = match self {
            Store::Sqlite(s) => {
                sqlx::query_as("SELECT primary_id FROM customer_state WHERE customer = ?1")
                    .bind(customer)
                    .fetch_optional(&s.pool)
                    .await?
            }
            Store::Postgres(s) => {
                sqlx::query_as("SELECT primary_id FROM customer_state WHERE customer = $1")
                    .bind(customer)
                    .fetch_optional(&s.pool)
                    .await?
            }
        };
        Ok(row.map(|(p,)| p))
    }
}
