//! Pure: `plan(desired, observed, now, options) -> Plan`. The one place that
//! decides what to back up and what to prune, and why. No IO, no
//! clock: `now` is a parameter. `safepoint plan`, the daemon and the API all
//! render the same `Plan`.

mod backup;
mod decide;
mod drill;
pub mod preview;
mod preview_diff;
mod preview_effects;
mod preview_render;
mod prune;
mod render;
pub mod retention;
pub mod schedule;

use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;

use crate::observed::{ObservedState, Trigger};
use crate::policy::DesiredState;

pub use schedule::{last_slot, next_slot};

/// Decides what to do now. Pure and deterministic: the same inputs give the
/// same plan, with no clock, IO or randomness. See `decide` for the rules.
pub fn plan(
    desired: &DesiredState,
    observed: &ObservedState,
    now: DateTime<Utc>,
    options: &PlanOptions,
) -> Plan {
    let mut plan = decide::plan(desired, observed, now, options);
    drill::plan_drills(&mut plan, desired, observed, now);
    plan
}

/// Knobs of the daemon that shape a plan (from settings, not from Git).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlanOptions {
    /// At most this many deletions per plan (bounded deletion).
    pub max_deletions: usize,
    /// `prune --orphans`: also delete backups of policies no longer in Git.
    pub prune_orphans: bool,
    /// The deletion guard (`preview`): a revision may delete at most this
    /// many backups of one policy without acknowledging it
    /// (`safepoint.io/allow-deletions`); `--deletion-guard`.
    pub deletion_guard: usize,
    /// Wait at least this long after a failed attempt before retrying
    /// (doubled per consecutive failure, capped at `max_retry_backoff`).
    #[serde(skip)]
    pub retry_backoff: TimeDelta,
    #[serde(skip)]
    pub max_retry_backoff: TimeDelta,
}

impl Default for PlanOptions {
    fn default() -> Self {
        PlanOptions {
            max_deletions: 100,
            prune_orphans: false,
            deletion_guard: 0,
            retry_backoff: TimeDelta::minutes(1),
            max_retry_backoff: TimeDelta::hours(1),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Plan {
    /// Backups first, then deletions, in execution order.
    pub actions: Vec<Action>,
    /// Recovery drills to run after the actions.
    pub drills: Vec<Drill>,
    /// Every backup that stays, with all the reasons it stays.
    pub kept: Vec<Kept>,
    /// Things the operator should know that are not actions (orphans,
    /// prune skipped because storage listing failed, retry waiting, ...).
    pub notes: Vec<Note>,
    /// When the daemon must wake up next even if nothing else happens
    /// (next cron slot, RPO deadline, retry time).
    pub next_wakeup: Option<DateTime<Utc>>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.actions.is_empty() && self.drills.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum Action {
    Backup {
        policy: String,
        trigger: Trigger,
        release: Option<String>,
        reason: Reason,
    },
    /// Only executed after every `Backup` of the same policy in this plan
    /// succeeded (retention was computed with those backups counted, so a
    /// delete may remove the backup that was the newest verified one before
    /// the new backup existed). If one of them fails, the executor drops the
    /// policy's deletes; the next plan recomputes them.
    Delete {
        policy: String,
        storage: String,
        backup_id: String,
        reason: Reason,
    },
}

impl Action {
    pub fn policy(&self) -> &str {
        match self {
            Action::Backup { policy, .. } | Action::Delete { policy, .. } => policy,
        }
    }
    pub fn reason(&self) -> &Reason {
        match self {
            Action::Backup { reason, .. } | Action::Delete { reason, .. } => reason,
        }
    }
}

/// Why an action is planned. `Display` is the one-line text users read.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Reason {
    /// The policy has no complete backup yet.
    FirstBackup,
    /// A cron slot passed with no backup started at or after it.
    ScheduleDue { slot: DateTime<Utc> },
    /// The newest good backup is older than the RPO (or there is none).
    RpoMissed {
        newest: Option<DateTime<Utc>>,
        rpo_seconds: i64,
        /// `now - newest` when the plan was made (Display has no clock).
        age_seconds: Option<i64>,
    },
    /// Retrying after a failed attempt (backoff elapsed).
    Retry {
        failed_at: DateTime<Utc>,
        consecutive: u32,
    },
    /// Explicit request (CLI, API, deploy hook, release tag).
    Requested { by: String },
    /// No retention rule keeps this backup any more.
    NotRetained { rules: String },
    /// `prune --orphans`: the policy was deleted from Git.
    OrphanPruned,
    /// A drill cron slot passed with no drill started at or after it.
    DrillDue { slot: DateTime<Utc> },
}

/// Restore `backup_id` into a scratch target and verify it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Drill {
    pub policy: String,
    pub backup_id: String,
    pub reason: Reason,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Kept {
    pub policy: String,
    pub backup_id: String,
    pub reasons: Vec<KeepReason>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "rule", rename_all = "kebab-case")]
pub enum KeepReason {
    /// One of the `keepLast` newest (1-based position).
    Last {
        n: u32,
    },
    /// Newest of its bucket, e.g. `daily 2026-11-24`.
    Hourly {
        bucket: String,
    },
    Daily {
        bucket: String,
    },
    Weekly {
        bucket: String,
    },
    Monthly {
        bucket: String,
    },
    Yearly {
        bucket: String,
    },
    /// A release baseline or pre-deploy snapshot of one of the last `keepReleases` releases.
    Release {
        tag: String,
    },
    Pinned {
        why: String,
    },
    /// The backup's pin marker in storage is unreadable: it may be pinned,
    /// so it is not pruned until its pin state is known again.
    PinUnknown {
        why: String,
    },
    /// Never prune the newest verified backup of a policy.
    NewestVerified,
    /// The policy is gone from Git; kept until `prune --orphans`.
    Orphaned,
    /// The storage listing failed this cycle: nothing there is pruned.
    StorageIncomplete,
    /// Missing or corrupt: reported as drift, never deleted automatically.
    Unhealthy,
    /// The policy is suspended: its backups are left alone.
    Suspended,
    /// A backup of the policy is running: pruning waits for its outcome.
    Running,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Note {
    pub policy: String,
    pub text: String,
}

#[cfg(test)]
#[path = "invariants_tests.rs"]
mod invariants_tests;
