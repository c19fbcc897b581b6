//! Command-line interface: one file per command; this file only declares and dispatches.

mod agenda;
mod check;
mod docs;
mod event;
mod explain;
mod handover;
mod orders;
mod outbox;
mod preview;
mod run;
mod status;

use clap::{Parser, Subcommand};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "contactplan",
    version,
    about = "Keeps B2B customer relationships warm: contact plans in, greetings and tasks out."
)]
#[command(
    after_help = "Examples:\n  contactplan check\n  contactplan agenda --days 14\n  contactplan preview --customer acme --occasion birthday\n  contactplan explain --customer acme --occasion birthday --year 2027\n  contactplan run --config /etc/contactplan/contactplan.toml\n  contactplan status\n  contactplan handover --customer acme --to bob\n  contactplan event --customer acme --kind complaint --note \"Delivery late\"\n  contactplan orders import orders.csv"
)]
/// The parsed command line: global options and one command.
pub struct Cli {
    /// The daemon configuration file.
    #[arg(long, global = true, env = "CONTACTPLAN_CONFIG", default_value = "config/contactplan.toml")]
    pub config: PathBuf,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// `--log-format`: how logs go to stderr when stderr is not the journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines
    Text,
    /// One JSON object per event
    Json,
}

/// `--format` of commands that print either for people or for scripts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TextOrJson {
    /// For people
    Text,
    /// For scripts (JSON)
    Json,
}

/// The commands. clap shows each variant's doc comment as the command's summary, so each one
/// repeats its `Args` doc comment word for word.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate the configuration, templates, playbooks and every plan; print all problems.
    Check(check::Args),
    /// Show what will be sent or assigned, when (local time and UTC), to whom and by which rule.
    Agenda(agenda::Args),
    /// Print the email (headers, text and HTML parts) that one occasion would produce.
    Preview(preview::Args),
    /// Explain, step by step, when each occurrence of one occasion is sent and why.
    Explain(explain::Args),
    /// Run the daemon: apply migrations, load plans, fill the outbox and send what is due.
    Run(run::Args),
    /// Show whether the daemon is ready, its last tick, the outbox, the next due item, plan
    /// problems and the last SMTP error.
    Status(status::Args),
    /// List outbox rows with their state and reason: what was sent, and why anything was not.
    Outbox(outbox::Args),
    /// Declare that another contact is now a customer's primary contact (a handover).
    Handover(handover::Args),
    /// Record a custom event of a customer (a complaint, …) for its `on = "event"` rules.
    Event(event::Args),
    /// Add orders (the business events behind `on = "orders"` milestones): one by hand or a CSV file.
    Orders(orders::Args),
    /// Print the man page (roff) on stdout.
    Man(docs::ManArgs),
    /// Print a shell completion script on stdout.
    Completions(docs::CompletionsArgs),
}

/// Runs a parsed command line; the exit code follows the command's outcome.
pub fn main(cli: Cli) -> ExitCode {
    crate::telemetry::init(cli.log_format == LogFormat::Json);
    if !matches!(cli.command, Command::Run(_) | Command::Status(_)) {
        quiet_on_closed_pipe();
    }
    let result = match cli.command {
        Command::Check(args) => check::run(&cli.config, args),
        Command::Agenda(args) => agenda::run(&cli.config, args),
        Command::Preview(args) => preview::run(&cli.config, args),
        Command::Explain(args) => explain::run(&cli.config, args),
        Command::Run(args) => run::run(&cli.config, args),
        Command::Status(args) => status::run(&cli.config, args),
        Command::Outbox(args) => outbox::run(&cli.config, args),
        Command::Handover(args) => handover::run(&cli.config, args),
        Command::Event(args) => event::run(&cli.config, args),
        Command::Orders(args) => orders::run(&cli.config, args),
        Command::Man(args) => docs::man(args),
        Command::Completions(args) => docs::completions(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Prints problems of the config file (or its secrets) and gives the exit code for them.
fn config_problems(diags: Vec<crate::diagnostics::Diagnostic>) -> ExitCode {
    for d in diags {
        eprint!("{d}");
    }
    ExitCode::from(2)
}

/// Loads the config (with the process environment's overrides) or prints its problems.
fn load_config(path: &std::path::Path) -> Result<crate::config::Config, ExitCode> {
    crate::config::Config::load(path, &crate::config::Environment::from_process()).map_err(config_problems)
}

/// Loads the config and everything else the process's surroundings provide (secrets, systemd,
/// host name), or prints their problems.
fn load_config_and_edge(path: &std::path::Path) -> Result<(crate::config::Config, crate::app::Edge), ExitCode> {
    let env = crate::config::Environment::from_process();
    let config = crate::config::Config::load(path, &env).map_err(config_problems)?;
    let edge = crate::app::Edge::from_process(&config, &env).map_err(config_problems)?;
    Ok((config, edge))
}

/// A progress bar on a terminal; hidden when stderr is piped.
fn progress(len: u64, what: &str) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
    if let Ok(style) = indicatif::ProgressStyle::with_template("{spinner} {msg} [{bar:30}] {pos}/{len} ({per_sec})") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_string());
    bar
}

/// Loads templates and plans with a progress bar; returns the workspace.
fn load_workspace(config: &crate::config::Config) -> crate::workspace::Workspace {
    let files = crate::plan::toml_files(&config.plans_dir).map_or(0, |f| f.len() as u64);
    let bar = progress(files, "loading plans");
    let ws = crate::workspace::Workspace::load(config, &|| bar.inc(1));
    bar.finish_and_clear();
    ws
}

/// A date argument (YYYY-MM-DD).
fn parse_date(s: &str) -> Result<chrono::NaiveDate, String> {
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(|_| format!("`{s}` is not a date; write YYYY-MM-DD"))
}

/// The customer and one of its rules (`--occasion NAME` names a rule), or the error message
/// (with the rule names it has) and exit code 1.
fn customer_rule<'a>(
    plans: &'a crate::plan::Plans,
    customer: &str,
    rule: &str,
) -> Result<(&'a crate::plan::Customer, &'a crate::plan::Rule), ExitCode> {
    let Some(c) = plans.get(customer) else {
        eprintln!("error: no valid plan for customer `{customer}` (run `contactplan check`)");
        return Err(ExitCode::from(1));
    };
    let Some(found) = c.rule(rule) else {
        let names: Vec<&str> = c.rules.iter().map(|r| &*r.name).collect();
        eprintln!("error: customer `{}` has no occasion `{rule}`; it has: {}", c.id, names.join(", "));
        return Err(ExitCode::from(1));
    };
    Ok((c, found))
}

/// For commands that only print (`check`, `agenda`, …): a reader that stops early
/// (`contactplan check | head`) ends the process quietly, as it does any Unix filter, instead
/// of a panic in `println!` (Rust ignores SIGPIPE, so writes fail with EPIPE). Not for `run`,
/// whose sockets must see EPIPE as an error, nor `status`, which talks to the daemon.
fn quiet_on_closed_pipe() {
    // SAFETY: restoring a signal's default disposition, before any thread is started.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
