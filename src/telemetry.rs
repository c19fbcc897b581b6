//! Logging set-up. Under systemd, when stderr is the journal stream (`$JOURNAL_STREAM` names
//! stderr's device and inode), events go to journald natively (`tracing-journald`: priority
//! from the level, each field a journal field, so `journalctl -u contactplan KEY=…` filters).
//! Otherwise `tracing` writes to stderr: text, or JSON with `--log-format json`.
//! Level from `RUST_LOG` (default [`DEFAULT_FILTER`]: `info`, with PostgreSQL's harmless
//! NOTICEs, such as "relation _sqlx_migrations already exists, skipping" at every start and
//! every CLI command, at `warn`).
//!
//! What is logged is decided where events are emitted: never message bodies or secrets, and
//! recipient domains, never addresses (see `dispatch`). SMTP replies often quote the recipient
//! (`550 5.1.1 <pat@customer.example>: Recipient address rejected`); [`redact_addresses`] keeps
//! such replies loggable. The outbox and the ops report keep the reply as the server sent it.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// The log filter without `RUST_LOG`.
pub const DEFAULT_FILTER: &str = "info,sqlx::postgres::notice=warn";

/// Installs the global `tracing` subscriber: journald when stderr is the journal, else stderr
/// as text or, with `json`, one JSON object per event. The level comes from `RUST_LOG` (default
/// [`DEFAULT_FILTER`]). A second call does nothing (the first subscriber stays).
pub fn init(json: bool) {
    let filter = || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    if stderr_is_journal() {
        match tracing_journald::layer() {
            Ok(journald) => {
                let _ = tracing_subscriber::registry()
                    .with(filter())
                    .with(journald.with_syslog_identifier("contactplan".into()))
                    .try_init();
                return;
            }
            Err(e) => eprintln!("JOURNAL_STREAM is set but journald is unreachable ({e}); logging to stderr"),
        }
    }
    let builder = tracing_subscriber::fmt().with_env_filter(filter()).with_writer(std::io::stderr);
    let _ = if json { builder.json().try_init() } else { builder.try_init() };
}

/// Whether stderr is connected to the journal (systemd's documented check: compare
/// `$JOURNAL_STREAM` with stderr's device and inode, since the variable is inherited by
/// children whose stderr may be redirected).
fn stderr_is_journal() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(value) = std::env::var("JOURNAL_STREAM") else { return false };
    std::fs::metadata("/proc/self/fd/2").is_ok_and(|m| journal_stream_matches(&value, m.dev(), m.ino()))
}

/// `$JOURNAL_STREAM` is `DEVICE:INODE` in decimal.
fn journal_stream_matches(value: &str, dev: u64, ino: u64) -> bool {
    value.split_once(':').is_some_and(|(d, i)| d.parse() == Ok(dev) && i.parse() == Ok(ino))
}

/// `text` with the local part of every e-mail address replaced by `…`, the domain kept:
/// `<pat@customer.example>` → `<…@customer.example>`.
pub fn redact_addresses(text: &str) -> String {
    let local = |c: char| c.is_alphanumeric() || ".!#$%&'*+/=?^_`{|}~-".contains(c);
    let domain = |c: char| c.is_alphanumeric() || c == '.' || c == '-';
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('@') {
        let (before, after) = rest.split_at(at);
        let start = before.char_indices().rev().take_while(|(_, c)| local(*c)).last().map_or(before.len(), |(i, _)| i);
        let has_domain = after[1..].chars().next().is_some_and(domain);
        out.push_str(&before[..start]);
        out.push_str(if start < before.len() && has_domain { "…" } else { &before[start..] });
        out.push('@');
        rest = &after[1..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_stream_must_name_stderr() {
        assert!(journal_stream_matches("8:12345", 8, 12345));
        assert!(!journal_stream_matches("8:12345", 8, 12346));
        assert!(!journal_stream_matches("9:12345", 8, 12345));
        assert!(!journal_stream_matches("garbage", 8, 12345));
    }

    #[test]
    fn addresses_lose_their_local_part_and_keep_their_domain() {
        assert_eq!(
            redact_addresses("550 5.1.1 <pat.private+x@customer-one.example>: Recipient address rejected"),
            "550 5.1.1 <…@customer-one.example>: Recipient address rejected"
        );
        assert_eq!(redact_addresses("a@b.example, Zoë.Ä@c.example"), "…@b.example, …@c.example");
        assert_eq!(redact_addresses("451 4.7.1 try again later"), "451 4.7.1 try again later");
        assert_eq!(redact_addresses("user@ and @host and a @ b"), "user@ and @host and a @ b");
    }
}
