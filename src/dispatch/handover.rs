//! Handovers, owner changes and phase changes: detected at every plan load and reload
//! ([`detect`]: the plans against the stored state, one change row per change, exactly once
//! across daemons), then evaluated at every tick ([`run`]), mirroring `milestones.rs`: each
//! unevaluated change against the customer's current rules → event rows keyed by the change
//! (`…/handover:<seq>`, `…/owner-change:<seq>`, `…/phase:<seq>`) carrying the facts → the page
//! marked evaluated. Evaluating again (a crash in between, three daemons at once) writes the
//! same keys, so nothing is added.
//!
//! Policies:
//! - `on = "handover"` rules act on a new primary contact: tasks go to the salesperson (the
//!   current plans' `owner` when the message is built, so unsent tasks follow an owner change);
//!   `to = "new"` writes to the new primary contact, `to = "departed"` to the previous one while
//!   it is still in the plan (else the row is recorded `suppressed` with the reason).
//! - An owner change gives the new owner the same brief: the handover rules' tasks, keyed
//!   `owner-change:<seq>` (their emails to contacts are not sent for it).
//! - `on = "phase"` rules act on a phase change (into `to_phase` only, when set).
//! - A rule limited by `phases` acts only while the customer is in one of them.
//! - Changes of customers no longer in the plans are marked evaluated without rows.
//! - Sent at once (the event send-time policy of `occasion::event`; `at` may set a time).

use super::materialize::event_item;
use crate::handover::{ChangeKind, EventFacts, HandoverFacts, State};
use crate::occasion::event::{self, DEFAULT_EVENT_DEADLINE};
use crate::occasion::{EventKind, NominalKey, OutboxKey, RecipientKey};
use crate::plan::{Action, Contact, Customer, Email, Plans, Target, Trigger};
use crate::store::{CustomerChange, Detected, NewItem, RowState, Store, UnixSecs, secs};
use chrono::{DateTime, Utc};
use std::sync::Arc;

/// Changes evaluated and written per step (one materialise, one mark).
pub const CHANGES_PER_STEP: i64 = 2_000;

/// What one evaluation pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct HandoverPass {
    /// Changes evaluated.
    pub evaluated: u64,
    /// Rows written (pending or suppressed); 0 when another pass wrote them first.
    pub written: u64,
}

/// Compares `customers` (every customer of the plans, or the ones a reload changed) with their
/// stored state and records the changes (source `plan`). Run for every new plan revision,
/// before [`run`].
///
/// # Errors
/// A store error; chunks recorded before it stay recorded, the rest is compared next time.
pub async fn detect(store: &Store, customers: &[Arc<Customer>], now: DateTime<Utc>) -> anyhow::Result<Detected> {
    let mut total = Detected::default();
    // A slice at a time: 100,000 customers' states are never all in memory at once.
    for customers in customers.chunks(crate::store::CUSTOMERS_PER_CHUNK) {
        let states: Vec<State> = customers.iter().map(State::of).collect();
        let d = store.record_customers(&states, "plan", secs(now)).await?;
        total.first_seen += d.first_seen;
        total.changes += d.changes;
    }
    Ok(total)
}

/// Evaluates every unevaluated customer change; `progress` is called after each step.
///
/// # Errors
/// A store error; the step's changes stay unevaluated and are evaluated again next time.
pub async fn run(
    store: &Store,
    plans: &Plans,
    now: DateTime<Utc>,
    sender: &Email,
    progress: &(dyn Fn() + Sync),
) -> anyhow::Result<HandoverPass> {
    let drained = super::event_log::drain(
        store,
        secs(now),
        CHANGES_PER_STEP,
        |n| store.unevaluated_customer_changes(n),
        |c| c.seq,
        |seqs, at| async move { store.mark_customer_changes_evaluated(&seqs, at).await },
        |changes| {
            let mut items = Vec::new();
            for change in changes {
                match plans.get(&change.customer) {
                    Some(customer) => items.extend(rows_for(customer, change, sender)),
                    None => {
                        tracing::info!(customer = %change.customer, kind = change.kind.code(), "a change of a customer that is no longer in the plans: nothing to send")
                    }
                }
            }
            items
        },
        progress,
    )
    .await?;
    let pass = HandoverPass { evaluated: drained.entries, written: drained.written };
    Ok(pass)
}

