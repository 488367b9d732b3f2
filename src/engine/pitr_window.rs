//! Engine: what a PITR policy's WAL archive holds, recorded by its archiver
//! (`engine::pitr`) in the catalog after its flushes, at most every
//! `RECORD_EVERY` (status, metrics and alerts read it from there):
//!
//! - the archived WAL end: before each flush the archiver reads the
//!   server's flushed position and what `pg_receivewal` confirmed in the
//!   spool (the slot's position); the flush that follows stores the whole
//!   spool, so once it succeeded the archive reaches that confirmed
//!   position;
//! - the window end: the time of the newest sample whose server position
//!   the archive reaches — everything written up to then is archived. Under
//!   a steady load that is the previous sample (about one flush interval
//!   ago); the lag in bytes is the server's position minus the archived end;
//! - the gaps: segments missing from the oldest verified base backup's
//!   start on (earlier ones no restore needs);
//! - the window start: the end of the oldest verified base backup from
//!   whose start on nothing is missing.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::engine::context::{Context, blocking};
use crate::executor::pitr_base::{BaseBackup, format_lsn};
use crate::executor::pitr_wal::Position;
use crate::model::{Health, PitrArchive};
use crate::storage::Storage;
use crate::storage::wal::{self, WalObject};

/// How often the archive state is recorded at most.
const RECORD_EVERY: Duration = Duration::from_secs(5);
/// Samples kept while the archive has not reached them.
const SAMPLES: usize = 600;

/// The archiver's memory between flushes.
pub(super) struct Tracker {
    policy: String,
    segment_size: u64,
    /// Server positions not yet reached by the archive, oldest first.
    samples: VecDeque<(DateTime<Utc>, u64)>,
    /// What the receiver had confirmed at the last sample.
    received: Option<u64>,
    /// The archive reaches this position (after a successful flush).
    archived: Option<u64>,
    last_server: Option<u64>,
    caught_up_at: Option<DateTime<Utc>>,
    recorded: Option<Instant>,
}

impl Tracker {
    pub(super) fn new(policy: &str) -> Tracker {
        Tracker {
            policy: policy.to_string(),
            segment_size: wal::DEFAULT_SEGMENT_SIZE,
            samples: VecDeque::new(),
            received: None,
            archived: None,
            last_server: None,
            caught_up_at: None,
            recorded: None,
        }
    }

    /// The positions before a flush (`None`: the server is unreachable,
    /// which only lets the lag grow).
    pub(super) fn sampled(&mut self, position: Option<Position>) {
        self.received = None;
        let Some(p) = position else {
            return;
        };
        self.segment_size = p.segment_size;
        self.received = p.received;
        self.last_server = Some(p.server);
        if self.samples.len() == SAMPLES {
            self.samples.pop_front();
        }
        self.samples.push_back((Utc::now(), p.server));
    }

    /// After a flush (`stored`: it stored the whole spool): advances the
    /// window end and records the state when due.
    pub(super) async fn flushed(&mut self, ctx: &Context, st: &Arc<dyn Storage>, stored: bool) {
        if let (true, Some(r)) = (stored, self.received) {
            self.archived = self.archived.max(Some(r));
            while let Some((at, lsn)) = self.samples.front().copied()
                && lsn <= r
            {
                self.caught_up_at = Some(at);
                self.samples.pop_front();
            }
        }
        if self.recorded.is_some_and(|t| t.elapsed() < RECORD_EVERY) {
            return;
        }
        self.recorded = Some(Instant::now());
        if let Err(e) = self.record(ctx, st).await {
            tracing::warn!(policy = %self.policy, error = %e, "cannot record the WAL archive state; status shows the previous one");
        }
    }

    async fn record(&mut self, ctx: &Context, st: &Arc<dyn Storage>) -> Result<(), String> {
        let (st, name) = (st.clone(), self.policy.clone());
        let objects = blocking(move || wal::list(&*st, &name))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        let rows = ctx.catalog.backups().await.map_err(|e| e.to_string())?;
        let bases: Vec<BaseBackup> = rows
            .iter()
            .filter(|r| r.record.policy == self.policy && r.record.health == Health::Verified)
            .filter_map(|r| BaseBackup::from_tools(&r.manifest.tools))
            .collect();
        let archive = Archived::of(&objects, self.archived, self.segment_size);
        let state = PitrArchive {
            policy: self.policy.clone(),
            window_start: archive.window_start(&bases),
            window_end: self.caught_up_at,
            end_lsn: archive.end_lsn.map(format_lsn),
            lag_bytes: self
                .last_server
                .zip(archive.end_lsn)
                .map(|(server, end)| server.saturating_sub(end)),
            gaps: archive.gaps(&bases),
            checked_at: Utc::now(),
        };
        ctx.catalog
            .record_pitr_archive(&state)
            .await
            .map_err(|e| e.to_string())
    }
}

