//! `contactplan event`: records a custom event (a complaint, …) for a customer.

use crate::events::{Event, generated_id};
use crate::plan::Trigger;
use crate::store::{Store, UnixSecs};
use chrono::{NaiveDate, Utc};
use std::path::Path;
use std::process::ExitCode;

/// Record a custom event of a customer (a complaint, …) for its `on = "event"` rules.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "The running daemon sends what the customer's `on = \"event\"` rules with `event = \"<kind>\"` say (usually a task to the salesperson, with `cc` a copy) at its next tick. Recording the same --id again records nothing (safe to retry); without --id a unique id is generated and printed. --kind is one lowercase word; --note reaches the templates as `event.note`; --date (default: today in the customer's time zone) may not be in the future.\n\nExamples:\n  contactplan event --customer acme --kind complaint --note \"Delivery two weeks late\"\n  contactplan event --customer acme --kind complaint --id ticket-4711\n  contactplan event --customer acme --kind visit --date 2026-11-27"
)]
pub struct Args {
    /// Customer id.
    #[arg(long)]
    customer: String,
    /// What happened: one lowercase word, matched by `event = "…"` of the rules.
    #[arg(long)]
    kind: String,
    /// A note for the salesperson (one line).
    #[arg(long)]
    note: Option<String>,
    /// The event's id (e.g. a ticket number); the same id is recorded once. Default: generated.
    #[arg(long)]
    id: Option<String>,
    /// The day it happened (YYYY-MM-DD); default: today in the customer's time zone.
    #[arg(long, value_parser = super::parse_date)]
    date: Option<NaiveDate>,
}

pub fn run(config_path: &Path, args: Args) -> anyhow::Result<ExitCode> {
    let config = match super::load_config(config_path) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    let ws = super::load_workspace(&config);
    let Some(customer) = ws.loaded.plans.get(&args.customer) else {
        eprintln!("error: no valid plan for customer `{}` (run `contactplan check`)", args.customer);
        return Ok(ExitCode::from(1));
    };
    // The edge reads the wall clock (and the process id, for a generated id) once.
    let now = Utc::now();
    let today = now.with_timezone(&customer.timezone).date_naive();
    let day = args.date.unwrap_or(today);
    let entropy = now.timestamp_nanos_opt().unwrap_or_default() as u64 ^ u64::from(std::process::id()) << 32;
    let id = args.id.clone().unwrap_or_else(|| generated_id(&args.kind, day, entropy));
    let event = match Event::new(&customer.id, &id, &args.kind, args.note.as_deref(), day, today) {
        Ok(e) => e,
        Err(why) => {
            eprintln!("error: {why}");
            return Ok(ExitCode::from(1));
        }
    };
    let rules: Vec<&str> = customer
        .rules
        .iter()
        .filter(|r| matches!(&r.trigger, Trigger::Event { event: k, .. } if **k == *event.kind))
        .map(|r| &*r.name)
        .collect();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let recorded = runtime.block_on(async {
        Store::connect(&config.database_url).await?.record_event(&event, "cli", UnixSecs::from(now)).await
    })?;
    if recorded {
        println!("recorded: event `{}` ({}) of `{}` on {day}", event.id, event.kind, customer.id);
    } else {
        println!("event `{}` of `{}` was recorded before: nothing new", event.id, customer.id);
    }
    if rules.is_empty() {
        println!(
            "note: no rule of `{}` has on = \"event\" with event = \"{}\": nothing will be sent",
            customer.id, event.kind
        );
    }
    Ok(ExitCode::SUCCESS)
}
