//! Claims under the relay's limits, and their order.
//!
//! **Budget.** `relay_budget` (migration 0007) holds, per window kind (`second`, `minute`,
//! `hour`, `day`), the window's start (Unix seconds of the *database* clock, aligned to UTC) and
//! the rows claimed in it, plus a `pause` row (nothing is claimed before its `start`: a quota
//! reply). A claim reads the rows, claims at most what every configured window has left, and
//! adds what it claimed, all in its transaction: on PostgreSQL the budget rows are locked
//! `FOR UPDATE` (claims of all daemons serialise on them only when a limit is configured), on
//! SQLite the transaction is `BEGIN IMMEDIATE` (one writer). No leader, nothing per daemon.
//!
//! Messages that are not outbox rows count too: the "call instead" digests, the ops notices and
//! the ops report take their share with [`super::Store::take_budget`] (the same windows, the
//! same pause, the same transaction discipline) before they are handed to the relay, so the cap
//! holds for everything the relay gets from us.
//!
//! Counted at claim: a claimed row that is released unsent (shutdown, a lost claim) or refused
//! by the relay still counts. That over-counts a little, so the relay may get fewer than the
//! cap in such a window, never more.
//!
//! A per-second window is paced: by `m` milliseconds into the second at most
//! `cap × (m + SECOND_SLICE_MS) / (1000 − SECOND_GUARD_MS)` rows may have been claimed, so a second's budget is spread
//! over the second, not claimed as one burst at its start (a burst of a whole second's budget
//! takes most of the second to send and spills into the next one, whose own burst then comes on
//! top: measured 2,445 messages in one second under a cap of 2,000 before the pacing). A claim
//! that fell behind the pace line (a slow batch, a busy machine) may catch up to it, but takes at
//! most what the caller says it can send in [`SECOND_GUARD_MS`] (`Relay::claim_size`: this
//! daemon's measured send rate), and nothing is claimed in the last [`SECOND_GUARD_MS`] of a
//! second: what was claimed in one second has left before the next second's budget opens, so the
//! relay sees at most the cap in any UTC second unless a claim takes longer than that to send.
//! A claim waits until the line allows a slice's worth (`cap × SECOND_SLICE_MS / 900` rows, or
//! what is left): claims of a few rows each, one after another, cost a transaction and a read of
//! the candidates apiece and left too little time to send at 100,000 due rows.
//!
//! **Order.** Among the due rows, the earliest `4 ×` the rows claimed (at least 1,000) by deadline
//! (index `outbox_by_deadline`, in its order: deadline, id — not sorted by due time, which would
//! sort every row of the deadline on every claim) are candidates, and [`choose`] takes them by deadline hour, then the
//! rule's `priority` (higher first), then round-robin over customers, then deadline: a customer
//! with fifty contacts due in the same hour does not delay another's single greeting.

use super::{Announcement, ClaimedColumns, PgStore, RowColumns, SqliteStore, claimed_columns, row_columns};
use std::collections::HashMap;

/// Rows a claim may take per window; `None`: no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Budget {
    /// Per UTC second.
    pub per_second: Option<u32>,
    /// Per UTC minute.
    pub per_minute: Option<u32>,
    /// Per UTC hour.
    pub per_hour: Option<u32>,
    /// Per UTC day.
    pub per_day: Option<u32>,
}

impl Budget {
    /// `(kind, window length in seconds, cap)` of every configured window.
    fn windows(&self) -> impl Iterator<Item = (&'static str, i64, u32)> {
        [
            ("second", 1, self.per_second),
            ("minute", 60, self.per_minute),
            ("hour", 3600, self.per_hour),
            ("day", 86_400, self.per_day),
        ]
        .into_iter()
        .filter_map(|(k, len, cap)| cap.map(|c| (k, len, c)))
    }

    /// Whether any window is limited.
    pub fn any(&self) -> bool {
        self.windows().next().is_some()
    }
}

/// The last part of a second in which a per-second budget is not claimed from.
pub const SECOND_GUARD_MS: i64 = 100;

/// Pacing of a per-second budget: by `m` ms into the second, at most
/// `cap × (m + this) / PACE_SPAN_MS` rows may have been claimed.
pub const SECOND_SLICE_MS: i64 = 100;

