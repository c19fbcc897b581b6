//! Delivering one claimed batch: `sessions` workers (one task per SMTP session, so rendering
//! and SMTP use both cores) take rows from a shared queue. A committer groups their requests into
//! one statement: it waits (at most [`GATHER`]) until every live session has sent its request.
//! Commits are serialised and each session waits for its own, so one commit for all sessions
//! beats several in a row (fewer commits, context switches and CPU at the same throughput:
//! BENCHMARKS.md). Commit time and group size are exported as metrics
//! (`contactplan_outbox_commit_*`).
//!
//! Each request records the worker's last outcome and moves rows from `claimed` to `sending`:
//! the row the worker sends now (unless an earlier commit started it) and, when it is
//! at_least_once, the row it sends next. While that commit runs, the worker renders its row and
//! sends the envelope (`MAIL FROM`, `RCPT TO`, and `DATA` for a row started early); it sends the
//! content only once the commit is durable, and `DATA` for a row started now only once the commit
//! says the row is `sending` and still its own (`Mailer::send_when`, [`Gate`]). So:
//! - every row is durably `sending` before its `DATA`;
//! - a session's accepted message is recorded before its next message's content goes out, so a
//!   crash leaves at most one message per session that may have arrived unrecorded (the RFC 1047
//!   window, no wider): at most one duplicate per session per crash;
//! - a crash can also leave the session's next row `sending` though it was never attempted; it
//!   is at_least_once and is resent, which for it is the first delivery. An at_most_once row is
//!   never started early, so it is reported `unknown` only if its content may have gone out;
//! - a crashed batch's untouched rows are still `claimed` (never attempted, safe to send even
//!   under at_most_once);
//! - a group commit that fails loses the outcomes it carried: those rows stay `sending` and are
//!   taken over when their lease ends, like a crash's (one may have been accepted: a resend).
//!
//! Starting the next row early takes a commit off the path between two messages of a session:
//! `DATA` overlaps the commit, and only the content waits for it (measured with SMTP
//! PIPELINING on the dispatch benchmark: BENCHMARKS.md).

use super::deliver::{self, Delivery, Prepared};
use super::{Scheduler, TickReport};
use crate::mail::Gate;
use crate::plan::DeliveryPolicy;
use crate::store::{Claimed, Outcome, secs};
use crate::telemetry::redact_addresses as redact;
use crate::workspace::Snapshot;
use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// One worker's commit request: its last outcome and/or the rows it wants to move to `sending`.
struct Pending {
    /// The outcome of the worker's previous row, to record.
    finished: Option<(Claimed, Delivery)>,
    /// `(id, fence)` of the rows to move to `sending` (at most two: the row this session sends
    /// now, unless an earlier commit started it, and the one it sends next).
    start: Vec<(i64, i64)>,
    /// Which of `start` are now `sending` (the others lost their claim); `Err` if the commit failed.
    done: oneshot::Sender<Verdict>,
}

/// Bit `i` set: `start[i]` is now `sending`.
type Verdict = Result<u8, ()>;

/// Whether the row at position `i` of a request's `start` is now `sending`, by its verdict.
fn started(verdict: Verdict, i: usize) -> bool {
    verdict.is_ok_and(|bits| bits & (1 << i) != 0)
}

/// The answer to one commit request, awaited (and remembered) by the worker.
struct Ticket {
    /// Where the committer answers.
    rx: oneshot::Receiver<Verdict>,
    /// The answer once received, so it can be asked for again.
    verdict: Option<Verdict>,
}

impl Ticket {
    async fn wait(&mut self) -> Verdict {
        if let Some(v) = self.verdict {
            return v;
        }
        // A committer that went away without answering counts as a failed commit.
        let v = (&mut self.rx).await.unwrap_or(Err(()));
        self.verdict = Some(v);
        v
    }
}

/// Most outcomes recorded in one statement.
const MAX_GROUP: usize = 256;

