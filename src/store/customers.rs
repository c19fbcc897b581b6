//! Customer changes (migration 0005): what the plans last said about each relationship
//! (`customer_state`: primary contact, owner, phase) and the log of changes between plan
//! revisions (`customer_changes`), which `dispatch::handover` evaluates like order changes.
//!
//! Detection ([`Store::record_customers`]) runs at every plan load and reload, on every
//! daemon. Per chunk of customers: one SELECT of their stored states, then in the same
//! transaction an insert of the customers seen for the first time (no change: a new customer
//! is not a handover) and, per customer whose state differs, a compare-and-set `UPDATE …
//! WHERE customer = ? AND <the values read>`; only when it changed a row are its change rows
//! inserted. Three daemons reading the same plans therefore record each change exactly once
//! (the others' CAS finds the new values and changes nothing), and a change made while no
//! daemon ran is seen once, at the next start.

use super::rows::UnixSecs;
use super::{PgStore, SqliteStore, Store};
use crate::handover::{ChangeKind, ContactCard, Recent, State, diff};
use std::collections::HashMap;

/// Customers compared and written per transaction.
pub const CUSTOMERS_PER_CHUNK: usize = 2_000;

/// What one detection pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Detected {
    /// Customers seen for the first time (recorded without a change).
    pub first_seen: u64,
    /// Change rows written (0 when another daemon recorded them first).
    pub changes: u64,
}

/// One change of a customer, to evaluate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomerChange {
    /// Its position in the order of changes (the id of its event keys).
    pub seq: i64,
    /// The customer.
    pub customer: String,
    /// What changed.
    pub kind: ChangeKind,
    /// Before (contact id, owner address, phase).
    pub from: String,
    /// After.
    pub to: String,
    /// The previous primary contact as it was (handovers).
    pub departed: Option<ContactCard>,
    /// `plan` (an edit of the plans) or `cli`.
    pub source: String,
    /// When it was recorded.
    pub at: UnixSecs,
}

#[derive(sqlx::FromRow)]
struct StateColumns {
    customer: String,
    primary_id: String,
    primary_card: String,
    owner: String,
    phase: String,
    declared_from: Option<String>,
    declared_on: Option<String>,
}

#[derive(sqlx::FromRow)]
struct ChangeColumns {
    seq: i64,
    customer: String,
    kind: String,
    from_value: String,
    to_value: String,
    departed: Option<String>,
    source: String,
    created_utc: i64,
}

impl ChangeColumns {
    fn typed(self) -> anyhow::Result<CustomerChange> {
        let kind = ChangeKind::parse(&self.kind)
            .ok_or_else(|| anyhow::anyhow!("customer change {}: unknown kind `{}`", self.seq, self.kind))?;
        let departed = match self.departed {
            Some(json) => Some(
                serde_json::from_str(&json)
                    .map_err(|e| anyhow::anyhow!("customer change {}: unreadable departed contact ({e})", self.seq))?,
            ),
            None => None,
        };
        Ok(CustomerChange {
            seq: self.seq,
            customer: self.customer,
            kind,
            from: self.from_value,
            to: self.to_value,
            departed,
            source: self.source,
            at: UnixSecs(self.created_utc),
        })
    }
}

fn card_json(c: &ContactCard) -> String {
    serde_json::to_string(c).unwrap_or_else(|_| "{}".into())
}

/// The stored state as read (the card's text kept verbatim for the compare-and-set).
struct Stored {
    state: State,
    card_text: String,
    /// A handover declared with `contactplan handover`: the previous primary contact named
    /// then, and the day (see [`Store::declare_handover`]).
    declared_from: Option<String>,
    declared_on: Option<String>,
}

fn stored(c: StateColumns) -> (String, Stored) {
    let card: ContactCard = serde_json::from_str(&c.primary_card)
        .unwrap_or_else(|_| ContactCard { id: c.primary_id.clone(), ..Default::default() });
    let state = State {
        customer: c.customer.clone(),
        primary: ContactCard { id: c.primary_id, ..card },
        owner: c.owner,
        phase: c.phase,
    };
    (
        c.customer,
        Stored { state, card_text: c.primary_card, declared_from: c.declared_from, declared_on: c.declared_on },
    )
}

/// Sorted for a stable lock order (PostgreSQL row locks of concurrent daemons).
fn sorted(states: &[State]) -> Vec<&State> {
    let mut v: Vec<&State> = states.iter().collect();
    v.sort_by(|a, b| a.customer.cmp(&b.customer));
    v.dedup_by(|a, b| a.customer == b.customer);
    v
}