/// The segments stored for a policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Archived {
    /// Complete segments, by number.
    complete: BTreeSet<u64>,
    /// The highest segment stored (complete or partial) and its timeline.
    top: Option<(u32, u64)>,
    /// Where the archived WAL ends.
    end_lsn: Option<u64>,
    size: u64,
}

impl Archived {
    /// From the stored objects and the position the archive is known to
    /// reach (else: past the newest complete segment).
    pub fn of(objects: &[WalObject], reached: Option<u64>, size: u64) -> Archived {
        let complete = wal::complete_segments(objects, size);
        let top = objects
            .iter()
            .filter_map(|o| wal::segment_number(o.segment(), size))
            .max_by_key(|(_, n)| *n);
        let end_lsn = complete.last().map(|n| (n + 1) * size).max(reached);
        Archived {
            complete,
            top,
            end_lsn,
            size,
        }
    }

    /// Missing segments from the oldest base backup's start to the top.
    pub fn gaps(&self, bases: &[BaseBackup]) -> Vec<String> {
        let (Some(from), Some((tli, top))) = (
            bases.iter().map(|b| b.start_lsn / self.size).min(),
            self.top,
        ) else {
            return Vec::new();
        };
        let mut gaps = Vec::new();
        let mut n = from;
        while n < top {
            if self.complete.contains(&n) {
                n += 1;
                continue;
            }
            let first = n;
            while n < top && !self.complete.contains(&n) {
                n += 1;
            }
            let name = |k| wal::segment_name(tli, k, self.size);
            gaps.push(if n - 1 == first {
                name(first)
            } else {
                format!("{}..{}", name(first), name(n - 1))
            });
        }
        gaps
    }

    /// The end of the oldest base backup from whose start on no segment is
    /// missing and that ended within the archive.
    pub fn window_start(&self, bases: &[BaseBackup]) -> Option<DateTime<Utc>> {
        let (_, top) = self.top?;
        let end = self.end_lsn?;
        let mut usable: Vec<&BaseBackup> = bases
            .iter()
            .filter(|b| b.stop_lsn <= end)
            .filter(|b| (b.start_lsn / self.size..top).all(|n| self.complete.contains(&n)))
            .collect();
        usable.sort_by_key(|b| b.stop_lsn);
        usable.first().map(|b| b.stop_time)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB16: u64 = wal::DEFAULT_SEGMENT_SIZE;

    fn objects(names: &[&str]) -> Vec<WalObject> {
        let hex = "a".repeat(64);
        names
            .iter()
            .map(|n| WalObject::parse(&format!("{n}~{hex}.zst")).unwrap())
            .collect()
    }

    fn base(start_seg: u64, stop_seg: u64, at: &str) -> BaseBackup {
        BaseBackup {
            timeline: 1,
            start_lsn: start_seg * MIB16 + 40,
            stop_lsn: stop_seg * MIB16 + 400,
            start_wal: wal::segment_name(1, start_seg, MIB16),
            stop_time: at.parse().unwrap(),
        }
    }

    #[test]
    fn gaps_count_from_the_oldest_base_backup_and_the_window_starts_after_them() {
        let o = objects(&[
            "000000010000000000000002",
            "000000010000000000000003",
            "000000010000000000000005",
            "000000010000000000000006",
            "000000010000000000000007.partial",
        ]);
        let a = Archived::of(&o, Some(7 * MIB16 + 4096), MIB16);
        assert_eq!(a.end_lsn, Some(7 * MIB16 + 4096));
        let old = base(2, 2, "2026-11-29T01:00:00Z");
        let new = base(5, 5, "2026-11-29T02:00:00Z");
        assert_eq!(
            a.gaps(&[old.clone(), new.clone()]),
            ["000000010000000000000004"]
        );
        assert_eq!(a.gaps(std::slice::from_ref(&new)), Vec::<String>::new());
        // The old backup cannot cross segment 4: the window starts after the new one.
        assert_eq!(
            a.window_start(&[old, new.clone()]),
            Some("2026-11-29T02:00:00Z".parse().unwrap())
        );
        // Nothing archived after a base backup ended: not in the window.
        assert_eq!(a.window_start(&[base(5, 8, "2026-11-29T03:00:00Z")]), None);
        let b = Archived::of(
            &objects(&["000000010000000000000002", "000000010000000000000006"]),
            None,
            MIB16,
        );
        assert_eq!(
            b.gaps(&[base(2, 2, "2026-11-29T01:00:00Z")]),
            ["000000010000000000000003..000000010000000000000005"]
        );
    }
}