/// How long a commit waits for the other sessions to join its group. Every session has at
/// most one request outstanding, and a session blocks on its commit, so a group that waits for
/// all of them costs one commit where separate groups cost several in a row (commits are
/// serialised; SQLite has one writer). The wait is cut short once every live session is in.
const GATHER: std::time::Duration = std::time::Duration::from_millis(1);

/// What the workers share.
struct Shared {
    /// Claimed rows not yet taken by a worker, in due order.
    queue: Mutex<VecDeque<Claimed>>,
    /// Counters for the tick's report.
    report: Mutex<TickReport>,
    /// Workers still running: a group holding a request from each of them is complete.
    live: AtomicUsize,
    /// Ids of the batch's rows that are settled: their outcome committed, or given back.
    settled: Mutex<HashSet<i64>>,
    /// Departure tasks the batch's permanent failures gave, written after the batch.
    departures: Mutex<Vec<crate::store::NewItem>>,
    /// No row is started after this (the end of the second its claim counted in, under a
    /// per-second cap): the rest go back unsent, to be claimed in a later second.
    send_by: Option<tokio::time::Instant>,
    /// A session's next row is not started early after this: it would go out one message time
    /// later, after `send_by`.
    next_by: Option<tokio::time::Instant>,
}

impl Shared {
    fn pop(&self) -> Option<Claimed> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner()).pop_front()
    }
    /// The front row, if `wanted` accepts it.
    fn pop_if(&self, wanted: impl Fn(&Claimed) -> bool) -> Option<Claimed> {
        let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        if queue.front().is_some_and(wanted) { queue.pop_front() } else { None }
    }
    /// A row's outcome is committed (or it was released).
    fn settle(&self, id: i64) {
        self.settled.lock().unwrap_or_else(|p| p.into_inner()).insert(id);
    }
    /// Rows this worker took but never attempted: released with the rest of the batch.
    fn give_back(&self, row: Option<Claimed>, next: Option<Claimed>) {
        let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        queue.extend(row);
        queue.extend(next);
    }
}

