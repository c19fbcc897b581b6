//! Orders and their changes (see the `orders` module and migration 0004). One ingest is one
//! transaction: its orders are upserted per (customer, order id), each customer's totals
//! (count, revenue per currency) are updated in step, and one `order_changes` row per customer
//! whose totals changed records before and after — the "one change" `on_multiple` speaks of.
//! Milestone evaluation takes unevaluated changes (`SKIP LOCKED` on PostgreSQL, so several
//! daemons share the work) and marks them evaluated once their rows are in the outbox.
//!
//! Concurrent ingests (the CLI while the API writes, several instances) serialise per
//! customer: SQLite has one writer; PostgreSQL locks the customers' totals rows, in customer
//! order, before reading them.

use super::rows::UnixSecs;
use super::{PgStore, SqliteStore, Store};
use crate::money::{Currency, Money};
use crate::orders::Order;
use chrono::NaiveDate;
use rust_decimal::Decimal;
use std::collections::{BTreeMap, HashMap};

/// Revenue per currency.
pub type Revenue = BTreeMap<Currency, Decimal>;

/// What one ingest did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Ingested {
    /// Orders new to the store.
    pub inserted: u64,
    /// Orders stored before whose date, amount, currency or reference changed (corrections).
    pub updated: u64,
    /// Orders stored before exactly as given (re-imports).
    pub unchanged: u64,
    /// Customers whose totals changed (one `order_changes` row each).
    pub changed_customers: u64,
}

impl std::ops::AddAssign for Ingested {
    fn add_assign(&mut self, o: Ingested) {
        self.inserted += o.inserted;
        self.updated += o.updated;
        self.unchanged += o.unchanged;
        self.changed_customers += o.changed_customers;
    }
}

/// A customer's totals.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CustomerTotals {
    /// Orders stored.
    pub count: u64,
    /// Revenue per currency.
    pub revenue: Revenue,
}

/// One change of a customer's totals, to evaluate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderChange {
    /// Its position in the order of changes.
    pub seq: i64,
    /// The customer.
    pub customer: String,
    /// Where it came from (`orders add`, `orders import <file>`, `api`).
    pub source: String,
    /// Totals before.
    pub before: CustomerTotals,
    /// Totals after.
    pub after: CustomerTotals,
    /// When it was written.
    pub at: UnixSecs,
}

/// An order as stored, for totals by year and for listing.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stored {
    date: NaiveDate,
    amount: Option<Money>,
    reference: Option<String>,
}

fn money_of(amount: Option<String>, currency: Option<String>) -> Option<Money> {
    Some(Money { amount: amount?.parse().ok()?, currency: Currency::parse(&currency?).ok()? })
}

fn revenue_json(r: &Revenue) -> String {
    let m: BTreeMap<&str, String> = r.iter().map(|(c, d)| (c.as_str(), d.normalize().to_string())).collect();
    serde_json::to_string(&m).unwrap_or_else(|_| "{}".into())
}

fn revenue_of(json: &str) -> anyhow::Result<Revenue> {
    let m: BTreeMap<String, String> = serde_json::from_str(json)?;
    m.into_iter()
        .map(|(c, d)| {
            let currency = Currency::parse(&c).map_err(anyhow::Error::msg)?;
            let amount: Decimal = d.parse().map_err(|_| anyhow::anyhow!("revenue `{d}` is not a decimal"))?;
            Ok((currency, amount))
        })
        .collect()
}

/// The work of one ingest, decided in Rust from what is stored.
#[derive(Default)]
struct Plan<'o> {
    /// Orders to insert or update.
    upserts: Vec<&'o Order>,
    /// Customers whose totals change: (customer, before, after).
    changes: Vec<(&'o str, CustomerTotals, CustomerTotals)>,
    done: Ingested,
}

/// The last occurrence of each (customer, order id) of `orders`, in first-seen order: a file
/// that lists an order twice corrects it within the file.
fn latest(orders: &[Order]) -> Vec<&Order> {
    let mut at: HashMap<(&str, &str), usize> = HashMap::with_capacity(orders.len());
    let mut out: Vec<&Order> = Vec::with_capacity(orders.len());
    for o in orders {
        match at.get(&(o.customer.as_str(), o.id.as_str())) {
            Some(&i) => out[i] = o,
            None => {
                at.insert((&o.customer, &o.id), out.len());
                out.push(o);
            }
        }
    }
    out
}

