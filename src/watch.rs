//! Hot reload on file changes: inotify watches on the plan and playbook directories and,
//! recursively, the template directory — the directories, not the files, because editors
//! save by writing a temp file and renaming it over the old one (a watch on the file would be
//! lost; notify#531). Events are debounced: a reload starts once the directories have been
//! quiet for [`DEBOUNCE`] (or [`MAX_DELAY`] after the first event, so constant writing cannot
//! starve it). Reads (`Access` events, which the reload itself causes) never trigger one.
//! The request names the files that changed, so that a change to plan files alone reloads
//! just those; an event without paths or one that asks for a rescan (the kernel's queue
//! overflowed) asks for everything.

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Quiet time before a reload.
pub const DEBOUNCE: Duration = Duration::from_millis(300);
/// Longest wait after the first event.
pub const MAX_DELAY: Duration = Duration::from_secs(2);

/// The directories ops edit: plans, playbooks (each flat) and templates (a tree).
pub struct Dirs {
    /// The plan directory (`plans`).
    pub plans: PathBuf,
    /// The playbook directory (`playbooks`).
    pub playbooks: PathBuf,
    /// The template directory (`templates`), watched recursively.
    pub templates: PathBuf,
}

/// Watches for changes and asks for reloads; stops (and drops its inotify watches) on `stop`.
pub struct Watcher {
    /// Keeps the inotify watches alive.
    watcher: RecommendedWatcher,
    events: mpsc::UnboundedReceiver<Changed>,
    reload: crate::reload::Requests,
}

impl Watcher {
    /// Puts the watches on `dirs`; a missing directory is logged and skipped.
    ///
    /// # Errors
    /// inotify could not be set up, or a directory could not be watched.
    pub fn start(dirs: &Dirs, reload: crate::reload::Requests) -> anyhow::Result<Watcher> {
        let (tx, events) = mpsc::unbounded_channel::<Changed>();
        let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| match res {
            Ok(event) if relevant(&event) => {
                let paths: Vec<PathBuf> = event.paths.into_iter().filter(|p| !scratch_file(p)).collect();
                let everything = event.attrs.flag() == Some(notify::event::Flag::Rescan) || paths.is_empty();
                let _ = tx.send(if everything { None } else { Some(paths) });
            }
            Ok(event) if event.need_rescan() => {
                let _ = tx.send(None);
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "file watcher error; reloading everything (SIGHUP also does)");
                let _ = tx.send(None);
            }
        })?;
        for (dir, mode) in [
            // Recursive: a customer's template overrides live in `plans/<customer id>/`.
            (&dirs.plans, RecursiveMode::Recursive),
            (&dirs.playbooks, RecursiveMode::NonRecursive),
            (&dirs.templates, RecursiveMode::Recursive),
        ] {
            if !dir.is_dir() {
                tracing::warn!(dir = %dir.display(), "not watching a missing directory; create it and send SIGHUP");
                continue;
            }
            watcher.watch(dir, mode).map_err(|e| anyhow::anyhow!("cannot watch {}: {e}", dir.display()))?;
        }
        Ok(Watcher { watcher, events, reload })
    }

    /// Debounces events into reload requests until `stop`.
    pub async fn run(mut self, stop: CancellationToken) {
        let _keep_alive = &self.watcher;
        loop {
            let mut changed = tokio::select! {
                e = self.events.recv() => match e { Some(c) => c, None => return },
                _ = stop.cancelled() => return,
            };
            let first = Instant::now();
            loop {
                tokio::select! {
                    e = tokio::time::timeout(DEBOUNCE, self.events.recv()) => match e {
                        Ok(Some(more)) => {
                            changed = match (changed, more) {
                                (Some(mut a), Some(b)) => {
                                    a.extend(b);
                                    Some(a)
                                }
                                _ => None,
                            };
                            if first.elapsed() < MAX_DELAY {
                                continue;
                            }
                            break;
                        }
                        Ok(None) => return,
                        Err(_) => break,
                    },
                    _ = stop.cancelled() => return,
                }
            }
            if let Some(c) = changed.as_mut() {
                c.sort();
                c.dedup();
            }
            let request = crate::reload::Request { cause: "files changed".to_string(), changed };
            if self.reload.send(request).await.is_err() {
                return;
            }
        }
    }
}

/// The paths one event names; `None`: unknown (reload everything).
type Changed = Option<Vec<PathBuf>>;

/// A change (create, write, rename, delete) to a file ops may edit; not a read, and not an
/// editor's swap or backup file.
fn relevant(event: &notify::Event) -> bool {
    matches!(event.kind, EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_) | EventKind::Any)
        && event.paths.iter().any(|p| !scratch_file(p))
}

fn scratch_file(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    name.starts_with('.') || name.ends_with('~') || name.ends_with(".swp") || name.ends_with(".swx") || name == "4913"
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{AccessKind, CreateKind, ModifyKind, RenameMode};

    fn event(kind: EventKind, path: &str) -> notify::Event {
        notify::Event::new(kind).add_path(path.into())
    }

    #[test]
    fn changes_count_reads_and_editor_scratch_files_do_not() {
        assert!(relevant(&event(EventKind::Modify(ModifyKind::Name(RenameMode::To)), "/p/acme.toml")));
        assert!(relevant(&event(EventKind::Create(CreateKind::File), "/p/acme.toml")));
        assert!(relevant(&event(EventKind::Remove(notify::event::RemoveKind::File), "/p/acme.toml")));
        assert!(!relevant(&event(EventKind::Access(AccessKind::Read), "/p/acme.toml")));
        assert!(!relevant(&event(EventKind::Modify(ModifyKind::Any), "/p/.acme.toml.swp")));
        assert!(!relevant(&event(EventKind::Create(CreateKind::File), "/p/acme.toml~")));
        assert!(!relevant(&event(EventKind::Create(CreateKind::File), "/p/4913")));
    }
}
