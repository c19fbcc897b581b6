//! Every way a policy can move an occurrence away from its nominal time. Each occurrence
//! carries the list, in the order the steps were applied; `agenda` shows it (JSON
//! `adjustments`, with a `note` in words) and `explain` prints it step by step.

use super::business::ClosedSpan;
use chrono::{NaiveDate, NaiveDateTime, NaiveTime};

/// A deviation from the nominal time that a policy caused.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Adjustment {
    /// The local time fell into a DST gap and was moved to the end of the gap.
    DstGap {
        /// The local wall time that does not exist.
        nominal: NaiveDateTime,
        /// The first local wall time after the gap (the send time).
        shifted_to: NaiveDateTime,
    },
    /// The local time happened twice; the earlier instant was used.
    DstFold {
        /// The ambiguous local wall time.
        local: NaiveDateTime,
    },
    /// A Feb 29 date observed on another day in a common year.
    LeapDay {
        /// The date that does not exist, `YYYY-02-29`.
        nominal: String,
        /// The local date it was observed on (Feb 28 or Mar 1).
        observed: NaiveDate,
        /// The rule's `leap_day` (`feb28`, `mar1`).
        policy: &'static str,
    },
    /// Sent this many calendar days before the occasion (`before = "14d"`).
    LeadTime {
        /// Calendar days before the occasion.
        days: u32,
        /// The local date of the occasion itself.
        occasion_date: NaiveDate,
    },
    /// Sent this many open days before the occasion (`before = "3 business days"`); the closed
    /// days that were not counted are listed.
    BusinessLeadTime {
        /// Open days before the occasion.
        business_days: u32,
        /// The local date of the occasion itself.
        occasion_date: NaiveDate,
        /// The local send date this gives.
        send_date: NaiveDate,
        /// Runs of closed days passed over between the two dates.
        not_counted: Vec<ClosedSpan>,
    },
    /// The send day was closed and the send moved to an open day (`on_closed`).
    Closed {
        /// The rule's `on_closed` (`after`, `before`).
        policy: &'static str,
        /// The closed local send date.
        from: NaiveDate,
        /// The open local date it moved to.
        to: NaiveDate,
        /// The runs of closed days passed over, with the reason for each.
        closed: Vec<ClosedSpan>,
    },
    /// The send time lay outside the send window and was moved into it (same local day).
    WindowClamp {
        /// The local time before the clamp (the rule's `at`).
        from: NaiveTime,
        /// The local time after it.
        to: NaiveTime,
        /// The window, as written (`08:00-18:00`).
        window: String,
    },
    /// `spread`: the send day moved per recipient (a hash of the outbox key) to one of the
    /// `over` (open) days from the send day.
    Spread {
        /// Days later (open days when `business`).
        days: u32,
        /// The configured spread, in days.
        over: u32,
        /// Counted in open days of the business calendar.
        business: bool,
        /// The send day before.
        from: NaiveDate,
        /// The send day after.
        to: NaiveDate,
    },
    /// The per-recipient offset inside the send window (a hash of the outbox key).
    Jitter {
        /// The offset added to the base send time, in seconds (`0 ≤ seconds < spread`).
        seconds: u32,
        /// The spread actually used, in seconds: the configured `jitter` shortened to stay in
        /// the window, on the local day and before the default deadline.
        spread: u32,
    },
}

impl std::fmt::Display for Adjustment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list = |spans: &[ClosedSpan]| spans.iter().map(ClosedSpan::to_string).collect::<Vec<_>>().join(", ");
        match self {
            Adjustment::DstGap { nominal, shifted_to } => write!(
                f,
                "{} does not exist (DST gap); sent at {}",
                nominal.format("%H:%M"),
                shifted_to.format("%H:%M")
            ),
            Adjustment::DstFold { local } => {
                write!(f, "{} occurs twice (DST fold); the earlier one is used", local.format("%H:%M"))
            }
            Adjustment::LeapDay { observed, policy, .. } => {
                write!(f, "Feb 29 observed on {observed} (leap_day = {policy})")
            }
            Adjustment::LeadTime { days, occasion_date } => {
                write!(f, "{days} days before the occasion on {occasion_date}")
            }
            Adjustment::BusinessLeadTime { business_days, occasion_date, send_date, not_counted } => {
                write!(f, "{business_days} business days before the occasion on {occasion_date}: {send_date}")?;
                if !not_counted.is_empty() {
                    write!(f, " (not counted: {})", list(not_counted))?;
                }
                Ok(())
            }
            Adjustment::Closed { policy, from, to, closed } => {
                write!(f, "{from} is closed ({}); moved to {to} (on_closed = {policy})", list(closed))
            }
            Adjustment::WindowClamp { from, to, window } => {
                write!(
                    f,
                    "{} is outside the send window {window}; sent at {}",
                    from.format("%H:%M"),
                    to.format("%H:%M:%S")
                )
            }
            Adjustment::Spread { days, over, business, from, to } => {
                let unit = if *business { "open days" } else { "days" };
                write!(f, "spread over {over} {unit}: this recipient's day is {days} {unit} after {from}: {to}")
            }
            Adjustment::Jitter { seconds, spread } => {
                write!(f, "+{}m{:02}s per-recipient offset (of up to {}s)", seconds / 60, seconds % 60, spread)
            }
        }
    }
}
