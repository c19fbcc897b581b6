//! `contactplan agenda`: what will be sent or assigned, computed by the daemon's own code.

use crate::occasion::{self, Occurrence, Recipient};
use crate::plan::Action;
use chrono::{DateTime, NaiveDate, NaiveTime, TimeDelta, Utc};
use std::path::Path;
use std::process::ExitCode;

/// Show what will be sent or assigned, when (local time and UTC), to whom and by which rule.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "The JSON format is a stable interface (fields documented in README.md, \"agenda --format json\").\n\nExamples:\n  contactplan agenda\n  contactplan agenda --from 2026-12-01 --days 31\n  contactplan agenda --customer acme --format json"
)]
pub struct Args {
    /// First day (YYYY-MM-DD, in the default time zone); default: today.
    #[arg(long, value_parser = super::parse_date)]
    from: Option<NaiveDate>,
    /// Number of days to show.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=3660))]
    days: u32,
    /// Only this customer.
    #[arg(long)]
    customer: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    Table,
    Json,
}

/// One agenda line; the JSON field names are a documented interface.
#[derive(Debug, serde::Serialize)]
pub struct Item {
    pub due_utc: String,
    pub due_local: String,
    pub local_date: String,
    pub timezone: String,
    pub customer: String,
    pub occasion: String,
    pub kind: &'static str,
    pub action: &'static str,
    pub recipient: String,
    pub recipient_name: Option<String>,
    pub about: Option<String>,
    pub occasion_date: String,
    pub deadline_utc: String,
    pub key: String,
    pub adjustments: Vec<serde_json::Value>,
}

pub fn item(o: &Occurrence) -> Item {
    Item {
        due_utc: o.due.utc.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        due_local: o.due.local.to_rfc3339_opts(chrono::SecondsFormat::Secs, false),
        local_date: o.due.local.date_naive().to_string(),
        timezone: o.zone.name().to_string(),
        customer: o.customer.id.to_string(),
        occasion: o.rule.name.to_string(),
        kind: o.rule.trigger.kind(),
        action: match o.rule.action {
            Action::Email => "email",
            Action::Task => "task",
        },
        recipient: o.email().to_string(),
        recipient_name: match o.recipient {
            Recipient::Contact(c) => Some(c.name.to_string()),
            Recipient::Owner => None,
        },
        about: o.about.map(|c| c.id.to_string()),
        occasion_date: o.occasion_date.to_string(),
        deadline_utc: o.deadline.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        key: o.key(),
        adjustments: o
            .adjustments
            .iter()
            .map(|a| {
                let mut v = serde_json::to_value(a).unwrap_or_default();
                if let Some(obj) = v.as_object_mut() {
                    obj.insert("note".into(), a.to_string().into());
                }
                v
            })
            .collect(),
    }
}

pub fn run(config_path: &Path, args: Args) -> anyhow::Result<ExitCode> {
    let config = match super::load_config(config_path) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    let ws = super::load_workspace(&config);
    let errors = ws.loaded.error_count();
    if errors > 0 {
        eprintln!("warning: {errors} plan problems; run `contactplan check`. Showing the valid plans.");
    }
    let tz = config.default_timezone;
    let from_day = args.from.unwrap_or_else(|| Utc::now().with_timezone(&tz).date_naive());
    let from: DateTime<Utc> = crate::calendar::resolve_local(tz, from_day.and_time(NaiveTime::MIN)).utc;
    let to =
        crate::calendar::resolve_local(tz, (from_day + TimeDelta::days(args.days.into())).and_time(NaiveTime::MIN)).utc;
    let all = occasion::agenda(&ws.loaded.plans, from, to);
    let items: Vec<Item> =
        all.iter().filter(|o| args.customer.as_deref().is_none_or(|c| *o.customer.id == *c)).map(item).collect();
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&items)?),
        Format::Table => {
            println!(
                "{:<25} {:<20} {:<16} {:<18} {:<6} {:<34} NOTES",
                "LOCAL", "UTC", "CUSTOMER", "OCCASION", "ACTION", "TO"
            );
            for i in &items {
                let notes: Vec<&str> =
                    i.adjustments.iter().filter_map(|a| a.get("note").and_then(|n| n.as_str())).collect();
                println!(
                    "{:<25} {:<20} {:<16} {:<18} {:<6} {:<34} {}",
                    i.due_local,
                    i.due_utc,
                    i.customer,
                    i.occasion,
                    i.action,
                    i.recipient,
                    notes.join("; ")
                );
            }
            println!("{} items from {} for {} days", items.len(), from_day, args.days);
        }
    }
    Ok(ExitCode::SUCCESS)
}
