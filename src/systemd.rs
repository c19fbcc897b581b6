//! systemd notifications (`sd_notify(3)`) through the `sd-notify` crate: `READY=1`,
//! `RELOADING=1`, `STOPPING=1`, `STATUS=` and `WATCHDOG=1` as datagrams to `$NOTIFY_SOCKET`.
//! Outside systemd (no `$NOTIFY_SOCKET`, or `Type=exec`) every call is a no-op, so the daemon
//! calls it unconditionally.
//!
//! Whether to notify, and the watchdog timeout (`$WATCHDOG_USEC`, for this process only when
//! `$WATCHDOG_PID` names it: `sd_watchdog_enabled(3)`), are decided once at the edge from the
//! [`Environment`]. The crate itself looks `$NOTIFY_SOCKET` up when it sends; it supports
//! socket paths (what systemd passes to system services), not abstract `@` names.
//!
//! Debian 12 has systemd 252: no `Type=notify-reload` (253+), so a reload is announced with
//! `RELOADING=1` … `READY=1` and triggered by `ExecReload=kill -HUP $MAINPID`.

use crate::config::Environment;
use sd_notify::NotifyState;
use std::time::Duration;

/// The service manager's notification channel, or nothing.
#[derive(Debug, Clone, Default)]
pub struct Systemd {
    /// `$NOTIFY_SOCKET` was set: send notifications.
    enabled: bool,
    /// `WatchdogSec=` as passed in `$WATCHDOG_USEC`, when meant for this process.
    watchdog: Option<Duration>,
}

impl Systemd {
    /// From the process environment (see the module docs).
    pub fn from_environment(env: &Environment) -> Systemd {
        Systemd {
            enabled: env.get("NOTIFY_SOCKET").is_some_and(|s| !s.is_empty()),
            watchdog: watchdog_from(env.get("WATCHDOG_USEC"), env.get("WATCHDOG_PID"), std::process::id()),
        }
    }

    /// Sends nothing (tests, CLI commands).
    pub fn disabled() -> Systemd {
        Systemd::default()
    }

    /// The watchdog timeout systemd enforces, if any.
    pub fn watchdog(&self) -> Option<Duration> {
        self.watchdog
    }

    fn send(&self, states: &[NotifyState]) {
        if !self.enabled {
            return;
        }
        // Notifications are never worth failing for: systemd may be restarting, and the next
        // message tries again.
        if let Err(e) = sd_notify::notify(states) {
            tracing::debug!(error = %e, "sd_notify failed");
        }
    }

    /// `READY=1` with a human-readable `STATUS=`.
    pub fn ready(&self, status: &str) {
        self.send(&[NotifyState::Ready, NotifyState::Status(&one_line(status))]);
    }

    /// `RELOADING=1` (followed by [`Systemd::ready`] when the reload is done).
    pub fn reloading(&self, status: &str) {
        self.send(&[NotifyState::Reloading, NotifyState::Status(&one_line(status))]);
    }

    /// `STOPPING=1`.
    pub fn stopping(&self, status: &str) {
        self.send(&[NotifyState::Stopping, NotifyState::Status(&one_line(status))]);
    }

    /// `STATUS=` alone.
    pub fn status(&self, status: &str) {
        self.send(&[NotifyState::Status(&one_line(status))]);
    }

    /// `WATCHDOG=1`: the scheduler loop made progress. Nothing when no watchdog is set.
    pub fn watchdog_ping(&self) {
        if self.watchdog.is_some() {
            self.send(&[NotifyState::Watchdog]);
        }
    }
}

/// A status line must not contain a newline (it would start a new assignment).
fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

/// `WATCHDOG_USEC` applies to us when `WATCHDOG_PID` is unset or names this process.
pub fn watchdog_from(usec: Option<&str>, pid: Option<&str>, own_pid: u32) -> Option<Duration> {
    if let Some(pid) = pid
        && pid.trim().parse::<u32>().ok() != Some(own_pid)
    {
        return None;
    }
    let usec: u64 = usec?.trim().parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchdog_applies_only_to_the_named_process() {
        assert_eq!(watchdog_from(Some("30000000"), None, 7), Some(Duration::from_secs(30)));
        assert_eq!(watchdog_from(Some("30000000"), Some("7"), 7), Some(Duration::from_secs(30)));
        assert_eq!(watchdog_from(Some("30000000"), Some("8"), 7), None);
        assert_eq!(watchdog_from(Some("0"), None, 7), None);
        assert_eq!(watchdog_from(Some("x"), None, 7), None);
        assert_eq!(watchdog_from(None, None, 7), None);
    }

    #[test]
    fn status_lines_stay_one_line() {
        assert_eq!(one_line("serving 3 customers\nsecond\rline"), "serving 3 customers second line");
    }
}
