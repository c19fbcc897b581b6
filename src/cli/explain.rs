//! `contactplan explain`: how the send time of each occurrence of one rule was derived, step
//! by step, by the same pipeline the daemon uses; and which occasions are not sent, and why.

use crate::calendar::Adjustment;
use crate::occasion::{self, Explained, Occurrence, Recipient};
use crate::plan::{Customer, Lead, Rule, Trigger};
use chrono::{Datelike, NaiveDate, NaiveTime, Utc};
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

/// Explain, step by step, when each occurrence of one occasion is sent and why.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Lists every occurrence sent in the given year (in the customer's time zone), each with the steps that \
derived its time: occasion date, leap-day policy, lead time, closed days (weekend, holidays, closures, blackouts), \
send window, DST and per-recipient jitter; then its deadline and outbox key. Occasions that are not sent (a skipped \
closed day, Feb 29 under leap_only, crontab firings that fall on the same instant) are listed with the reason.\n\n\
Examples:\n  contactplan explain --customer mueller-maschinenbau --occasion birthday\n  contactplan explain --customer \
mueller-maschinenbau --occasion checkin --year 2027\n  contactplan explain --customer acme --occasion birthday-call \
--contact anna --year 2028"
)]
pub struct Args {
    /// Customer id.
    #[arg(long)]
    customer: String,
    /// Occasion (rule) name.
    #[arg(long = "occasion")]
    rule: String,
    /// Year to explain (sends in that local year); default: the current year.
    #[arg(long, value_parser = clap::value_parser!(i32).range(1900..=9999))]
    year: Option<i32>,
    /// Only occurrences about this contact id.
    #[arg(long)]
    contact: Option<String>,
    /// Show at most this many entries (crontab rules can fire thousands of times a year).
    #[arg(long, default_value_t = 100)]
    limit: usize,
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
    let zone = customer.timezone;
    let year = args.year.unwrap_or_else(|| Utc::now().with_timezone(&zone).year());
    let start = |y: i32| {
        let day = NaiveDate::from_ymd_opt(y, 1, 1).unwrap_or_default();
        crate::calendar::resolve_local(zone, day.and_time(NaiveTime::MIN)).utc
    };
    let mut entries = occasion::explain(customer, rule, start(year), start(year + 1));
    entries.retain(|e| {
        let about = match e {
            Explained::Due(o) => o.about,
            Explained::Skipped(s) => s.about,
        };
        args.contact.as_deref().is_none_or(|c| about.is_some_and(|a| *a.id == *c))
    });
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    header(&mut out, customer, rule, year)?;
    if entries.is_empty() {
        writeln!(out, "\nNothing is sent in {year}.")?;
    }
    for (n, e) in entries.iter().take(args.limit).enumerate() {
        match e {
            Explained::Due(o) => due(&mut out, n + 1, o)?,
            Explained::Skipped(s) => {
                let about = s.about.map_or(String::new(), |c| format!(" about {}", c.id));
                writeln!(out, "\n{}. {} — {}{about}: NOT SENT", n + 1, s.date, s.what)?;
                for a in &s.adjustments {
                    writeln!(out, "   {:<12} {a}", step_name(a))?;
                }
                writeln!(out, "   {:<12} {}", "skipped", s.reason)?;
            }
        }
    }
    if entries.len() > args.limit {
        writeln!(out, "\n… {} more (use --limit)", entries.len() - args.limit)?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn header(out: &mut impl Write, customer: &Customer, rule: &Rule, year: i32) -> std::io::Result<()> {
    let trigger = match &rule.trigger {
        Trigger::Every { cron } => format!("every: cron \"{}\"", cron.as_str()),
        other => other.kind().to_string(),
    };
    let before = match rule.before {
        Lead::None => "none".to_string(),
        Lead::Days(n) => format!("{n}d"),
        Lead::BusinessDays(n) => format!("{n} business days"),
    };
    writeln!(out, "customer  {} ({})", customer.id, customer.name)?;
    writeln!(
        out,
        "occasion  {} — on {trigger}; send {}; at {}; before {before}",
        rule.name,
        match rule.action {
            crate::plan::Action::Email => "email",
            crate::plan::Action::Task => "task",
        },
        rule.at.format("%H:%M"),
    )?;
    writeln!(out, "zone      {} (customer; contacts may override)", customer.timezone.name())?;
    writeln!(out, "calendar  {}", customer.calendar_for(rule).describe())?;
    writeln!(out, "year      {year} (sends in that local year)")
}

fn step_name(a: &Adjustment) -> &'static str {
    match a {
        Adjustment::LeapDay { .. } => "leap day",
        Adjustment::LeadTime { .. } => "lead time",
        Adjustment::BusinessLeadTime { .. } => "lead time",
        Adjustment::Closed { .. } => "closed day",
        Adjustment::WindowClamp { .. } => "window",
        Adjustment::DstGap { .. } | Adjustment::DstFold { .. } => "DST",
        Adjustment::Spread { .. } => "spread",
        Adjustment::Jitter { .. } => "jitter",
    }
}

fn due(out: &mut impl Write, n: usize, o: &Occurrence) -> std::io::Result<()> {
    let to = match o.recipient {
        Recipient::Contact(c) => format!("{} <{}>", c.name, c.email),
        Recipient::Owner => format!("owner <{}>", o.customer.owner),
    };
    let about = o.about.map_or(String::new(), |c| format!(" about {}", c.id));
    writeln!(out, "\n{n}. {} — {} to {to}{about}", o.due.local.format("%Y-%m-%d %H:%M:%S %:z"), o.rule.name)?;
    let occasion = match o.nominal {
        occasion::Nominal::Date(d) => format!("{} on {d} ({})", o.rule.trigger.kind(), d.format("%a")),
        occasion::Nominal::Wall(t) => format!("crontab fires at {} local", t.format("%Y-%m-%d %H:%M (%a)")),
    };
    writeln!(out, "   {:<12} {occasion}", "occasion")?;
    let time_steps = |a: &&Adjustment| {
        matches!(
            a,
            Adjustment::WindowClamp { .. }
                | Adjustment::DstGap { .. }
                | Adjustment::DstFold { .. }
                | Adjustment::Jitter { .. }
        )
    };
    for a in o.adjustments.iter().filter(|a| !time_steps(a)) {
        writeln!(out, "   {:<12} {a}", step_name(a))?;
    }
    if matches!(o.nominal, occasion::Nominal::Date(_)) {
        writeln!(out, "   {:<12} at {} local ({})", "send time", o.rule.at.format("%H:%M"), o.zone.name())?;
    } else {
        writeln!(out, "   {:<12} {}", "zone", o.zone.name())?;
    }
    for a in o.adjustments.iter().filter(time_steps) {
        writeln!(out, "   {:<12} {a}", step_name(a))?;
    }
    writeln!(
        out,
        "   {:<12} {} = {}",
        "due",
        o.due.local.to_rfc3339_opts(chrono::SecondsFormat::Secs, false),
        o.due.utc.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    )?;
    let why = match (o.rule.deadline, &o.rule.trigger) {
        (Some(_), _) => "the rule's deadline after the send time",
        (None, Trigger::Every { .. }) => "the next firing or the end of the local day, whichever is first",
        (None, _) => "the end of the local send day",
    };
    writeln!(out, "   {:<12} {} ({why})", "deadline", o.deadline.with_timezone(&o.zone).to_rfc3339())?;
    writeln!(out, "   {:<12} {}", "outbox key", o.key())
}
