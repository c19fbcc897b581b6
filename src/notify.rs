//! The systemd notification protocol (`sd_notify(3)`), written out: one datagram per message
//! to the unix socket named by `$NOTIFY_SOCKET` (a path, or `@name` for the abstract
//! namespace). Without `$NOTIFY_SOCKET` (not under systemd, or `Type=exec`) every call is a
//! no-op, so the daemon code calls it unconditionally.
//!
//! Debian 12 has systemd 252: no `Type=notify-reload` (253+), so a reload is announced with
//! `RELOADING=1` … `READY=1` and triggered by `ExecReload=kill -HUP $MAINPID`.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// Environment variables systemd sets for a `Type=notify` service with `WatchdogSec=`.
pub const ENV_SOCKET: &str = "NOTIFY_SOCKET";
pub const ENV_WATCHDOG_USEC: &str = "WATCHDOG_USEC";
pub const ENV_WATCHDOG_PID: &str = "WATCHDOG_PID";

/// Where notifications go; `None` when not started by systemd with a notify socket.
#[derive(Debug)]
pub struct Notifier {
    /// Unbound datagram socket and the service manager's address.
    target: Option<(UnixDatagram, std::os::unix::net::SocketAddr)>,
    /// `WatchdogSec=` as passed in `$WATCHDOG_USEC` (only when meant for this process).
    watchdog: Option<Duration>,
}

impl Notifier {
    /// Reads `$NOTIFY_SOCKET`, `$WATCHDOG_USEC` and `$WATCHDOG_PID`. A socket that cannot be
    /// used is logged once and treated as absent: notifications are never worth failing for.
    pub fn from_env() -> Notifier {
        let target = std::env::var_os(ENV_SOCKET).and_then(|path| match connect(&path) {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::warn!(socket = ?path, error = %e, "NOTIFY_SOCKET is set but unusable; no systemd notifications");
                None
            }
        });
        let watchdog = watchdog_from(
            std::env::var(ENV_WATCHDOG_USEC).ok().as_deref(),
            std::env::var(ENV_WATCHDOG_PID).ok().as_deref(),
            std::process::id(),
        );
        Notifier { target, watchdog }
    }

    /// A notifier that sends nothing (tests, CLI commands).
    pub fn disabled() -> Notifier {
        Notifier { target: None, watchdog: None }
    }

    /// The watchdog timeout systemd enforces, if any.
    pub fn watchdog(&self) -> Option<Duration> {
        self.watchdog
    }

    /// Sends newline-separated `KEY=value` assignments; errors are logged at debug level only
    /// (systemd may be restarting; the next message will try again).
    pub fn send(&self, state: &str) {
        let Some((socket, addr)) = &self.target else { return };
        if let Err(e) = socket.send_to_addr(state.as_bytes(), addr) {
            tracing::debug!(error = %e, "sd_notify failed");
        }
    }

    /// `READY=1` with a human-readable `STATUS=`.
    pub fn ready(&self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={}", one_line(status)));
    }

    /// `RELOADING=1` (followed by [`Notifier::ready`] when the reload is done).
    pub fn reloading(&self, status: &str) {
        self.send(&format!("RELOADING=1\nSTATUS={}", one_line(status)));
    }

    /// `STOPPING=1`.
    pub fn stopping(&self, status: &str) {
        self.send(&format!("STOPPING=1\nSTATUS={}", one_line(status)));
    }

    /// `STATUS=` alone.
    pub fn status(&self, status: &str) {
        self.send(&format!("STATUS={}", one_line(status)));
    }

    /// `WATCHDOG=1`: the scheduler loop made progress.
    pub fn watchdog_ping(&self) {
        if self.watchdog.is_some() {
            self.send("WATCHDOG=1");
        }
    }
}

/// A status line must not contain a newline (it would start a new assignment).
fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

fn connect(path: &std::ffi::OsStr) -> std::io::Result<(UnixDatagram, std::os::unix::net::SocketAddr)> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_bytes();
    let addr = match bytes.first() {
        Some(b'@') => {
            use std::os::linux::net::SocketAddrExt;
            std::os::unix::net::SocketAddr::from_abstract_name(&bytes[1..])?
        }
        Some(b'/') => std::os::unix::net::SocketAddr::from_pathname(std::path::Path::new(path))?,
        _ => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "NOTIFY_SOCKET must be an absolute path or start with @",
            ));
        }
    };
    Ok((UnixDatagram::unbound()?, addr))
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
    fn messages_arrive_as_datagrams_on_path_and_abstract_sockets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let server = UnixDatagram::bind(&path).unwrap();
        let n = Notifier { target: Some(connect(path.as_os_str()).unwrap()), watchdog: Some(Duration::from_secs(1)) };
        n.ready("serving 3 customers\nsecond line");
        n.watchdog_ping();
        let mut buf = [0u8; 256];
        let len = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1\nSTATUS=serving 3 customers second line");
        let len = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"WATCHDOG=1");

        use std::os::linux::net::SocketAddrExt;
        let name = format!("contactplan-test-{}", std::process::id());
        let abs = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let server = UnixDatagram::bind_addr(&abs).unwrap();
        let n = Notifier { target: Some(connect(format!("@{name}").as_ref()).unwrap()), watchdog: None };
        n.reloading("reloading");
        n.watchdog_ping(); // no watchdog configured: nothing sent
        n.stopping("bye");
        let len = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"RELOADING=1\nSTATUS=reloading");
        let len = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"STOPPING=1\nSTATUS=bye");
    }

    #[test]
    fn a_relative_socket_path_is_refused() {
        assert!(connect("relative/sock".as_ref()).is_err());
    }
}
