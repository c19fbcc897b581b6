//! Delivering one claimed batch: `sessions` workers (one per SMTP session) take rows from a
//! shared queue. A committer groups their requests: one transaction for whatever arrived while
//! the previous commit ran. Each request records the worker's last outcome and moves its next
//! row from `claimed` to `sending`. The worker transmits a row only after that commit, and only
//! if the row is still its own. So at any instant a session has at most one row whose outcome a
//! crash could leave unknown (the RFC 1047 window, no wider), and a crashed batch's untouched
//! rows are still `claimed`: never attempted, safe to send even under at_most_once.

use super::deliver::{self, Delivery};
use super::{Daemon, Snapshot, TickReport};
use crate::store::{Claimed, Outcome, secs};
use std::collections::VecDeque;
use std::sync::Mutex;
use tokio::sync::{mpsc, oneshot, watch};

/// One worker's commit request: its last outcome and/or the row it wants to send next.
struct Pending {
    finished: Option<(Claimed, Delivery)>,
    start: Option<(i64, i64)>,
    /// Whether `start` is now `sending` (false: lost its claim); an error if the commit failed.
    done: oneshot::Sender<Result<bool, ()>>,
}

/// Most outcomes recorded in one transaction.
const MAX_GROUP: usize = 256;

pub async fn deliver_batch(
    daemon: &Daemon,
    snap: &Snapshot,
    batch: Vec<Claimed>,
    stop: &watch::Receiver<bool>,
) -> anyhow::Result<TickReport> {
    let sessions = daemon.mailer.sessions().max(1);
    let queue = Mutex::new(VecDeque::from(batch));
    let report = Mutex::new(TickReport::default());
    let (tx, mut rx) = mpsc::channel::<Pending>(sessions * 2);

    let committer = async {
        let mut group: Vec<Pending> = Vec::with_capacity(MAX_GROUP);
        while let Some(first) = rx.recv().await {
            group.push(first);
            while group.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(p) => group.push(p),
                    Err(_) => break,
                }
            }
            let outcomes: Vec<(i64, i64, Outcome)> = group
                .iter()
                .filter_map(|p| p.finished.as_ref().map(|(row, d)| (row.id, row.fence, d.outcome.clone())))
                .collect();
            let starts: Vec<(i64, i64)> = group.iter().filter_map(|p| p.start).collect();
            let result = daemon.store.finish_batch(&outcomes, &starts, secs(daemon.clock.now())).await;
            match &result {
                Ok(r) => {
                    for p in group.drain(..) {
                        let started = p.start.is_some_and(|(id, _)| r.started.contains(&id));
                        let _ = p.done.send(Ok(started));
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, rows = group.len(), "could not record outcomes; the rows stay claimed and are taken over after their lease");
                    for p in group.drain(..) {
                        let _ = p.done.send(Err(()));
                    }
                }
            }
            result?;
        }
        Ok::<(), anyhow::Error>(())
    };

    let worker = |tx: mpsc::Sender<Pending>| {
        let queue = &queue;
        let report = &report;
        async move {
            let mut finished: Option<(Claimed, Delivery)> = None;
            loop {
                let next =
                    if *stop.borrow() { None } else { queue.lock().unwrap_or_else(|p| p.into_inner()).pop_front() };
                if finished.is_none() && next.is_none() {
                    break;
                }
                let (done, reply) = oneshot::channel();
                let start = next.as_ref().map(|r| (r.id, r.fence));
                if tx.send(Pending { finished: finished.take(), start, done }).await.is_err() {
                    break;
                }
                // Durable before anything else happens on this session.
                let started = match reply.await {
                    Ok(Ok(started)) => started,
                    _ => {
                        if let Some(row) = next {
                            queue.lock().unwrap_or_else(|p| p.into_inner()).push_back(row);
                        }
                        break;
                    }
                };
                let Some(row) = next else { break };
                if !started {
                    tracing::warn!(key = %row.key, "claim lost before sending (lease expired?); skipped");
                    continue;
                }
                let now = daemon.clock.now();
                let d = deliver::deliver(&row, &snap.plans, &snap.renderer, &daemon.config.sender, &daemon.mailer, now)
                    .await;
                log(&row, &d, &mut report.lock().unwrap_or_else(|p| p.into_inner()));
                daemon.monitor.delivered(&row.kind, &d.outcome, d.latency, d.failure, now);
                finished = Some((row, d));
            }
        }
    };
    let workers = futures_util::future::join_all((0..sessions).map(|_| worker(tx.clone())));
    drop(tx);
    let (_, committed) = tokio::join!(workers, committer);

    // Stopped (or failed) mid-batch: give the untouched rows back at once.
    let rest: Vec<Claimed> = queue.lock().unwrap_or_else(|p| p.into_inner()).drain(..).collect();
    for row in rest {
        daemon.store.release(row.id, row.fence).await?;
    }
    committed?;
    Ok(report.into_inner().unwrap_or_else(|p| p.into_inner()))
}

fn log(row: &Claimed, d: &Delivery, report: &mut TickReport) {
    match &d.outcome {
        Outcome::Accepted { .. } => {
            report.accepted += 1;
            tracing::info!(customer = %row.customer, occasion = %row.rule, domain = %d.domain, message_id = %row.message_id, "sent");
        }
        Outcome::Retry { reason, .. } => {
            report.retried += 1;
            tracing::warn!(key = %row.key, domain = %d.domain, attempt = row.attempts, reason = %reason, "send failed; will retry");
        }
        Outcome::Failed { reason } => {
            report.failed += 1;
            tracing::error!(key = %row.key, domain = %d.domain, reason = %reason, "send failed permanently");
        }
        Outcome::Unknown { reason } => {
            report.unknown += 1;
            tracing::error!(key = %row.key, domain = %d.domain, reason = %reason, "outcome unknown; not resent");
        }
        Outcome::Suppressed { reason } => {
            report.suppressed += 1;
            tracing::info!(key = %row.key, reason = %reason, "suppressed");
        }
    }
}
