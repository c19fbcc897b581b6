//! `contactplan preview`: the exact message the daemon would send for one occasion.

use crate::occasion::{self, Occurrence};
use crate::render::Input;
use chrono::{NaiveDate, NaiveTime, TimeDelta, Utc};
use std::path::Path;
use std::process::ExitCode;

/// Print the email (headers, text and HTML parts) that one occasion would produce.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "The next occurrence on or after --date is shown (searching up to 4 years ahead). For an order milestone rule (on = \"orders\"), a sample: its first threshold reached on --date, with sample totals. For a handover or phase rule (on = \"handover\", \"phase\"), a sample change on --date with sample figures. For on = \"event\", \"inactivity\" and \"end\" rules, a sample event with a note, a sample quiet spell, or the end, on --date.\n\nExamples:\n  contactplan preview --customer acme --occasion birthday\n  contactplan preview --customer acme --occasion anniversary --date 2027-01-01\n  contactplan preview --customer acme --occasion birthday --contact anna --raw > anna.eml\n  contactplan preview --customer acme --occasion hundredth-order"
)]
pub struct Args {
    /// Customer id.
    #[arg(long)]
    customer: String,
    /// Occasion (rule) name.
    #[arg(long = "occasion")]
    rule: String,
    /// Look for the first occurrence on or after this date (YYYY-MM-DD); default: today.
    #[arg(long, value_parser = super::parse_date)]
    date: Option<NaiveDate>,
    /// Only occurrences about this contact id.
    #[arg(long)]
    contact: Option<String>,
    /// Print the raw RFC 5322 message instead of the decoded parts.
    #[arg(long)]
    raw: bool,
}

/// The occurrence shown.
struct Picked<'a> {
    input: Input<'a>,
    key: String,
    due: chrono::DateTime<Utc>,
    zone: chrono_tz::Tz,
    adjustments: Vec<String>,
    /// Said above the message when it is a sample.
    note: Option<&'static str>,
}