/// One engine's detection and queries; `$begin` opens a write transaction, `$select` reads the
/// states of a chunk (bound to the chunk's ids), `$p` is the placeholder prefix.
macro_rules! engine {
    ($store:ty, |$pool:ident| $begin:expr, $select:literal, $bind_ids:expr, $p:literal, $mark:literal, $key:literal) => {
        impl $store {
            async fn record_customers(&self, states: &[State], source: &str, now: i64) -> anyhow::Result<Detected> {
                let mut done = Detected::default();
                let states = sorted(states);
                for chunk in states.chunks(CUSTOMERS_PER_CHUNK) {
                    let $pool = &self.pool;
                    let mut tx = $begin.await?;
                    let ids: Vec<&str> = chunk.iter().map(|s| s.customer.as_str()).collect();
                    let rows: Vec<StateColumns> =
                        sqlx::query_as($select).bind($bind_ids(&ids)?).fetch_all(&mut *tx).await?;
                    let known: HashMap<String, Stored> = rows.into_iter().map(stored).collect();
                    for new in chunk {
                        let card = card_json(&new.primary);
                        let Some(old) = known.get(&new.customer) else {
                            let r = sqlx::query(concat!(
                                "INSERT INTO customer_state (customer, primary_id, primary_card, owner, phase, updated_utc) VALUES (",
                                $p, "1, ", $p, "2, ", $p, "3, ", $p, "4, ", $p, "5, ", $p, "6) ON CONFLICT (customer) DO NOTHING"
                            ))
                            .bind(&new.customer)
                            .bind(&new.primary.id)
                            .bind(&card)
                            .bind(&new.owner)
                            .bind(&new.phase)
                            .bind(now)
                            .execute(&mut *tx)
                            .await?;
                            done.first_seen += r.rows_affected();
                            continue;
                        };
                        // A declared handover the plan does not show yet: the plan still names
                        // the declared previous primary, which is no reverse handover.
                        let pending = old.declared_from.as_deref().filter(|from| {
                            new.primary.id == *from && old.state.primary.id != *from
                        });
                        let masked;
                        let (new, card) = match pending {
                            Some(from) => {
                                tracing::warn!(
                                    customer = %new.customer,
                                    "a handover to {} was declared on {}; the plan still names {from} as primary: update the plan",
                                    old.state.primary.id,
                                    old.declared_on.as_deref().unwrap_or("?"),
                                );
                                masked = State { primary: old.state.primary.clone(), ..(*new).clone() };
                                (&masked, old.card_text.clone())
                            }
                            None => (*new, card),
                        };
                        let keep_declared = pending.is_some();
                        if old.state == *new && old.card_text == card && (keep_declared || old.declared_from.is_none()) {
                            continue;
                        }
                        let (declared_from, declared_on) = if keep_declared {
                            (old.declared_from.clone(), old.declared_on.clone())
                        } else {
                            (None, None)
                        };
                        let r = sqlx::query(concat!(
                            "UPDATE customer_state SET primary_id = ", $p, "1, primary_card = ", $p, "2, owner = ", $p, "3, phase = ", $p, "4, updated_utc = ", $p, "5,
                             declared_from = ", $p, "11, declared_on = ", $p, "12
                             WHERE customer = ", $p, "6 AND primary_id = ", $p, "7 AND primary_card = ", $p, "8 AND owner = ", $p, "9 AND phase = ", $p, "10"
                        ))
                        .bind(&new.primary.id)
                        .bind(&card)
                        .bind(&new.owner)
                        .bind(&new.phase)
                        .bind(now)
                        .bind(&new.customer)
                        .bind(&old.state.primary.id)
                        .bind(&old.card_text)
                        .bind(&old.state.owner)
                        .bind(&old.state.phase)
                        .bind(declared_from)
                        .bind(declared_on)
                        .execute(&mut *tx)
                        .await?;
                        if r.rows_affected() == 0 {
                            // Another daemon recorded this change (or a newer one) first.
                            continue;
                        }
                        for change in diff(&old.state, new) {
                            sqlx::query(concat!(
                                "INSERT INTO customer_changes (customer, kind, from_value, to_value, departed, source, created_utc) VALUES (",
                                $p, "1, ", $p, "2, ", $p, "3, ", $p, "4, ", $p, "5, ", $p, "6, ", $p, "7)"
                            ))
                            .bind(&new.customer)
                            .bind(change.kind.code())
                            .bind(&change.from)
                            .bind(&change.to)
                            .bind(change.departed.as_ref().map(card_json))
                            .bind(source)
                            .bind(now)
                            .execute(&mut *tx)
                            .await?;
                            done.changes += 1;
                        }
                    }
                    tx.commit().await?;
                }
                Ok(done)
            }

            async fn unevaluated_customer_changes(&self, limit: i64) -> anyhow::Result<Vec<ChangeColumns>> {
                Ok(sqlx::query_as(concat!(
                    "SELECT seq, customer, kind, from_value, to_value, departed, source, created_utc
                     FROM customer_changes WHERE evaluated_utc IS NULL ORDER BY seq LIMIT ", $p, "1"
                ))
                .bind(limit)
                .fetch_all(&self.pool)
                .await?)
            }

            async fn mark_customer_changes_evaluated(&self, seqs: &[i64], now: i64) -> anyhow::Result<()> {
                sqlx::query($mark).bind($bind_ids(seqs)?).bind(now).execute(&self.pool).await?;
                Ok(())
            }

            async fn recent_sent(&self, customer: &str, except: &str, limit: i64) -> anyhow::Result<Vec<(String, String, String, String, String)>> {
                Ok(sqlx::query_as(concat!(
                    "SELECT rule, kind, action, timezone, CAST(sent_utc AS TEXT) FROM outbox
                     WHERE ", $key, " > ", $p, "1 AND ", $key, " < ", $p, "4 AND customer = ", $p, "5
                       AND state = 'accepted' AND sent_utc IS NOT NULL AND key <> ", $p, "2
                     ORDER BY sent_utc DESC, id DESC LIMIT ", $p, "3"
                ))
                // Every key of the customer lies in [`<customer>/`, `<customer>0`) ('0' follows
                // '/'), a range of the unique index on `key`.
                .bind(format!("{customer}/"))
                .bind(except)
                .bind(limit)
                .bind(format!("{customer}0"))
                .bind(customer)
                .fetch_all(&self.pool)
                .await?)
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
    "SELECT s.customer, s.primary_id, s.primary_card, s.owner, s.phase, s.declared_from, s.declared_on FROM customer_state s
     JOIN json_each(?1) j ON s.customer = j.value",
    json_ids,
    "?",
    "UPDATE customer_changes SET evaluated_utc = ?2
     WHERE seq IN (SELECT value FROM json_each(?1)) AND evaluated_utc IS NULL",
    // SQLite compares text bytewise (BINARY): the range is read from the unique key index.
    "key"
);

engine!(
    PgStore,
    |pool| pool.begin(),
    "SELECT customer, primary_id, primary_card, owner, phase, declared_from, declared_on FROM customer_state WHERE customer = ANY($1)",
    pg_ids,
    "$",
    "UPDATE customer_changes SET evaluated_utc = $2 WHERE seq = ANY($1) AND evaluated_utc IS NULL",
    // Bytewise, whatever the database's collation; `outbox_customer_sent` serves the query here.
    "key COLLATE \"C\""
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
    /// Compares the customers' current `states` (from the plans) with the stored ones and
    /// records the differences as change rows (`source`: `plan` or `cli`), in chunks of
    /// [`CUSTOMERS_PER_CHUNK`], each one transaction with a compare-and-set per changed
    /// customer (see the module docs). Customers not stored yet are stored without a change.
    ///
    /// # Errors
    /// A database error; chunks committed before it stay committed (the next pass goes on).
    pub async fn record_customers(&self, states: &[State], source: &str, now: UnixSecs) -> anyhow::Result<Detected> {
        let mut tries = 0;
        loop {
            let r = by_engine!(self, s => s.record_customers(states, source, now.0).await);
            match r {
                // Two daemons writing the same customers' first states can deadlock or
                // conflict; what committed stays, the rest is compared again.
                Err(e)
                    if tries < 5
                        && e.downcast_ref::<sqlx::Error>().is_some_and(super::postgres::is_transient_conflict) =>
                {
                    tries += 1
                }
                other => return other,
            }
        }
    }

    /// Up to `limit` customer changes not yet evaluated, oldest first.
    ///
    /// # Errors
    /// A database error, or a row that cannot be read.
    pub async fn unevaluated_customer_changes(&self, limit: i64) -> anyhow::Result<Vec<CustomerChange>> {
        let rows = by_engine!(self, s => s.unevaluated_customer_changes(limit).await)?;
        rows.into_iter().map(ChangeColumns::typed).collect()
    }

    /// Marks customer changes evaluated (their rows are in the outbox).
    ///
    /// # Errors
    /// A database error.
    pub async fn mark_customer_changes_evaluated(&self, seqs: &[i64], now: UnixSecs) -> anyhow::Result<()> {
        if seqs.is_empty() {
            return Ok(());
        }
        by_engine!(self, s => s.mark_customer_changes_evaluated(seqs, now.0).await)
    }

    /// The last `limit` messages accepted for `customer` (other than the row keyed `except`),
    /// newest first, with the local day each was sent on.
    ///
    /// # Errors
    /// A database error.
    pub async fn recent_sent(&self, customer: &str, except: &str, limit: i64) -> anyhow::Result<Vec<Recent>> {
        let rows = by_engine!(self, s => s.recent_sent(customer, except, limit).await)?;
        Ok(rows
            .into_iter()
            .filter_map(|(rule, kind, action, zone, sent)| {
                let at = chrono::DateTime::<chrono::Utc>::from_timestamp(sent.parse().ok()?, 0)?;
                let zone: chrono_tz::Tz = zone.parse().unwrap_or(chrono_tz::UTC);
                Some(Recent { rule, kind, action, date: at.with_timezone(&zone).date_naive() })
            })
            .collect())
    }
}
