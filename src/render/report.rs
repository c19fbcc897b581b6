//! The ops report (`templates/ops_report/<lang>/`): failed, missed and unknown-outcome
//! occasions as a digest for `[ops] email`. Rendered like every other message, within the same
//! bounds; the dispatcher falls back to [`plain_report`] when the template is missing or fails,
//! so a report is never lost to a template error.

use super::{RenderError, Rendered, Renderer, Sender, render_parts};
use crate::plan::Language;
use minijinja::context;

/// The template folder of the ops report.
pub const REPORT_TEMPLATE: &str = "ops_report";

/// One row of the report, as templates see it (`rows[].{state,key,due,attempts,reason,reply}`).
#[derive(Debug, Clone)]
pub struct ReportRow {
    /// `failed`, `missed` or `unknown`.
    pub state: String,
    /// The outbox key (`customer/rule/recipient/date`): no addresses.
    pub key: String,
    /// When it was due, RFC 3339 (UTC).
    pub due: String,
    /// Send attempts made.
    pub attempts: i64,
    /// Why (`-` when none was recorded).
    pub reason: String,
    /// The server's last reply, if any.
    pub reply: Option<String>,
}

impl Renderer {
    /// Renders the ops report in `language` (`<lang>`, then `default`).
    ///
    /// # Errors
    /// No `ops_report` variant, or the template fails (see [`Renderer::render`]).
    pub fn render_report(
        &self,
        language: Language,
        instance: &str,
        rows: &[ReportRow],
        sender: Sender,
    ) -> Result<Rendered, RenderError> {
        let variant = self.catalog.resolve("", REPORT_TEMPLATE, language, None).ok_or_else(|| {
            RenderError::NoVariant { template: REPORT_TEMPLATE.into(), wanted: language.code().into() }
        })?;
        let ctx = context! {
            language => language.code(),
            instance => instance,
            rows => rows
                .iter()
                .map(|r| context! {
                    state => &r.state, key => &r.key, due => &r.due, attempts => r.attempts,
                    reason => &r.reason, reply => r.reply.as_deref(),
                })
                .collect::<Vec<_>>(),
            sender => context! { name => sender.name, email => sender.email },
        };
        render_parts(&self.env, variant, &ctx)
    }
}

/// The report without any template: plain English text (and the same as escaped HTML), for
/// when `ops_report` is missing or fails.
pub fn plain_report(instance: &str, rows: &[ReportRow]) -> Rendered {
    let mut text = format!(
        "contactplan on {instance} needs your attention: {} occasion(s) were not delivered as planned.\n\n",
        rows.len()
    );
    for r in rows {
        text.push_str(&format!(
            "- {}: {}\n  due {}, attempts {}\n  reason: {}\n{}\n",
            r.state,
            r.key,
            r.due,
            r.attempts,
            r.reason,
            r.reply.as_deref().map(|s| format!("  last reply: {s}\n")).unwrap_or_default()
        ));
    }
    let escaped = text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
    Rendered {
        subject: format!("contactplan: {} occasion(s) need attention", rows.len()),
        html: format!("<!doctype html>\n<html><body><pre>{escaped}</pre></body></html>\n"),
        text,
        variant: "(built in)".into(),
        fuel: 0,
    }
}
