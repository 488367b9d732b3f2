//! Pure: the PITR part of a policy's status, from the state its WAL
//! archiver recorded (`model::PitrArchive`) and `now`: the recoverable
//! window, the WAL lag in bytes and seconds, and two drift kinds —
//! `wal-archive-gap` (a segment is missing after the oldest base backup's
//! start: recovery cannot cross it) and `archive-behind-rpo` (the archive
//! last held everything the server had written longer ago than allowed:
//! the policy's `rpo`, else two `walFlushInterval`s plus a minute).

use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;

use crate::model::{DriftKind, PitrArchive};
use crate::policy::BackupPolicy;

/// Shown in `status` (JSON) for a PITR policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PitrStatus {
    /// The earliest time a restore can reach (`None`: no usable base backup).
    pub window_start: Option<DateTime<Utc>>,
    /// The latest time up to which everything written is archived.
    pub window_end: Option<DateTime<Utc>>,
    pub end_lsn: Option<String>,
    /// How far the archive was behind the server at the last sample.
    pub lag_bytes: Option<u64>,
    /// `now - window_end`.
    pub lag_seconds: Option<i64>,
    /// The lag beyond which the archive is behind its RPO.
    pub allowed_lag_seconds: i64,
    /// Missing segments (`first..last` names).
    pub gaps: Vec<String>,
    /// When the archiver last recorded this (`None`: never).
    pub checked_at: Option<DateTime<Utc>>,
}

/// How far behind the server a PITR policy's archive may fall: its `rpo`,
/// else two flush intervals plus a minute (an upload, a restarted receiver).
pub fn allowed_lag(p: &BackupPolicy) -> Option<TimeDelta> {
    let pitr = p.source.pitr()?;
    Some(
        p.rpo
            .unwrap_or(pitr.wal_flush_interval * 2 + TimeDelta::seconds(60)),
    )
}

/// The PITR status of `p` and its drift; `None` for other policies.
pub fn of(
    p: &BackupPolicy,
    archive: Option<&PitrArchive>,
    now: DateTime<Utc>,
) -> Option<(PitrStatus, Vec<DriftKind>)> {
    let allowed = allowed_lag(p)?;
    let empty = PitrArchive::default();
    let a = archive.unwrap_or(&empty);
    let lag = a.window_end.map(|end| (now - end).max(TimeDelta::zero()));
    let mut drift = Vec::new();
    if !a.gaps.is_empty() {
        drift.push(DriftKind::WalArchiveGap);
    }
    // Never recorded: nothing streamed yet (a new policy), no drift; a
    // suspended policy is not archived.
    let behind = match (archive, lag) {
        (None, _) => false,
        (Some(_), Some(lag)) => lag > allowed,
        (Some(a), None) => now - a.checked_at > allowed,
    };
    if behind && !p.suspend {
        drift.push(DriftKind::ArchiveBehindRpo);
    }
    let status = PitrStatus {
        window_start: a.window_start,
        window_end: a.window_end,
        end_lsn: a.end_lsn.clone(),
        lag_bytes: a.lag_bytes,
        lag_seconds: lag.map(|l| l.num_seconds()),
        allowed_lag_seconds: allowed.num_seconds(),
        gaps: a.gaps.clone(),
        checked_at: archive.map(|a| a.checked_at),
    };
    Some((status, drift))
}

/// The alert text of a PITR drift kind.
pub fn detail(kind: DriftKind, w: Option<&PitrStatus>) -> String {
    match (kind, w) {
        (DriftKind::WalArchiveGap, Some(w)) => format!(
            "the WAL archive misses segment(s) {}: recovery cannot cross them",
            w.gaps.join(", ")
        ),
        (DriftKind::ArchiveBehindRpo, Some(w)) => match w.window_end {
            Some(end) => format!(
                "the WAL archive holds everything written only up to {} ({} s ago); the allowed lag is {} s",
                end.format("%Y-%m-%d %H:%M:%S UTC"),
                w.lag_seconds.unwrap_or(0),
                w.allowed_lag_seconds
            ),
            None => "the WAL archive has not caught up with the server yet".into(),
        },
        (kind, _) => format!("drift {kind}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{PolicyFile, load};

    fn policy(rpo: &str) -> BackupPolicy {
        let storage = "apiVersion: safepoint/v1\nkind: Storage\nmetadata:\n  name: local\nspec:\n  type: local\n  path: store\n";
        let policy = format!(
            "apiVersion: safepoint/v1\nkind: BackupPolicy\nmetadata:\n  name: orders-db\nspec:\n  source:\n    type: postgres\n    url: postgres://u@h/db\n    pitr: {{walFlushInterval: 10s}}\n  storage: local\n  schedule: {{cron: \"0 2 * * *\"}}\n{rpo}  retention:\n    keepLast: 3\n"
        );
        let files = [
            PolicyFile::new("s.yaml", storage),
            PolicyFile::new("p.yaml", policy),
        ];
        let mut state = load(&files).unwrap_or_else(|d| panic!("{d:?}"));
        state.policies.remove("orders-db").unwrap()
    }

    #[test]
    fn gaps_and_an_old_window_end_are_drift() {
        let now: DateTime<Utc> = "2026-11-29T10:00:00Z".parse().unwrap();
        let p = policy("");
        assert_eq!(allowed_lag(&p), Some(TimeDelta::seconds(80)));
        let mut a = PitrArchive {
            policy: p.name.clone(),
            window_end: Some(now - TimeDelta::seconds(30)),
            checked_at: now,
            ..PitrArchive::default()
        };
        let (st, drift) = of(&p, Some(&a), now).unwrap();
        assert_eq!((st.lag_seconds, drift.len()), (Some(30), 0));
        a.gaps = vec!["000000010000000000000004".into()];
        a.window_end = Some(now - TimeDelta::seconds(81));
        let (_, drift) = of(&p, Some(&a), now).unwrap();
        assert_eq!(
            drift,
            [DriftKind::WalArchiveGap, DriftKind::ArchiveBehindRpo]
        );
        // The policy's RPO, when declared, is the limit.
        let p = policy("  rpo: 1h\n");
        assert_eq!(of(&p, Some(&a), now).unwrap().1, [DriftKind::WalArchiveGap]);
        // Nothing recorded yet: no drift.
        assert!(of(&p, None, now).unwrap().1.is_empty());
    }
}
