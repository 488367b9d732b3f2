//! IO: wake the daemon when a local policy repository changes (file events on
//! its git directory, debounced), so a commit is picked up within a second.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use notify::RecursiveMode;
use notify_debouncer_full::{DebounceEventResult, Debouncer, RecommendedCache, new_debouncer};
use tokio::sync::Notify;

/// Keeps the watcher alive; dropping it stops watching.
pub struct Watch {
    _debouncer: Debouncer<notify::RecommendedWatcher, RecommendedCache>,
}

/// Calls `wake.notify_one()` after changes under `git_dir` settle for 300 ms.
pub fn watch(git_dir: &Path, wake: Arc<Notify>) -> Result<Watch, notify::Error> {
    let mut debouncer = new_debouncer(
        Duration::from_millis(300),
        None,
        move |result: DebounceEventResult| {
            if let Ok(events) = result
                && events.iter().any(|e| !e.kind.is_access())
            {
                wake.notify_one();
            }
        },
    )?;
    debouncer.watch(git_dir, RecursiveMode::Recursive)?;
    Ok(Watch {
        _debouncer: debouncer,
    })
}
