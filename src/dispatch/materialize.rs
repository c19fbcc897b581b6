//! Occurrences → outbox rows. Idempotent: keys are nominal, inserts ignore existing keys.
//!
//! Window: from `min(watermark, now − 26 h)` (so an occasion added after its send time but
//! before its deadline is still sent, and a period the daemon slept through is covered) to
//! `now + horizon`. Rows whose deadline already passed are only written (as `missed`) when
//! they were due after the watermark — i.e. while no daemon was running — never on a first
//! start, so a fresh database does not report the past.

use crate::occasion::{self, Occurrence};
use crate::plan::{Customer, Plans};
use crate::store::{Materialized, NewItem, RowState, Store, secs};
use chrono::{DateTime, TimeDelta, Utc};
use std::sync::Arc;

/// `daemon_state` entry: the end of the last materialised window (Unix seconds).
pub const WATERMARK: &str = "materialized_until";

/// Customers whose occurrences a pass computes and writes at once.
pub const CUSTOMERS_PER_PASS_STEP: usize = 2048;

/// Rows one pass writes from which the store's planner statistics are refreshed
/// ([`Store::refresh_statistics`]): a bulk load, such as a first start at 100,000 customers.
pub const BULK_ROWS: u64 = 10_000;

/// How far back a pass looks at most, after a long downtime.
pub const MAX_LOOKBACK_DAYS: i64 = 31;

/// The outbox row for `o`, in `state` (`Pending`, or `Missed` with a `reason`); its Message-ID
/// is derived from the key and `sender`'s domain.
pub fn new_item(o: &Occurrence, state: RowState, reason: Option<String>, sender: &crate::plan::Email) -> NewItem {
    let key = o.outbox_key();
    NewItem {
        message_id: crate::mail::message_id(&key.to_string(), sender.domain()),
        facts: None,
        key,
        kind: o.rule.trigger.kind(),
        action: o.rule.action,
        delivery: o.rule.delivery,
        state,
        reason,
        recipient_domain: o.email().domain().to_string(),
        occasion_date: o.occasion_date,
        years: o.years,
        timezone: o.zone.name().to_string(),
        due: secs(o.due.utc),
        deadline: secs(o.deadline),
        priority: o.rule.priority,
    }
}

/// One pass over all plans; moves the watermark to the end of the window.
pub async fn run(
    store: &Store,
    plans: &Plans,
    now: DateTime<Utc>,
    horizon: TimeDelta,
    sender: &crate::plan::Email,
) -> anyhow::Result<Materialized> {
    pass(store, &plans.customers, true, now, horizon, sender).await
}

/// The same window for `customers` alone (the ones a reload changed): the watermark stays
/// where the last pass over all plans left it, since the others were not looked at.
pub async fn run_for(
    store: &Store,
    customers: &[Arc<Customer>],
    now: DateTime<Utc>,
    horizon: TimeDelta,
    sender: &crate::plan::Email,
) -> anyhow::Result<Materialized> {
    pass(store, customers, false, now, horizon, sender).await
}

async fn pass(
    store: &Store,
    customers: &[Arc<Customer>],
    whole: bool,
    now: DateTime<Utc>,
    horizon: TimeDelta,
    sender: &crate::plan::Email,
) -> anyhow::Result<Materialized> {
    #[cfg(feature = "failpoints")]
    if let Some(Some(victim)) = fail::eval("dispatch::materialize", |s| s)
        && customers.iter().any(|c| *c.id == *victim)
    {
        anyhow::bail!("failpoint dispatch::materialize: a store error while materialising `{victim}`");
    }
    let watermark = store
        .get_value(WATERMARK)
        .await?
        .and_then(|v| v.parse::<i64>().ok())
        .and_then(|s| DateTime::<Utc>::from_timestamp(s, 0));
    let lookback = now - TimeDelta::hours(26);
    let from = watermark.map_or(lookback, |w| w.min(lookback)).max(now - TimeDelta::days(MAX_LOOKBACK_DAYS));
    let to = now + horizon;
    // A slice of customers at a time: memory holds one slice's occurrences and rows, not the
    // whole window's (100,000 customers over the longest horizon would be millions).
    let mut result = Materialized::default();
    for customers in customers.chunks(CUSTOMERS_PER_PASS_STEP) {
        let items: Vec<NewItem> = occasion::collect(customers, from, to)
            .iter()
            .filter_map(|o| {
                if o.deadline > now {
                    Some(new_item(o, RowState::Pending, None, sender))
                } else if watermark.is_some_and(|w| o.due.utc >= w) {
                    Some(new_item(
                        o,
                        RowState::Missed,
                        Some("due while no daemon was running; deadline passed".into()),
                        sender,
                    ))
                } else {
                    None
                }
            })
            .collect();
        let step = store.materialize(&items, secs(now)).await?;
        result.inserted += step.inserted;
        result.missed += step.missed;
        result.missed_kinds.extend(step.missed_kinds);
    }
    if result.inserted >= BULK_ROWS
        && let Err(e) = store.refresh_statistics().await
    {
        tracing::warn!(error = %e, rows = result.inserted, "could not refresh the outbox's statistics after a bulk write; claims may be slow until autovacuum does");
    }
    if whole {
        let next_mark = watermark.map_or(to, |w| w.max(to));
        store.set_value(WATERMARK, &next_mark.timestamp().to_string()).await?;
    }
    Ok(result)
}

/// The outbox row for an event occurrence `o` (an order milestone …), in `state` (`Pending`,
/// or `Suppressed` with a `reason`), carrying `facts` for its templates.
pub fn event_item(
    o: &crate::occasion::event::EventOccurrence,
    state: RowState,
    reason: Option<String>,
    facts: Option<crate::handover::EventFacts>,
    sender: &crate::plan::Email,
) -> NewItem {
    let email = match o.recipient {
        crate::occasion::Recipient::Contact(c) => &c.email,
        crate::occasion::Recipient::Owner => &o.customer.owner,
    };
    NewItem {
        message_id: crate::mail::message_id(&o.key.to_string(), sender.domain()),
        facts,
        key: o.key.clone(),
        kind: o.rule.trigger.kind(),
        action: o.rule.action,
        delivery: o.rule.delivery,
        state,
        reason,
        recipient_domain: email.domain().to_string(),
        occasion_date: o.occasion_date,
        years: None,
        timezone: o.zone.name().to_string(),
        due: secs(o.due),
        deadline: secs(o.deadline),
        priority: o.rule.priority,
    }
}
