//! The one loop behind every event pass (order milestones, customer changes, custom events):
//! read a page of the log's unevaluated entries (oldest first), turn them into outbox rows
//! against the current plans, write the rows (`Store::materialize`, idempotent by key), then
//! mark the page evaluated. A crash between the two writes evaluates the page again, which
//! writes nothing new; several daemons draining one log at once write the same keys.

use crate::store::{NewItem, Store, UnixSecs};

/// What draining a log did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Drained {
    /// Entries evaluated.
    pub entries: u64,
    /// Outbox rows written (0 for rows another pass wrote first).
    pub written: u64,
}

/// Drains a log in pages of `page` entries: `fetch(page)` gives the oldest unevaluated entries,
/// `rows` the outbox rows of one page, `seq` an entry's position, `mark` marks positions
/// evaluated; `progress` is called after each page (the watchdog).
///
/// # Errors
/// A store error; the page's entries stay unevaluated and are evaluated again next time.
#[allow(clippy::too_many_arguments)]
pub(super) async fn drain<E, Fetched, Marked>(
    store: &Store,
    now: UnixSecs,
    page: i64,
    fetch: impl Fn(i64) -> Fetched,
    seq: impl Fn(&E) -> i64,
    mark: impl Fn(Vec<i64>, UnixSecs) -> Marked,
    mut rows: impl FnMut(&[E]) -> Vec<NewItem>,
    progress: &(dyn Fn() + Sync),
) -> anyhow::Result<Drained>
where
    Fetched: std::future::Future<Output = anyhow::Result<Vec<E>>>,
    Marked: std::future::Future<Output = anyhow::Result<()>>,
{
    let mut drained = Drained::default();
    loop {
        let entries = fetch(page).await?;
        if entries.is_empty() {
            break;
        }
        let written = store.materialize(&rows(&entries), now).await?;
        mark(entries.iter().map(&seq).collect(), now).await?;
        drained.entries += entries.len() as u64;
        drained.written += written.inserted + written.missed;
        progress();
        if (entries.len() as i64) < page {
            break;
        }
    }
    Ok(drained)
}