/// Delivers `batch` and settles every row of it before returning: each row ends with its
/// outcome recorded, given back untouched (`pending`), or — when its worker ended without an
/// outcome (a failed group commit, a worker that died) — given up at once ([`Store::abandon`]):
/// no row of the batch stays `claimed` or `sending` under this live daemon, whose lease
/// renewals would otherwise keep it from any other sender until its deadline.
///
/// [`Store::abandon`]: crate::store::Store::abandon
pub async fn deliver_batch(
    daemon: &Arc<Scheduler>,
    snap: &Arc<Snapshot>,
    batch: Vec<Claimed>,
    send_by: Option<tokio::time::Instant>,
    stop: &CancellationToken,
) -> anyhow::Result<TickReport> {
    // The relay's current sessions (halved after a throttle reply, up to `connections`).
    let sessions = daemon.relay.sessions().min(daemon.mailer.sessions()).max(1);
    let all: Vec<(i64, i64)> = batch.iter().map(|r| (r.id, r.fence)).collect();
    let shared = Arc::new(Shared {
        queue: Mutex::new(VecDeque::from(batch)),
        report: Mutex::default(),
        live: AtomicUsize::new(sessions),
        settled: Mutex::default(),
        departures: Mutex::default(),
        send_by,
        next_by: send_by.map(|by| by.checked_sub(daemon.relay.message_time(sessions)).unwrap_or(by)),
    });
    let (tx, rx) = mpsc::channel::<Pending>(sessions * 2);
    let workers: Vec<_> = (0..sessions)
        .map(|_| tokio::spawn(worker(daemon.clone(), snap.clone(), shared.clone(), tx.clone(), stop.clone())))
        .collect();
    drop(tx);
    let ids: Vec<i64> = all.iter().map(|(id, _)| *id).collect();
    let committed = committer(daemon, rx, &shared, &ids).await;
    for w in workers {
        if let Err(e) = w.await {
            tracing::error!(error = %e, "a delivery worker ended abnormally; its rows are given up for another attempt");
        }
    }

    // Stopped (or failed) mid-batch: give the untouched rows back at once.
    let rest: Vec<Claimed> = shared.queue.lock().unwrap_or_else(|p| p.into_inner()).drain(..).collect();
    let back: Vec<(i64, i64)> = rest.iter().map(|r| (r.id, r.fence)).collect();
    let released = daemon.store.release(&back).await;
    if released.is_ok() {
        for (id, _) in &back {
            shared.settle(*id);
        }
        shared.report.lock().unwrap_or_else(|p| p.into_inner()).given_back += back.len() as u64;
    }
    let unsettled: Vec<(i64, i64)> = {
        let settled = shared.settled.lock().unwrap_or_else(|p| p.into_inner());
        all.into_iter().filter(|(id, _)| !settled.contains(id)).collect()
    };
    let mut report = *shared.report.lock().unwrap_or_else(|p| p.into_inner());
    if !unsettled.is_empty() {
        let now = daemon.clock.now();
        let retry_at = now + super::backoff("abandoned", 1);
        match daemon.store.abandon(&unsettled, secs(now), secs(retry_at)).await {
            Ok(r) => {
                tracing::warn!(
                    released = r.released,
                    resend = r.retried,
                    unknown = r.unknown,
                    "gave up rows whose worker ended without an outcome (at_least_once: resent; at_most_once: reported)"
                );
                report.unknown += r.unknown;
            }
            Err(e) => {
                tracing::error!(error = %e, rows = unsettled.len(), "could not give up rows without an outcome; they are taken over when their lease ends")
            }
        }
    }
    committed?;
    released?;
    // Departure signals: written once the failures that gave them are recorded.
    let departures: Vec<crate::store::NewItem> =
        std::mem::take(&mut *shared.departures.lock().unwrap_or_else(|p| p.into_inner()));
    if !departures.is_empty() {
        let now = daemon.clock.now();
        let written = daemon.store.materialize(&departures, secs(now)).await?;
        report.departures += written.inserted;
        if written.inserted > 0 {
            tracing::warn!(
                tasks = written.inserted,
                "contacts' addresses refused as unknown: the salespeople are asked whether they left"
            );
        }
    }
    Ok(report)
}

/// Records outcomes and starts in groups until every worker has hung up. Also renews this
/// daemon's leases every [`super::Settings::lease_renewal`] while the batch lasts (a long batch, a
/// slow server): here, so the renewal never runs beside a group commit on the same rows (on
/// PostgreSQL two such statements could deadlock, and a failed group commit costs a resend).
async fn committer(
    daemon: &Scheduler,
    mut rx: mpsc::Receiver<Pending>,
    shared: &Shared,
    batch: &[i64],
) -> anyhow::Result<()> {
    let live = &shared.live;
    let mut group: Vec<Pending> = Vec::with_capacity(MAX_GROUP);
    let renew_every = daemon.settings.lease_renewal;
    let mut renew_at = tokio::time::Instant::now() + renew_every;
    loop {
        let first = tokio::select! {
            p = rx.recv() => p,
            _ = tokio::time::sleep_until(renew_at) => {
                renew_at = tokio::time::Instant::now() + renew_every;
                if let Err(e) = daemon.store.renew_leases(&daemon.instance, batch, daemon.settings.lease_secs()).await {
                    tracing::warn!(error = %e, "could not renew this daemon's leases; will try again");
                }
                continue;
            }
        };
        let Some(first) = first else { break };
        group.push(first);
        let until = tokio::time::Instant::now() + GATHER;
        while group.len() < MAX_GROUP && group.len() < live.load(Ordering::SeqCst) {
            match tokio::time::timeout_at(until, rx.recv()).await {
                Ok(Some(p)) => group.push(p),
                Ok(None) | Err(_) => break,
            }
        }
        let outcomes: Vec<(i64, i64, Outcome)> = group
            .iter()
            .filter_map(|p| p.finished.as_ref().map(|(row, d)| (row.id, row.fence, d.outcome.clone())))
            .collect();
        let starts: Vec<(i64, i64)> = group.iter().flat_map(|p| p.start.iter().copied()).collect();
        let c0 = std::time::Instant::now();
        let res =
            daemon.store.finish_batch(&outcomes, &starts, secs(daemon.clock.now()), daemon.settings.lease_secs()).await;
        if res.is_ok() {
            daemon.metrics.committed(outcomes.len() + starts.len(), c0.elapsed());
        }
        match res {
            Ok(r) => {
                for (id, _, _) in &outcomes {
                    shared.settle(*id);
                }
                for p in group.drain(..) {
                    let bits = p.start.iter().enumerate().filter(|(_, (id, _))| r.started.contains(id));
                    let _ = p.done.send(Ok(bits.fold(0, |b, (i, _)| b | 1 << i)));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, rows = group.len(), "could not record outcomes; the rows stay claimed and are taken over after their lease");
                for p in group.drain(..) {
                    let _ = p.done.send(Err(()));
                }
                return Err(e);
            }
        }
    }
    Ok(())
}

