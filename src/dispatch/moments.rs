//! The other moments of a relationship, evaluated at every tick like order milestones:
//!
//! - **Custom events** ([`run_events`]): each recorded event not yet evaluated → the rows of
//!   the customer's `on = "event"` rules whose `event` is its kind, keyed `event:<id>`,
//!   carrying the kind, the note and the day → the page marked evaluated. Evaluating again
//!   writes the same keys, so nothing is added; re-recording an event id records nothing.
//! - **Inactivity** ([`inactive`]): for the customers with `on = "inactivity"` rules, the
//!   latest order days (one query per 2,000 customers) → a quiet spell per rule
//!   (`events::quiet_spell`) → once the last order is `threshold` days ago (in the customer's
//!   zone), one row keyed `inactivity:<day of the last order>`: once per quiet spell, a new
//!   order starts a new one. A customer without orders is not quiet.
//! - **End** ([`ending`]): a customer with `ended` and `on = "end"` rules gets one row per
//!   rule keyed `end:<date>`, sent at `at` on that day (written from the horizon on, so
//!   `agenda`'s outbox view and a daemon that was down a few days both see it).
//! - **Departure** ([`departure_item`]): a permanent failure of a contact's address of the
//!   "mailbox unknown" class (`events::mailbox_unknown`) → one task to the salesperson per
//!   contact and address, keyed `departure:<contact>.<hash of the address>`, built in by the
//!   daemon (no rule; template `departure_task`).
//!
//! Nothing is evaluated for a customer whose relationship ended (`Customer::ended_by`), but
//! its `on = "end"` rows.

use super::materialize::event_item;
use crate::events::{DEPARTURE_RULE, DepartedContact, MomentFacts, departure_id, quiet_spell};
use crate::handover::EventFacts;
use crate::occasion::event::{self, DEFAULT_EVENT_DEADLINE};
use crate::occasion::{EventKind, NominalKey, OutboxKey, RecipientKey};
use crate::plan::{Action, Contact, Customer, DeliveryPolicy, Email, Plans, Trigger, TriggerKind};
use crate::store::{NewItem, RowState, Store, StoredEvent, UnixSecs, secs};
use chrono::{DateTime, NaiveTime, TimeDelta, Utc};

/// Events evaluated and written per step.
pub const EVENTS_PER_STEP: i64 = 2_000;

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MomentPass {
    /// Custom events evaluated.
    pub events: u64,
    /// Rows written (custom events, quiet spells, ends); 0 when another pass wrote them first.
    pub written: u64,
}

/// Evaluates every recorded custom event not evaluated yet, then the quiet spells and ends.
///
/// # Errors
/// A store error; what was written stays, the rest is evaluated next time.
pub async fn run(
    store: &Store,
    plans: &Plans,
    now: DateTime<Utc>,
    horizon: TimeDelta,
    sender: &Email,
    progress: &(dyn Fn() + Sync),
) -> anyhow::Result<MomentPass> {
    let drained = super::event_log::drain(
        store,
        secs(now),
        EVENTS_PER_STEP,
        |n| store.unevaluated_events(n),
        |e| e.seq,
        |seqs, at| async move { store.mark_events_evaluated(&seqs, at).await },
        |events| {
            let mut items = Vec::new();
            for e in events {
                match plans.get(&e.event.customer) {
                    Some(customer) => items.extend(event_rows(customer, e, now, sender)),
                    None => {
                        tracing::info!(customer = %e.event.customer, event = %e.event.id, "an event of a customer that is not in the plans: nothing to send")
                    }
                }
            }
            items
        },
        progress,
    )
    .await?;
    let mut pass = MomentPass { events: drained.entries, written: drained.written };

    let mut items = ending(plans, now, horizon, sender);
    let quiet: Vec<&Customer> = plans
        .customers
        .iter()
        .filter(|c| !c.ended_by(now) && c.rules.iter().any(|r| matches!(r.trigger, Trigger::Inactivity { .. })))
        .map(|c| &**c)
        .collect();
    for chunk in quiet.chunks(crate::store::CUSTOMERS_PER_CHUNK) {
        let ids: Vec<&str> = chunk.iter().map(|c| &*c.id).collect();
        let days = store.order_days(&ids).await?;
        for customer in chunk {
            if let Some(d) = days.get(&*customer.id) {
                items.extend(inactive(customer, d, now, sender));
            }
        }
        progress();
    }
    if !items.is_empty() {
        let written = store.materialize(&items, secs(now)).await?;
        pass.written += written.inserted + written.missed;
    }
    Ok(pass)
}

