//! Announcing, well before their deadline, the rows the relay's caps cannot send in time.
//!
//! Each tick, when caps are configured: the open rows whose deadline is within
//! [`LOOKAHEAD`](crate::capacity::LOOKAHEAD) are projected in claim order (earliest deadline
//! first) at the current effective rate (the configured caps, the adaptive rate as a per-second
//! cap, and what the current windows have already used), with [`crate::capacity::simulate`].
//! Those whose projection passes their deadline end `missed` now, with the reason, instead of
//! at their deadline; the salesperson gets one task email per tick listing theirs ("call
//! instead"), ops one notice (and the rows in the usual ops report).
//!
//! Cheap: nothing is read unless caps are configured; then one `COUNT` over the deadline
//! index, and the rows are read and projected only when more is due within the look-ahead
//! than every current window still allows, at most [`MAX_SCAN`] of them.
//!
//! Once per row: the rows are marked `missed` first (one transaction, only rows still open), and
//! only the rows this daemon marked are announced, so of several daemons exactly one announces
//! a row. A task email that cannot be sent is logged; the rows still reach ops in the report.

use super::Scheduler;
use crate::capacity::{Fate, Job, LOOKAHEAD, simulate};
use crate::store::{Budget, Row, secs};
use crate::workspace::Snapshot;
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;

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
    // What the current windows have already given out (on the database clock).
    let (stored, db_now) = s.store.relay_usage().await?;
    let used: Vec<(i64, i64)> = [("second", 1), ("minute", 60), ("hour", 3600), ("day", 86_400)]
        .into_iter()
        .filter_map(|(kind, len)| {
            stored
                .iter()
                .find(|(k, start, _)| k == kind && *start == db_now.0.div_euclid(len) * len)
                .map(|(_, _, u)| (len, *u))
        })
        .collect();
    let room = [budget.per_second, budget.per_minute, budget.per_hour, budget.per_day]
        .into_iter()
        .zip([1, 60, 3600, 86_400])
        .filter_map(|(cap, len)| {
            cap.map(|c| i64::from(c) - used.iter().find(|(l, _)| *l == len).map_or(0, |(_, u)| *u))
        })
        .min()
        .unwrap_or(i64::MAX);
    if count <= room {
        return Ok(Vec::new());
    }
    let (_, open) = s.store.open_by_deadline(secs(now), until, MAX_SCAN).await?;
    let jobs: Vec<Job> = open.iter().map(|(_, _, due, deadline)| Job { due: *due, deadline: *deadline }).collect();
    let fates = simulate(&budget, &used, now.timestamp(), &jobs);
    let mut deadlines = BTreeMap::new();
    let marks: Vec<(i64, String)> = open
        .iter()
        .zip(&fates)
        .enumerate()
        .filter_map(|(ahead, ((id, _, _, deadline), fate))| match fate {
            Fate::Missed(blocker) => {
                deadlines.insert(*id, *deadline);
                let cap = blocker
                    .and_then(|b| cap_of(&budget, b).map(|c| format!("{b} = {c}")))
                    .unwrap_or_else(|| crate::capacity::describe(&budget));
                Some((
                    *id,
                    format!(
                        "would not fit under {cap} before its deadline: {ahead} rows ahead of it in claim order, deadline {}, announced {}",
                        crate::store::UnixSecs(*deadline),
                        secs(now)
                    ),
                ))
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
        "announced rows that cannot go out before their deadline under the relay's limits"
    );
    tell_owners(s, snap, &missed, &deadlines, now).await;
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

async fn tell_owners(s: &Scheduler, snap: &Snapshot, rows: &[Row], deadlines: &BTreeMap<i64, i64>, now: DateTime<Utc>) {
    let mut per_owner: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for row in rows {
        let Some(customer) = snap.plans.get(&row.key.customer) else { continue };
        let deadline = deadlines.get(&row.id).copied().unwrap_or(row.due.0);
        per_owner.entry(customer.owner.as_str().to_string()).or_default().push(line(snap, row, deadline));
    }
    let sender = &s.settings.sender;
    let hour = now.format("%Y-%m-%dT%H").to_string();
    for (owner, lines) in per_owner {
        let subject = format!("Call instead: {} occasions will not be emailed in time", lines.len());
        let text = format!(
            "More is due than the mail relay takes before these deadlines, so these greetings will not be \
             emailed. Please call or write to them yourself:\n\n{}\n",
            lines.join("\n")
        );
        let html = format!("<pre>{}</pre>", super::notice::html_escape(&text));
        let first = rows.first().map_or(0, |r| r.id);
        let message_id = crate::mail::message_id(&format!("capacity:{hour}/{owner}/{first}"), sender.email.domain());
        let built = crate::mail::build(&crate::mail::Outgoing {
            from: sender.party(),
            to: crate::mail::Party { name: None, address: &owner },
            cc: None,
            reply_to: None,
            subject: &subject,
            text: &text,
            html: &html,
            message_id: &message_id,
            date: now.with_timezone(&sender.timezone).fixed_offset(),
        });
        match built {
            Ok(m) => match s.mailer.send(&m).await {
                Ok(_) => tracing::info!(rows = lines.len(), "capacity task sent to the salesperson"),
                Err(e) => {
                    tracing::error!(error = %e, rows = lines.len(), "could not send the capacity task; the rows are in the ops report")
                }
            },
            Err(e) => tracing::error!(error = %e, "could not build the capacity task"),
        }
    }
}

async fn tell_ops(s: &Scheduler, rows: &[Row], deadlines: &BTreeMap<i64, i64>, budget: &Budget, now: DateTime<Utc>) {
    let snap = s.current();
    let lines: Vec<String> =
        rows.iter().map(|r| line(&snap, r, deadlines.get(&r.id).copied().unwrap_or(r.due.0))).collect();
    let subject = format!(
        "contactplan: {} occasions will not fit under the relay's limits before their deadline ({})",
        rows.len(),
        now.format("%Y-%m-%d %H:%M UTC")
    );
    let text = format!(
        "Under {} these rows cannot go out before their deadline; they are marked missed now and their \
         salespeople were asked to call instead. Raise the limit, spread with `jitter`/`window`, or move the \
         rule (`contactplan agenda --capacity` shows the busiest hours).\n\n{}\n",
        crate::capacity::describe(budget),
        lines.join("\n")
    );
    super::notice::send(s, &subject, &text).await;
}