/// The part of a second over which a per-second budget is claimed: all of it before the guard,
/// so the whole cap is claimable `SECOND_SLICE_MS` before the guard begins, and its last slice
/// has the guard and a slice to go out (a line over the whole second reached the cap only as
/// the guard began: the second's last rows were claimed a few at a time, or not at all).
const PACE_SPAN_MS: i64 = 1000 - SECOND_GUARD_MS;

/// The rows the pace line of a per-second `cap` adds in [`SECOND_SLICE_MS`] (at least 1): what a
/// claim waits for before it is made.
pub fn second_slice(cap: u32) -> u32 {
    let cap = i64::from(cap);
    u32::try_from(((cap * SECOND_SLICE_MS + PACE_SPAN_MS - 1) / PACE_SPAN_MS).max(1)).unwrap_or(u32::MAX)
}

/// What a limited claim got.
#[derive(Debug, Default)]
pub struct Claim {
    /// The claimed rows, in the order they should be sent.
    pub rows: Vec<super::Claimed>,
    /// Nothing (more) can be claimed for this many milliseconds: the budget of a window is
    /// spent (until it rolls over), or the relay is paused. `None`: claim again at will.
    pub wait_ms: Option<i64>,
    /// The relay is paused (a quota reply) until this database time (Unix seconds), if it is.
    pub paused_until: Option<i64>,
    /// Under a per-second cap: the rows must have gone out within this many milliseconds of the
    /// claim (when the second they count in ends, on the database clock); what has not started
    /// by then goes back unsent. `None`: no such bound.
    pub send_within_ms: Option<i64>,
}

/// What an engine's claim returns: the rows, their ids in sending order, how long until more may
/// be claimed (ms), the pause's end (Unix seconds), and how long the rows may take to go out (ms;
/// [`Claim::send_within_ms`]).
pub(crate) type ClaimedRows = (Vec<ClaimedColumns>, Vec<i64>, Option<i64>, Option<i64>, Option<i64>);

/// A due row as the claim orders it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct Candidate {
    pub id: i64,
    pub customer: String,
    pub deadline_utc: i64,
    pub due_utc: i64,
    pub priority: i64,
}

/// Deadline hour, negated priority, round, customer's candidates, deadline, due, id.
type SortKey = (i64, i64, usize, usize, i64, i64, i64);

/// The ids of the `n` candidates to claim, in sending order: by deadline hour, priority (higher
/// first), round-robin over customers (each customer's rows in deadline order; within a round,
/// customers with fewer candidates first, so a customer's single greeting is not behind a big
/// customer's rows in every claim), deadline, id.
pub(crate) fn choose(candidates: &[Candidate], n: usize) -> Vec<i64> {
    let mut per_customer: HashMap<&str, usize> = HashMap::new();
    for c in candidates {
        *per_customer.entry(c.customer.as_str()).or_insert(0) += 1;
    }
    let mut sorted: Vec<&Candidate> = candidates.iter().collect();
    sorted.sort_by_key(|c| (c.deadline_utc.div_euclid(3600), -c.priority, c.deadline_utc, c.due_utc, c.id));
    let mut seen: HashMap<(i64, i64, &str), usize> = HashMap::new();
    let mut keyed: Vec<(SortKey, i64)> = sorted
        .iter()
        .map(|c| {
            let bucket = c.deadline_utc.div_euclid(3600);
            let rank = seen.entry((bucket, c.priority, c.customer.as_str())).or_insert(0);
            *rank += 1;
            let size = per_customer.get(c.customer.as_str()).copied().unwrap_or(0);
            ((bucket, -c.priority, *rank, size, c.deadline_utc, c.due_utc, c.id), c.id)
        })
        .collect();
    keyed.sort_by_key(|(k, _)| *k);
    keyed.into_iter().take(n).map(|(_, id)| id).collect()
}