/// The rows one custom event gives under `customer`'s current rules. Pure.
pub fn event_rows(customer: &Customer, e: &StoredEvent, now: DateTime<Utc>, sender: &Email) -> Vec<NewItem> {
    if customer.ended_by(now) {
        tracing::info!(customer = %customer.id, event = %e.event.id, "{}: the event sends nothing", customer.ended_reason());
        return Vec::new();
    }
    let facts = EventFacts::Moment(MomentFacts::Event {
        id: e.event.id.clone(),
        kind: e.event.kind.clone(),
        note: e.event.note.clone(),
        date: e.event.date,
    });
    let mut items = Vec::new();
    for rule in customer.rules.iter() {
        let Trigger::Event { event, .. } = &rule.trigger else { continue };
        if **event != *e.event.kind || !rule.applies_in(customer.phase) {
            continue;
        }
        for o in event::occurrences(customer, rule, EventKind::Custom, &e.event.id, e.at.datetime()) {
            items.push(event_item(&o, RowState::Pending, None, Some(facts.clone()), sender));
        }
    }
    items
}

/// The rows of `customer`'s `on = "inactivity"` rules for the order days `days` at `now`.
/// Pure.
pub fn inactive(customer: &Customer, days: &[chrono::NaiveDate], now: DateTime<Utc>, sender: &Email) -> Vec<NewItem> {
    let today = now.with_timezone(&customer.timezone).date_naive();
    let mut items = Vec::new();
    for rule in customer.rules.iter() {
        let Trigger::Inactivity { days: d, factor } = &rule.trigger else { continue };
        if !rule.applies_in(customer.phase) {
            continue;
        }
        let Some(spell) = quiet_spell(days, *d, *factor) else { continue };
        if (today - spell.last_order).num_days() < i64::from(spell.threshold_days) {
            continue;
        }
        let facts = EventFacts::Moment(MomentFacts::Inactivity {
            last_order: spell.last_order,
            usual_days: spell.usual_days,
            threshold_days: spell.threshold_days,
        });
        let id = spell.last_order.format("%Y-%m-%d").to_string();
        for o in event::occurrences(customer, rule, EventKind::Inactivity, &id, now) {
            items.push(event_item(&o, RowState::Pending, None, Some(facts.clone()), sender));
        }
    }
    items
}

/// The rows of the `on = "end"` rules of customers whose `ended` day lies between a week ago
/// and the horizon. Pure.
pub fn ending(plans: &Plans, now: DateTime<Utc>, horizon: TimeDelta, sender: &Email) -> Vec<NewItem> {
    let mut items = Vec::new();
    for customer in &plans.customers {
        let Some(end) = customer.ended else { continue };
        let start = crate::calendar::resolve_local(customer.timezone, end.and_time(NaiveTime::MIN)).utc;
        if start > now + horizon || start + DEFAULT_EVENT_DEADLINE + TimeDelta::days(1) < now {
            continue;
        }
        let id = end.format("%Y-%m-%d").to_string();
        for rule in customer.rules.iter().filter(|r| r.trigger == Trigger::End && r.applies_in(customer.phase)) {
            for o in event::occurrences(customer, rule, EventKind::End, &id, start) {
                items.push(event_item(&o, RowState::Pending, None, None, sender));
            }
        }
    }
    items
}

/// The departure task for `contact` of `customer` whose `address` was refused with `reason`
/// at `now`, if the reason says the mailbox is unknown. Pure.
pub fn departure_item(
    customer: &Customer,
    contact: &Contact,
    reason: &str,
    now: DateTime<Utc>,
    sender: &Email,
) -> Option<NewItem> {
    if !crate::events::mailbox_unknown(reason) || customer.ended_by(now) {
        return None;
    }
    let key = OutboxKey {
        customer: customer.id.to_string(),
        rule: DEPARTURE_RULE.to_string(),
        recipient: RecipientKey::OwnerAbout(contact.id.to_string()),
        nominal: NominalKey::Event {
            kind: EventKind::Departure,
            id: departure_id(&contact.id, contact.email.as_str()),
        },
    };
    let zone = customer.timezone;
    Some(NewItem {
        message_id: crate::mail::message_id(&key.to_string(), sender.domain()),
        facts: Some(EventFacts::Moment(MomentFacts::Departure {
            contact: DepartedContact::of(contact),
            reason: reason.to_string(),
        })),
        key,
        kind: TriggerKind::Departure,
        action: Action::Task,
        delivery: DeliveryPolicy::AtLeastOnce,
        state: RowState::Pending,
        reason: None,
        recipient_domain: customer.owner.domain().to_string(),
        occasion_date: now.with_timezone(&zone).date_naive(),
        years: None,
        timezone: zone.name().to_string(),
        due: UnixSecs::from(now),
        deadline: UnixSecs::from(now + DEFAULT_EVENT_DEADLINE),
        priority: 0,
    })
}