/// One SMTP session's loop: ask for a commit (last outcome + next start), send the next row
/// gated on that commit, repeat.
async fn worker(
    daemon: Arc<Scheduler>,
    snap: Arc<Snapshot>,
    shared: Arc<Shared>,
    tx: mpsc::Sender<Pending>,
    stop: CancellationToken,
) {
    // Counted out however the worker ends (a panic too), so no group waits for it again.
    let _live = Live(&shared.live);
    work(&daemon, &snap, &shared, tx, &stop).await;
}

/// Decrements the live worker count when dropped.
struct Live<'a>(
    /// `Shared::live`.
    &'a AtomicUsize,
);

impl Drop for Live<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn work(
    daemon: &Scheduler,
    snap: &Arc<Snapshot>,
    shared: &Shared,
    tx: mpsc::Sender<Pending>,
    stop: &CancellationToken,
) {
    let mut finished: Option<(Claimed, Delivery)> = None;
    // The row an earlier commit already moved to `sending` for this session (at_least_once).
    let mut ahead: Option<Claimed> = None;
    loop {
        // A quota pause ends the batch too, and so does the end of the second the claim counted
        // in: the untouched rows go back (still counted in that window: fewer, never more).
        let mono = tokio::time::Instant::now();
        let stopping = stop.is_cancelled() || daemon.relay.paused(mono) || shared.send_by.is_some_and(|by| mono >= by);
        let early = ahead.is_some();
        let row = ahead.take().or_else(|| if stopping { None } else { shared.pop() });
        if finished.is_none() && row.is_none() {
            break;
        }
        // Start the session's next row in this commit already, so its `DATA` need not wait for
        // a commit of its own. Only at_least_once rows: a crash leaves such a row `sending`
        // though it was never attempted, and only a resend (which it gets) is right for it.
        let late = shared.next_by.is_some_and(|by| mono >= by);
        let next = if stopping || late || row.is_none() {
            None
        } else {
            shared.pop_if(|r| r.delivery != DeliveryPolicy::AtMostOnce)
        };
        let mut start = Vec::with_capacity(2);
        if let Some(r) = row.as_ref().filter(|_| !early) {
            start.push((r.id, r.fence));
        }
        let next_at = start.len();
        if let Some(r) = &next {
            start.push((r.id, r.fence));
        }
        let (done, rx) = oneshot::channel();
        if tx.send(Pending { finished: finished.take(), start, done }).await.is_err() {
            shared.give_back(row, next);
            break;
        }
        let mut ticket = Ticket { rx, verdict: None };
        let Some(row) = row else {
            // The last outcome must be durable before the batch counts as done.
            let _ = ticket.wait().await;
            break;
        };
        let now = daemon.clock.now();
        let delivery = match prepare(daemon, snap, &row, now).await {
            Prepared::Done(d) => d,
            Prepared::Message { message, domain } => {
                // A row started early may issue `DATA` at once; its content still waits for this
                // commit, which records the session's previous outcome. A row started now waits
                // with `DATA` until this commit made it `sending`.
                let gate = if early { Gate::Content } else { Gate::Data };
                // The latency histogram measures the transport, not the wait for our own commit.
                let opened = std::sync::OnceLock::new();
                let go = async {
                    let v = ticket.wait().await;
                    let go = if early { v.is_ok() } else { started(v, 0) };
                    let _ = opened.set(std::time::Instant::now());
                    go
                };
                let started_at = std::time::Instant::now();
                let sent = daemon.mailer.send_when(&message, go, gate).await;
                // A send that failed before reaching the gate (e.g. connecting) spent it all there.
                let latency = opened.get().unwrap_or(&started_at).elapsed();
                let d = deliver::delivered(&row, sent, domain, latency, now);
                relay_feedback(daemon, &d).await;
                d
            }
        };
        let verdict = ticket.wait().await;
        if verdict.is_err() {
            // Nothing of `row` was delivered (its content waited for this commit); `next` was
            // never attempted. Both go back.
            shared.give_back(Some(row), next);
            break;
        }
        if early || started(verdict, 0) {
            if let Some(item) = departure(snap, &row, &delivery, now, &daemon.settings.sender.email) {
                shared.departures.lock().unwrap_or_else(|p| p.into_inner()).push(item);
            }
            log(&row, &delivery, &mut shared.report.lock().unwrap_or_else(|p| p.into_inner()));
            daemon.record(&row, &delivery, now);
            finished = Some((row, delivery));
        } else {
            tracing::warn!(key = %row.key, "claim lost before sending (lease expired?); skipped");
        }
        if let Some(next) = next {
            if started(verdict, next_at) {
                ahead = Some(next);
            } else {
                tracing::warn!(key = %next.key, "claim lost before sending (lease expired?); skipped");
            }
        }
    }
}

