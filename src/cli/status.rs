//! `contactplan status`: asks the running daemon (`GET /status` on `http_bind`); when it does
//! not answer, reads the outbox from the database directly and says so.

use crate::health::Status;
use std::path::Path;
use std::process::ExitCode;

/// Show whether the daemon is ready, its last tick, the outbox, the next due item, plan
/// problems and the last SMTP error.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Sources: the running daemon's HTTP listener (`http_bind`, with the API token from CONTACTPLAN_API_TOKEN or the credential `api-token` when one is set). When the daemon does not answer, the outbox part is read from the database and readiness, last tick, plan problems and the last SMTP error are unknown.\n\nExit status: 0 when the daemon is ready, 1 when it is not ready or unreachable, 2 when the config is unusable.\n\nExamples:\n  contactplan status\n  contactplan status --format json | jq .outbox\n  contactplan status --config /etc/contactplan/contactplan.toml"
)]
pub struct Args {
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

use super::TextOrJson as Format;

pub fn run(config_path: &Path, args: Args) -> anyhow::Result<ExitCode> {
    // Only the API token: `status` sends nothing, so it needs neither the SMTP password nor the
    // OAuth client secret.
    let config = match super::load_config(config_path) {
        Ok(config) => config,
        Err(code) => return Ok(code),
    };
    let secrets = match crate::config::Secrets::resolve_api_token(&config, &crate::config::Environment::from_process())
    {
        Ok(s) => s,
        Err(diags) => return Ok(super::config_problems(diags)),
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let (status, note) = runtime.block_on(async {
        let note = match config.http_bind {
            Some(addr) => {
                let token = secrets.api_token.as_ref().map(secrecy::ExposeSecret::expose_secret);
                let asked = crate::http::get(addr, "/status", token);
                match tokio::time::timeout(std::time::Duration::from_secs(5), asked).await {
                    Ok(Ok((200, body))) => {
                        return Ok((serde_json::from_str::<Status>(&body)?, format!("the daemon at {addr}")));
                    }
                    Ok(Ok((code, body))) => format!("the daemon at {addr} answered {code}: {}", body.trim()),
                    Ok(Err(e)) => format!("no daemon answers at {addr} ({e})"),
                    Err(_) => format!("the daemon at {addr} did not answer within 5 s"),
                }
            }
            None => "http_bind is off".into(),
        };
        let store = crate::store::Store::open_existing(&config.database_url).await?;
        let mut s = crate::health::outbox(&store, crate::store::secs(chrono::Utc::now())).await?;
        s.not_ready.push(note.clone());
        Ok::<_, anyhow::Error>((s, format!("the database ({note})")))
    })?;
    let out = match args.format {
        Format::Json => format!("{}\n", serde_json::to_string_pretty(&status)?),
        Format::Text => text(&status, &note),
    };
    // A reader that went away (`contactplan status | head -1`) is not an error worth a word.
    use std::io::Write;
    match std::io::stdout().lock().write_all(out.as_bytes()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        other => other?,
    }
    Ok(if status.ready { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn when(t: crate::store::UnixSecs) -> String {
    t.datetime().to_rfc3339()
}

/// The human-readable report.
fn text(s: &Status, source: &str) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let _ = writeln!(o, "source:          {source}");
    let ready = if s.ready { "yes".to_string() } else { format!("no — {}", s.not_ready.join("; ")) };
    let _ = writeln!(o, "ready:           {ready}");
    if let Some(i) = &s.instance {
        let _ = writeln!(o, "instance:        {i}");
    }
    let tick = match &s.last_tick {
        Some(t) => format!("{} ({})", t.at.to_rfc3339(), t.error.as_deref().unwrap_or("ok")),
        None if s.source == "daemon" => "none yet".into(),
        None => "unknown".into(),
    };
    let _ = writeln!(o, "last tick:       {tick}");
    let counts: Vec<String> = s.outbox.iter().map(|(state, n)| format!("{state} {n}")).collect();
    let _ = writeln!(o, "outbox:          {}", if counts.is_empty() { "empty".into() } else { counts.join(", ") });
    if let Some(b) = &s.backlog {
        let next = b
            .next
            .as_ref()
            .map_or("nothing open".into(), |n| format!("{} {} ({}, {})", when(n.due_utc), n.key, n.kind, n.state));
        let _ = writeln!(o, "next due:        {next}");
        let _ = writeln!(o, "oldest due:      {}", b.oldest_due.map_or("nothing overdue".into(), when));
    }
    match &s.plans {
        Some(p) => {
            let _ = writeln!(o, "plans:           {} customers, {} problem(s)", p.customers, p.problems.len());
            for pr in &p.problems {
                let kept = if pr.last_good_in_force { " (last good version in force)" } else { " (not served)" };
                let _ = writeln!(o, "  {}: {}{kept}", pr.location, pr.message);
            }
        }
        None => {
            let _ = writeln!(o, "plans:           unknown (run `contactplan check`)");
        }
    }
    let smtp = match &s.last_smtp_error {
        Some(e) => format!("{} {}: {}", e.at.to_rfc3339(), e.class, e.detail),
        None if s.source == "daemon" => "none".into(),
        None => "unknown".into(),
    };
    let _ = writeln!(o, "last SMTP error: {smtp}");
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::{PlanHealth, PlanProblem, SmtpErrorInfo};
    use crate::plan::TriggerKind;
    use crate::store::{Backlog, NextDue, RowState, UnixSecs};

    #[test]
    fn the_report_names_problems_and_whether_their_last_good_version_serves() {
        let at = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let s = Status {
            source: "daemon".into(),
            ready: false,
            not_ready: vec!["database unreachable: refused".into()],
            outbox: vec![(RowState::Accepted, 3), (RowState::Pending, 1)],
            backlog: Some(Backlog {
                depth: vec![],
                oldest_due: None,
                next: Some(NextDue {
                    key: "acme/birthday/contact:anna/2027-01-15".parse().unwrap(),
                    kind: TriggerKind::Birthday,
                    due_utc: UnixSecs(1_800_000_000),
                    state: RowState::Pending,
                }),
            }),
            plans: Some(PlanHealth {
                customers: 2,
                problems: vec![
                    PlanProblem {
                        location: "plans/a.toml:7:12".into(),
                        message: "unknown time zone `X`".into(),
                        last_good_in_force: true,
                    },
                    PlanProblem {
                        location: "plans/c.toml:1:1".into(),
                        message: "bad".into(),
                        last_good_in_force: false,
                    },
                ],
                loaded_at: Some(at),
            }),
            last_smtp_error: Some(SmtpErrorInfo { at, class: "transient".into(), detail: "451 greylisted".into() }),
            ..Status::default()
        };
        let t = text(&s, "the daemon at 127.0.0.1:9754");
        assert!(t.contains("ready:           no — database unreachable: refused"), "{t}");
        assert!(t.contains("outbox:          accepted 3, pending 1"), "{t}");
        assert!(
            t.contains(
                "next due:        2027-01-15T08:00:00+00:00 acme/birthday/contact:anna/2027-01-15 (birthday, pending)"
            ),
            "{t}"
        );
        assert!(t.contains("oldest due:      nothing overdue"), "{t}");
        assert!(t.contains("  plans/a.toml:7:12: unknown time zone `X` (last good version in force)"), "{t}");
        assert!(t.contains("  plans/c.toml:1:1: bad (not served)"), "{t}");
        assert!(t.contains("last SMTP error: 2027-01-15T08:00:00+00:00 transient: 451 greylisted"), "{t}");
        assert!(t.contains("last tick:       none yet"), "{t}");
    }
}
