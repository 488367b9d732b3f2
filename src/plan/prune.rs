//! Pure: the bounded set of deletions of one plan.
//!
//! Every deletion candidate of every policy is offered; at most
//! `max_deletions` are kept, the oldest first (ties: policy, then id), so a
//! large backlog is worked off from the oldest end over several cycles. The
//! candidates are selected with a bounded max-heap: O(candidates · log
//! max_deletions) time and O(max_deletions) memory, whatever the backlog.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::ops::Range;

use chrono::{DateTime, Utc};

use crate::observed::BackupRecord;
use crate::plan::{Action, Note, Reason, retention};
use crate::policy::Retention;

#[derive(Debug, Clone, Copy)]
pub(crate) enum Why<'a> {
    NotRetained(&'a Retention),
    Orphan,
}

#[derive(Debug, Clone, Copy)]
struct Candidate<'a> {
    at: DateTime<Utc>,
    backup: &'a BackupRecord,
    why: Why<'a>,
}

impl Candidate<'_> {
    fn key(&self) -> (DateTime<Utc>, &str, &str) {
        (self.at, &self.backup.policy, &self.backup.id)
    }
}

impl PartialEq for Candidate<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}
impl Eq for Candidate<'_> {}
impl PartialOrd for Candidate<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Candidate<'_> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key().cmp(&other.key())
    }
}

/// Every deletion candidate of a policy in one range of its list.
#[derive(Debug, Clone)]
pub(crate) struct Offered<'a> {
    pub policy: &'a str,
    /// The policy's whole list (`ObservedState::backups`), newest first.
    pub list: &'a [BackupRecord],
    /// Positions in `list`, ascending (newer before older).
    pub range: Range<usize>,
    /// Decided from the index without reading the records: only the plain
    /// ones are deleted (the bounded path's guard against a stale index).
    pub run: bool,
}

impl Offered<'_> {
    /// Whether the backup at `i` (in `range`) is really deleted.
    pub fn deletes(&self, i: usize) -> bool {
        !self.run || self.list[i].is_plain()
    }
}

pub(crate) enum Deletions<'a> {
    /// At most `max_deletions`, as actions.
    Bounded(Bounded<'a>),
    /// Every candidate, as ranges (previews).
    All(Vec<Offered<'a>>),
}

impl<'a> Deletions<'a> {
    pub fn bounded(cap: usize) -> Self {
        Deletions::Bounded(Bounded::new(cap))
    }

    pub fn all() -> Self {
        Deletions::All(Vec::new())
    }

    /// Offers `list[i]`, a backup of `policy` no rule keeps.
    #[inline(always)]
    pub fn offer(&mut self, policy: &'a str, list: &'a [BackupRecord], i: usize, why: Why<'a>) {
        match self {
            Deletions::Bounded(b) => b.offer(&list[i], why),
            Deletions::All(all) => push(all, policy, list, i..i + 1, false),
        }
    }

    /// Offers `list[run]`, plain backups no rule keeps (`started`: their
    /// start seconds).
    pub fn offer_run(
        &mut self,
        policy: &'a str,
        list: &'a [BackupRecord],
        run: Range<usize>,
        started: &[i64],
        why: Why<'a>,
    ) {
        match self {
            Deletions::Bounded(b) => b.offer_run(&list[run], started, why),
            Deletions::All(all) => push(all, policy, list, run, true),
        }
    }
}

/// Appends `range`, merged into the previous entry when it continues it.
fn push<'a>(
    all: &mut Vec<Offered<'a>>,
    policy: &'a str,
    list: &'a [BackupRecord],
    range: Range<usize>,
    run: bool,
) {
    if let Some(last) = all.last_mut()
        && std::ptr::eq(last.list, list)
        && last.run == run
        && last.range.end == range.start
    {
        last.range.end = range.end;
        return;
    }
    all.push(Offered {
        policy,
        list,
        range,
        run,
    });
}

pub(crate) struct Bounded<'a> {
    cap: usize,
    /// Max-heap: the newest selected candidate on top, evicted first.
    heap: BinaryHeap<Candidate<'a>>,
    /// `started_at` of the heap's top once the heap is full: anything newer
    /// is rejected without touching the heap.
    newest_selected: Option<DateTime<Utc>>,
    offered: usize,
}

impl<'a> Bounded<'a> {
    fn new(cap: usize) -> Self {
        Bounded {
            cap,
            heap: BinaryHeap::with_capacity(cap.min(4096)),
            newest_selected: None,
            offered: 0,
        }
    }

    #[inline(always)]
    fn offer(&mut self, backup: &'a BackupRecord, why: Why<'a>) {
        self.offered += 1;
        if self.cap == 0 || self.newest_selected.is_some_and(|n| backup.started_at > n) {
            return;
        }
        self.select(backup, why);
    }

    /// Offers every backup of `run` (newest first; `started`: their start
    /// seconds, rounded down): counts them all, reads only the oldest ones
    /// that can still be selected.
    fn offer_run(&mut self, run: &'a [BackupRecord], started: &[i64], why: Why<'a>) {
        self.offered += run.len();
        if self.cap == 0 {
            return;
        }
        // Oldest first: once one is newer than the newest selected, so is
        // every later one (and the newest selected only gets older).
        for (backup, &secs) in run.iter().zip(started).rev() {
            if let Some(n) = self.newest_selected
                && (secs > n.timestamp() || backup.started_at > n)
            {
                break;
            }
            // A run holds plain backups only, unless the index is stale (the
            // state changed without `index_backups`): never delete a pinned
            // or unhealthy one because of that.
            if backup.is_plain() {
                self.select(backup, why);
            }
        }
    }

    #[inline(never)]
    fn select(&mut self, backup: &'a BackupRecord, why: Why<'a>) {
        let c = Candidate {
            at: backup.started_at,
            backup,
            why,
        };
        if self.heap.len() < self.cap {
            self.heap.push(c);
        } else if let Some(mut top) = self.heap.peek_mut()
            && c < *top
        {
            *top = c;
        }
        if self.heap.len() == self.cap {
            self.newest_selected = self.heap.peek().map(|top| top.at);
        }
    }

    /// Appends the selected deletions, oldest first, and a note on the rest.
    pub fn finish(self, actions: &mut Vec<Action>, notes: &mut Vec<Note>) {
        let deferred = self.offered - self.heap.len();
        let mut selected = self.heap.into_vec();
        selected.sort_unstable();
        actions.extend(selected.into_iter().map(|c| Action::Delete {
            policy: c.backup.policy.clone(),
            storage: c.backup.storage.clone(),
            backup_id: c.backup.id.clone(),
            reason: match c.why {
                Why::NotRetained(rules) => Reason::NotRetained {
                    rules: retention::describe(rules),
                },
                Why::Orphan => Reason::OrphanPruned,
            },
        }));
        if deferred > 0 {
            notes.push(Note {
                policy: String::new(),
                text: format!(
                    "{deferred} more deletion{} deferred to later cycles (max_deletions={})",
                    if deferred == 1 { "" } else { "s" },
                    self.cap
                ),
            });
        }
    }
}
