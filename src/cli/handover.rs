//! `contactplan handover`: a declared handover, recorded for the daemon like a plan edit.

use crate::handover::{ContactCard, State};
use crate::store::{Declared, Store, UnixSecs};
use chrono::{NaiveDate, NaiveTime, Utc};
use std::path::Path;
use std::process::ExitCode;

/// Declare that another contact is now a customer's primary contact (a handover).
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Records the handover in the database (a customer change with source `cli`); the running daemon sends the same brief, welcome and farewell as for a plan edit at its next tick, without a restart. --to must be a contact of the customer's plan; --from defaults to the stored primary contact (else the plan's). --date (default: today in the customer's time zone) is the event's day for the send-time policy; a future date is an error.\n\nUntil the plan is edited, it still names the previous primary contact: that is not a handover back. The daemon logs \"a handover to X was declared on D; the plan still names Y as primary: update the plan\" at every plan load until the plan names X (or another contact).\n\nExamples:\n  contactplan handover --customer acme --to bob\n  contactplan handover --customer acme --to bob --from anna --date 2026-11-27"
)]
pub struct Args {
    /// Customer id.
    #[arg(long)]
    customer: String,
    /// The new primary contact (a contact id of the customer's plan).
    #[arg(long)]
    to: String,
    /// The previous primary contact; default: the stored (else the plan's) primary contact.
    #[arg(long)]
    from: Option<String>,
    /// The day of the handover (YYYY-MM-DD); default: today in the customer's time zone.
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
    let contacts = || customer.contacts.iter().map(|c| &*c.id).collect::<Vec<_>>().join(", ");
    let Some(to) = customer.contact(&args.to) else {
        eprintln!("error: `{}` is not a contact of `{}`; its contacts are: {}", args.to, customer.id, contacts());
        return Ok(ExitCode::from(1));
    };
    // The edge reads the wall clock once; everything after works with this instant.
    let now = Utc::now();
    let today = now.with_timezone(&customer.timezone).date_naive();
    let day = args.date.unwrap_or(today);
    if day > today {
        eprintln!("error: --date {day} is in the future (today in {} is {today})", customer.timezone.name());
        return Ok(ExitCode::from(1));
    }
    let at = if day == today {
        now
    } else {
        crate::calendar::resolve_local(customer.timezone, day.and_time(NaiveTime::MIN)).utc
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let store = Store::connect(&config.database_url).await?;
        let from_id = match args.from.clone() {
            Some(f) => f,
            None => store.stored_primary(&customer.id).await?.unwrap_or_else(|| customer.primary_contact().id.to_string()),
        };
        if from_id == *to.id {
            eprintln!("error: `{}` is already the primary contact of `{}`", to.id, customer.id);
            return Ok(ExitCode::from(1));
        }
        let from = match customer.contact(&from_id) {
            Some(c) => ContactCard::of(c),
            None if args.from.is_some() => {
                eprintln!("error: `{from_id}` is not a contact of `{}`; its contacts are: {}", customer.id, contacts());
                return Ok(ExitCode::from(1));
            }
            // The stored primary has left the plan since: named by its id.
            None => ContactCard { id: from_id.clone(), ..Default::default() },
        };
        let declared = store
            .declare_handover(&State::of(customer), &from, &ContactCard::of(to), day, UnixSecs::from(at), UnixSecs::from(now))
            .await?;
        Ok(match declared {
            Declared::Recorded(seq) => {
                println!(
                    "recorded: handover {seq} of `{}` from `{}` to `{}` on {day}; the daemon sends the brief, welcome and farewell at its next tick",
                    customer.id, from.id, to.id
                );
                if customer.primary_contact().id != to.id {
                    println!(
                        "note: the plan still names `{}` as primary: update the plan ({})",
                        customer.primary_contact().id,
                        customer.source.display()
                    );
                }
                ExitCode::SUCCESS
            }
            Declared::AlreadyPrimary => {
                eprintln!("error: `{}` is already the primary contact of `{}`", to.id, customer.id);
                ExitCode::from(1)
            }
        })
    })
}
