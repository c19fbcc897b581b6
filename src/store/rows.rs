//! The outbox contract: the typed rows the store takes and gives, and their mapping to the
//! columns (text and integers, the same in both engines, so existing databases keep working).
//! Nothing outside this file compares a state, kind, action or policy as a string.

use crate::handover::EventFacts;
use crate::occasion::{NominalKey, OutboxKey};
use crate::plan::{Action, DeliveryPolicy, TriggerKind};
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

/// An instant as the store keeps it: seconds since the Unix epoch, UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UnixSecs(pub i64);

impl UnixSecs {
    /// The instant as a date-time (the epoch when out of chrono's range).
    pub fn datetime(self) -> DateTime<Utc> {
        DateTime::from_timestamp(self.0, 0).unwrap_or_default()
    }

    /// This instant plus `secs` seconds (saturating).
    pub fn plus(self, secs: i64) -> UnixSecs {
        UnixSecs(self.0.saturating_add(secs))
    }
}

impl std::ops::Add<i64> for UnixSecs {
    /// This instant plus `secs` seconds (saturating).
    type Output = UnixSecs;
    fn add(self, secs: i64) -> UnixSecs {
        self.plus(secs)
    }
}

impl std::ops::Sub<i64> for UnixSecs {
    /// This instant minus `secs` seconds (saturating).
    type Output = UnixSecs;
    fn sub(self, secs: i64) -> UnixSecs {
        UnixSecs(self.0.saturating_sub(secs))
    }
}

impl std::ops::Sub for UnixSecs {
    /// Seconds from `rhs` to `self` (saturating).
    type Output = i64;
    fn sub(self, rhs: UnixSecs) -> i64 {
        self.0.saturating_sub(rhs.0)
    }
}

impl From<DateTime<Utc>> for UnixSecs {
    fn from(t: DateTime<Utc>) -> UnixSecs {
        UnixSecs(t.timestamp())
    }
}

impl std::fmt::Display for UnixSecs {
    /// RFC 3339, UTC.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.datetime().to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
    }
}

/// `t` as the store keeps instants.
pub fn secs(t: DateTime<Utc>) -> UnixSecs {
    UnixSecs::from(t)
}

/// Where a row is in its life (see the module docs of `store`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RowState {
    /// Waiting for its due time.
    Pending,
    /// Taken in a batch (lease held), not started.
    Claimed,
    /// Its message may be handed over (committed before `DATA`).
    Sending,
    /// A transient failure: tried again at its next attempt.
    Retry,
    /// The server accepted the message.
    Accepted,
    /// A permanent failure, or too many attempts (reported to ops).
    Failed,
    /// Its deadline passed before it could be sent (reported to ops).
    Missed,
    /// No longer wanted (customer, rule or contact removed or changed).
    Suppressed,
    /// At-most-once and the outcome cannot be known (reported to ops, never resent).
    Unknown,
}

impl RowState {
    /// Every state, in life order.
    pub const ALL: [RowState; 9] = [
        RowState::Pending,
        RowState::Claimed,
        RowState::Sending,
        RowState::Retry,
        RowState::Accepted,
        RowState::Failed,
        RowState::Missed,
        RowState::Suppressed,
        RowState::Unknown,
    ];

    /// The open states, in the order metrics and `status` list them.
    pub const OPEN: [RowState; 4] = [RowState::Pending, RowState::Retry, RowState::Claimed, RowState::Sending];

    /// The value of the `state` column.
    pub fn code(self) -> &'static str {
        match self {
            RowState::Pending => "pending",
            RowState::Claimed => "claimed",
            RowState::Sending => "sending",
            RowState::Retry => "retry",
            RowState::Accepted => "accepted",
            RowState::Failed => "failed",
            RowState::Missed => "missed",
            RowState::Suppressed => "suppressed",
            RowState::Unknown => "unknown",
        }
    }

    /// The state a column value names.
    pub fn parse(s: &str) -> Option<RowState> {
        Self::ALL.into_iter().find(|x| x.code() == s)
    }

    /// Not finished: still to be sent, or being sent.
    pub fn is_open(self) -> bool {
        Self::OPEN.contains(&self)
    }
}

