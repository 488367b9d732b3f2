//! Pure: the observed state the planner compares with the desired state.
//! Built by `engine::observe` from the catalog and the storage listings.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use crate::model::{Health, Trigger};

/// One complete backup (its manifest exists) as the catalog knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupRecord {
    pub id: String,
    pub policy: String,
    pub storage: String,
    pub trigger: Trigger,
    /// Release tag for `release`, `pre-deploy`, `post-deploy`, `forensic`.
    pub release: Option<String>,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub size: u64,
    pub checksum: String,
    pub health: Health,
    /// Why it is pinned (e.g. "failed deploy v1.4.0"); pinned backups are never pruned.
    pub pinned: Option<String>,
    /// Set by observation when the backup's pin state cannot be known (its
    /// pin marker in storage is unreadable): why. Never pruned meanwhile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin_unknown: Option<String>,
}

/// The most recent failed attempt of a policy, when newer than its last success.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedRun {
    pub at: DateTime<Utc>,
    pub error: String,
    /// Consecutive failures since the last success (>= 1).
    pub consecutive: u32,
    /// The newest one was interrupted (its process died), not a failure of
    /// the backup itself: retried at once the first time (a replica taking
    /// a dead one's policy over retakes the backup without waiting).
    #[serde(default)]
    pub interrupted: bool,
}

/// An explicit request for a backup (CLI `backup`, deploy hooks, release tags).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupRequest {
    pub policy: String,
    pub trigger: Trigger,
    pub release: Option<String>,
    /// Who asked: `user@host` for the CLI, the token name for the API.
    pub requested_by: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservedState {
    /// Every complete backup, keyed by policy name (including policies that
    /// no longer exist: orphans). Each list is sorted newest first by
    /// `started_at` (ties broken by `id` descending); `observe` guarantees it.
    pub backups: BTreeMap<String, Vec<BackupRecord>>,
    /// Policies with a backup in progress right now.
    pub running: BTreeSet<String>,
    /// Last failure per policy, only when newer than the policy's last success.
    pub failures: BTreeMap<String, FailedRun>,
    /// Storages whose listing failed in this observation: nothing stored
    /// there may be pruned in this cycle.
    pub incomplete_storages: BTreeSet<String>,
    /// Explicit backup requests waiting for this cycle.
    pub requests: Vec<BackupRequest>,
    /// Drill history per policy.
    #[serde(default)]
    pub drills: BTreeMap<String, DrillHistory>,
    /// Explicit drill requests (`safepoint drill`).
    #[serde(default)]
    pub drill_requests: Vec<DrillRequest>,
    /// The WAL archive of each PITR policy, as its archiver last found it.
    #[serde(default)]
    pub pitr: BTreeMap<String, crate::model::PitrArchive>,
    /// Derived from `backups` by `index_backups` (which `observe` calls):
    /// lets the planner skip the plain backups of a long history without
    /// reading them. Not serialized; rebuild it after changing `backups`.
    #[serde(skip)]
    pub index: BackupIndex,
}

impl ObservedState {
    /// Builds `index` from `backups`, once per observation.
    pub fn index_backups(&mut self) {
        self.index = BackupIndex::build(&self.backups);
    }

    /// `index_backups`, for building a state in one expression.
    pub fn indexed(mut self) -> Self {
        self.index_backups();
        self
    }

    /// The index of one policy's `backups` (its list in `self.backups`):
    /// the one `index_backups` built when it is for a list of this length,
    /// else built now (tests and callers that skipped `index_backups`).
    pub fn policy_index<'a>(
        &'a self,
        policy: &str,
        backups: &[BackupRecord],
    ) -> Cow<'a, PolicyIndex> {
        match self.index.policies.get(policy) {
            Some(ix) if ix.started.len() == backups.len() => {
                debug_assert_eq!(
                    ix,
                    &PolicyIndex::build(backups),
                    "index of {policy} is stale: call index_backups after changing backups"
                );
                Cow::Borrowed(ix)
            }
            _ => Cow::Owned(PolicyIndex::build(backups)),
        }
    }
}

/// Derived from `ObservedState::backups`: per policy, what the planner needs
/// to skip the plain backups of a long history without reading them.
///
/// Derived data: equality ignores it (two states with the same `backups` are
/// the same observation, indexed or not).
#[derive(Debug, Clone, Default)]
pub struct BackupIndex {
    policies: BTreeMap<String, PolicyIndex>,
}

impl BackupIndex {
    pub fn build(backups: &BTreeMap<String, Vec<BackupRecord>>) -> Self {
        let policies = backups
            .iter()
            .map(|(name, list)| (name.clone(), PolicyIndex::build(list)))
            .collect();
        BackupIndex { policies }
    }
}

impl PartialEq for BackupIndex {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl Eq for BackupIndex {}

/// One policy's list of backups (newest first), compact.
///
/// A backup is *plain* when it is verified, not pinned (pin state known) and
/// carries no release tag; every other one is *special*. Retention decides a
/// run of plain backups from their start times alone, so at fleet scale
/// (10 M records of 184 bytes, scattered over three cache lines each) the
/// planner reads 8 bytes per backup at most, and whole records only for the special ones, the ones a
/// rule keeps, and the oldest few deletion candidates (docs/performance.md,
/// "Planner").
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyIndex {
    /// `started_at` of every backup, in whole seconds (rounded down), in
    /// list order.
    started: Vec<i64>,
    /// Positions of the special backups, ascending.
    special: Vec<usize>,
}

impl PolicyIndex {
    pub fn build(backups: &[BackupRecord]) -> Self {
        PolicyIndex {
            started: backups.iter().map(|b| b.started_at.timestamp()).collect(),
            special: backups
                .iter()
                .enumerate()
                .filter_map(|(i, b)| (!b.is_plain()).then_some(i))
                .collect(),
        }
    }

    /// `started_at` in whole seconds (rounded down) of every backup.
    pub fn started(&self) -> &[i64] {
        &self.started
    }

    /// Positions of the backups that are not plain, ascending.
    pub fn special(&self) -> &[usize] {
        &self.special
    }
}

impl BackupRecord {
    /// Verified, not pinned, pin state known, no release tag (see `PolicyIndex`).
    pub fn is_plain(&self) -> bool {
        self.health == Health::Verified
            && self.pinned.is_none()
            && self.pin_unknown.is_none()
            && self.release.is_none()
    }
}

/// What is known of a policy's recovery drills.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrillHistory {
    /// Start of the most recent drill, passed or failed.
    pub last_attempt: Option<DateTime<Utc>>,
    /// Start of the most recent passing drill.
    pub last_passed: Option<DateTime<Utc>>,
    /// Verdict of the most recent finished drill.
    pub last_passed_verdict: Option<bool>,
    pub running: bool,
}

/// `safepoint drill POLICY [--backup ID]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrillRequest {
    pub policy: String,
    /// A specific backup; default the newest verified one.
    pub backup_id: Option<String>,
    pub requested_by: String,
}
