//! Occurrences → outbox rows. Idempotent: keys are nominal, inserts ignore existing keys.
//!
//! Window: from `min(watermark, now − 26 h)` (so an occasion added after its send time but
//! before its deadline is still sent, and a period the daemon slept through is covered) to
//! `now + horizon`. Rows whose deadline already passed are only written (as `missed`) when
//! they were due after the watermark — i.e. while no daemon was running — never on a first
//! start, so a fresh database does not report the past.

use crate::occasion::{self, Occurrence};
use crate::plan::{Action, Plans};
use crate::store::{Materialized, NewItem, Store, secs};
use chrono::{DateTime, TimeDelta, Utc};

/// `daemon_state` entry: the end of the last materialised window (Unix seconds).
pub const WATERMARK: &str = "materialized_until";

/// How far back a pass looks at most, after a long downtime.
pub const MAX_LOOKBACK_DAYS: i64 = 31;

pub fn new_item(o: &Occurrence, state: &'static str, reason: Option<String>, sender: &crate::plan::Email) -> NewItem {
    let key = o.key();
    NewItem {
        message_id: crate::mail::message_id(&key, sender),
        delivery: o.rule.delivery.code(),
        key,
        customer: o.customer.id.to_string(),
        rule: o.rule.name.to_string(),
        kind: o.rule.trigger.kind(),
        action: match o.rule.action {
            Action::Email => "email",
            Action::Task => "task",
        },
        recipient: o.recipient_key(),
        recipient_domain: o.email().domain().to_string(),
        nominal: o.nominal.to_string(),
        occasion_date: o.occasion_date.to_string(),
        years: o.years.map(i64::from),
        timezone: o.zone.name().to_string(),
        due: secs(o.due.utc),
        deadline: secs(o.deadline),
        state,
        reason,
    }
}

/// One pass over all plans.
pub async fn run(
    store: &Store,
    plans: &Plans,
    now: DateTime<Utc>,
    horizon: TimeDelta,
    sender: &crate::plan::Email,
) -> anyhow::Result<Materialized> {
    let watermark = store
        .get_value(WATERMARK)
        .await?
        .and_then(|v| v.parse::<i64>().ok())
        .and_then(|s| DateTime::<Utc>::from_timestamp(s, 0));
    let lookback = now - TimeDelta::hours(26);
    let from = watermark.map_or(lookback, |w| w.min(lookback)).max(now - TimeDelta::days(MAX_LOOKBACK_DAYS));
    let to = now + horizon;
    let items: Vec<NewItem> = occasion::collect(plans, from, to)
        .iter()
        .filter_map(|o| {
            if o.deadline > now {
                Some(new_item(o, "pending", None, sender))
            } else if watermark.is_some_and(|w| o.due.utc >= w) {
                Some(new_item(o, "missed", Some("due while no daemon was running; deadline passed".into()), sender))
            } else {
                None
            }
        })
        .collect();
    let result = store.materialize(&items, secs(now)).await?;
    let next_mark = watermark.map_or(to, |w| w.max(to));
    store.set_value(WATERMARK, &secs(next_mark).to_string()).await?;
    Ok(result)
}