/// How many rows the budget allows now (`now_ms`: the database clock in milliseconds), given the
/// stored `(kind, start, used)` rows; and, when none, how long until some are.
fn allowance(
    budget: &Budget,
    stored: &[(String, i64, i64)],
    now_ms: i64,
    want: u32,
) -> (u32, Option<i64>, Option<i64>) {
    let now = now_ms.div_euclid(1000);
    let get = |kind: &str| stored.iter().find(|(k, _, _)| k == kind).map_or((0, 0), |(_, s, u)| (*s, *u));
    let (pause, _) = get("pause");
    if pause > now {
        return (0, Some(pause * 1000 - now_ms), Some(pause));
    }
    let mut n = i64::from(want);
    let mut wait: Option<i64> = None;
    for (kind, len, cap) in budget.windows() {
        let current = now.div_euclid(len) * len;
        let (start, used) = get(kind);
        let used = if start == current { used } else { 0 };
        let left = i64::from(cap) - used;
        let ms = now_ms.rem_euclid(1000);
        let guard = kind == "second" && ms >= 1000 - SECOND_GUARD_MS;
        if left <= 0 || guard {
            let until = (current + len) * 1000 - now_ms;
            wait = Some(wait.map_or(until, |w: i64| w.max(until)));
            n = 0;
            continue;
        }
        if kind == "second" {
            let slice = i64::from(second_slice(cap));
            let cap = i64::from(cap);
            let paced = (cap * (ms + SECOND_SLICE_MS)).div_euclid(PACE_SPAN_MS).clamp(1, cap) - used;
            // The first millisecond of the second at which the pace line allows `k` more rows.
            let line_at = |k: i64| ((used + k) * PACE_SPAN_MS + cap - 1).div_euclid(cap) - SECOND_SLICE_MS;
            // A claim is worth its cost (a transaction, a read of the candidates, a commit)
            // once a slice of the cap is ready: claiming each row as the line reaches it would
            // make claims of a few rows, one after another, each as costly as a slice's
            // (measured: 5,175 claims of 19 rows on average for 100,000 rows under 2,000/s,
            // a third of the run spent claiming). Less when less is left or wanted. (The line
            // reaches the cap `SECOND_SLICE_MS` before the guard, so every slice is ready
            // before it.)
            let worth = slice.min(left).min(i64::from(want)).max(1);
            if paced < worth {
                let until = (line_at(worth) - ms).max(1);
                wait = Some(wait.map_or(until, |w: i64| w.max(until)));
                n = 0;
                continue;
            }
            // Up to the pace line: a claim that fell behind (a slow batch, a busy machine)
            // catches up. How much one claim may take so that it has left before the second
            // ends is the caller's `want` (what this daemon sends in [`SECOND_GUARD_MS`]:
            // `Relay::claim_size`), so nothing spills into the next second's budget.
            n = n.min(paced);
        }
        n = n.min(left);
    }
    (n.max(0) as u32, if n <= 0 { wait } else { None }, None)
}

/// Under a per-second cap: the milliseconds (database clock) until the second a claim made at
/// `now_ms` counts in ends. Its rows must have gone out by then, or go back unsent: sent later,
/// they would land in the next second on top of its own budget.
fn send_within(budget: &Budget, now_ms: i64) -> Option<i64> {
    budget.per_second.map(|_| 1000 - now_ms.rem_euclid(1000))
}

/// The new `(kind, start, used)` of every configured window after claiming `n` rows.
fn spent(budget: &Budget, stored: &[(String, i64, i64)], now_ms: i64, n: i64) -> Vec<(&'static str, i64, i64)> {
    let now = now_ms.div_euclid(1000);
    budget
        .windows()
        .map(|(kind, len, _)| {
            let current = now.div_euclid(len) * len;
            let used = stored.iter().find(|(k, s, _)| k == kind && *s == current).map_or(0, |(_, _, u)| *u);
            (kind, current, used + n)
        })
        .collect()
}

/// Taking `n` messages from every configured window at once ([`super::Store::take_budget`]):
/// the windows' new `(kind, start, used)` when all `n` fit now (and the relay is not paused),
/// else how many milliseconds to wait (at least 1). The per-second window is paced as for claims,
/// so `n` above a tenth of a per-second cap (at least 1) is never available at once: callers take
/// one message at a time.
fn taking(
    budget: &Budget,
    stored: &[(String, i64, i64)],
    now_ms: i64,
    n: u32,
) -> Result<Vec<(&'static str, i64, i64)>, i64> {
    let (got, wait, _) = allowance(budget, stored, now_ms, n);
    if got < n {
        return Err(wait.unwrap_or(SECOND_SLICE_MS).max(1));
    }
    Ok(spent(budget, stored, now_ms, i64::from(n)))
}

/// Candidates per claimed row: the claim looks this far past the rows it takes, so the
/// round-robin over customers and the priorities have something to choose from.
const CANDIDATES_PER_ROW: i64 = 4;