fn plan<'o>(
    orders: &[&'o Order],
    totals: &HashMap<String, CustomerTotals>,
    stored: &HashMap<(String, String), Stored>,
) -> Plan<'o> {
    let mut p = Plan::default();
    let mut after: BTreeMap<&'o str, CustomerTotals> = BTreeMap::new();
    for o in orders {
        let t = after.entry(&o.customer).or_insert_with(|| totals.get(&o.customer).cloned().unwrap_or_default());
        let new = Stored { date: o.date, amount: o.amount, reference: o.reference.clone() };
        let old = stored.get(&(o.customer.clone(), o.id.clone()));
        match old {
            Some(old) if *old == new => {
                p.done.unchanged += 1;
                continue;
            }
            Some(old) => {
                p.done.updated += 1;
                if let Some(m) = old.amount {
                    *t.revenue.entry(m.currency).or_default() -= m.amount;
                }
            }
            None => {
                p.done.inserted += 1;
                t.count += 1;
            }
        }
        if let Some(m) = o.amount {
            *t.revenue.entry(m.currency).or_default() += m.amount;
        }
        p.upserts.push(o);
    }
    for (customer, t) in after {
        let before = totals.get(customer).cloned().unwrap_or_default();
        let mut t = t;
        t.revenue.retain(|_, v| !v.is_zero());
        let mut b = before.clone();
        b.revenue.retain(|_, v| !v.is_zero());
        if t != b {
            p.changes.push((customer, b, t));
        }
    }
    p.done.changed_customers = p.changes.len() as u64;
    p
}

#[derive(sqlx::FromRow)]
struct ChangeColumns {
    seq: i64,
    customer: String,
    source: String,
    count_before: i64,
    count_after: i64,
    revenue_before: String,
    revenue_after: String,
    created_utc: i64,
}

impl ChangeColumns {
    fn typed(self) -> anyhow::Result<OrderChange> {
        Ok(OrderChange {
            seq: self.seq,
            customer: self.customer,
            source: self.source,
            before: CustomerTotals {
                count: self.count_before.max(0) as u64,
                revenue: revenue_of(&self.revenue_before)?,
            },
            after: CustomerTotals { count: self.count_after.max(0) as u64, revenue: revenue_of(&self.revenue_after)? },
            at: UnixSecs(self.created_utc),
        })
    }
}

#[derive(sqlx::FromRow)]
struct OrderColumns {
    customer: String,
    order_id: String,
    order_date: String,
    amount: Option<String>,
    currency: Option<String>,
    reference: Option<String>,
}

impl OrderColumns {
    fn stored(self) -> ((String, String), Stored) {
        let date = self.order_date.parse().unwrap_or_default();
        (
            (self.customer, self.order_id),
            Stored { date, amount: money_of(self.amount, self.currency), reference: self.reference },
        )
    }
}

/// Rows per statement of a bulk read or write.
const BULK: usize = 5000;

/// The column values of an order as both engines bind them.
fn order_values(o: &Order) -> (String, String, String, Option<String>, Option<String>, Option<String>) {
    (
        o.customer.clone(),
        o.id.clone(),
        o.date.to_string(),
        o.amount.map(|m| m.amount.to_string()),
        o.amount.map(|m| m.currency.to_string()),
        o.reference.clone(),
    )
}

