//! The "call instead" digest (`templates/call_instead/<lang>/`): the occasions the relay's caps
//! cannot email before their deadline, for the salesperson to take up in person (issue 15).
//! One digest per salesperson, in the language most of its customers use
//! ([`digest_language`]). Rendered like every other message, within the same bounds; the
//! dispatcher falls back to [`plain_call_instead`] when the template is missing or fails, so the
//! salesperson is told even then.

use super::{RenderError, Rendered, Renderer, Sender, locale, render_parts, salutation};
use crate::plan::Language;
use chrono::DateTime;
use chrono_tz::Tz;
use minijinja::{Value, context};
use std::collections::BTreeMap;

/// The template folder of the digest.
pub const CALL_INSTEAD_TEMPLATE: &str = "call_instead";

/// One occasion of the digest, as templates see it (`rows[]`, see [`Renderer::render_call_instead`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallRow {
    /// The customer's id.
    pub customer_id: String,
    /// The customer's name (its id when the customer is no longer in the plans).
    pub customer: String,
    /// The contact to call: the one the occasion is for or about, else the primary contact;
    /// `None` when unknown (the customer or contact left the plans).
    pub contact: Option<String>,
    /// The contact's phone as written, if the plan has one.
    pub phone: Option<String>,
    /// The contact's address, if known.
    pub email: Option<String>,
    /// The occasion: the rule's name.
    pub occasion: String,
    /// The row's deadline, in the customer's time zone.
    pub deadline: DateTime<Tz>,
}

/// The deadline written out in `language`: `14. März 2027, 10:00 Uhr CET`,
/// `14 March 2027, 10:00 CET`.
pub fn deadline_text(at: DateTime<Tz>, language: Language) -> String {
    let date = locale::date(at.date_naive(), language);
    let (time, zone) = (at.format("%H:%M"), at.format("%Z"));
    match language {
        Language::De => format!("{date}, {time} Uhr {zone}"),
        Language::En => format!("{date}, {time} {zone}"),
    }
}

/// The language of one salesperson's digest: the one most of the listed customers use (each
/// customer counted once, whatever its number of rows); a tie is English.
pub fn digest_language<'a>(customers: impl IntoIterator<Item = (&'a str, Language)>) -> Language {
    let distinct: BTreeMap<&str, Language> = customers.into_iter().collect();
    let german = distinct.values().filter(|l| **l == Language::De).count();
    if german * 2 > distinct.len() { Language::De } else { Language::En }
}

fn row_value(r: &CallRow, language: Language) -> Value {
    context! {
        customer => &r.customer,
        customer_id => &r.customer_id,
        contact => r.contact.as_deref(),
        phone => r.phone.as_deref(),
        tel => r.phone.as_deref().map(crate::handover::tel_uri),
        email => r.email.as_deref(),
        occasion => &r.occasion,
        deadline => deadline_text(r.deadline, language),
        deadline_date => locale::date(r.deadline.date_naive(), language),
        deadline_time => r.deadline.format("%H:%M").to_string(),
        timezone => r.deadline.timezone().name(),
    }
}

impl Renderer {
    /// Renders a salesperson's "call instead" digest in `language` (`<lang>`, then `default`).
    /// Templates see `language`, `salutation` (the greeting for the salesperson), `owner.email`,
    /// `sender.{name,email}` and `rows[]` with `customer`, `customer_id`, `contact`, `phone`,
    /// `tel` (a `tel:` URI), `email` (each `none` when unknown), `occasion`, `deadline` (written
    /// out with the time and zone), `deadline_date`, `deadline_time` (`HH:MM`) and `timezone` (the
    /// customer's IANA zone).
    ///
    /// # Errors
    /// No `call_instead` variant, or the template fails (see [`Renderer::render`]).
    pub fn render_call_instead(
        &self,
        language: Language,
        owner: &str,
        rows: &[CallRow],
        sender: Sender,
    ) -> Result<Rendered, RenderError> {
        let variant = self.catalog.resolve("", CALL_INSTEAD_TEMPLATE, language, None).ok_or_else(|| {
            RenderError::NoVariant { template: CALL_INSTEAD_TEMPLATE.into(), wanted: language.code().into() }
        })?;
        let ctx = context! {
            language => language.code(),
            salutation => salutation::for_owner(language),
            owner => context! { email => owner },
            rows => rows.iter().map(|r| row_value(r, language)).collect::<Vec<_>>(),
            sender => context! { name => sender.name, email => sender.email },
        };
        render_parts(&self.env, variant, &ctx)
    }
}

