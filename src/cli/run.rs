//! `contactplan run`: the daemon.

use crate::app::Application;
use crate::clock::SystemClock;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

/// Run the daemon: apply migrations, load plans, fill the outbox and send what is due.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Signals: SIGTERM/SIGINT stop after the message in flight; SIGHUP reloads plans, playbooks and templates (so does saving a file in their directories).\n\nUnder systemd (Type=notify) it reports READY=1 once migrations ran and plans are loaded, RELOADING=1/READY=1 around reloads, and pings the watchdog from the scheduler loop.\n\nExamples:\n  contactplan run\n  RUST_LOG=contactplan=debug contactplan run --config /etc/contactplan/contactplan.toml\n  contactplan run --log-format json"
)]
pub struct Args {}

pub fn run(config_path: &Path, _args: Args) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        use tokio::signal::unix::{SignalKind, signal};
        // Every signal the daemon handles is taken from here on, before the start-up
        // (migrations, loading every plan) that can take seconds: a SIGTERM during it ends the
        // daemon cleanly once it is up (exit 0), and a SIGHUP waits for the start-up and then
        // reloads, instead of killing the process by the signal's default action.
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut hup = signal(SignalKind::hangup())?;
        let (config, edge) = match super::load_config_and_edge(config_path) {
            Ok(found) => found,
            Err(code) => return Ok(code),
        };
        let app = Application::build(config, Arc::new(SystemClock), edge).await?;
        let reloads = app.reload_requests();
        let forward_hup = tokio::spawn(async move {
            while hup.recv().await.is_some() {
                if reloads.send(crate::reload::Request::full("SIGHUP")).await.is_err() {
                    break;
                }
            }
        });
        app.run_until_stopped(async move {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        })
        .await?;
        forward_hup.abort();
        Ok::<_, anyhow::Error>(ExitCode::SUCCESS)
    })
}
