//! Telling ops what went wrong: failed, missed and unknown-outcome rows are each reported once.
//! The report is an email digest to `[ops] email`; every row was also logged when it happened.
//! A row counts as reported only after the digest was accepted, so a report is never lost.
//! Without an ops address, the log line is the report.

use super::Scheduler;
use crate::store::{Row, secs};
use lettre::Message;
use lettre::message::{Mailbox, header::ContentType};

/// Rows per digest.
const DIGEST_ROWS: i64 = 200;

pub async fn report(daemon: &Scheduler) -> anyhow::Result<u64> {
    let rows = daemon.store.unreported(DIGEST_ROWS).await?;
    if rows.is_empty() {
        return Ok(0);
    }
    let now = daemon.clock.now();
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    if let Some(ops) = &daemon.settings.ops_email {
        let message = digest(daemon, ops, &rows, now)?;
        if let Err(e) = daemon.mailer.send(&message).await {
            daemon.metrics.transport_error(e.class);
            daemon.health.transport_error(e.class, &e.detail, now);
            tracing::error!(error = %e, rows = rows.len(), "could not email the ops report; will try again next tick");
            return Ok(0);
        }
        tracing::info!(rows = rows.len(), domain = ops.domain(), "ops report sent");
    }
    daemon.store.mark_reported(&ids, secs(now)).await?;
    Ok(ids.len() as u64)
}

fn digest(
    daemon: &Scheduler,
    ops: &crate::plan::Email,
    rows: &[Row],
    now: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<Message> {
    let sender = &daemon.settings.sender;
    let mut body = format!(
        "contactplan on {} needs your attention: {} occasion(s) were not delivered as planned.\n\n",
        daemon.instance,
        rows.len()
    );
    for r in rows {
        let due = r.due.datetime().to_rfc3339();
        body.push_str(&format!(
            "- {state}: {key}\n  due {due}, attempts {attempts}\n  reason: {reason}\n{reply}\n",
            state = r.state,
            key = r.key,
            attempts = r.attempts,
            reason = r.reason.as_deref().unwrap_or("-"),
            reply = r.smtp_reply.as_deref().map(|s| format!("  last reply: {s}\n")).unwrap_or_default(),
        ));
    }
    body.push_str("\nStates: failed = the server refused or retries were exhausted; missed = the deadline passed before it could be sent; unknown = at_most_once and the outcome could not be known (not resent; check the recipient's mailbox).\n");
    let first = rows.first().map_or(0, |r| r.id);
    let last = rows.last().map_or(0, |r| r.id);
    Ok(Message::builder()
        .from(Mailbox::new(Some(sender.name.clone()), sender.email.as_str().parse()?))
        .to(ops.as_str().parse()?)
        .subject(format!("contactplan: {} occasion(s) need attention", rows.len()))
        .message_id(Some(crate::mail::message_id(&format!("ops-report/{first}-{last}"), sender.email.domain())))
        .date(now.into())
        .header(ContentType::TEXT_PLAIN)
        .body(body)?)
}
