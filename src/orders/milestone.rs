//! Which thresholds of an `on = "orders"` rule one change of a customer's totals passes, and
//! which of them are sent. Pure and deterministic: the same change and rule always give the
//! same answer, on every instance, however often it is evaluated; the outbox key of each
//! threshold (`…/orders:100`, `…/revenue:100000`) makes it fire at most once per customer.
//!
//! A threshold `t` is passed by a change from `before` to `after` when `before < t <= after`.
//! Counts never go down (an order is never removed); revenue can (a correction), and a
//! threshold passed again after that is not sent again (its key exists).

use crate::occasion::EventKind;
use crate::plan::{OnMultiple, OrderMilestones};
use rust_decimal::Decimal;

/// Thresholds one change may pass per measure and rule that are recorded: the highest ones.
/// A jump past more (e.g. `every_count = 10` and a first import of 5,000 orders) records these
/// and leaves the lower ones unrecorded (the log says how many), so no import can flood the
/// outbox or pester anyone.
pub const MAX_PASSED_PER_CHANGE: usize = 100;

/// A customer's totals at one point in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Totals {
    /// Orders stored.
    pub count: u64,
    /// Sum of the amounts of the orders in the customer's currency.
    pub revenue: Decimal,
}

/// One threshold a change passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Passed {
    /// `Orders` (a count) or `Revenue`.
    pub measure: EventKind,
    /// The threshold: an order count, or whole units of the customer's currency.
    pub threshold: u64,
    /// `None`: sent. `Some(reason)`: recorded as suppressed, e.g. "passed together with 103
    /// orders in one change (on_multiple = highest: only the 100th is sent)".
    pub suppressed: Option<String>,
}

/// What one change passed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Evaluation {
    /// The thresholds recorded, by measure, ascending.
    pub passed: Vec<Passed>,
    /// Lower thresholds passed but not recorded (more than [`MAX_PASSED_PER_CHANGE`]).
    pub unrecorded: u64,
}

/// What a milestone's templates are told (`milestone.*`), kept with its outbox row (JSON in
/// the `facts` column) so the message says what was true when the milestone was reached.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MilestoneFacts {
    /// `orders` (an order count) or `revenue`.
    pub measure: EventKind,
    /// The threshold reached: an order count, or whole units of `currency`.
    pub threshold: u64,
    /// Orders stored for the customer after the change.
    pub order_count: u64,
    /// The customer's currency.
    pub currency: crate::money::Currency,
    /// Revenue in `currency` after the change.
    #[serde(with = "rust_decimal::serde::str")]
    pub revenue: Decimal,
    /// Revenue in `currency` per calendar year of the order date, ascending.
    pub revenue_by_year: Vec<YearRevenue>,
}

/// Revenue of one calendar year.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct YearRevenue {
    /// The year of the order dates.
    pub year: i32,
    /// Revenue in the customer's currency.
    #[serde(with = "rust_decimal::serde::str")]
    pub amount: Decimal,
}

/// The thresholds of `rule` that the change from `before` to `after` passes.
pub fn evaluate(rule: &OrderMilestones, before: Totals, after: Totals) -> Evaluation {
    let mut out = Evaluation::default();
    let (counts, unrecorded) = count_thresholds(rule, before.count, after.count);
    out.unrecorded += unrecorded;
    push(&mut out.passed, EventKind::Orders, counts, rule.on_multiple, after);
    let revenue: Vec<u64> = rule
        .revenue
        .iter()
        .copied()
        .filter(|t| before.revenue < Decimal::from(*t) && Decimal::from(*t) <= after.revenue)
        .collect();
    let skip = revenue.len().saturating_sub(MAX_PASSED_PER_CHANGE);
    out.unrecorded += skip as u64;
    push(&mut out.passed, EventKind::Revenue, revenue[skip..].to_vec(), rule.on_multiple, after);
    out
}

/// Listed counts and multiples of `every_count` in `(before, after]`, ascending, the highest
/// [`MAX_PASSED_PER_CHANGE`] of them; and how many lower ones were left out.
fn count_thresholds(rule: &OrderMilestones, before: u64, after: u64) -> (Vec<u64>, u64) {
    if after <= before {
        return (Vec::new(), 0);
    }
    let mut all: Vec<u64> = rule.counts.iter().copied().filter(|t| before < *t && *t <= after).collect();
    let mut unrecorded = 0;
    if let Some(n) = rule.every_count.filter(|n| *n > 0) {
        let first = before / n + 1; // the first multiple above `before`
        let last = after / n;
        let total = last.saturating_sub(first).saturating_add(1) * u64::from(last >= first);
        let keep = total.min(MAX_PASSED_PER_CHANGE as u64);
        unrecorded = total - keep;
        all.extend((last + 1 - keep..=last).filter(|k| *k >= first).map(|k| k * n));
    }
    all.sort_unstable();
    all.dedup();
    let skip = all.len().saturating_sub(MAX_PASSED_PER_CHANGE);
    // Listed counts dropped here are lower than every multiple kept, so also unrecorded.
    (all[skip..].to_vec(), unrecorded + skip as u64)
}