/// The digest without any template: plain English text (and the same as escaped HTML, with the
/// phone numbers as `tel:` links), for when `call_instead` is missing or fails.
pub fn plain_call_instead(rows: &[CallRow]) -> Rendered {
    let n = rows.len();
    let occasions = if n == 1 { "1 occasion".to_string() } else { format!("{n} occasions") };
    let line = |r: &CallRow| {
        let mut who = r.contact.clone().unwrap_or_else(|| "-".into());
        if let Some(phone) = &r.phone {
            who.push_str(&format!(", {phone}"));
        }
        format!(
            "- {} ({}): {who}, {} (deadline {})",
            r.customer,
            r.customer_id,
            r.occasion,
            deadline_text(r.deadline, Language::En)
        )
    };
    let intro = format!(
        "More is due than the mail relay takes before these deadlines, so {} will not be emailed. \
         Please call them instead (or write to them yourself):",
        if n == 1 { "this greeting" } else { "these greetings" }
    );
    let text = format!("Hello,\n\n{intro}\n\n{}\n", rows.iter().map(line).collect::<Vec<_>>().join("\n"));
    let escape = |s: &str| s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;");
    let items: String = rows
        .iter()
        .map(|r| {
            let mut who = escape(r.contact.as_deref().unwrap_or("-"));
            if let Some(phone) = &r.phone {
                let tel = crate::handover::tel_uri(phone);
                who.push_str(&format!(", <a href=\"{}\">{}</a>", escape(&tel), escape(phone)));
            }
            format!(
                "<li>{} ({}): {who}, {} (deadline {})</li>\n",
                escape(&r.customer),
                escape(&r.customer_id),
                escape(&r.occasion),
                escape(&deadline_text(r.deadline, Language::En))
            )
        })
        .collect();
    Rendered {
        subject: format!("Call instead: {occasions} will not be emailed in time"),
        html: format!(
            "<!doctype html>\n<html><body><p>Hello,</p>\n<p>{}</p>\n<ul>\n{items}</ul>\n</body></html>\n",
            escape(&intro)
        ),
        text,
        variant: "(built in)".into(),
        fuel: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn row(phone: Option<&str>) -> CallRow {
        CallRow {
            customer_id: "acme".into(),
            customer: "ACME <GmbH>".into(),
            contact: Some("Anna".into()),
            phone: phone.map(Into::into),
            email: Some("anna@acme.example".into()),
            occasion: "birthday".into(),
            deadline: chrono_tz::Europe::Berlin.with_ymd_and_hms(2027, 3, 14, 10, 0, 0).unwrap(),
        }
    }

    #[test]
    fn the_language_most_customers_use_and_english_on_a_tie() {
        use Language::{De, En};
        assert_eq!(digest_language([("a", De), ("a", De), ("b", En)]), En, "customers, not rows: a tie");
        assert_eq!(digest_language([("a", De), ("b", De), ("c", En)]), De);
        assert_eq!(digest_language([("a", En)]), En);
        assert_eq!(digest_language([("a", De)]), De);
        assert_eq!(digest_language([]), En);
    }

    #[test]
    fn deadlines_are_written_in_the_customers_zone_and_language() {
        let at = chrono_tz::Europe::Berlin.with_ymd_and_hms(2027, 3, 14, 10, 0, 0).unwrap();
        assert_eq!(deadline_text(at, Language::En), "14 March 2027, 10:00 CET");
        assert_eq!(deadline_text(at, Language::De), "14. März 2027, 10:00 Uhr CET");
    }

    #[test]
    fn the_built_in_digest_lists_every_row_with_a_tel_link() {
        let r = plain_call_instead(&[row(Some("+49 89 1234-567")), row(None)]);
        assert_eq!(r.subject, "Call instead: 2 occasions will not be emailed in time");
        assert_eq!(r.text.lines().filter(|l| l.starts_with("- ")).count(), 2, "{}", r.text);
        assert!(
            r.text
                .contains("- ACME <GmbH> (acme): Anna, +49 89 1234-567, birthday (deadline 14 March 2027, 10:00 CET)")
        );
        assert!(r.html.contains("<a href=\"tel:+49891234567\">+49 89 1234-567</a>"), "{}", r.html);
        assert!(r.html.contains("ACME &lt;GmbH&gt;") && !r.html.contains("<GmbH>"), "{}", r.html);
        assert_eq!(plain_call_instead(&[row(None)]).subject, "Call instead: 1 occasion will not be emailed in time");
    }
}