impl SqliteStore {
    async fn ingest_orders(&self, orders: &[Order], source: &str, now: i64) -> anyhow::Result<Ingested> {
        let orders = latest(orders);
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let mut customers: Vec<&str> = orders.iter().map(|o| o.customer.as_str()).collect();
        customers.sort_unstable();
        customers.dedup();
        let mut totals: HashMap<String, CustomerTotals> = HashMap::new();
        for chunk in customers.chunks(BULK) {
            let rows: Vec<(String, i64, String)> = sqlx::query_as(
                "SELECT t.customer, t.order_count, t.revenue FROM order_totals t
                 JOIN json_each(?1) j ON t.customer = j.value",
            )
            .bind(serde_json::to_string(chunk)?)
            .fetch_all(&mut *tx)
            .await?;
            for (c, n, r) in rows {
                totals.insert(c, CustomerTotals { count: n.max(0) as u64, revenue: revenue_of(&r)? });
            }
        }
        let mut stored: HashMap<(String, String), Stored> = HashMap::new();
        for chunk in orders.chunks(BULK) {
            let keys: Vec<(&str, &str)> = chunk.iter().map(|o| (o.customer.as_str(), o.id.as_str())).collect();
            let rows: Vec<OrderColumns> = sqlx::query_as(
                "SELECT o.customer, o.order_id, o.order_date, o.amount, o.currency, o.reference FROM orders o
                 JOIN json_each(?1) j ON o.customer = j.value ->> 0 AND o.order_id = j.value ->> 1",
            )
            .bind(serde_json::to_string(&keys)?)
            .fetch_all(&mut *tx)
            .await?;
            stored.extend(rows.into_iter().map(OrderColumns::stored));
        }
        let p = plan(&orders, &totals, &stored);
        for chunk in p.upserts.chunks(BULK) {
            let values: Vec<_> = chunk.iter().map(|o| order_values(o)).collect();
            sqlx::query(
                "INSERT INTO orders (customer, order_id, order_date, amount, currency, reference, created_utc, updated_utc)
                 SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5, ?2, ?2
                 FROM json_each(?1) WHERE true
                 ON CONFLICT (customer, order_id) DO UPDATE SET
                     order_date = excluded.order_date, amount = excluded.amount, currency = excluded.currency,
                     reference = excluded.reference, updated_utc = excluded.updated_utc",
            )
            .bind(serde_json::to_string(&values)?)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        for chunk in p.changes.chunks(BULK) {
            let values: Vec<_> = chunk
                .iter()
                .map(|(c, b, a)| (c, b.count, a.count, revenue_json(&b.revenue), revenue_json(&a.revenue)))
                .collect();
            let json = serde_json::to_string(&values)?;
            sqlx::query(
                "INSERT INTO order_totals (customer, order_count, revenue)
                 SELECT value ->> 0, value ->> 2, value ->> 4 FROM json_each(?1) WHERE true
                 ON CONFLICT (customer) DO UPDATE SET order_count = excluded.order_count, revenue = excluded.revenue",
            )
            .bind(&json)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO order_changes (customer, source, count_before, count_after, revenue_before, revenue_after, created_utc)
                 SELECT value ->> 0, ?2, value ->> 1, value ->> 2, value ->> 3, value ->> 4, ?3 FROM json_each(?1)",
            )
            .bind(&json)
            .bind(source)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(p.done)
    }

    async fn unevaluated_changes(&self, limit: i64) -> anyhow::Result<Vec<ChangeColumns>> {
        Ok(sqlx::query_as(
            "SELECT seq, customer, source, count_before, count_after, revenue_before, revenue_after, created_utc
             FROM order_changes WHERE evaluated_utc IS NULL ORDER BY seq LIMIT ?1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    async fn mark_evaluated(&self, seqs: &[i64], now: i64) -> anyhow::Result<()> {
        sqlx::query(
            "UPDATE order_changes SET evaluated_utc = ?2
             WHERE seq IN (SELECT value FROM json_each(?1)) AND evaluated_utc IS NULL",
        )
        .bind(serde_json::to_string(seqs)?)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

impl PgStore {
    async fn ingest_orders(&self, orders: &[Order], source: &str, now: i64) -> anyhow::Result<Ingested> {
        let orders = latest(orders);
        let mut customers: Vec<&str> = orders.iter().map(|o| o.customer.as_str()).collect();
        customers.sort_unstable();
        customers.dedup();
        let mut tries = 0;
        loop {
            match self.ingest_once(&orders, &customers, source, now).await {
                // Two ingests touching the same customers in another order can deadlock; the
                // loser rolled back entirely, so running it again is safe.
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

    async fn ingest_once(
        &self,
        orders: &[&Order],
        customers: &[&str],
        source: &str,
        now: i64,
    ) -> anyhow::Result<Ingested> {
        let mut tx = self.pool.begin().await?;
        let mut totals: HashMap<String, CustomerTotals> = HashMap::new();
        for chunk in customers.chunks(BULK) {
            // Lock the customers' totals (created at zero if new) in customer order.
            sqlx::query(
                "INSERT INTO order_totals (customer, order_count, revenue)
                 SELECT c, 0, '{}' FROM UNNEST($1::text[]) AS c ON CONFLICT (customer) DO NOTHING",
            )
            .bind(chunk)
            .execute(&mut *tx)
            .await?;
            let rows: Vec<(String, i64, String)> = sqlx::query_as(
                "SELECT customer, order_count, revenue FROM order_totals WHERE customer = ANY($1::text[])
                 ORDER BY customer FOR UPDATE",
            )
            .bind(chunk)
            .fetch_all(&mut *tx)
            .await?;
            for (c, n, r) in rows {
                totals.insert(c, CustomerTotals { count: n.max(0) as u64, revenue: revenue_of(&r)? });
            }
        }
        let mut stored: HashMap<(String, String), Stored> = HashMap::new();
        for chunk in orders.chunks(BULK) {
            let c: Vec<&str> = chunk.iter().map(|o| o.customer.as_str()).collect();
            let i: Vec<&str> = chunk.iter().map(|o| o.id.as_str()).collect();
            let rows: Vec<OrderColumns> = sqlx::query_as(
                "SELECT o.customer, o.order_id, o.order_date, o.amount, o.currency, o.reference
                 FROM orders o JOIN UNNEST($1::text[], $2::text[]) AS k(customer, order_id)
                   ON o.customer = k.customer AND o.order_id = k.order_id",
            )
            .bind(&c)
            .bind(&i)
            .fetch_all(&mut *tx)
            .await?;
            stored.extend(rows.into_iter().map(OrderColumns::stored));
        }
        let p = plan(orders, &totals, &stored);
        for chunk in p.upserts.chunks(BULK) {
            let v: Vec<_> = chunk.iter().map(|o| order_values(o)).collect();
            sqlx::query(
                "INSERT INTO orders (customer, order_id, order_date, amount, currency, reference, created_utc, updated_utc)
                 SELECT *, $7, $7 FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[])
                 ON CONFLICT (customer, order_id) DO UPDATE SET
                     order_date = EXCLUDED.order_date, amount = EXCLUDED.amount, currency = EXCLUDED.currency,
                     reference = EXCLUDED.reference, updated_utc = EXCLUDED.updated_utc",
            )
            .bind(v.iter().map(|x| x.0.clone()).collect::<Vec<_>>())
            .bind(v.iter().map(|x| x.1.clone()).collect::<Vec<_>>())
            .bind(v.iter().map(|x| x.2.clone()).collect::<Vec<_>>())
            .bind(v.iter().map(|x| x.3.clone()).collect::<Vec<_>>())
            .bind(v.iter().map(|x| x.4.clone()).collect::<Vec<_>>())
            .bind(v.iter().map(|x| x.5.clone()).collect::<Vec<_>>())
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        for chunk in p.changes.chunks(BULK) {
            let customer: Vec<&str> = chunk.iter().map(|c| c.0).collect();
            let count_before: Vec<i64> = chunk.iter().map(|c| c.1.count as i64).collect();
            let count_after: Vec<i64> = chunk.iter().map(|c| c.2.count as i64).collect();
            let revenue_before: Vec<String> = chunk.iter().map(|c| revenue_json(&c.1.revenue)).collect();
            let revenue_after: Vec<String> = chunk.iter().map(|c| revenue_json(&c.2.revenue)).collect();
            sqlx::query(
                "UPDATE order_totals t SET order_count = u.n, revenue = u.r
                 FROM UNNEST($1::text[], $2::bigint[], $3::text[]) AS u(c, n, r) WHERE t.customer = u.c",
            )
            .bind(&customer)
            .bind(&count_after)
            .bind(&revenue_after)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO order_changes (customer, source, count_before, count_after, revenue_before, revenue_after, created_utc)
                 SELECT c, $6, nb, na, rb, ra, $7
                 FROM UNNEST($1::text[], $2::bigint[], $3::bigint[], $4::text[], $5::text[]) AS u(c, nb, na, rb, ra)",
            )
            .bind(&customer)
            .bind(&count_before)
            .bind(&count_after)
            .bind(&revenue_before)
            .bind(&revenue_after)
            .bind(source)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(p.done)
    }

    async fn unevaluated_changes(&self, limit: i64) -> anyhow::Result<Vec<ChangeColumns>> {
        Ok(sqlx::query_as(
            "SELECT seq, customer, source, count_before, count_after, revenue_before, revenue_after, created_utc
             FROM order_changes WHERE evaluated_utc IS NULL ORDER BY seq LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    async fn mark_evaluated(&self, seqs: &[i64], now: i64) -> anyhow::Result<()> {
        sqlx::query("UPDATE order_changes SET evaluated_utc = $2 WHERE seq = ANY($1) AND evaluated_utc IS NULL")
            .bind(seqs)
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

macro_rules! by_engine {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            Store::Sqlite($s) => $e,
            Store::Postgres($s) => $e,
        }
    };
}

impl Store {
    /// Stores `orders` in one transaction: new ones are inserted, known ones (same customer and
    /// order id) updated when anything differs, and each customer whose totals changed gets one
    /// change row recording before and after (`source` says where it came from, `now` when). An
    /// order listed twice counts once, the later listing wins. Callers that want several
    /// commits (a large import) pass whole customers per call, so each customer still sees one
    /// change per import.
    ///
    /// # Errors
    /// A database error; then nothing of this call was stored.
    pub async fn ingest_orders(&self, orders: &[Order], source: &str, now: UnixSecs) -> anyhow::Result<Ingested> {
        by_engine!(self, s => s.ingest_orders(orders, source, now.0).await)
    }

    /// Up to `limit` changes not yet evaluated, oldest first.
    ///
    /// # Errors
    /// A database error, or a change whose revenue cannot be read.
    pub async fn unevaluated_changes(&self, limit: i64) -> anyhow::Result<Vec<OrderChange>> {
        let rows = by_engine!(self, s => s.unevaluated_changes(limit).await)?;
        rows.into_iter().map(ChangeColumns::typed).collect()
    }

    /// Marks changes evaluated (their milestones are in the outbox).
    ///
    /// # Errors
    /// A database error.
    pub async fn mark_evaluated(&self, seqs: &[i64], now: UnixSecs) -> anyhow::Result<()> {
        if seqs.is_empty() {
            return Ok(());
        }
        by_engine!(self, s => s.mark_evaluated(seqs, now.0).await)
    }

    /// A customer's totals (zero when it has no orders).
    ///
    /// # Errors
    /// A database error.
    pub async fn order_totals(&self, customer: &str) -> anyhow::Result<CustomerTotals> {
        let row: Option<(i64, String)> = match self {
            Store::Sqlite(s) => {
                sqlx::query_as("SELECT order_count, revenue FROM order_totals WHERE customer = ?1")
                    .bind(customer)
                    .fetch_optional(&s.pool)
                    .await?
            }
            Store::Postgres(s) => {
                sqlx::query_as("SELECT order_count, revenue FROM order_totals WHERE customer = $1")
                    .bind(customer)
                    .fetch_optional(&s.pool)
                    .await?
            }
        };
        match row {
            Some((n, r)) => Ok(CustomerTotals { count: n.max(0) as u64, revenue: revenue_of(&r)? }),
            None => Ok(CustomerTotals::default()),
        }
    }

    /// A customer's revenue in `currency` per calendar year of the order date, ascending.
    ///
    /// # Errors
    /// A database error.
    pub async fn revenue_by_year(&self, customer: &str, currency: Currency) -> anyhow::Result<Vec<(i32, Decimal)>> {
        let rows: Vec<(String, Option<String>)> = match self {
            Store::Sqlite(s) => {
                sqlx::query_as("SELECT order_date, amount FROM orders WHERE customer = ?1 AND currency = ?2")
                    .bind(customer)
                    .bind(currency.as_str())
                    .fetch_all(&s.pool)
                    .await?
            }
            Store::Postgres(s) => {
                sqlx::query_as("SELECT order_date, amount FROM orders WHERE customer = $1 AND currency = $2")
                    .bind(customer)
                    .bind(currency.as_str())
                    .fetch_all(&s.pool)
                    .await?
            }
        };
        let mut by_year: BTreeMap<i32, Decimal> = BTreeMap::new();
        for (date, amount) in rows {
            let (Ok(date), Some(Ok(amount))) = (date.parse::<NaiveDate>(), amount.map(|a| a.parse::<Decimal>())) else {
                continue;
            };
            *by_year.entry(chrono::Datelike::year(&date)).or_default() += amount;
        }
        Ok(by_year.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(customer: &str, id: &str, amount: Option<&str>) -> Order {
        Order {
            customer: customer.into(),
            id: id.into(),
            date: NaiveDate::from_ymd_opt(2026, 11, 30).unwrap(),
            amount: amount.map(|a| Money { amount: a.parse().unwrap(), currency: Currency::EUR }),
            reference: None,
        }
    }

    #[test]
    fn a_plan_counts_new_orders_and_adds_revenue_deltas() {
        let orders = [
            order("a", "1", Some("10")),
            order("a", "2", None),
            order("a", "1", Some("15")),
            order("b", "9", Some("5")),
        ];
        let latest = latest(&orders);
        assert_eq!(latest.len(), 3, "a repeated order counts once");
        let mut stored = HashMap::new();
        stored.insert(
            ("b".to_string(), "9".to_string()),
            Stored { date: orders[3].date, amount: orders[3].amount, reference: None },
        );
        let mut totals = HashMap::new();
        totals.insert(
            "b".to_string(),
            CustomerTotals { count: 1, revenue: [(Currency::EUR, "5".parse().unwrap())].into() },
        );
        let p = plan(&latest, &totals, &stored);
        assert_eq!(p.done, Ingested { inserted: 2, updated: 0, unchanged: 1, changed_customers: 1 });
        let (c, before, after) = &p.changes[0];
        assert_eq!((*c, before.count, after.count), ("a", 0, 2));
        assert_eq!(after.revenue[&Currency::EUR], "15".parse::<Decimal>().unwrap(), "the later listing wins");
    }
}
