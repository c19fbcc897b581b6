//! The relay's limits as this daemon applies them.
//!
//! - **Configured caps** (`[delivery] max_per_*`) are global: the store's claim counts them in
//!   the database for every daemon together (`store/budget.rs`).
//! - **Adaptive** (per daemon, in memory): a rate reply (a [`QuotaWindow::Rate`] quota class:
//!   421/450/451/454 "too many", "rate", "throttl", 4.7.x) halves this daemon's rate and its SMTP
//!   sessions at once (multiplicative decrease); every [`INCREASE_EVERY`] with successful sends
//!   and no such reply adds a tenth of the rate before the decrease and one session (additive
//!   increase), until the configured values are back — in the manner of Postfix's destination
//!   concurrency feedback, but driven by the relay's throttle replies rather than by
//!   connection failures.
//! - **Pauses**: a quota reply with a window (minute, hour, day) pauses every daemon's claims
//!   through the database (`Store::pause_relay`); this daemon also stops its current batch.

pub use crate::health::RelayStatus;
use crate::mail::quota::QuotaWindow;
use crate::store::{Budget, SECOND_GUARD_MS, second_slice};
use std::sync::Mutex;
use tokio::time::{Duration, Instant};

/// The batch size (rows) that moves the measured send rate halfway to its own rate.
const RATE_WEIGHT_ROWS: f64 = 200.0;

/// How long without a rate reply, with successful sends, before the rate and sessions go up.
pub const INCREASE_EVERY: Duration = Duration::from_secs(10);

struct State {
    /// The adaptive rate (messages/s); `None`: none beyond the configured caps.
    rate: Option<f64>,
    /// The rate when the first decrease came, which the additive increase returns to.
    ceiling: f64,
    sessions: usize,
    /// The last decrease or increase.
    changed: Instant,
    /// Successful sends since `changed`.
    ok_since_change: u64,
    /// Sends measured since `measured_from` (for the rate a decrease halves, when no rate is set).
    measured_from: Instant,
    measured: u64,
    /// The local one-second window of the adaptive rate, and what was claimed in it.
    window: Instant,
    claimed: u64,
    /// Until when this daemon stops (a pause it saw).
    paused_until: Option<Instant>,
    /// This daemon's send rate (messages/s, claim to last outcome, smoothed); `None` before
    /// its first batch.
    send_rate: Option<f64>,
}

/// The relay's limits for one daemon.
pub struct Relay {
    budget: Budget,
    connections: usize,
    state: Mutex<State>,
}

