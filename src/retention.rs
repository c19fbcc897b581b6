//! Bounded growth: the daemon deletes finished outbox rows older than `[retention]
//! outbox_days` (see `store::upkeep` for exactly which rows) and, when `maildir_days` is set,
//! delivered Maildir files older than that. A service of its own, hourly, beside the
//! scheduler (`app.rs` wires it).
//!
//! **Architecture Invariant:** retention never touches open rows (pending, retry, claimed,
//! sending), unreported failed/missed/unknown rows, or the Maildir's `tmp/` (writes in flight).

use crate::clock::SharedClock;
use crate::store::{Store, secs};
use chrono::{DateTime, Utc};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often old outbox rows and Maildir files are purged (the first pass runs at start).
pub const RETENTION_EVERY: Duration = Duration::from_secs(3600);

/// What one pass deleted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Purged {
    /// Outbox rows deleted.
    pub rows: u64,
    /// Maildir files deleted.
    pub files: u64,
}

/// The retention service.
pub struct Retention {
    /// The outbox to purge.
    pub store: Store,
    /// "Now" for the cut-offs.
    pub clock: SharedClock,
    /// How long finished rows and Maildir files are kept.
    pub policy: crate::config::Retention,
    /// The Maildir root, when delivery writes to one.
    pub maildir: Option<PathBuf>,
}

impl Retention {
    /// One pass.
    ///
    /// # Errors
    /// A store or file-system error; the pass is simply tried again next time.
    pub async fn run_once(&self) -> anyhow::Result<Purged> {
        let now = self.clock.now();
        let rows = self.store.purge_finished(secs(now - self.policy.outbox)).await?;
        let files = match (&self.maildir, self.policy.maildir) {
            (Some(path), Some(keep)) => {
                let (root, cutoff) = (path.clone(), now - keep);
                tokio::task::spawn_blocking(move || purge_maildir(&root, cutoff)).await??
            }
            _ => 0,
        };
        if rows + files > 0 {
            tracing::info!(rows, files, "retention: deleted old finished outbox rows and Maildir files");
        }
        Ok(Purged { rows, files })
    }

    /// A pass now and every [`RETENTION_EVERY`] until `stop`; failures are logged and retried
    /// next time (retention never blocks sending).
    pub async fn run(self, stop: CancellationToken) {
        loop {
            if let Err(e) = self.run_once().await {
                tracing::warn!(error = %e, "retention failed; will try again in an hour");
            }
            tokio::select! {
                _ = tokio::time::sleep(RETENTION_EVERY) => {}
                _ = stop.cancelled() => return,
            }
        }
    }
}

/// Deletes files in `new/` and `cur/` last modified before `cutoff`; returns how many.
///
/// `cutoff` is compared with each file's modification time; `tmp/` is never touched and a
/// missing `new/` or `cur/` counts as empty.
///
/// # Errors
/// A directory or file that cannot be read, inspected or removed; the pass stops there (files
/// deleted before it stay deleted).
pub fn purge_maildir(root: &Path, cutoff: DateTime<Utc>) -> std::io::Result<u64> {
    let cutoff = std::time::SystemTime::from(cutoff);
    let mut deleted = 0;
    for sub in ["new", "cur"] {
        let entries = match std::fs::read_dir(root.join(sub)) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            // The Maildir's reader may move or delete a file while we scan: not an error.
            let gone = |e: &std::io::Error| e.kind() == std::io::ErrorKind::NotFound;
            let meta = match entry.metadata() {
                Ok(m) => m,
                Err(e) if gone(&e) => continue,
                Err(e) => return Err(e),
            };
            if meta.is_file() && meta.modified()? < cutoff {
                match std::fs::remove_file(entry.path()) {
                    Ok(()) => deleted += 1,
                    Err(e) if gone(&e) => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_maildir_files_go_and_recent_ones_and_tmp_stay() {
        let dir = tempfile::tempdir().unwrap();
        let now = Utc::now();
        let write = |rel: &str, age_days: i64| {
            let p = dir.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            let f = std::fs::File::create(&p).unwrap();
            f.set_modified((now - chrono::TimeDelta::days(age_days)).into()).unwrap();
        };
        write("new/old.eml", 40);
        write("cur/old.eml:2,S", 31);
        write("new/recent.eml", 2);
        write("tmp/old-in-flight.eml", 90);
        let deleted = purge_maildir(dir.path(), now - chrono::TimeDelta::days(30)).unwrap();
        assert_eq!(deleted, 2);
        assert!(dir.path().join("new/recent.eml").exists());
        assert!(dir.path().join("tmp/old-in-flight.eml").exists());
        assert!(!dir.path().join("new/old.eml").exists());
        assert_eq!(purge_maildir(&dir.path().join("missing"), now).unwrap(), 0);
    }
}
