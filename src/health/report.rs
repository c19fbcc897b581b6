//! The daemon's status report, as `/readyz`, `/status` and `contactplan status` give it. From the
//! running daemon: readiness, last tick, plan problems, last SMTP error, plus the outbox as the
//! database sees it. From the database alone (daemon unreachable): only the outbox part.

use super::{Health, PlanHealth, SmtpErrorInfo, TickInfo};
use crate::store::{Backlog, RowState, Store, UnixSecs};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How long a readiness probe waits for the database.
pub const DB_TIMEOUT: Duration = Duration::from_secs(2);

/// Everything `status` shows. Fields are only ever added.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Status {
    /// `daemon` (asked over HTTP) or `database` (read directly; the daemon was unreachable).
    pub source: String,
    /// Ready: plans loaded, database reachable, last tick recent and successful, and (XOAUTH2)
    /// the OAuth token renewed and accepted.
    pub ready: bool,
    /// Why not ready (empty when ready).
    pub not_ready: Vec<String>,
    /// The daemon's instance id (host-pid-start), as used in leases.
    pub instance: Option<String>,
    /// The last finished tick (daemon only).
    pub last_tick: Option<TickInfo>,
    /// Outbox rows by state (all states present in the database).
    pub outbox: Vec<(RowState, i64)>,
    /// Open rows, the oldest due one and the next to send.
    pub backlog: Option<Backlog>,
    /// The last (re)load: customers served and problems (with last-good flags).
    pub plans: Option<PlanHealth>,
    /// The most recent transport failure (daemon only).
    pub last_smtp_error: Option<SmtpErrorInfo>,
    /// The relay's limits: effective rate and sessions, configured caps, a pause (daemon only).
    #[serde(default)]
    pub relay: Option<super::RelayStatus>,
}

/// Readiness: the reasons the daemon is not ready (empty: ready).
pub async fn not_ready(health: &Health, store: &Store) -> Vec<String> {
    let mut reasons = Vec::new();
    if !health.is_ready() {
        reasons.push("starting or stopping".to_string());
    }
    if let Err(why) = ping(store).await {
        reasons.push(why);
    }
    if let Err(why) = health.tick_health() {
        reasons.push(why);
    }
    if let Some(why) = health.oauth_problem() {
        reasons.push(why);
    }
    reasons
}

/// One bounded round trip to the database.
///
/// # Errors
/// The reason as a sentence: the database returned an error, or did not answer within
/// [`DB_TIMEOUT`].
pub async fn ping(store: &Store) -> Result<(), String> {
    match tokio::time::timeout(DB_TIMEOUT, store.ping()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("database unreachable: {e:#}")),
        Err(_) => Err(format!("database did not answer within {} s", DB_TIMEOUT.as_secs())),
    }
}

/// The full status from inside the daemon; `now` is the daemon clock's, `instance` the
/// daemon's lease owner id.
pub async fn of_daemon(health: &Health, store: &Store, now: UnixSecs, instance: &str) -> Status {
    let not_ready = not_ready(health, store).await;
    let mut s = outbox(store, now).await.unwrap_or_default();
    s.source = "daemon".into();
    s.ready = not_ready.is_empty();
    s.not_ready = not_ready;
    s.instance = Some(instance.to_string());
    s.last_tick = health.last_tick();
    s.plans = Some(health.plans());
    s.last_smtp_error = health.last_smtp_error();
    s.relay = health.relay();
    s
}

/// The outbox part, read from the database.
/// `now` is the clock's (for the oldest due row).
///
/// # Errors
/// A database error, or no answer within five times [`DB_TIMEOUT`] (10 s).
pub async fn outbox(store: &Store, now: UnixSecs) -> anyhow::Result<Status> {
    let read = async { Ok::<_, anyhow::Error>((store.counts().await?, store.backlog(now).await?)) };
    let (outbox, backlog) =
        tokio::time::timeout(DB_TIMEOUT * 5, read).await.map_err(|_| anyhow::anyhow!("database timed out"))??;
    Ok(Status { source: "database".into(), outbox, backlog: Some(backlog), ..Status::default() })
}