impl Relay {
    /// With the configured caps and `connections` sessions.
    pub fn new(budget: Budget, connections: usize) -> Relay {
        let now = Instant::now();
        Relay {
            budget,
            connections: connections.max(1),
            state: Mutex::new(State {
                rate: None,
                ceiling: 0.0,
                sessions: connections.max(1),
                changed: now,
                ok_since_change: 0,
                measured_from: now,
                measured: 0,
                window: now,
                claimed: 0,
                paused_until: None,
                send_rate: None,
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The global caps the claim counts.
    pub fn budget(&self) -> &Budget {
        &self.budget
    }

    /// Sessions to use for the next batch.
    pub fn sessions(&self) -> usize {
        self.state().sessions
    }

    /// The effective rate limit (messages/s): the adaptive rate or the configured per-second
    /// cap, whichever is lower; `None`: none.
    pub fn rate_limit(&self) -> Option<f64> {
        let configured = self.budget.per_second.map(f64::from);
        match (self.state().rate, configured) {
            (Some(a), Some(c)) => Some(a.min(c)),
            (a, c) => a.or(c),
        }
    }

    /// How many rows this daemon's adaptive rate lets it claim now (at most `want`), or how
    /// long until it may claim again.
    ///
    /// # Errors
    /// Paused, or this second's share of the adaptive rate is spent: how long to wait.
    pub fn allowance(&self, want: u32, now: Instant) -> Result<u32, Duration> {
        let mut s = self.state();
        if let Some(until) = s.paused_until {
            if until > now {
                return Err(until - now);
            }
            s.paused_until = None;
        }
        let Some(rate) = s.rate else { return Ok(want) };
        if now.duration_since(s.window) >= Duration::from_secs(1) {
            s.window = now;
            s.claimed = 0;
        }
        let per_window = rate.floor().max(1.0) as u64;
        let left = per_window.saturating_sub(s.claimed);
        if left == 0 {
            return Err(Duration::from_secs(1).saturating_sub(now.duration_since(s.window)));
        }
        Ok(want.min(u32::try_from(left).unwrap_or(u32::MAX)))
    }

    /// How many rows to ask the next claim for, at most `batch_size`. Under a per-second cap:
    /// what this daemon sends in [`SECOND_GUARD_MS`] at its measured rate, and at least a
    /// slice of the cap ([`second_slice`]; before the first batch, exactly that), so a claim
    /// made just before a second's guard has left before the next second opens (the store
    /// may give fewer: the pace, the windows). Without one: `batch_size`.
    pub fn claim_size(&self, batch_size: u32) -> u32 {
        let Some(cap) = self.budget.per_second else { return batch_size.max(1) };
        let slice = f64::from(second_slice(cap));
        let sendable = self.state().send_rate.map_or(0.0, |r| r * SECOND_GUARD_MS as f64 / 1000.0).floor();
        (slice.max(sendable).max(1.0) as u32).min(batch_size.max(1))
    }

    /// A claimed batch of `rows` was delivered (every outcome recorded) `elapsed` after its claim
    /// began: updates the send rate [`Relay::claim_size`] uses (an exponentially weighted mean,
    /// each batch weighted by its size, so a batch of three rows barely moves it).
    pub fn delivered(&self, rows: usize, elapsed: Duration) {
        if rows == 0 || elapsed.is_zero() {
            return;
        }
        let rate = rows as f64 / elapsed.as_secs_f64();
        let mut s = self.state();
        // A batch of RATE_WEIGHT_ROWS rows weighs half; smaller ones less.
        let w = rows as f64 / (rows as f64 + RATE_WEIGHT_ROWS);
        s.send_rate = Some(s.send_rate.map_or(rate, |old| old * (1.0 - w) + rate * w));
    }

    /// How long one of `sessions` sessions takes per message at this daemon's measured send rate
    /// (zero before its first batch).
    pub fn message_time(&self, sessions: usize) -> Duration {
        self.state()
            .send_rate
            .filter(|r| *r > 0.0)
            .map_or(Duration::ZERO, |r| Duration::from_secs_f64((sessions.max(1) as f64 / r).min(60.0)))
    }

    /// `n` rows were claimed.
    pub fn claimed(&self, n: usize) {
        self.state().claimed += n as u64;
    }

    /// A send was accepted.
    pub fn accepted(&self) {
        let mut s = self.state();
        s.ok_since_change += 1;
        s.measured += 1;
    }

    /// A rate reply: halve the rate and the sessions. Returns the new rate.
    pub fn throttled(&self, now: Instant) -> f64 {
        let configured = self.budget.per_second.map(f64::from);
        let mut s = self.state();
        let elapsed = now.duration_since(s.measured_from).as_secs_f64().max(1.0);
        let measured = s.measured as f64 / elapsed;
        let current = s.rate.or(configured).unwrap_or(measured).max(1.0);
        if s.rate.is_none() {
            s.ceiling = current;
        }
        let rate = (current / 2.0).max(1.0);
        s.rate = Some(rate);
        s.sessions = (s.sessions / 2).max(1);
        s.changed = now;
        s.ok_since_change = 0;
        s.measured_from = now;
        s.measured = 0;
        rate
    }

    /// A pause (a quota reply with a window, seen by this daemon or read from the database):
    /// nothing is claimed for `wait`.
    pub fn pause(&self, wait: Duration, now: Instant) {
        let mut s = self.state();
        let until = now + wait;
        s.paused_until = Some(s.paused_until.map_or(until, |u| u.max(until)));
    }

    /// Whether this daemon is paused now.
    pub fn paused(&self, now: Instant) -> bool {
        self.state().paused_until.is_some_and(|u| u > now)
    }

    /// The additive increase: after [`INCREASE_EVERY`] with successful sends and no rate reply,
    /// one step up (a tenth of the rate before the decrease, one session).
    pub fn maybe_increase(&self, now: Instant) {
        let mut s = self.state();
        if now.duration_since(s.measured_from) >= INCREASE_EVERY * 3 {
            s.measured_from = now;
            s.measured = 0;
        }
        let Some(rate) = s.rate else { return };
        if now.duration_since(s.changed) < INCREASE_EVERY || s.ok_since_change == 0 {
            return;
        }
        let step = (s.ceiling / 10.0).max(1.0);
        let next = rate + step;
        s.rate = if next >= s.ceiling { None } else { Some(next) };
        s.sessions = (s.sessions + 1).min(self.connections);
        s.changed = now;
        s.ok_since_change = 0;
    }

    /// For `/status` and the metrics.
    pub fn status(&self, now: Instant) -> RelayStatus {
        let rate_limit = self.rate_limit();
        let s = self.state();
        RelayStatus {
            rate_limit,
            sessions: s.sessions,
            max_per_second: self.budget.per_second,
            max_per_minute: self.budget.per_minute,
            max_per_hour: self.budget.per_hour,
            max_per_day: self.budget.per_day,
            paused_for_secs: s.paused_until.filter(|u| *u > now).map(|u| (u - now).as_secs()),
        }
    }
}

/// Takes one message's share of the relay's limits for a message that is not an outbox row
/// (a "call instead" digest, an ops notice, the ops report), so that every message handed to
/// the relay counts: this daemon's adaptive rate and pause first, then the budget shared by all
/// daemons (`Store::take_budget`: every configured window, and the shared pause). A limit that
/// reopens within [`SHORT_WAIT_MS`](super::SHORT_WAIT_MS) (a per-second window) is waited for
/// here. `Ok(true)`: send now; `Ok(false)`: not now (the caller leaves it for a later tick).
///
/// # Errors
/// A store error (nothing taken); the caller decides whether to send anyway.
pub(super) async fn take_one(s: &super::Scheduler) -> anyhow::Result<bool> {
    let mut waited_ms = 0i64;
    loop {
        let wait_ms = match s.relay.allowance(1, Instant::now()) {
            Err(wait) => Some(i64::try_from(wait.as_millis()).unwrap_or(i64::MAX)),
            Ok(_) => s.store.take_budget(1, s.relay.budget()).await?,
        };
        match wait_ms {
            None => {
                s.relay.claimed(1);
                return Ok(true);
            }
            Some(ms) if waited_ms.saturating_add(ms.max(1)) <= super::SHORT_WAIT_MS => {
                tokio::time::sleep(Duration::from_millis(ms.max(1) as u64)).await;
                waited_ms += ms.max(1);
            }
            Some(_) => return Ok(false),
        }
    }
}

/// The relay refused a message for its own limit (`reason`: its reply): a rate reply halves this
/// daemon's rate and sessions; a reply with a window pauses every daemon's claims through the
/// database until the window rolls over (this daemon alone when the database cannot record it).
pub(super) async fn quota_reply(s: &super::Scheduler, reason: &str) {
    use crate::telemetry::redact_addresses as redact;
    let now = Instant::now();
    let window = super::deliver::quota_window(reason);
    match pause_of(window) {
        None => {
            let rate = s.relay.throttled(now);
            tracing::warn!(
                rate,
                sessions = s.relay.sessions(),
                reply = %redact(reason),
                "the relay throttles: rate and sessions halved"
            );
        }
        Some((min_secs, align)) => match s.store.pause_relay(min_secs, align).await {
            Ok((until, db_now)) => {
                let wait = Duration::from_secs((until - db_now).max(0) as u64);
                s.relay.pause(wait, now);
                tracing::warn!(%until, ?window, reply = %redact(reason), "the relay's quota is spent: sending paused until its window rolls over (rows kept)");
            }
            Err(e) => {
                s.relay.pause(super::deliver::quota_wait(window, s.clock.now()).to_std().unwrap_or_default(), now);
                tracing::error!(error = %e, "could not record the relay's pause in the database; this daemon pauses alone");
            }
        },
    }
}

/// A message that is not an outbox row was not accepted: health and metrics hear of it, and a
/// quota reply pauses or slows sending as a row's would.
pub(super) async fn send_failed(s: &super::Scheduler, e: &crate::mail::SendError) {
    s.metrics.transport_error(e.class);
    s.health.transport_error(e.class, &e.detail, s.clock.now());
    if e.class == crate::mail::FailureClass::Quota {
        quota_reply(s, &e.detail).await;
    }
}

/// How the store's pause is set for a quota reply of `window`: `(min_secs, align)`.
pub fn pause_of(window: QuotaWindow) -> Option<(i64, i64)> {
    match window {
        QuotaWindow::Rate => None,
        QuotaWindow::Minute => Some((1, 60)),
        QuotaWindow::Hour => Some((1, 3600)),
        QuotaWindow::Day => Some((super::deliver::DAILY_PAUSE.num_seconds(), 60)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_throttle_halves_rate_and_sessions_and_they_come_back_step_by_step() {
        let relay = Relay::new(Budget { per_second: Some(40), ..Budget::default() }, 4);
        let t0 = Instant::now();
        assert_eq!((relay.rate_limit(), relay.sessions()), (Some(40.0), 4));
        assert_eq!(relay.throttled(t0), 20.0);
        assert_eq!((relay.rate_limit(), relay.sessions()), (Some(20.0), 2));
        relay.maybe_increase(t0 + INCREASE_EVERY);
        assert_eq!(relay.rate_limit(), Some(20.0), "no successful send yet: no increase");
        let mut t = t0;
        for _ in 0..5 {
            relay.accepted();
            t += INCREASE_EVERY;
            relay.maybe_increase(t);
        }
        assert_eq!((relay.rate_limit(), relay.sessions()), (Some(40.0), 4), "back after 5 steps of 4/s");
        assert_eq!(relay.state().rate, None);
    }

    #[test]
    fn under_a_per_second_cap_a_claim_is_what_this_daemon_sends_before_the_second_ends() {
        let relay = Relay::new(Budget { per_second: Some(2000), ..Budget::default() }, 4);
        assert_eq!(relay.claim_size(1000), 223, "no batch yet: a slice of the cap (2,000 × 100 ms / 900 ms)");
        relay.delivered(200, Duration::from_millis(40)); // 5,000/s
        assert_eq!(relay.claim_size(1000), 500, "what 100 ms carry at 5,000/s");
        relay.delivered(3, Duration::from_millis(30)); // a small slow batch barely counts
        assert!(relay.claim_size(1000) > 480, "{}", relay.claim_size(1000));
        for _ in 0..20 {
            relay.delivered(200, Duration::from_millis(400)); // 500/s: a busy machine
        }
        assert_eq!(relay.claim_size(1000), 223, "never below the slice");
        assert_eq!(relay.claim_size(150), 150, "never above the batch size");
        assert_eq!(Relay::new(Budget::default(), 1).claim_size(1000), 1000, "no per-second cap");
    }

    #[test]
    fn the_adaptive_rate_bounds_claims_per_second() {
        let relay = Relay::new(Budget::default(), 1);
        let t0 = Instant::now();
        assert_eq!(relay.allowance(100, t0), Ok(100));
        relay.throttled(t0); // measured nothing: rate 1/s
        assert_eq!(relay.allowance(100, t0), Ok(1));
        relay.claimed(1);
        assert!(relay.allowance(100, t0 + Duration::from_millis(10)).is_err());
        assert_eq!(relay.allowance(100, t0 + Duration::from_millis(1001)), Ok(1));
        relay.pause(Duration::from_secs(60), t0);
        assert!(relay.allowance(100, t0 + Duration::from_secs(2)).is_err());
    }
}
