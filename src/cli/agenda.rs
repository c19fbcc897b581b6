//! `contactplan agenda`: what will be sent or assigned, computed by the daemon's own code.

use crate::occasion::{self, Occurrence, Recipient};
use crate::plan::Action;
use chrono::{DateTime, NaiveDate, NaiveTime, TimeDelta, Utc};
use std::path::Path;
use std::process::ExitCode;

/// Show what will be sent or assigned, when (local time and UTC), to whom and by which rule.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "The JSON format is a stable interface (fields documented in README.md, \"agenda --format json\").\n\nExamples:\n  contactplan agenda\n  contactplan agenda --from 2026-12-01 --days 31\n  contactplan agenda --customer acme --format json\n  contactplan agenda --capacity --from 2026-12-01 --days 31   # the busiest hours under [delivery] max_per_*, and what would miss its deadline"
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
    /// Instead of the items: the busiest hours and whether everything fits under the relay's
    /// limits (`[delivery] max_per_second/minute/hour/day`), simulating the claim (earliest
    /// deadline first) over the due times and deadlines. Always over every customer: the caps
    /// are shared, so one customer's forecast alone would say nothing (not with `--customer`).
    #[arg(long, conflicts_with = "customer")]
    capacity: bool,
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
    /// The rule's name (the JSON field keeps its documented name).
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
        kind: o.rule.trigger.kind().code(),
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
    use serde::ser::{SerializeSeq, Serializer};
    use std::io::Write;
    let config = match super::load_config(config_path) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    let ws = super::load_workspace(&config);
    let errors = ws.loaded.error_count();
    if errors > 0 {
        eprintln!("warning: {errors} plan problems; run `contactplan check`. Showing the valid plans.");
    }
    let plans = &ws.loaded.plans;
    let customers: &[std::sync::Arc<crate::plan::Customer>] = match args.customer.as_deref() {
        None => &plans.customers,
        Some(id) => match plans.get_shared(id) {
            Some(c) => std::slice::from_ref(c),
            None => {
                eprintln!("error: no valid plan for customer `{id}` (run `contactplan check`)");
                return Ok(ExitCode::from(1));
            }
        },
    };
    let tz = config.default_timezone;
    let from_day = args.from.unwrap_or_else(|| Utc::now().with_timezone(&tz).date_naive());
    let from: DateTime<Utc> = crate::calendar::resolve_local(tz, from_day.and_time(NaiveTime::MIN)).utc;
    let to =
        crate::calendar::resolve_local(tz, (from_day + TimeDelta::days(args.days.into())).and_time(NaiveTime::MIN)).utc;
    if args.capacity {
        let budget = budget_of(&config);
        let forecast = crate::capacity::forecast(&budget, customers, from, to);
        let mut out = std::io::stdout().lock();
        match args.format {
            Format::Json => writeln!(out, "{}", serde_json::to_string_pretty(&forecast)?)?,
            Format::Table => write!(out, "{}", crate::capacity::render(&forecast, &budget, tz))?,
        }
        return Ok(ExitCode::SUCCESS);
    }
    // Streamed slice by slice (see `occasion::agenda_each`): a year of 100,000 customers never
    // sits in memory at once.
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut count = 0usize;
    match args.format {
        Format::Json => {
            let mut ser = serde_json::Serializer::pretty(&mut out);
            let mut seq = ser.serialize_seq(None)?;
            occasion::agenda_each(customers, from, to, |slice| {
                slice.iter().try_for_each(|o| seq.serialize_element(&item(o)))
            })?;
            seq.end()?;
            writeln!(out)?;
        }
        Format::Table => {
            writeln!(
                out,
                "{:<25} {:<20} {:<16} {:<18} {:<6} {:<34} NOTES",
                "LOCAL", "UTC", "CUSTOMER", "OCCASION", "ACTION", "TO"
            )?;
            occasion::agenda_each(customers, from, to, |slice| -> std::io::Result<()> {
                for o in slice {
                    let i = item(o);
                    let notes: Vec<String> = o.adjustments.iter().map(|a| a.to_string()).collect();
                    writeln!(
                        out,
                        "{:<25} {:<20} {:<16} {:<18} {:<6} {:<34} {}",
                        i.due_local,
                        i.due_utc,
                        i.customer,
                        i.occasion,
                        i.action,
                        i.recipient,
                        notes.join("; ")
                    )?;
                }
                count += slice.len();
                Ok(())
            })?;
            writeln!(out, "{count} items from {from_day} for {} days", args.days)?;
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// The relay's caps as the daemon applies them (`[delivery] max_per_*`).
pub fn budget_of(config: &crate::config::Config) -> crate::store::Budget {
    crate::store::Budget {
        per_second: config.relay_limits.per_second,
        per_minute: config.relay_limits.per_minute,
        per_hour: config.relay_limits.per_hour,
        per_day: config.relay_limits.per_day,
    }
}