/// The rows one change gives under `customer`'s current rules. Pure.
pub fn rows_for(customer: &Customer, change: &CustomerChange, sender: &Email) -> Vec<NewItem> {
    let at = change.at.datetime();
    let id = change.seq.to_string();
    let facts = EventFacts::Handover(HandoverFacts {
        change: change.kind,
        from: change.from.clone(),
        to: change.to.clone(),
        departed: change.departed.clone(),
        brief: None,
    });
    let mut items = Vec::new();
    for rule in customer.rules.iter() {
        if !rule.applies_in(customer.phase) {
            continue;
        }
        let kind = match (&rule.trigger, change.kind) {
            (Trigger::Handover, ChangeKind::Handover) => EventKind::Handover,
            // The new owner gets the brief; emails to contacts are not about an owner change.
            (Trigger::Handover, ChangeKind::Owner) if rule.action == Action::Task => EventKind::OwnerChange,
            (Trigger::Phase { to }, ChangeKind::Phase) if to.is_none_or(|p| p.code() == change.to) => EventKind::Phase,
            _ => continue,
        };
        let about: Vec<Option<&Contact>> = match (kind, rule.target) {
            (EventKind::OwnerChange, _) => vec![None],
            (_, Target::New) => match customer.contact(&change.to) {
                Some(c) => vec![Some(c)],
                None => {
                    tracing::info!(customer = %customer.id, rule = %rule.name, contact = %change.to, "the new primary contact has left the plan since the handover: nothing for it");
                    continue;
                }
            },
            (_, Target::Departed) => match customer.contact(&change.from) {
                Some(c) => vec![Some(c)],
                None => {
                    items.push(departed_gone(customer, rule, change, &id, at, &facts, sender));
                    continue;
                }
            },
            _ => {
                for o in event::occurrences(customer, rule, kind, &id, at) {
                    items.push(event_item(&o, RowState::Pending, None, Some(facts.clone()), sender));
                }
                continue;
            }
        };
        for o in event::occurrences_about(customer, rule, kind, &id, at, about) {
            items.push(event_item(&o, RowState::Pending, None, Some(facts.clone()), sender));
        }
    }
    items
}

/// The row of a `to = "departed"` rule whose contact is no longer in the plan: recorded
/// `suppressed` with the reason, so the outbox says why no farewell went out.
fn departed_gone(
    customer: &Customer,
    rule: &crate::plan::Rule,
    change: &CustomerChange,
    id: &str,
    at: DateTime<Utc>,
    facts: &EventFacts,
    sender: &Email,
) -> NewItem {
    let key = OutboxKey {
        customer: customer.id.to_string(),
        rule: rule.name.to_string(),
        recipient: RecipientKey::Contact(change.from.clone()),
        nominal: NominalKey::Event { kind: EventKind::Handover, id: id.to_string() },
    };
    let domain = change.departed.as_ref().and_then(|d| d.email.rsplit_once('@')).map_or("", |(_, d)| d);
    NewItem {
        message_id: crate::mail::message_id(&key.to_string(), sender.domain()),
        facts: Some(facts.clone()),
        key,
        kind: rule.trigger.kind(),
        action: rule.action,
        delivery: rule.delivery,
        state: RowState::Suppressed,
        reason: Some(format!(
            "the departed contact `{}` is no longer in the plan of `{}`: no message to them",
            change.from, customer.id
        )),
        recipient_domain: domain.to_string(),
        occasion_date: at.with_timezone(&customer.timezone).date_naive(),
        years: None,
        timezone: customer.timezone.name().to_string(),
        due: UnixSecs::from(at),
        deadline: UnixSecs::from(at + rule.deadline.unwrap_or(DEFAULT_EVENT_DEADLINE)),
        priority: rule.priority,
    }
}