/// Tells the relay's limits how a send went: an acceptance counts towards the additive
/// increase; a rate reply halves this daemon's rate and sessions; a quota reply with a window
/// pauses every daemon's claims through the database.
async fn relay_feedback(daemon: &Scheduler, d: &Delivery) {
    match (&d.outcome, d.failure) {
        (Outcome::Accepted { .. }, _) => daemon.relay.accepted(),
        (Outcome::Deferred { reason, .. }, Some(crate::mail::FailureClass::Quota)) => {
            super::relay::quota_reply(daemon, reason).await;
        }
        _ => {}
    }
}

/// Renders and builds `row`'s message on a blocking thread (rendering is bounded work, but
/// work: it must not hold an async worker), turning a panic into a `failed` outcome with the
/// reason, so one row's bad data can never end the session or strand its next row.
async fn prepare(
    daemon: &Scheduler,
    snap: &Arc<Snapshot>,
    row: &Claimed,
    now: chrono::DateTime<chrono::Utc>,
) -> Prepared {
    let (snap, mut owned, sender) = (snap.clone(), row.clone(), daemon.settings.sender.clone());
    // A milestone's revenue by year, and a brief's figures and history, as of now (queries
    // per message; evaluation stays one pass over the changes without a query per customer).
    match owned.facts.as_mut() {
        Some(crate::handover::EventFacts::Milestone(facts)) => {
            match daemon.store.revenue_by_year(&owned.key.customer, facts.currency).await {
                Ok(years) => {
                    facts.revenue_by_year = years
                        .into_iter()
                        .map(|(year, amount)| crate::orders::milestone::YearRevenue { year, amount })
                        .collect();
                }
                Err(e) => {
                    tracing::warn!(key = %owned.key, error = %e, "revenue by year unavailable; the message goes without it")
                }
            }
        }
        Some(crate::handover::EventFacts::Handover(facts)) => {
            let currency = snap.plans.get(&owned.key.customer).map_or(crate::money::Currency::EUR, |c| c.currency);
            match brief_figures(&daemon.store, &owned.key, currency).await {
                Ok(b) => facts.brief = Some(b),
                Err(e) => {
                    tracing::warn!(key = %owned.key, error = %e, "brief figures unavailable; the message goes without them")
                }
            }
        }
        Some(crate::handover::EventFacts::Moment(_)) | None => {}
    }
    let built = tokio::task::spawn_blocking(move || {
        #[cfg(feature = "failpoints")]
        if let Some(Some(victim)) = fail::eval("dispatch::prepare", |s| s)
            && victim == owned.key.customer
        {
            panic!("failpoint dispatch::prepare: a panic while building the message of `{victim}`");
        }
        deliver::prepare(&owned, &snap.plans, &snap.renderer, &sender, now)
    })
    .await;
    match built {
        Ok(prepared) => prepared,
        Err(e) => {
            let why = match e.try_into_panic() {
                Ok(payload) => payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic".into()),
                Err(e) => e.to_string(),
            };
            tracing::error!(key = %row.key, reason = %why, "building the message failed unexpectedly; the row is failed, the session goes on");
            Prepared::Done(Delivery {
                outcome: Outcome::Failed { reason: format!("internal error while building the message: {why}") },
                domain: String::new(),
                latency: None,
                failure: None,
            })
        }
    }
}