pub fn run(config_path: &Path, args: Args) -> anyhow::Result<ExitCode> {
    let config = match super::load_config(config_path) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    let ws = super::load_workspace(&config);
    let (customer, rule) = match super::customer_rule(&ws.loaded.plans, &args.customer, &args.rule) {
        Ok(found) => found,
        Err(code) => return Ok(code),
    };
    let day = args.date.unwrap_or_else(|| Utc::now().with_timezone(&customer.timezone).date_naive());
    let from = crate::calendar::resolve_local(customer.timezone, day.and_time(NaiveTime::MIN)).utc;
    let facts = crate::render::sample_milestone(customer, rule, chrono::Datelike::year(&day));
    let handover = crate::render::sample_handover(customer, rule, chrono::Datelike::year(&day));
    let moment = crate::render::sample_moment(rule, day);
    let mut found: Vec<Occurrence> = Vec::new();
    let mut events = Vec::new();
    let moment_kind = match rule.trigger {
        crate::plan::Trigger::Event { .. } => Some((occasion::EventKind::Custom, "sample-1".to_string())),
        crate::plan::Trigger::Inactivity { .. } => Some((occasion::EventKind::Inactivity, day.to_string())),
        crate::plan::Trigger::End => Some((occasion::EventKind::End, customer.ended.unwrap_or(day).to_string())),
        _ => None,
    };
    if let Some((kind, id)) = &moment_kind {
        // A sample event of the rule's kind with a note, a quiet spell, or the end, on that day.
        events = occasion::event::occurrences(customer, rule, *kind, id, from);
        events.retain(|o| args.contact.as_deref().is_none_or(|c| o.about.is_some_and(|a| *a.id == *c)));
    } else if let Some(h) = &handover {
        // A sample change on that day: the departed contact is the sample's (a contact of the
        // plan, when there is another one).
        let kind = match rule.trigger {
            crate::plan::Trigger::Phase { .. } => occasion::EventKind::Phase,
            _ => occasion::EventKind::Handover,
        };
        let about: Vec<Option<&crate::plan::Contact>> = match rule.target {
            crate::plan::Target::New => vec![customer.contact(&h.to)],
            crate::plan::Target::Departed => {
                vec![h.departed.as_ref().and_then(|d| customer.contact(&d.id)).or(Some(customer.primary_contact()))]
            }
            _ => Vec::new(),
        };
        events = if about.is_empty() {
            occasion::event::occurrences(customer, rule, kind, "1", from)
        } else {
            occasion::event::occurrences_about(customer, rule, kind, "1", from, about)
        };
        events.retain(|o| args.contact.as_deref().is_none_or(|c| o.about.is_some_and(|a| *a.id == *c)));
    } else if let Some(f) = &facts {
        // An event rule has no date to look for: its message for a sample event on that day.
        let id = f.threshold.to_string();
        events = occasion::event::occurrences(customer, rule, f.measure, &id, from);
        events.retain(|o| args.contact.as_deref().is_none_or(|c| o.about.is_some_and(|a| *a.id == *c)));
    } else {
        occasion::for_rule(customer, rule, from, from + TimeDelta::days(4 * 366), &mut found);
        found.retain(|o| args.contact.as_deref().is_none_or(|c| o.about.is_some_and(|a| *a.id == *c)));
        found.sort_by_key(|o| o.due.utc);
    }
    let picked = match (found.first(), events.first()) {
        (Some(o), _) => Picked {
            input: Input::from(o),
            key: o.key(),
            due: o.due.utc,
            zone: o.zone,
            adjustments: o.adjustments.iter().map(ToString::to_string).collect(),
            note: None,
        },
        (None, Some(e)) => Picked {
            input: Input {
                customer,
                rule,
                about: e.about,
                recipient: e.recipient,
                occasion_date: e.occasion_date,
                years: None,
                milestone: facts.as_ref(),
                handover: handover.as_ref(),
                moment: moment.as_ref(),
            },
            key: e.key.to_string(),
            due: e.due,
            zone: e.zone,
            adjustments: Vec::new(),
            note: Some(if moment_kind.is_some() {
                "a sample event with a note, a sample quiet spell (orders about every 30 days), or the end on --date"
            } else if handover.is_some() {
                "a sample change (a handover from another contact to the primary one, or a phase change; sample figures)"
            } else {
                "a sample order milestone (the rule's first threshold, sample totals)"
            }),
        },
        (None, None) => {
            eprintln!("error: occasion `{}` of `{}` does not occur within 4 years of {day}", rule.name, customer.id);
            return Ok(ExitCode::from(1));
        }
    };
    let rendered = ws.renderer.render(&picked.input, config.sender.for_templates())?;
    let key = &picked.key;
    let message_id = crate::mail::message_id(key, config.sender.email.domain());
    let to = match picked.input.recipient {
        occasion::Recipient::Contact(c) => &c.email,
        occasion::Recipient::Owner => &customer.owner,
    };
    let to_name = match picked.input.recipient {
        occasion::Recipient::Contact(c) => Some(&*c.name),
        occasion::Recipient::Owner => None,
    };
    let reply_to = match picked.input.recipient {
        occasion::Recipient::Contact(_) => Some(crate::mail::Party { name: None, address: customer.owner.as_str() }),
        occasion::Recipient::Owner => None,
    };
    let message = match crate::mail::build(&crate::mail::Outgoing {
        from: config.sender.party(),
        to: crate::mail::Party { name: to_name, address: to.as_str() },
        cc: None,
        reply_to,
        subject: &rendered.subject,
        text: &rendered.text,
        html: &rendered.html,
        message_id: &message_id,
        date: picked.due.with_timezone(&config.sender.timezone).fixed_offset(),
    }) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("error: {e} (run `contactplan check`)");
            return Ok(ExitCode::from(1));
        }
    };
    if args.raw {
        use std::io::Write;
        std::io::stdout().write_all(&message.formatted())?;
        return Ok(ExitCode::SUCCESS);
    }
    println!("Due:        {} ({})", picked.due.with_timezone(&picked.zone).to_rfc3339(), picked.zone.name());
    println!("Key:        {key}");
    println!("Template:   {}", rendered.variant);
    if let Some(note) = picked.note {
        println!("Sample:     {note}");
    }
    for a in &picked.adjustments {
        println!("Adjusted:   {a}");
    }
    for name in ["From", "To", "Reply-To", "Subject", "Message-ID", "Date"] {
        if let Some(value) = message.headers().get_raw(name) {
            println!("{name}: {value}");
        }
    }
    println!("\n----- text/plain -----\n{}", rendered.text);
    println!("\n----- text/html -----\n{}", rendered.html);
    Ok(ExitCode::SUCCESS)
}
