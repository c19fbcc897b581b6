//! Announcing, well before their deadline, the rows the relay's caps cannot send in time.
//!
//! Each tick, when caps are configured: the open rows whose deadline is within
//! [`LOOKAHEAD`](crate::capacity::LOOKAHEAD) are projected in claim order (earliest deadline
//! first) at the current effective rate (the configured caps, the adaptive rate as a per-second
//! cap, and what the current windows have already used), with [`crate::capacity::simulate`].
//! Those whose projection passes their deadline end `missed` now, with the reason, instead of
//! at their deadline; each salesperson is told about theirs in one "call instead" email
//! (`call_instead.rs`: durable, translated, sent right after this), ops get one notice (and the
//! rows in the usual ops report).
//!
//! Under the cap, announcements included: every message we hand to the relay counts against its
//! caps, so the projection keeps room for the announcements themselves — one digest per
//! salesperson with rows missed (and per salesperson whose digest is still owed from before),
//! plus the ops notice and the ops reports that will list the missed rows — and the digests and
//! the notice take that room first (`take_one`, before the tick claims rows; the report at the
//! tick's end).
//! The room is found by iterating: more room kept can only make more rows miss, possibly of
//! more salespeople, so the projection is repeated until the room kept covers the
//! announcements it implies ([`project`]).
//!
//! Cheap: nothing is read unless caps are configured; then one `COUNT` over the deadline
//! index, and the rows are read and projected only when more is due within the look-ahead
//! than every current window still allows (after the digests still owed), at most
//! [`MAX_SCAN`] of them.
//!
//! Once per row: the rows are marked `missed` first (one transaction, only rows still open, with
//! their "call instead" entries), and only the rows this daemon marked are announced, so of
//! several daemons exactly one announces a row. The salesperson's entries are told by whichever
//! daemon claims them (`call_instead.rs`); a notice that cannot be sent is logged (the rows
//! still reach ops in the report).

use super::Scheduler;
use crate::capacity::{Fate, Job, LOOKAHEAD, simulate};
use crate::store::{Announcement, Budget, Row, Tell, UnixSecs, secs};
use crate::workspace::Snapshot;
use chrono::{DateTime, Utc};
use std::collections::{BTreeMap, BTreeSet};

/// Rows projected at most per tick.
pub const MAX_SCAN: i64 = 50_000;

/// The caps in effect now: the configured ones, with the adaptive rate as a per-second cap.
fn effective(s: &Scheduler) -> Budget {
    let mut b = *s.relay.budget();
    if let Some(rate) = s.relay.rate_limit() {
        let r = rate.floor().max(1.0) as u32;
        b.per_second = Some(b.per_second.map_or(r, |c| c.min(r)));
    }
    b
}

fn cap_of(b: &Budget, name: &str) -> Option<u32> {
    match name {
        "max_per_second" => b.per_second,
        "max_per_minute" => b.per_minute,
        "max_per_hour" => b.per_hour,
        _ => b.per_day,
    }
}

/// `(window length in seconds, cap)` of every configured window.
fn windows(b: &Budget) -> impl Iterator<Item = (i64, u32)> {
    [(1, b.per_second), (60, b.per_minute), (3600, b.per_hour), (86_400, b.per_day)]
        .into_iter()
        .filter_map(|(len, cap)| cap.map(|c| (len, c)))
}

/// The fates of `jobs` (see [`simulate`]) with room kept in every window for the announcements
/// they imply: `pending` digests still owed, and, when any job misses, one digest per distinct
/// owner (`owners[i]`: the owner of `jobs[i]`, if known) of the missed jobs, plus — when `ops`
/// (ops have an address) — the notice and the ops reports that will list the missed rows (one
/// per [`super::ops::REPORT_ROWS`]; without them in the room kept, the report took a slot the
/// projection had given to a greeting, which then missed too and was announced a tick later).
/// Returns the fates and the room kept (messages).
fn project(
    budget: &Budget,
    used: &[(i64, i64)],
    start: i64,
    jobs: &[Job],
    owners: &[Option<&str>],
    pending: i64,
    ops: bool,
) -> (Vec<Fate>, i64) {
    let mut reserve = pending;
    loop {
        let kept: Vec<(i64, i64)> = used.iter().map(|(len, u)| (*len, u + reserve)).collect();
        let fates = simulate(budget, &kept, start, jobs);
        let missed: Vec<usize> = (0..fates.len()).filter(|i| matches!(fates[*i], Fate::Missed(_))).collect();
        let told: BTreeSet<&str> = missed.iter().filter_map(|i| owners.get(*i).copied().flatten()).collect();
        let for_ops =
            if ops { 1 + (missed.len() as i64 + super::ops::REPORT_ROWS - 1) / super::ops::REPORT_ROWS } else { 0 };
        let need = pending + if missed.is_empty() { 0 } else { for_ops + told.len() as i64 };
        // `need` grows with `reserve` and is bounded (every owner once, the notice, a report
        // per REPORT_ROWS of the jobs).
        if need <= reserve {
            return (fates, reserve);
        }
        reserve = need;
    }
}

