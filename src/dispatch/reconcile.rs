//! Reconciliation: after every plan load and reload, the outbox is made to agree with the
//! plans (and so with `agenda`). Rows not yet in a batch (`pending`, `retry`) are re-timed when
//! their send time, deadline, occasion date or years changed, and suppressed with a reason
//! naming the change when the plans no longer produce their key; rows the plans suppressed are
//! revived when the plans produce them again before their deadline (an edit undone). Rows in a
//! batch (`claimed`, `sending`) are left to the batch, which checks the plans once more
//! before sending.
//!
//! The decisions are made by the pure [`crate::occasion::reconcile::locate`]; this module
//! pages through the rows and writes the changes: of the whole outbox ([`run`]), or of the
//! customers a reload changed ([`run_for`]; see `workspace::Changes`).

use crate::metrics::Metrics;
use crate::occasion::reconcile::{Located, Row, Timing, locate};
use crate::plan::Plans;
use crate::store::{Change, Reconcilable, Reconciled, Retiming, RowState, Store, secs};
use chrono::{DateTime, Utc};

/// Rows read per page.
pub const PAGE: i64 = 5000;

/// Changed customers whose rows are read at once.
pub const CUSTOMERS_PER_PAGE: usize = 200;

/// One reconciliation of the whole outbox with `plans` at `now`.
///
/// # Errors
/// A database error; pages written before it stay written (the next pass finishes the job).
pub async fn run(store: &Store, plans: &Plans, now: DateTime<Utc>, metrics: &Metrics) -> anyhow::Result<Reconciled> {
    let mut total = Reconciled::default();
    let mut after = 0;
    loop {
        let rows = store.reconcilable(secs(now), after, PAGE).await?;
        let Some(last) = rows.last() else { break };
        after = last.id;
        apply(store, plans, &rows, now, metrics, &mut total).await?;
        if (rows.len() as i64) < PAGE {
            break;
        }
    }
    Ok(total)
}

/// [`run`] for the rows of `customers` alone (the ones a reload changed; ids no longer in the
/// plans included: their rows are suppressed).
///
/// # Errors
/// A database error; customers written before it stay written.
pub async fn run_for(
    store: &Store,
    plans: &Plans,
    customers: &[Box<str>],
    now: DateTime<Utc>,
    metrics: &Metrics,
) -> anyhow::Result<Reconciled> {
    #[cfg(feature = "failpoints")]
    if let Some(Some(victim)) = fail::eval("dispatch::reconcile_for", |s| s)
        && customers.iter().any(|c| **c == *victim)
    {
        anyhow::bail!("failpoint dispatch::reconcile_for: a store error while reconciling `{victim}`");
    }
    let mut total = Reconciled::default();
    for chunk in customers.chunks(CUSTOMERS_PER_PAGE) {
        let ids: Vec<&str> = chunk.iter().map(|c| &**c).collect();
        let rows = store.reconcilable_of(&ids, secs(now)).await?;
        if !rows.is_empty() {
            apply(store, plans, &rows, now, metrics, &mut total).await?;
        }
    }
    Ok(total)
}

/// Decides and writes the changes of one page of `rows`, and logs them.
async fn apply(
    store: &Store,
    plans: &Plans,
    rows: &[Reconcilable],
    now: DateTime<Utc>,
    metrics: &Metrics,
    total: &mut Reconciled,
) -> anyhow::Result<()> {
    let changes = decide(plans, rows, now);
    for (id, change) in &changes {
        let row = rows.iter().find(|r| r.id == *id);
        match (change, row) {
            (Change::Suppress { reason }, Some(r)) => {
                tracing::info!(key = %r.key, kind = %r.kind, reason = %crate::telemetry::redact_addresses(reason), "suppressed: the plans no longer produce this occasion");
                metrics.suppressed(r.kind, 1);
            }
            (Change::Retime(t), Some(r)) => {
                tracing::info!(key = %r.key, from = %r.due, to = %t.due, "re-timed to the current plan");
            }
            (Change::Revive(t), Some(r)) => {
                tracing::info!(key = %r.key, due = %t.due, "revived: the plans produce this occasion again");
            }
            _ => {}
        }
    }
    let done = store.reconcile(&changes, secs(now)).await?;
    total.retimed += done.retimed;
    total.suppressed += done.suppressed;
    total.revived += done.revived;
    Ok(())
}

/// The changes that make `rows` agree with `plans` at `now`.
pub fn decide(plans: &Plans, rows: &[Reconcilable], now: DateTime<Utc>) -> Vec<(i64, Change)> {
    let input: Vec<Row<'_>> = rows.iter().map(|r| Row { key: &r.key, kind: r.kind }).collect();
    let located = locate(plans, &input);
    let mut changes = Vec::new();
    for (row, found) in rows.iter().zip(located) {
        let change = match (row.state, found) {
            (RowState::Suppressed, Located::Produced(t)) if t.deadline > now => Some(Change::Revive(retiming(t))),
            (RowState::Suppressed, _) => None,
            (_, Located::Produced(t)) if retiming(t) != current(row) => Some(Change::Retime(retiming(t))),
            (_, Located::Produced(_) | Located::Event) => None,
            (_, Located::Gone(reason)) => Some(Change::Suppress { reason }),
        };
        if let Some(c) = change {
            changes.push((row.id, c));
        }
    }
    changes
}

fn retiming(t: Timing) -> Retiming {
    Retiming { due: secs(t.due), deadline: secs(t.deadline), occasion_date: t.occasion_date, years: t.years }
}

fn current(r: &Reconcilable) -> Retiming {
    Retiming { due: r.due, deadline: r.deadline, occasion_date: r.occasion_date, years: r.years }
}
