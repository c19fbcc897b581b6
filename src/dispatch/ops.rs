//! Telling ops what went wrong: failed, missed and unknown-outcome rows are each reported once.
//! The report is an email digest to `[ops] email`; every row was also logged when it happened.
//! A row counts as reported only after the digest was accepted, so a report is never lost.
//! The digest counts against the relay's limits like every message we hand to the relay; when
//! they leave no room now, the rows wait for a later tick.
//! Without an ops address, the log line is the report.

use super::Scheduler;
use crate::render::{ReportRow, plain_report};
use crate::store::{Row, secs};

/// Rows per ops report (a tick sends at most one).
pub(crate) const REPORT_ROWS: i64 = 200;

pub async fn report(daemon: &Scheduler) -> anyhow::Result<u64> {
    let rows = daemon.store.unreported(REPORT_ROWS).await?;
    if rows.is_empty() {
        return Ok(0);
    }
    let now = daemon.clock.now();
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    if let Some(ops) = &daemon.settings.ops_email {
        let message = digest(daemon, ops, &rows, now)?;
        // It counts against the relay's limits like every message: when they leave no room
        // now, the rows wait (unreported) for a later tick.
        if !super::relay::take_one(daemon).await? {
            tracing::debug!(rows = rows.len(), "the relay's limits leave no room for the ops report now; later");
            return Ok(0);
        }
        if let Err(e) = daemon.mailer.send(&message).await {
            super::relay::send_failed(daemon, &e).await;
            tracing::error!(error = %e, rows = rows.len(), "could not email the ops report; will try again next tick");
            return Ok(0);
        }
        tracing::info!(rows = rows.len(), domain = ops.domain(), "ops report sent");
    }
    daemon.store.mark_reported(&ids, secs(now)).await?;
    Ok(ids.len() as u64)
}

/// The digest as a message: `templates/ops_report/` (English: the scheduler's settings carry no
/// report language yet), or a built-in plain text when that template is missing or fails.
fn digest(
    daemon: &Scheduler,
    ops: &crate::plan::Email,
    rows: &[Row],
    now: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<lettre::Message> {
    let sender = &daemon.settings.sender;
    let report_rows: Vec<ReportRow> = rows
        .iter()
        .map(|r| ReportRow {
            state: r.state.code().to_string(),
            key: r.key.to_string(),
            due: r.due.datetime().to_rfc3339(),
            attempts: r.attempts,
            reason: r.reason.clone().unwrap_or_else(|| "-".into()),
            reply: r.smtp_reply.clone(),
        })
        .collect();
    let snapshot = daemon.served.current();
    let rendered = match snapshot.renderer.render_report(
        daemon.settings.ops_language,
        &daemon.instance,
        &report_rows,
        sender.for_templates(),
    ) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "the ops report template failed; sending the built-in plain text");
            plain_report(&daemon.instance, &report_rows)
        }
    };
    let first = rows.first().map_or(0, |r| r.id);
    let last = rows.last().map_or(0, |r| r.id);
    let message_id = crate::mail::message_id(&format!("ops-report/{first}-{last}"), sender.email.domain());
    Ok(crate::mail::build(&crate::mail::Outgoing {
        from: sender.party(),
        to: crate::mail::Party { name: None, address: ops.as_str() },
        cc: None,
        reply_to: None,
        subject: &rendered.subject,
        text: &rendered.text,
        html: &rendered.html,
        message_id: &message_id,
        date: now.with_timezone(&sender.timezone).fixed_offset(),
    })?)
}