impl std::fmt::Display for RowState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

/// A column value the contract does not know (a database written by a newer version, or by
/// hand): reported, never guessed.
#[derive(Debug, thiserror::Error)]
#[error("outbox row {id}: {what}")]
pub struct MappingError {
    /// The row's id.
    pub id: i64,
    /// Which column and value.
    pub what: String,
}

fn map<T>(id: i64, column: &str, value: &str, parsed: Option<T>) -> Result<T, MappingError> {
    parsed.ok_or_else(|| MappingError { id, what: format!("unknown {column} `{value}`") })
}

/// A row to write into the outbox.
#[derive(Debug, Clone)]
pub struct NewItem {
    /// The outbox key; unique, so a second insert of one occasion or event is ignored. The
    /// `customer`, `rule`, `recipient` and `nominal` columns are its parts.
    pub key: OutboxKey,
    /// The rule's `on`.
    pub kind: TriggerKind,
    /// An email to the recipient, or a task to the salesperson.
    pub action: Action,
    /// What to do when an outcome is unknown.
    pub delivery: DeliveryPolicy,
    /// `Pending`; `Missed` when it was due while no daemon ran; `Suppressed` for an event that
    /// is recorded but not sent (e.g. a threshold passed together with a higher one).
    pub state: RowState,
    /// Why the row has its state (set unless `Pending`).
    pub reason: Option<String>,
    /// Domain of the recipient's address at materialisation, for info-level logs (never the
    /// address: that is looked up in the current plans when the row is sent).
    pub recipient_domain: String,
    /// Civil date of the occasion itself (differs from the send date with a lead time; for an
    /// event, the day it happened).
    pub occasion_date: NaiveDate,
    /// Years of the relationship (anniversaries only).
    pub years: Option<u32>,
    /// IANA zone the occurrence was computed in (tzdata name, e.g. `Europe/Berlin`).
    pub timezone: String,
    /// Send instant.
    pub due: UnixSecs,
    /// The row is not claimed at or after this instant and then becomes `missed`.
    pub deadline: UnixSecs,
    /// Message-ID derived from the key (`mail::message_id`), the same on every resend.
    pub message_id: String,
    /// What an event's templates are told (an order milestone, a handover); `None` for
    /// calendar occasions.
    pub facts: Option<EventFacts>,
    /// The rule's `priority` (default 0; higher is claimed first among rows whose deadlines
    /// fall in the same hour when more is due than the relay takes).
    pub priority: i64,
}

/// A row claimed for sending; `fence` must be presented to record the outcome.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// Row id (ascending in insertion order).
    pub id: i64,
    /// The outbox key.
    pub key: OutboxKey,
    /// The rule's `on`, for per-kind metrics.
    pub kind: TriggerKind,
    /// Civil date of the occasion itself.
    pub occasion_date: NaiveDate,
    /// Years of the relationship (anniversaries only).
    pub years: Option<u32>,
    /// Message-ID to send with (the same on every attempt).
    pub message_id: String,
    /// Claims so far, this one included (a release gives one back); compared with
    /// [`crate::dispatch::MAX_ATTEMPTS`].
    pub attempts: i64,
    /// Fencing token: incremented by every claim; an outcome is recorded only with the current value.
    pub fence: i64,
    /// Send instant.
    pub due: UnixSecs,
    /// Deadline.
    pub deadline: UnixSecs,
    /// What to do when the outcome is unknown.
    pub delivery: DeliveryPolicy,
    /// What an event's templates are told (an order milestone, a handover); `None` for
    /// calendar occasions.
    pub facts: Option<EventFacts>,
}

/// The columns of a claimed row, as selected (`RETURNING`/`SELECT … CLAIMED_COLUMNS`).
#[derive(sqlx::FromRow)]
pub(crate) struct ClaimedColumns {
    id: i64,
    key: String,
    kind: String,
    occasion_date: String,
    years: Option<i64>,
    message_id: String,
    attempts: i64,
    fence: i64,
    due_utc: i64,
    deadline_utc: i64,
    delivery: String,
    facts: Option<String>,
}