/// Projects, marks and announces; returns the rows that became `missed`.
///
/// # Errors
/// A store error.
pub async fn announce(s: &Scheduler, snap: &Snapshot, now: DateTime<Utc>) -> anyhow::Result<Vec<Row>> {
    let budget = effective(s);
    if !budget.any() {
        return Ok(Vec::new());
    }
    let until = secs(now + LOOKAHEAD);
    let (count, _) = s.store.open_by_deadline(secs(now), until, 0).await?;
    if count == 0 {
        return Ok(Vec::new());
    }
    // What the current windows have already given out (on the database clock), per configured
    // window.
    let (stored, db_now) = s.store.relay_usage().await?;
    let kind = |len: i64| match len {
        1 => "second",
        60 => "minute",
        3600 => "hour",
        _ => "day",
    };
    let used: Vec<(i64, i64)> = windows(&budget)
        .map(|(len, _)| {
            let current = db_now.0.div_euclid(len) * len;
            let u = stored.iter().find(|(k, start, _)| k == kind(len) && *start == current).map_or(0, |(_, _, u)| *u);
            (len, u)
        })
        .collect();
    let room = windows(&budget).zip(&used).map(|((_, cap), (_, u))| i64::from(cap) - u).min().unwrap_or(i64::MAX);
    // Digests still owed take their room first.
    let pending = s.store.untold_call_owners().await?;
    if count <= room - pending {
        return Ok(Vec::new());
    }
    let (_, open) = s.store.open_by_deadline(secs(now), until, MAX_SCAN).await?;
    let jobs: Vec<Job> = open.iter().map(|(_, _, due, deadline)| Job { due: *due, deadline: *deadline }).collect();
    let customers: Vec<Option<&crate::plan::Customer>> = open
        .iter()
        .map(|(_, key, _, _)| key.split_once('/').and_then(|(customer, _)| snap.plans.get(customer)))
        .collect();
    let owners: Vec<Option<&str>> = customers.iter().map(|c| c.map(|c| c.owner.as_str())).collect();
    let ops = s.settings.ops_email.is_some();
    let (fates, reserve) = project(&budget, &used, now.timestamp(), &jobs, &owners, pending, ops);
    let mut deadlines = BTreeMap::new();
    let marks: Vec<Announcement> = open
        .iter()
        .zip(&fates)
        .zip(&customers)
        .enumerate()
        .filter_map(|(ahead, (((id, _, _, deadline), fate), customer))| match fate {
            Fate::Missed(blocker) => {
                deadlines.insert(*id, *deadline);
                let cap = blocker
                    .and_then(|b| cap_of(&budget, b).map(|c| format!("{b} = {c}")))
                    .unwrap_or_else(|| crate::capacity::describe(&budget));
                Some(Announcement {
                    id: *id,
                    reason: format!(
                        "would not fit under {cap} before its deadline: {ahead} rows ahead of it in claim order, deadline {}, announced {}",
                        UnixSecs(*deadline),
                        secs(now)
                    ),
                    deadline: UnixSecs(*deadline),
                    tell: customer.map(|c| Tell { owner: c.owner.as_str().to_string(), language: c.language }),
                })
            }
            Fate::Sent(_) => None,
        })
        .collect();
    if marks.is_empty() {
        return Ok(Vec::new());
    }
    let missed = s.store.announce_missed(&marks, secs(now)).await?;
    if missed.is_empty() {
        return Ok(missed);
    }
    tracing::warn!(
        rows = missed.len(),
        limits = %crate::capacity::describe(&budget),
        kept_for_announcements = reserve,
        "announced rows that cannot go out before their deadline under the relay's limits"
    );
    tell_ops(s, &missed, &deadlines, &budget, now).await;
    Ok(missed)
}

