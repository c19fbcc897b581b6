//! A notice to ops that does not come from outbox rows: a condition of the daemon itself (its
//! outbox file deleted under it) that ops must hear about even when the database cannot record
//! anything. Sent once per condition and process, straight through the mailer.

use super::Scheduler;

/// Emails `[ops] email` (when set) with `subject` and `text`; without an ops address, the log
/// line the caller writes is the notice. True when the notice was accepted (or there is no
/// ops address, so nothing is left to do).
pub async fn send(s: &Scheduler, subject: &str, text: &str) -> bool {
    let Some(ops) = &s.settings.ops_email else { return true };
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