fn push(out: &mut Vec<Passed>, measure: EventKind, thresholds: Vec<u64>, policy: OnMultiple, after: Totals) {
    let Some(&highest) = thresholds.last() else { return };
    for t in thresholds {
        let suppressed = (policy == OnMultiple::Highest && t != highest).then(|| match measure {
            EventKind::Revenue => format!(
                "passed together with the revenue threshold {highest} in one change (revenue now {}; on_multiple = highest: only {highest} is sent)",
                after.revenue
            ),
            _ => format!(
                "passed together with order {highest} in one change ({} orders now; on_multiple = highest: only the {highest}th is sent)",
                after.count
            ),
        });
        out.push(Passed { measure, threshold: t, suppressed });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(counts: &[u64], every: Option<u64>, revenue: &[u64], on_multiple: OnMultiple) -> OrderMilestones {
        OrderMilestones { counts: counts.into(), every_count: every, revenue: revenue.into(), on_multiple }
    }

    fn totals(count: u64, revenue: &str) -> Totals {
        Totals { count, revenue: revenue.parse().unwrap() }
    }

    fn sent(e: &Evaluation) -> Vec<(EventKind, u64)> {
        e.passed.iter().filter(|p| p.suppressed.is_none()).map(|p| (p.measure, p.threshold)).collect()
    }

    fn all(e: &Evaluation) -> Vec<u64> {
        e.passed.iter().map(|p| p.threshold).collect()
    }

    #[test]
    fn a_jump_over_one_threshold_passes_it() {
        let r = rule(&[10, 100, 1000], None, &[], OnMultiple::Highest);
        let e = evaluate(&r, totals(98, "0"), totals(103, "0"));
        assert_eq!(sent(&e), [(EventKind::Orders, 100)]);
        assert_eq!(evaluate(&r, totals(103, "0"), totals(103, "0")), Evaluation::default(), "a re-import");
        assert_eq!(all(&evaluate(&r, totals(99, "0"), totals(100, "0"))), [100], "exactly on it");
        assert!(evaluate(&r, totals(100, "0"), totals(101, "0")).passed.is_empty(), "already past");
    }

    #[test]
    fn several_thresholds_in_one_change_follow_on_multiple() {
        let highest = rule(&[10, 100, 1000], None, &[], OnMultiple::Highest);
        let e = evaluate(&highest, totals(5, "0"), totals(150, "0"));
        assert_eq!(all(&e), [10, 100]);
        assert_eq!(sent(&e), [(EventKind::Orders, 100)]);
        assert!(e.passed[0].suppressed.as_deref().unwrap().contains("only the 100th is sent"));
        let each = rule(&[10, 100, 1000], None, &[], OnMultiple::Each);
        assert_eq!(sent(&evaluate(&each, totals(5, "0"), totals(150, "0"))).len(), 2);
    }

    #[test]
    fn every_count_and_listed_counts_merge() {
        let r = rule(&[10, 100], Some(50), &[], OnMultiple::Each);
        assert_eq!(all(&evaluate(&r, totals(0, "0"), totals(160, "0"))), [10, 50, 100, 150]);
        assert_eq!(all(&evaluate(&r, totals(100, "0"), totals(149, "0"))), Vec::<u64>::new());
        assert_eq!(all(&evaluate(&r, totals(149, "0"), totals(150, "0"))), [150]);
    }

    #[test]
    fn a_huge_jump_records_only_the_highest_thresholds() {
        let r = rule(&[5], Some(10), &[], OnMultiple::Highest);
        let e = evaluate(&r, totals(0, "0"), totals(1_000_000, "0"));
        assert_eq!(e.passed.len(), MAX_PASSED_PER_CHANGE);
        assert_eq!(e.unrecorded, 100_000 - 100 + 1, "the multiples below and the listed 5");
        assert_eq!(e.passed.last().unwrap().threshold, 1_000_000);
        assert_eq!(sent(&e), [(EventKind::Orders, 1_000_000)]);
    }

    #[test]
    fn revenue_thresholds_are_compared_exactly() {
        let r = rule(&[], None, &[100_000, 1_000_000], OnMultiple::Highest);
        assert!(evaluate(&r, totals(1, "99999.99"), totals(2, "99999.999")).passed.is_empty());
        let e = evaluate(&r, totals(1, "99999.99"), totals(2, "100000.00"));
        assert_eq!(sent(&e), [(EventKind::Revenue, 100_000)]);
        // A correction down and up again passes it again: the outbox key keeps it at once.
        assert_eq!(sent(&evaluate(&r, totals(2, "90000"), totals(2, "100001"))), [(EventKind::Revenue, 100_000)]);
        assert!(evaluate(&r, totals(2, "100001"), totals(2, "90000")).passed.is_empty(), "going down passes nothing");
    }
}
