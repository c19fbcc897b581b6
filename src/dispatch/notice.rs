//! A notice to ops that does not come from outbox rows: a condition of the daemon itself (its
//! outbox file deleted under it, an OAuth token that cannot be renewed, rows announced as not
//! fitting under the relay's limits) that ops must hear about even when the database cannot
//! record anything. Sent once per condition and process, straight through the mailer.
//!
//! It counts against the relay's limits like every message we hand to the relay
//! ([`super::relay::take_one`]); when the limits leave no room now, it is not sent (the caller
//! decides whether to try again; the rows of a capacity notice reach ops in the report anyway).
//! A notice about a broken outbox must still go out: when the outbox is gone, or taking the
//! budget fails with a store error, it is sent without being counted.

use super::Scheduler;

/// Emails `[ops] email` (when set) with `subject` and `text`; without an ops address, the log
/// line the caller writes is the notice. True when the notice was accepted (or there is no
/// ops address, so nothing is left to do); false when it failed or the relay's limits leave no
/// room for it now.
pub async fn send(s: &Scheduler, subject: &str, text: &str) -> bool {
    let Some(ops) = &s.settings.ops_email else { return true };
    // The outbox file gone: nothing is written to it (the scheduler halts), so nothing is counted.
    if s.store.verify_file().is_ok() {
        match super::relay::take_one(s).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(subject, "the relay's limits leave no room for the ops notice now; not sent");
                return false;
            }
            Err(e) => tracing::warn!(
                error = %e,
                subject,
                "could not count the ops notice against the relay's limits (the database fails); sending it anyway"
            ),
        }
    }
    let now = s.clock.now();
    let sender = &s.settings.sender;
    let message_id = crate::mail::message_id(&format!("notice/{}/{subject}", s.instance), sender.email.domain());
    let html = format!("<pre>{}</pre>", html_escape(text));
    let built = crate::mail::build(&crate::mail::Outgoing {
        from: sender.party(),
        to: crate::mail::Party { name: None, address: ops.as_str() },
        cc: None,
        reply_to: None,
        subject,
        text,
        html: &html,
        message_id: &message_id,
        date: now.with_timezone(&sender.timezone).fixed_offset(),
    });
    match built {
        Ok(message) => match s.mailer.send(&message).await {
            Ok(_) => {
                tracing::info!(domain = ops.domain(), subject, "ops notice sent");
                true
            }
            Err(e) => {
                super::relay::send_failed(s, &e).await;
                tracing::error!(error = %e, subject, "could not send the ops notice");
                false
            }
        },
        Err(e) => {
            tracing::error!(error = %e, subject, "could not build the ops notice");
            false
        }
    }
}

/// `&`, `<`, `>` and `"` as HTML entities.
pub(super) fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}
