//! Many customers at once: `collect` (what materialisation writes, in parallel, in no order)
//! and `agenda_each` (the agenda in due order, computed and handed out in slices of
//! [`AGENDA_SLICE`] so a year of 100,000 customers never sits in memory at once).

use super::{Occurrence, Recipient, for_customer};
use crate::plan::{Contact, Customer, Plans};
use chrono::{DateTime, TimeDelta, Utc};
use rayon::prelude::*;
use std::borrow::Borrow;

/// Customers per parallel work item.
const CUSTOMERS_PER_CHUNK: usize = 256;

/// Fills `chunks` (one vector per chunk of customers, reused between calls so a long agenda
/// does not return memory to the system and fault it back in every slice) with the
/// occurrences of `customers` in `[from, to)`, computed in parallel.
fn fill_chunks<'a, C: Borrow<Customer> + Sync>(
    customers: &'a [C],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    chunks: &mut Vec<Vec<Occurrence<'a>>>,
) {
    chunks.resize_with(customers.len().div_ceil(CUSTOMERS_PER_CHUNK), Vec::new);
    chunks.par_iter_mut().zip(customers.par_chunks(CUSTOMERS_PER_CHUNK)).for_each(|(v, chunk)| {
        v.clear();
        for c in chunk {
            for_customer(c.borrow(), from, to, v);
        }
    });
}

/// All occurrences of `customers` in `[from, to)`, in no particular order (the outbox does
/// not need one). What the daemon materialises, a slice of customers at a time.
pub fn collect<C: Borrow<Customer> + Sync>(
    customers: &[C],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Vec<Occurrence<'_>> {
    let mut chunks = Vec::new();
    fill_chunks(customers, from, to, &mut chunks);
    chunks.concat()
}

/// Agenda order: due instant, then customer (the slice is sorted by id), rule (plan order),
/// contact (plan order), recipient and nominal time. Deterministic without building keys.
fn agenda_order(a: &Occurrence, b: &Occurrence) -> std::cmp::Ordering {
    let rule_pos = |o: &Occurrence| o.customer.rules.iter().position(|r| std::ptr::eq(&**r, o.rule));
    let about = |o: &Occurrence| o.about.map(|c| c as *const Contact);
    let owner = |o: &Occurrence| matches!(o.recipient, Recipient::Owner);
    a.due
        .utc
        .cmp(&b.due.utc)
        .then_with(|| (a.customer as *const Customer).cmp(&(b.customer as *const Customer)))
        .then_with(|| rule_pos(a).cmp(&rule_pos(b)))
        .then_with(|| about(a).cmp(&about(b)))
        .then_with(|| owner(a).cmp(&owner(b)))
        .then_with(|| a.nominal.cmp(&b.nominal))
}

/// How much of the window `agenda_each` computes at once: memory holds one slice's
/// occurrences, not the whole window's (100,000 customers × a year would be millions).
pub const AGENDA_SLICE: TimeDelta = TimeDelta::days(92);

/// Calls `visit` with the occurrences of `customers` due in `[from, to)`, in agenda order,
/// one slice of [`AGENDA_SLICE`] at a time. `customers` must be one slice sorted by id (as
/// `Plans::customers` is) for the order to follow customer ids.
///
/// # Errors
/// The first error `visit` returns; no later slice is computed.
pub fn agenda_each<'a, E, C: Borrow<Customer> + Sync>(
    customers: &'a [C],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    mut visit: impl FnMut(&[&Occurrence<'a>]) -> Result<(), E>,
) -> Result<(), E> {
    let mut start = from;
    let mut chunks = Vec::new();
    while start < to {
        let end = (start + AGENDA_SLICE).min(to);
        fill_chunks(customers, start, end, &mut chunks);
        // Sort references keyed by due time (compared without touching the occurrences, which
        // are large and scattered); only equal times look further.
        let mut keyed: Vec<(DateTime<Utc>, &Occurrence<'a>)> = Vec::with_capacity(chunks.iter().map(Vec::len).sum());
        keyed.extend(chunks.iter().flatten().map(|o| (o.due.utc, o)));
        keyed.par_sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| agenda_order(a.1, b.1)));
        let refs: Vec<&Occurrence<'a>> = keyed.into_iter().map(|(_, o)| o).collect();
        visit(&refs)?;
        start = end;
    }
    Ok(())
}

/// All occurrences of all customers in `[from, to)`, in agenda order. For small windows; the
/// CLI streams with [`agenda_each`].
pub fn agenda(plans: &Plans, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<Occurrence<'_>> {
    let mut all = Vec::new();
    let _ = agenda_each::<(), _>(&plans.customers, from, to, |slice| {
        all.extend(slice.iter().map(|o| (*o).clone()));
        Ok(())
    });
    all
}
