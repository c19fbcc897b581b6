//! Order milestones: changes of customers' order totals (written by `orders add`, `orders
//! import` and `POST /api/v1/orders`, in this process or another, on this machine or another)
//! → the thresholds of their `on = "orders"` rules each change passed → outbox rows keyed by the
//! threshold (`…/orders:100`, `…/revenue:100000`).
//!
//! Runs in every tick (at least once a minute), a page of changes at a time: evaluate against
//! the current plans, write the rows, then mark the page evaluated. A crash in between
//! evaluates the page again, which writes nothing new (the keys exist); several daemons on one
//! PostgreSQL database may evaluate the same page at once with the same effect. So each
//! threshold gives at most one row per customer and recipient, whatever the imports, re-imports,
//! corrections or instances.
//!
//! Policies:
//! - A threshold passed together with higher ones in one change is recorded `suppressed` with
//!   the reason under `on_multiple = "highest"` (the default), sent under `"each"`.
//! - Revenue is compared in the customer's `currency`; orders in other currencies do not count
//!   towards it.
//! - A change of a customer that is not in the plans is marked evaluated without rows (logged):
//!   a rule added later does not fire for thresholds passed before it existed.
//! - The send time follows the event policy of `occasion::event`.

use super::materialize::event_item;
use crate::occasion::event;
use crate::orders::milestone::{self, MilestoneFacts, Totals};
use crate::plan::{Customer, Email, Plans, Trigger};
use crate::store::{CustomerTotals, NewItem, OrderChange, RowState, Store, secs};
use chrono::{DateTime, Utc};

/// Changes evaluated and written per step (one materialise, one mark).
pub const CHANGES_PER_STEP: i64 = 2_000;

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MilestonePass {
    /// Changes evaluated.
    pub evaluated: u64,
    /// Rows written (pending or suppressed); 0 when another pass wrote them first.
    pub written: u64,
    /// Changes of customers that are not in the plans.
    pub unknown_customers: u64,
}

/// Evaluates every unevaluated change; `progress` is called after each step (the watchdog).
///
/// # Errors
/// A store error; the step's changes stay unevaluated and are evaluated again next time.
pub async fn run(
    store: &Store,
    plans: &Plans,
    now: DateTime<Utc>,
    sender: &Email,
    progress: &(dyn Fn() + Sync),
) -> anyhow::Result<MilestonePass> {
    let mut unknown_customers = 0;
    let drained = super::event_log::drain(
        store,
        secs(now),
        CHANGES_PER_STEP,
        |n| store.unevaluated_changes(n),
        |c| c.seq,
        |seqs, at| async move { store.mark_evaluated(&seqs, at).await },
        |changes| {
            let mut items = Vec::new();
            let mut unknown: Vec<&str> = Vec::new();
            for change in changes {
                match plans.get(&change.customer) {
                    Some(customer) => items.extend(rows_for(customer, change, sender)),
                    None => unknown.push(&change.customer),
                }
            }
            if !unknown.is_empty() {
                unknown.sort_unstable();
                unknown.dedup();
                tracing::warn!(
                    customers = unknown.len(),
                    first = %unknown.iter().take(5).copied().collect::<Vec<_>>().join(", "),
                    "orders of customers that are not in the plans: no milestones for them"
                );
                unknown_customers += unknown.len() as u64;
            }
            items
        },
        progress,
    )
    .await?;
    let pass = MilestonePass { evaluated: drained.entries, written: drained.written, unknown_customers };
    Ok(pass)
}

/// The totals in the customer's currency.
fn totals(t: &CustomerTotals, customer: &Customer) -> Totals {
    Totals { count: t.count, revenue: t.revenue.get(&customer.currency).copied().unwrap_or_default() }
}

/// The rows one change gives under `customer`'s current rules. Pure.
pub fn rows_for(customer: &Customer, change: &OrderChange, sender: &Email) -> Vec<NewItem> {
    let (before, after) = (totals(&change.before, customer), totals(&change.after, customer));
    let at = change.at.datetime();
    let mut items = Vec::new();
    for rule in customer.rules.iter() {
        let Trigger::Orders(milestones) = &rule.trigger else { continue };
        let evaluation = milestone::evaluate(milestones, before, after);
        if evaluation.unrecorded > 0 {
            tracing::warn!(
                customer = %customer.id,
                rule = %rule.name,
                unrecorded = evaluation.unrecorded,
                "one change passed more thresholds than are recorded; the lower ones are left out"
            );
        }
        for passed in evaluation.passed {
            let facts = MilestoneFacts {
                measure: passed.measure,
                threshold: passed.threshold,
                order_count: after.count,
                currency: customer.currency,
                revenue: after.revenue,
                // Looked up when the message is built (one query per message, not per change).
                revenue_by_year: Vec::new(),
            };
            let state = if passed.suppressed.is_some() { RowState::Suppressed } else { RowState::Pending };
            for o in event::occurrences(customer, rule, passed.measure, &passed.threshold.to_string(), at) {
                let facts = crate::handover::EventFacts::Milestone(facts.clone());
                items.push(event_item(&o, state, passed.suppressed.clone(), Some(facts), sender));
            }
        }
    }
    items
}