/// One line per row: customer, contact, occasion, deadline (in the customer's zone).
fn line(snap: &Snapshot, row: &Row, deadline: i64) -> String {
    let customer = snap.plans.get(&row.key.customer);
    let contact = row
        .key
        .recipient
        .contact()
        .map(|id| customer.and_then(|c| c.contact(id)).map_or_else(|| id.to_string(), |c| c.name.to_string()))
        .unwrap_or_else(|| "-".to_string());
    let at = crate::store::UnixSecs(deadline).datetime();
    let deadline = match customer {
        Some(c) => at.with_timezone(&c.timezone).format("%Y-%m-%d %H:%M %Z").to_string(),
        None => at.format("%Y-%m-%d %H:%M UTC").to_string(),
    };
    let name = customer.map_or_else(|| row.key.customer.clone(), |c| format!("{} ({})", c.name, c.id));
    format!("- {name}: {contact}, {} (deadline {deadline})", row.key.rule)
}

async fn tell_ops(s: &Scheduler, rows: &[Row], deadlines: &BTreeMap<i64, i64>, budget: &Budget, now: DateTime<Utc>) {
    let snap = s.current();
    let lines: Vec<String> =
        rows.iter().map(|r| line(&snap, r, deadlines.get(&r.id).copied().unwrap_or(r.due.0))).collect();
    let subject = format!(
        "contactplan: {} will not fit under the relay's limits before their deadline ({})",
        if rows.len() == 1 { "1 occasion".to_string() } else { format!("{} occasions", rows.len()) },
        now.format("%Y-%m-%d %H:%M UTC")
    );
    let text = format!(
        "Under {} these rows cannot go out before their deadline; they are marked missed now and their \
         salespeople are asked to call instead. Raise the limit, spread the rule over days with `spread` \
         (or within the day with `jitter`/`window`), or move the rule (`contactplan agenda --capacity` \
         shows the busiest hours).\n\n{}\n",
        crate::capacity::describe(budget),
        lines.join("\n")
    );
    super::notice::send(s, &subject, &text).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_is_kept_for_a_digest_per_owner_of_missed_rows_the_notice_and_the_report() {
        // 20 rows due now, deadline in an hour, 5 an hour; two owners alternating.
        let budget = Budget { per_hour: Some(5), ..Budget::default() };
        let start = 3600 * 100;
        let jobs: Vec<Job> = (0..20).map(|_| Job { due: start, deadline: start + 3600 }).collect();
        let owners: Vec<Option<&str>> = (0..20).map(|i| Some(if i % 2 == 0 { "eva" } else { "tom" })).collect();
        let (fates, reserve) = project(&budget, &[(3600, 0)], start, &jobs, &owners, 0, true);
        assert_eq!(reserve, 4, "two digests, the notice and the ops report");
        assert_eq!(fates.iter().filter(|f| matches!(f, Fate::Sent(_))).count(), 1);
        let (fates, reserve) = project(&budget, &[(3600, 0)], start, &jobs, &owners, 0, false);
        assert_eq!(reserve, 2, "no ops address: the two digests");
        assert_eq!(fates.iter().filter(|f| matches!(f, Fate::Sent(_))).count(), 3);
        // Nothing misses: nothing kept, beyond digests still owed.
        let (fates, reserve) = project(&budget, &[(3600, 0)], start, &jobs[..3], &owners[..3], 1, true);
        assert_eq!((reserve, fates.iter().all(|f| matches!(f, Fate::Sent(_)))), (1, true));
        // Without room kept, only b's row (the latest deadline) misses: b's digest, the notice
        // and the report need 3; with 3 kept, a's rows miss too: a's digest needs a fourth.
        let owners: Vec<Option<&str>> = vec![Some("a"), Some("a"), Some("a"), Some("a"), Some("a"), Some("b")];
        let jobs: Vec<Job> =
            (0..6).map(|i| Job { due: start, deadline: start + 3600 - if i == 5 { 0 } else { 10 } }).collect();
        let (fates, reserve) = project(&budget, &[(3600, 0)], start, &jobs, &owners, 0, true);
        assert_eq!(reserve, 4, "{fates:?}");
        assert_eq!(fates.iter().filter(|f| matches!(f, Fate::Sent(_))).count(), 1, "{fates:?}");
        // A report per 200 missed rows.
        let many = Budget { per_hour: Some(10), ..Budget::default() };
        let jobs: Vec<Job> = (0..450).map(|_| Job { due: start, deadline: start + 3600 }).collect();
        let owners: Vec<Option<&str>> = vec![Some("eva"); 450];
        let (_, reserve) = project(&many, &[(3600, 0)], start, &jobs, &owners, 0, true);
        assert_eq!(reserve, 1 + 1 + 3, "a digest, the notice, three reports");
    }
}
