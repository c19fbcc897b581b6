//! `contactplan check`: validate config, templates, playbooks and every plan.

use std::path::Path;
use std::process::ExitCode;

/// Validate the configuration, templates, playbooks and every plan; print all problems.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Exit status: 0 when everything is valid, 1 when any plan, playbook or template has an error, 2 when the config itself is unusable.\n\nExamples:\n  contactplan check\n  contactplan check --config /etc/contactplan/contactplan.toml\n  contactplan check --format json | jq '.[] | .file'"
)]
pub struct Args {
    /// Output format for the problems.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

use super::TextOrJson as Format;

pub fn run(config_path: &Path, args: Args) -> anyhow::Result<ExitCode> {
    // The secrets too, so an empty credential or an unreadable password file shows here.
    let (config, _edge) = match super::load_config_and_edge(config_path) {
        Ok(found) => found,
        Err(code) => return Ok(code),
    };
    let ws = super::load_workspace(&config);
    let mut diags = ws.diagnostics().to_vec();
    // Every template variant the plans use, rendered once for a real contact within the
    // daemon's bounds (a failure names the template file and line).
    diags.extend(crate::render::trial_run(&ws.loaded.plans, &ws.renderer, config.sender.for_templates()));
    if config.ops_email.is_some() {
        diags.extend(crate::render::trial_report(&ws.renderer, config.sender.for_templates()));
    }
    // With relay limits, salespeople may get the "call instead" email.
    if super::agenda::budget_of(&config).any() {
        diags.extend(crate::render::trial_call_instead(&ws.renderer, config.sender.for_templates()));
    }
    for customer in ws.renderer.catalog().override_customers() {
        if ws.loaded.plans.get(customer).is_none() {
            let dir = config.plans_dir.join(customer);
            diags.push(
                crate::diagnostics::Diagnostic::whole_file(
                    &dir,
                    format!("template overrides for `{customer}`, which no valid plan defines"),
                )
                .hint("a folder in the plans directory holds the templates of the customer with that id")
                .warning(),
            );
        }
    }
    diags.extend(capacity_warning(&config, &ws.loaded.plans));
    let diags = &diags;
    let errors = diags.iter().filter(|d| d.is_error()).count();
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(diags)?),
        Format::Text => {
            for d in diags {
                eprintln!("{d}");
            }
            println!(
                "checked {} and {}: {}, {}, {}",
                count(ws.loaded.plan_files, "plan file", "plan files"),
                count(ws.loaded.playbook_files, "playbook", "playbooks"),
                count(ws.loaded.plans.len(), "valid customer", "valid customers"),
                count(errors, "error", "errors"),
                count(diags.len() - errors, "warning", "warnings")
            );
        }
    }
    Ok(if errors == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// Days ahead `check` simulates the plans against the relay's limits.
pub const CAPACITY_DAYS: i64 = 14;

/// A warning when the plans do not fit the relay's limits over the next [`CAPACITY_DAYS`] days
/// (from the start of today in the default time zone): what `agenda --capacity` shows.
fn capacity_warning(
    config: &crate::config::Config,
    plans: &crate::plan::Plans,
) -> Option<crate::diagnostics::Diagnostic> {
    use chrono::{NaiveTime, TimeDelta, Utc};
    let budget = super::agenda::budget_of(config);
    if !budget.any() {
        return None;
    }
    let tz = config.default_timezone;
    let today = Utc::now().with_timezone(&tz).date_naive();
    let from = crate::calendar::resolve_local(tz, today.and_time(NaiveTime::MIN)).utc;
    let to = crate::calendar::resolve_local(tz, (today + TimeDelta::days(CAPACITY_DAYS)).and_time(NaiveTime::MIN)).utc;
    let f = crate::capacity::forecast(&budget, &plans.customers, from, to);
    if f.fits() {
        return None;
    }
    Some(
        crate::diagnostics::Diagnostic::whole_file(
            &config.path,
            format!(
                "the plans do not fit the relay's limits over the next {CAPACITY_DAYS} days: {} messages due under {}, {} would miss their deadline",
                crate::capacity::group(f.due),
                f.limits,
                crate::capacity::group(f.missed)
            ),
        )
        .hint(format!(
            "`contactplan agenda --capacity --days {CAPACITY_DAYS}` shows the busiest hours; raise the limit, spread over days with `spread` or within the day with `jitter`/`window`, or move the rule"
        ))
        .warning(),
    )
}

/// `n` with the noun's singular or plural: "1 error", "2 errors".
fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}
