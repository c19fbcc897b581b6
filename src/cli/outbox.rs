//! `contactplan outbox`: the rows of the outbox, read from the database, with the reason each
//! row is in its state — what was sent, and why anything was not.

use crate::store::{Row, RowState, Store};
use std::path::Path;
use std::process::ExitCode;

/// List outbox rows with their state and reason: what was sent, and why anything was not.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Reads the database named by `database_url` directly (the daemon may be running). Rows are ordered by due time.\n\nStates: pending, claimed, sending, retry, accepted, failed, missed, suppressed, unknown.\n\nExamples:\n  contactplan outbox --state suppressed\n  contactplan outbox --state failed --limit 20\n  contactplan outbox --format json | jq -r '.[] | select(.key | startswith(\"acme/\")) | .reason'"
)]
pub struct Args {
    /// Only rows in this state.
    #[arg(long, value_parser = parse_state)]
    state: Option<RowState>,
    /// At most this many rows.
    #[arg(long, default_value_t = 100)]
    limit: u32,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

use super::TextOrJson as Format;

fn parse_state(s: &str) -> Result<RowState, String> {
    RowState::parse(s).ok_or_else(|| {
        let all: Vec<&str> = RowState::ALL.iter().map(|s| s.code()).collect();
        format!("unknown state `{s}`; one of: {}", all.join(", "))
    })
}

pub fn run(config_path: &Path, args: Args) -> anyhow::Result<ExitCode> {
    // Reads the outbox: no secret is needed (an operator's shell has no OAuth client secret).
    let config = match super::load_config(config_path) {
        Ok(config) => config,
        Err(code) => return Ok(code),
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let rows = runtime.block_on(async {
        let store = Store::open_existing(&config.database_url).await?;
        store.rows(args.state, i64::from(args.limit)).await
    })?;
    let out = match args.format {
        Format::Json => format!("{}\n", serde_json::to_string_pretty(&rows)?),
        Format::Text => text(&rows),
    };
    use std::io::Write;
    std::io::stdout().lock().write_all(out.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

/// One block per row: due time, state, key; then the reason and the server's reply, if any.
fn text(rows: &[Row]) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    if rows.is_empty() {
        o.push_str("no rows\n");
    }
    for r in rows {
        let _ = writeln!(o, "{}  {:<10}  {}", r.due, r.state.code(), r.key);
        if let Some(reason) = &r.reason {
            let _ = writeln!(o, "    reason: {}", crate::diagnostics::escape_controls(reason));
        }
        if let Some(reply) = &r.smtp_reply {
            let _ = writeln!(o, "    reply:  {}", crate::diagnostics::escape_controls(reply));
        }
    }
    o
}