/// At least this many candidates, however few rows a claim takes (a paced claim under a low cap
/// takes one or two): a customer's single greeting must be among them to get its fair share.
const MIN_CANDIDATES: i64 = 1000;

/// How many of the earliest deadlines a claim of `n` rows chooses from.
fn candidates(n: u32) -> i64 {
    (i64::from(n) * CANDIDATES_PER_ROW).max(MIN_CANDIDATES)
}

/// Stores the new `(kind, start, used)` of each window, in the claim's or take's transaction.
async fn write_windows_sqlite(
    tx: &mut sqlx::SqliteConnection,
    windows: Vec<(&'static str, i64, i64)>,
) -> anyhow::Result<()> {
    for (kind, start, used) in windows {
        sqlx::query("UPDATE relay_budget SET start = ?2, used = ?3 WHERE kind = ?1")
            .bind(kind)
            .bind(start)
            .bind(used)
            .execute(&mut *tx)
            .await?;
    }
    Ok(())
}

impl SqliteStore {
    /// [`super::Store::claim_within`] on SQLite: one `BEGIN IMMEDIATE` transaction.
    pub(crate) async fn claim_within(
        &self,
        now: i64,
        limit: u32,
        owner: &str,
        lease_secs: i64,
        budget: &Budget,
    ) -> anyhow::Result<ClaimedRows> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let now_ms: i64 =
            sqlx::query_scalar("SELECT CAST(ROUND((julianday('now') - 2440587.5) * 86400000.0) AS INTEGER)")
                .fetch_one(&mut *tx)
                .await?;
        let stored: Vec<(String, i64, i64)> =
            sqlx::query_as("SELECT kind, start, used FROM relay_budget").fetch_all(&mut *tx).await?;
        let (n, wait, paused) = allowance(budget, &stored, now_ms, limit);
        if n == 0 {
            tx.commit().await?;
            return Ok((Vec::new(), Vec::new(), wait, paused, None));
        }
        let candidates: Vec<Candidate> = sqlx::query_as(
            "SELECT id, customer, deadline_utc, due_utc, priority FROM outbox
             WHERE state IN ('pending', 'retry') AND due_utc <= ?1 AND deadline_utc > ?1
               AND COALESCE(next_attempt_utc, 0) <= ?1
             ORDER BY deadline_utc, id LIMIT ?2",
        )
        .bind(now)
        .bind(candidates(n))
        .fetch_all(&mut *tx)
        .await?;
        let chosen = choose(&candidates, n as usize);
        if chosen.is_empty() {
            tx.commit().await?;
            return Ok((Vec::new(), Vec::new(), None, None, None));
        }
        let rows: Vec<ClaimedColumns> = sqlx::query_as(concat!(
            "UPDATE outbox SET state = 'claimed', lease_owner = ?1, lease_until = unixepoch() + ?2, fence = fence + 1,
                    attempts = attempts + 1, updated_utc = ?3
             WHERE id IN (SELECT value FROM json_each(?4))
             RETURNING ",
            claimed_columns!()
        ))
        .bind(owner)
        .bind(lease_secs)
        .bind(now)
        .bind(serde_json::to_string(&chosen)?)
        .fetch_all(&mut *tx)
        .await?;
        write_windows_sqlite(&mut tx, spent(budget, &stored, now_ms, rows.len() as i64)).await?;
        tx.commit().await?;
        Ok((rows, chosen, None, None, send_within(budget, now_ms)))
    }

    /// [`super::Store::pause_relay`] on SQLite.
    pub(crate) async fn pause_relay(&self, min_secs: i64, align: i64) -> anyhow::Result<(i64, i64)> {
        Ok(sqlx::query_as(
            "UPDATE relay_budget SET start = MAX(start, ((unixepoch() + ?1 + ?2 - 1) / ?2) * ?2) WHERE kind = 'pause'
             RETURNING start, unixepoch()",
        )
        .bind(min_secs)
        .bind(align.max(1))
        .fetch_one(&self.pool)
        .await?)
    }

    /// [`super::Store::relay_usage`] on SQLite.
    pub(crate) async fn relay_usage(&self) -> anyhow::Result<(Vec<(String, i64, i64)>, i64)> {
        let rows =
            sqlx::query_as("SELECT kind, start, used FROM relay_budget ORDER BY kind").fetch_all(&self.pool).await?;
        let now: i64 = sqlx::query_scalar("SELECT unixepoch()").fetch_one(&self.pool).await?;
        Ok((rows, now))
    }

    /// [`super::Store::open_by_deadline`] on SQLite.
    pub(crate) async fn open_by_deadline(
        &self,
        now: i64,
        until: i64,
        limit: i64,
    ) -> anyhow::Result<(i64, Vec<(i64, String, i64, i64)>)> {
        let count: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM outbox WHERE state IN ('pending', 'retry') AND deadline_utc > ?1 AND deadline_utc <= ?2",
        )
        .bind(now)
        .bind(until)
        .fetch_one(&self.pool)
        .await?;
        if count == 0 || limit == 0 {
            return Ok((count, Vec::new()));
        }
        let rows = sqlx::query_as(
            "SELECT id, key, MAX(due_utc, COALESCE(next_attempt_utc, 0)), deadline_utc FROM outbox
             WHERE state IN ('pending', 'retry') AND deadline_utc > ?1 AND deadline_utc <= ?2
             ORDER BY deadline_utc, id LIMIT ?3",
        )
        .bind(now)
        .bind(until)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok((count, rows))
    }

    /// [`super::Store::announce_missed`] on SQLite: one transaction.
    pub(crate) async fn announce_missed(&self, rows: &[Announcement], now: i64) -> anyhow::Result<Vec<RowColumns>> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let mut out = Vec::new();
        for a in rows {
            let row: Option<RowColumns> = sqlx::query_as(concat!(
                "UPDATE outbox SET state = 'missed', reason = ?2, updated_utc = ?3, lease_owner = NULL, lease_until = NULL
                 WHERE id = ?1 AND state IN ('pending', 'retry')
                 RETURNING ",
                row_columns!()
            ))
            .bind(a.id)
            .bind(&a.reason)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?;
            if let (Some(_), Some(tell)) = (&row, &a.tell) {
                sqlx::query(
                    "INSERT INTO capacity_call (row_id, key, owner, language, deadline_utc, announced_utc)
                     SELECT id, key, ?2, ?3, ?4, ?5 FROM outbox WHERE id = ?1
                     ON CONFLICT (row_id) DO NOTHING",
                )
                .bind(a.id)
                .bind(&tell.owner)
                .bind(tell.language.code())
                .bind(a.deadline.0)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            out.extend(row);
        }
        tx.commit().await?;
        Ok(out)
    }

    /// [`super::Store::take_budget`] on SQLite: one `BEGIN IMMEDIATE` transaction.
    pub(crate) async fn take_budget(&self, n: u32, budget: &Budget) -> anyhow::Result<Option<i64>> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let now_ms: i64 =
            sqlx::query_scalar("SELECT CAST(ROUND((julianday('now') - 2440587.5) * 86400000.0) AS INTEGER)")
                .fetch_one(&mut *tx)
                .await?;
        let stored: Vec<(String, i64, i64)> =
            sqlx::query_as("SELECT kind, start, used FROM relay_budget").fetch_all(&mut *tx).await?;
        let wait = match taking(budget, &stored, now_ms, n) {
            Ok(windows) => {
                write_windows_sqlite(&mut tx, windows).await?;
                None
            }
            Err(ms) => Some(ms),
        };
        tx.commit().await?;
        Ok(wait)
    }
}