/// What the store knows about the customer of `key` for a brief: orders, revenue by year
/// in `currency`, the last five messages sent (other than this one).
async fn brief_figures(
    store: &crate::store::Store,
    key: &crate::occasion::OutboxKey,
    currency: crate::money::Currency,
) -> anyhow::Result<crate::handover::BriefFigures> {
    let customer = &key.customer;
    let totals = store.order_totals(customer).await?;
    let years = store.revenue_by_year(customer, currency).await?;
    let recent = store.recent_sent(customer, &key.to_string(), 5).await?;
    Ok(crate::handover::BriefFigures {
        order_count: totals.count,
        revenue_by_year: years
            .into_iter()
            .map(|(year, amount)| crate::orders::milestone::YearRevenue { year, amount })
            .collect(),
        recent,
    })
}

/// The departure task a permanent failure of an email to a contact gives, if its reason says
/// the mailbox is unknown (see `moments::departure_item`).
fn departure(
    snap: &Snapshot,
    row: &Claimed,
    d: &Delivery,
    now: chrono::DateTime<chrono::Utc>,
    sender: &crate::plan::Email,
) -> Option<crate::store::NewItem> {
    let Outcome::Failed { reason } = &d.outcome else { return None };
    let crate::occasion::RecipientKey::Contact(id) = &row.key.recipient else { return None };
    let customer = snap.plans.get(&row.key.customer)?;
    let contact = customer.contact(id)?;
    super::moments::departure_item(customer, contact, reason, now, sender)
}

fn log(row: &Claimed, d: &Delivery, report: &mut TickReport) {
    match &d.outcome {
        Outcome::Accepted { .. } => {
            report.accepted += 1;
            tracing::info!(customer = %row.key.customer, rule = %row.key.rule, domain = %d.domain, message_id = %row.message_id, "sent");
        }
        Outcome::Retry { reason, .. } => {
            report.retried += 1;
            tracing::warn!(key = %row.key, domain = %d.domain, attempt = row.attempts, reason = %redact(reason), "send failed; will retry");
        }
        Outcome::Deferred { reason, at } => {
            report.retried += 1;
            tracing::warn!(key = %row.key, domain = %d.domain, until = %at, reason = %redact(reason), "the relay's sending limit: kept for later (attempt not counted)");
        }
        Outcome::Failed { reason } => {
            report.failed += 1;
            tracing::error!(key = %row.key, domain = %d.domain, reason = %redact(reason), "send failed permanently");
        }
        Outcome::Unknown { reason } => {
            report.unknown += 1;
            tracing::error!(key = %row.key, domain = %d.domain, reason = %redact(reason), "outcome unknown; not resent");
        }
        Outcome::Suppressed { reason } => {
            report.suppressed += 1;
            tracing::info!(key = %row.key, reason = %reason, "suppressed");
        }
    }
}