/// The columns [`ClaimedColumns`] reads, for `RETURNING` and `SELECT` lists (a literal, for
/// `concat!`: statements stay static text).
macro_rules! claimed_columns {
    () => {
        "id, key, kind, occasion_date, years, message_id, attempts, fence, due_utc, deadline_utc, delivery, facts"
    };
}
pub(crate) use claimed_columns;

impl TryFrom<ClaimedColumns> for Claimed {
    type Error = MappingError;
    fn try_from(c: ClaimedColumns) -> Result<Claimed, MappingError> {
        let id = c.id;
        Ok(Claimed {
            key: map(id, "key", &c.key, c.key.parse().ok())?,
            kind: map(id, "kind", &c.kind, TriggerKind::parse(&c.kind))?,
            occasion_date: map(id, "occasion date", &c.occasion_date, c.occasion_date.parse().ok())?,
            years: c.years.and_then(|y| u32::try_from(y).ok()),
            delivery: map(id, "delivery policy", &c.delivery, DeliveryPolicy::parse(&c.delivery))?,
            facts: match &c.facts {
                None => None,
                Some(json) => Some(
                    serde_json::from_str(json)
                        .map_err(|e| MappingError { id, what: format!("unreadable facts ({e})") })?,
                ),
            },
            message_id: c.message_id,
            attempts: c.attempts,
            fence: c.fence,
            due: UnixSecs(c.due_utc),
            deadline: UnixSecs(c.deadline_utc),
            id,
        })
    }
}

/// One outbox row as shown to ops (`status`, the ops report, tests).
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Row id.
    pub id: i64,
    /// The outbox key.
    pub key: OutboxKey,
    /// The rule's `on`.
    pub kind: TriggerKind,
    /// Its state.
    pub state: RowState,
    /// Claims so far.
    pub attempts: i64,
    /// Send instant.
    pub due: UnixSecs,
    /// Why the row is in its state (failure, deadline, removal), if recorded.
    pub reason: Option<String>,
    /// The server's reply when it accepted the message (`accepted` rows); a failure's reply is in
    /// `reason`.
    pub smtp_reply: Option<String>,
    /// Message-ID the row is (or was) sent with.
    pub message_id: String,
}

/// The columns of a [`Row`], as selected.
#[derive(sqlx::FromRow)]
pub(crate) struct RowColumns {
    id: i64,
    key: String,
    kind: String,
    state: String,
    attempts: i64,
    due_utc: i64,
    reason: Option<String>,
    smtp_reply: Option<String>,
    message_id: String,
}

/// The columns [`RowColumns`] reads (a literal, for `concat!`).
macro_rules! row_columns {
    () => {
        "id, key, kind, state, attempts, due_utc, reason, smtp_reply, message_id"
    };
}
pub(crate) use row_columns;

/// The query of [`Store::next_due`](super::Store::next_due), for both engines (a literal, for
/// `concat!`); `$greatest` is the engine's two-argument maximum (`GREATEST`, SQLite's `MAX`).
///
/// The earliest of: the first open row without a retry time of each state, in the order of
/// `outbox_open` (the repeated state condition lets that partial index be used); the rows with a
/// retry time (`outbox_retry_at`, migration 0010). Reading `MIN(…)` over every open row cost
/// 0.2–0.5 s at 100,000 open rows, every tick.
macro_rules! next_due_sql {
    ($greatest:literal) => {
        concat!(
            "SELECT MIN(t) FROM (
                 SELECT (SELECT due_utc FROM outbox
                         WHERE state IN ('pending', 'retry', 'claimed', 'sending') AND state = 'pending'
                           AND next_attempt_utc IS NULL ORDER BY due_utc LIMIT 1) AS t
                 UNION ALL
                 SELECT (SELECT due_utc FROM outbox
                         WHERE state IN ('pending', 'retry', 'claimed', 'sending') AND state = 'retry'
                           AND next_attempt_utc IS NULL ORDER BY due_utc LIMIT 1)
                 UNION ALL
                 SELECT MIN(",
            $greatest,
            "(due_utc, next_attempt_utc)) FROM outbox
                 WHERE state IN ('pending', 'retry') AND next_attempt_utc IS NOT NULL
             ) AS firsts"
        )
    };
}
pub(crate) use next_due_sql;

