//! The only place that reads the wall clock. Everything else receives a [`Clock`].

use chrono::{DateTime, Utc};
use std::sync::{Arc, Mutex};

/// A source of "now". Logic never calls `Utc::now()` itself.
pub trait Clock: Send + Sync + 'static {
    /// The current instant, in UTC.
    fn now(&self) -> DateTime<Utc>;
}

/// The real wall clock, used by the CLI and the daemon in production.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that only moves when told to; tests and `simulate`-style tools use it.
#[derive(Debug, Clone)]
pub struct ManualClock {
    /// Shared so a test can advance the clock the daemon is reading.
    now: Arc<Mutex<DateTime<Utc>>>,
}

impl ManualClock {
    /// A clock standing at `start` (UTC) until [`ManualClock::set`] moves it.
    pub fn new(start: DateTime<Utc>) -> Self {
        Self { now: Arc::new(Mutex::new(start)) }
    }

    /// Moves the clock to `to` (UTC), forwards or backwards; every clone sees it.
    pub fn set(&self, to: DateTime<Utc>) {
        *self.now.lock().unwrap_or_else(|p| p.into_inner()) = to;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.now.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The clock handle passed around the application.
pub type SharedClock = Arc<dyn Clock>;
