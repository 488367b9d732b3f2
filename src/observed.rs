//! Pure: the observed state the planner compares with the desired state.
//! Built by `reconcile::observe` from the catalog and the storage listings.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Why a backup was taken (SPEC §3). Stored in manifests and the catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Trigger {
    Schedule,
    Rpo,
    Release,
    PreDeploy,
    PostDeploy,
    Forensic,
    Manual,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Schedule => "schedule",
            Trigger::Rpo => "rpo",
            Trigger::Release => "release",
            Trigger::PreDeploy => "pre-deploy",
            Trigger::PostDeploy => "post-deploy",
            Trigger::Forensic => "forensic",
            Trigger::Manual => "manual",
        }
    }

    pub fn parse(s: &str) -> Option<Trigger> {
        [
            Trigger::Schedule,
            Trigger::Rpo,
            Trigger::Release,
            Trigger::PreDeploy,
            Trigger::PostDeploy,
            Trigger::Forensic,
            Trigger::Manual,
        ]
        .into_iter()
        .find(|t| t.as_str() == s)
    }
}

impl std::fmt::Display for Trigger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the last check of a stored backup found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Health {
    /// Artifact present and its checksum matched the manifest when last read.
    Verified,
    /// Manifest known, artifact gone from storage (drift `artifact-missing`).
    Missing,
    /// Artifact present but its checksum or size differs (drift `artifact-corrupt`).
    Corrupt,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Verified => "verified",
            Health::Missing => "missing",
            Health::Corrupt => "corrupt",
        }
    }
}

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
}

/// The most recent failed attempt of a policy, when newer than its last success.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedRun {
    pub at: DateTime<Utc>,
    pub error: String,
    /// Consecutive failures since the last success (>= 1).
    pub consecutive: u32,
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