impl TryFrom<RowColumns> for Row {
    type Error = MappingError;
    fn try_from(c: RowColumns) -> Result<Row, MappingError> {
        let id = c.id;
        Ok(Row {
            key: map(id, "key", &c.key, c.key.parse().ok())?,
            kind: map(id, "kind", &c.kind, TriggerKind::parse(&c.kind))?,
            state: map(id, "state", &c.state, RowState::parse(&c.state))?,
            attempts: c.attempts,
            due: UnixSecs(c.due_utc),
            reason: c.reason,
            smtp_reply: c.smtp_reply,
            message_id: c.message_id,
            id,
        })
    }
}

/// Maps selected rows, failing on the first the contract does not know.
pub(crate) fn typed<C, T: TryFrom<C, Error = MappingError>>(rows: Vec<C>) -> anyhow::Result<Vec<T>> {
    Ok(rows.into_iter().map(T::try_from).collect::<Result<_, _>>()?)
}

/// The column values of a [`NewItem`], as both engines bind them.
pub(crate) struct ItemColumns<'a> {
    pub key: String,
    pub customer: &'a str,
    pub rule: &'a str,
    pub recipient: String,
    pub nominal: String,
    pub kind: &'static str,
    pub action: &'static str,
    pub delivery: &'static str,
    pub state: &'static str,
    pub occasion_date: String,
    pub years: Option<i64>,
    pub facts: Option<String>,
}

impl NewItem {
    /// Its column values.
    pub(crate) fn columns(&self) -> ItemColumns<'_> {
        ItemColumns {
            key: self.key.to_string(),
            customer: &self.key.customer,
            rule: &self.key.rule,
            recipient: self.key.recipient.to_string(),
            nominal: self.key.nominal.to_string(),
            kind: self.kind.code(),
            action: self.action.code(),
            delivery: self.delivery.code(),
            state: self.state.code(),
            occasion_date: self.occasion_date.to_string(),
            years: self.years.map(i64::from),
            facts: self.facts.as_ref().and_then(|f| serde_json::to_string(f).ok()),
        }
    }

    /// Whether this item stands for an event (its key's last part is `<kind>:<id>`).
    pub fn is_event(&self) -> bool {
        matches!(self.key.nominal, NominalKey::Event { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn columns(state: &str, kind: &str, key: &str) -> RowColumns {
        RowColumns {
            id: 7,
            key: key.to_string(),
            kind: kind.to_string(),
            state: state.to_string(),
            attempts: 1,
            due_utc: 1_700_000_000,
            reason: None,
            smtp_reply: None,
            message_id: "<m@x>".to_string(),
        }
    }

    #[test]
    fn a_row_maps_to_typed_values_and_back_to_the_same_column_text() {
        let row = Row::try_from(columns("retry", "orders", "acme/hundredth/owner/orders:100")).unwrap();
        assert_eq!((row.state, row.kind, row.due), (RowState::Retry, TriggerKind::Orders, UnixSecs(1_700_000_000)));
        assert_eq!(row.key.to_string(), "acme/hundredth/owner/orders:100");
        for state in RowState::ALL {
            assert_eq!(RowState::parse(state.code()), Some(state));
        }
    }

    #[test]
    fn an_unknown_column_value_is_an_error_naming_the_row_and_the_value() {
        for (cols, needle) in [
            (columns("parked", "birthday", "a/b/owner/2026-12-03"), "unknown state `parked`"),
            (columns("pending", "gift", "a/b/owner/2026-12-03"), "unknown kind `gift`"),
            (columns("pending", "birthday", "a/b/c/d/e"), "unknown key `a/b/c/d/e`"),
        ] {
            let e = Row::try_from(cols).unwrap_err().to_string();
            assert!(e.starts_with("outbox row 7: ") && e.contains(needle), "{e}");
        }
    }

    #[test]
    fn instants_add_and_subtract_in_seconds() {
        let t = UnixSecs(100);
        assert_eq!((t + 5, t - 5, (t + 5) - t), (UnixSecs(105), UnixSecs(95), 5));
        assert_eq!(t.to_string(), "1970-01-01T00:01:40Z");
    }
}