/// Stores the new `(kind, start, used)` of each window, in the claim's or take's transaction.
async fn write_windows_pg(tx: &mut sqlx::PgConnection, windows: Vec<(&'static str, i64, i64)>) -> anyhow::Result<()> {
    for (kind, start, used) in windows {
        sqlx::query("UPDATE relay_budget SET start = $2, used = $3 WHERE kind = $1")
            .bind(kind)
            .bind(start)
            .bind(used)
            .execute(&mut *tx)
            .await?;
    }
    Ok(())
}

impl PgStore {
    /// [`super::Store::claim_within`] on PostgreSQL: one transaction; the budget rows are locked
    /// only when a limit is configured; otherwise the candidates, with `FOR UPDATE SKIP LOCKED`.
    pub(crate) async fn claim_within(
        &self,
        now: i64,
        limit: u32,
        owner: &str,
        lease_secs: i64,
        budget: &Budget,
    ) -> anyhow::Result<ClaimedRows> {
        let mut tx = self.pool.begin().await?;
        let stored: Vec<(String, i64, i64)> = if budget.any() {
            sqlx::query_as("SELECT kind, start, used FROM relay_budget ORDER BY kind FOR UPDATE")
                .fetch_all(&mut *tx)
                .await?
        } else {
            sqlx::query_as("SELECT kind, start, used FROM relay_budget WHERE kind = 'pause'")
                .fetch_all(&mut *tx)
                .await?
        };
        // Read after the lock: a claim that waited for another daemon's must not count in the
        // window its transaction began in.
        let now_ms: i64 = sqlx::query_scalar("SELECT floor(extract(epoch from clock_timestamp()) * 1000)::bigint")
            .fetch_one(&mut *tx)
            .await?;
        let (n, wait, paused) = allowance(budget, &stored, now_ms, limit);
        if n == 0 {
            tx.commit().await?;
            return Ok((Vec::new(), Vec::new(), wait, paused, None));
        }
        // Under a limit, claims are serialised on the budget rows locked above: the candidates
        // need no row locks (locking a thousand candidates per claim to take a few hundred
        // wrote every one of them), and the UPDATE below takes only rows still open. Without
        // one, concurrent claimers skip each other's candidates.
        macro_rules! open_due {
            () => {
                "SELECT id, customer, deadline_utc, due_utc, priority FROM outbox
                 WHERE state IN ('pending', 'retry') AND due_utc <= $1 AND deadline_utc > $1
                   AND COALESCE(next_attempt_utc, 0) <= $1
                 ORDER BY deadline_utc, id LIMIT $2"
            };
        }
        let candidates: Vec<Candidate> =
            sqlx::query_as(if budget.any() { open_due!() } else { concat!(open_due!(), " FOR UPDATE SKIP LOCKED") })
                .bind(now)
                .bind(candidates(n))
                .fetch_all(&mut *tx)
                .await?;
        let chosen = choose(&candidates, n as usize);
        if chosen.is_empty() {
            tx.commit().await?;
            return Ok((Vec::new(), Vec::new(), None, None, None));
        }
        let rows: Vec<ClaimedColumns> = sqlx::query_as(concat!(
            "UPDATE outbox SET state = 'claimed', lease_owner = $1,
                    lease_until = floor(extract(epoch from now()))::bigint + $2, fence = fence + 1,
                    attempts = attempts + 1, updated_utc = $3
             WHERE id = ANY($4) AND state IN ('pending', 'retry')
             RETURNING ",
            claimed_columns!()
        ))
        .bind(owner)
        .bind(lease_secs)
        .bind(now)
        .bind(&chosen)
        .fetch_all(&mut *tx)
        .await?;
        write_windows_pg(&mut tx, spent(budget, &stored, now_ms, rows.len() as i64)).await?;
        tx.commit().await?;
        Ok((rows, chosen, None, None, send_within(budget, now_ms)))
    }

    /// [`super::Store::open_by_deadline`] on PostgreSQL.
    pub(crate) async fn open_by_deadline(
        &self,
        now: i64,
        until: i64,
        limit: i64,
    ) -> anyhow::Result<(i64, Vec<(i64, String, i64, i64)>)> {
        let count: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM outbox WHERE state IN ('pending', 'retry') AND deadline_utc > $1 AND deadline_utc <= $2",
        )
        .bind(now)
        .bind(until)
        .fetch_one(&self.pool)
        .await?;
        if count == 0 || limit == 0 {
            return Ok((count, Vec::new()));
        }
        let rows = sqlx::query_as(
            "SELECT id, key, GREATEST(due_utc, COALESCE(next_attempt_utc, 0)), deadline_utc FROM outbox
             WHERE state IN ('pending', 'retry') AND deadline_utc > $1 AND deadline_utc <= $2
             ORDER BY deadline_utc, id LIMIT $3",
        )
        .bind(now)
        .bind(until)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok((count, rows))
    }

    /// [`super::Store::announce_missed`] on PostgreSQL: one transaction.
    pub(crate) async fn announce_missed(&self, rows: &[Announcement], now: i64) -> anyhow::Result<Vec<RowColumns>> {
        let mut tx = self.pool.begin().await?;
        let mut out = Vec::new();
        for a in rows {
            let row: Option<RowColumns> = sqlx::query_as(concat!(
                "UPDATE outbox SET state = 'missed', reason = $2, updated_utc = $3, lease_owner = NULL, lease_until = NULL
                 WHERE id = $1 AND state IN ('pending', 'retry')
                 RETURNING ",
                row_columns!()
            ))
            .bind(a.id)
            .bind(&a.reason)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?;
            if let (Some(_), Some(tell)) = (&row, &a.tell) {
                sqlx::query(
                    "INSERT INTO capacity_call (row_id, key, owner, language, deadline_utc, announced_utc)
                     SELECT id, key, $2, $3, $4, $5 FROM outbox WHERE id = $1
                     ON CONFLICT (row_id) DO NOTHING",
                )
                .bind(a.id)
                .bind(&tell.owner)
                .bind(tell.language.code())
                .bind(a.deadline.0)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            out.extend(row);
        }
        tx.commit().await?;
        Ok(out)
    }

    /// [`super::Store::take_budget`] on PostgreSQL: one transaction; the budget rows are locked
    /// (like a claim's) only when a limit is configured.
    pub(crate) async fn take_budget(&self, n: u32, budget: &Budget) -> anyhow::Result<Option<i64>> {
        let mut tx = self.pool.begin().await?;
        let stored: Vec<(String, i64, i64)> = if budget.any() {
            sqlx::query_as("SELECT kind, start, used FROM relay_budget ORDER BY kind FOR UPDATE")
                .fetch_all(&mut *tx)
                .await?
        } else {
            sqlx::query_as("SELECT kind, start, used FROM relay_budget WHERE kind = 'pause'")
                .fetch_all(&mut *tx)
                .await?
        };
        let now_ms: i64 = sqlx::query_scalar("SELECT floor(extract(epoch from clock_timestamp()) * 1000)::bigint")
            .fetch_one(&mut *tx)
            .await?;
        let wait = match taking(budget, &stored, now_ms, n) {
            Ok(windows) => {
                write_windows_pg(&mut tx, windows).await?;
                None
            }
            Err(ms) => Some(ms),
        };
        tx.commit().await?;
        Ok(wait)
    }

    /// [`super::Store::pause_relay`] on PostgreSQL.
    pub(crate) async fn pause_relay(&self, min_secs: i64, align: i64) -> anyhow::Result<(i64, i64)> {
        Ok(sqlx::query_as(
            "WITH n AS (SELECT floor(extract(epoch from now()))::bigint AS now)
             UPDATE relay_budget SET start = GREATEST(start, ((n.now + $1 + $2 - 1) / $2) * $2) FROM n
             WHERE kind = 'pause' RETURNING start, n.now",
        )
        .bind(min_secs)
        .bind(align.max(1))
        .fetch_one(&self.pool)
        .await?)
    }

    /// [`super::Store::relay_usage`] on PostgreSQL.
    pub(crate) async fn relay_usage(&self) -> anyhow::Result<(Vec<(String, i64, i64)>, i64)> {
        let rows =
            sqlx::query_as("SELECT kind, start, used FROM relay_budget ORDER BY kind").fetch_all(&self.pool).await?;
        let now: i64 =
            sqlx::query_scalar("SELECT floor(extract(epoch from now()))::bigint").fetch_one(&self.pool).await?;
        Ok((rows, now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(id: i64, customer: &str, deadline: i64, priority: i64) -> Candidate {
        Candidate { id, customer: customer.into(), deadline_utc: deadline, due_utc: 0, priority }
    }

    #[test]
    fn earliest_deadline_hour_first_then_priority_then_round_robin_over_customers() {
        let h = 3600 * 1000;
        let mut cands: Vec<Candidate> = (1..=50).map(|i| c(i, "big", h + 10, 0)).collect();
        cands.push(c(51, "small", h + 20, 0));
        cands.push(c(52, "later", 2 * h, 0));
        cands.push(c(53, "vip", h + 30, 5));
        let order = choose(&cands, 4);
        assert_eq!(
            order,
            vec![53, 51, 1, 2],
            "priority, then one of each customer (the smaller first), then the big one's next"
        );
        let all = choose(&cands, 100);
        assert_eq!(all.last(), Some(&52), "the next hour's deadline comes after every row of this hour");
    }

    #[test]
    fn the_budget_allows_what_every_window_has_left_and_says_how_long_to_wait() {
        let b = Budget { per_second: Some(10), per_minute: Some(25), ..Budget::default() };
        let now_ms = 120_000 + 300; // 2 min 0.3 s
        let fresh: Vec<(String, i64, i64)> = vec![];
        // Paced: by 0.3 s, 4 of the second's 10 (10 × 0.4 / 0.9: the line reaches the cap at 0.8 s).
        assert_eq!(allowance(&b, &fresh, now_ms, 100), (4, None, None));
        let fast = Budget { per_second: Some(100), ..Budget::default() };
        assert_eq!(second_slice(100), 12, "what the line adds in 0.1 s");
        assert_eq!(allowance(&fast, &fresh, now_ms, 100), (44, None, None), "44 of 100/s by 0.3 s");
        let stored = vec![("second".to_string(), 120, 35)];
        assert_eq!(allowance(&fast, &stored, now_ms, 100), (0, Some(23), None), "a slice of 12 is ready at 0.323 s");
        assert_eq!(allowance(&fast, &stored, now_ms + 23, 100), (12, None, None));
        assert_eq!(allowance(&fast, &stored, now_ms, 5), (5, None, None), "a caller that wants 5 takes them now");
        let stored = vec![("second".to_string(), 120, 92)];
        assert_eq!(allowance(&fast, &stored, 120_800, 100), (8, None, None), "the last 8 by 0.8 s");
        let stored = vec![("second".to_string(), 120, 45)];
        assert_eq!(allowance(&fast, &stored, now_ms, 100), (0, Some(113), None), "the line is behind the claims");
        let stored = vec![("second".to_string(), 120, 4)];
        assert_eq!(allowance(&b, &stored, now_ms, 100), (0, Some(140), None), "a slice of 2 more at 0.44 s");
        assert_eq!(allowance(&b, &fresh, 120_899, 100), (10, None, None), "behind the pace line: catches up");
        assert_eq!(allowance(&b, &fresh, 120_899, 4), (4, None, None), "at most what the caller can send in time");
        let stored = vec![("second".to_string(), 120, 10), ("minute".to_string(), 120, 12)];
        assert_eq!(allowance(&b, &stored, now_ms, 100), (0, Some(700), None));
        let stored = vec![("second".to_string(), 119, 10), ("minute".to_string(), 120, 20)];
        assert_eq!(allowance(&b, &stored, now_ms, 100), (4, None, None), "last second's count is over; paced");
        let big = Budget { per_second: Some(100), per_minute: Some(25), ..Budget::default() };
        assert_eq!(allowance(&big, &stored, 120_800, 100), (5, None, None), "the minute's 5 left");
        let stored = vec![("minute".to_string(), 120, 25)];
        assert_eq!(allowance(&b, &stored, now_ms, 100), (0, Some(59_700), None));
        // The guard at the end of a second.
        assert_eq!(allowance(&b, &fresh, 120_950, 100), (0, Some(50), None));
        // A pause.
        let stored = vec![("pause".to_string(), 180, 0)];
        assert_eq!(allowance(&Budget::default(), &stored, now_ms, 100), (0, Some(59_700), Some(180)));
        assert_eq!(
            spent(&b, &[("minute".to_string(), 120, 20)], now_ms, 5),
            vec![("second", 120, 5), ("minute", 120, 25)]
        );
    }

    #[test]
    fn taking_counts_in_every_window_or_says_how_long_to_wait() {
        let b = Budget { per_second: Some(10), per_hour: Some(5), ..Budget::default() };
        let now_ms = 7_200_000 + 300;
        assert_eq!(taking(&b, &[], now_ms, 1), Ok(vec![("second", 7200, 1), ("hour", 7200, 1)]));
        let spent_hour = vec![("hour".to_string(), 7200, 5)];
        assert_eq!(taking(&b, &spent_hour, now_ms, 1), Err(3_600_000 - 300), "until the hour rolls over");
        let paused = vec![("pause".to_string(), 7260, 0)];
        assert_eq!(taking(&Budget::default(), &paused, now_ms, 1), Err(59_700), "the shared pause holds too");
        assert_eq!(taking(&Budget::default(), &[], now_ms, 3), Ok(vec![]), "no caps: nothing to count");
    }
}
