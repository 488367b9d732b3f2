//! Pure: what `safepoint status` (and later `/api/v1/status`) reports, derived
//! from the desired state, the observed state, the revision bookkeeping and
//! `now`. Conditions follow Flux/Argo CD: Ready, or Stalled with a reason.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::model::{DriftKind, RevisionRecord};
use crate::observed::{BackupRecord, Health, ObservedState, Trigger};
use crate::policy::{BackupPolicy, DesiredState};

/// Revision bookkeeping of the policy repository.
#[derive(Debug, Clone, Default)]
pub struct RepoInput {
    /// Commit of the revision in force.
    pub applied: Option<String>,
    /// The last revision tried (may be the applied one or a rejected one).
    pub attempted: Option<RevisionRecord>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub ready: bool,
    pub reason: String,
    pub applied: Option<String>,
    pub attempted: Option<String>,
    /// Problems of the last attempted revision when it was rejected.
    pub diagnostics: Vec<String>,
    pub policies: Vec<PolicyStatus>,
}

impl Status {
    /// The repository and every policy are Ready (`status` exits 0).
    pub fn all_ready(&self) -> bool {
        self.ready && self.policies.iter().all(|p| p.ready)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct PolicyStatus {
    pub name: String,
    pub storage: String,
    pub ready: bool,
    pub reason: String,
    pub suspended: bool,
    pub last_good: Option<LastGood>,
    pub rpo_seconds: Option<i64>,
    pub rpo_met: Option<bool>,
    pub next_run: Option<DateTime<Utc>>,
    pub backups: usize,
    /// Start of the last passing drill, and the verdict of the last drill.
    pub last_drill_passed: Option<DateTime<Utc>>,
    pub last_drill_verdict: Option<&'static str>,
    /// Drift kinds present now.
    pub drift: Vec<DriftKind>,
    /// PITR policies: the recoverable window and the WAL lag.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pitr: Option<crate::pitr_status::PitrStatus>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LastGood {
    pub id: String,
    pub started_at: DateTime<Utc>,
    pub age_seconds: i64,
    pub trigger: Trigger,
    /// Stored (compressed) bytes.
    pub size: u64,
}

/// No passing drill within one interval of the drill schedule (plus the
/// drill's own `maxDuration`, at least an hour, as grace for the drill of the
/// current slot to finish). A policy without any backup is not overdue.
fn drill_overdue(
    spec: &crate::policy::DrillSpec,
    last_passed: Option<DateTime<Utc>>,
    newest_backup: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> bool {
    let Some(schedule) = &spec.schedule else {
        return false;
    };
    let (Some(last), Some(next)) = (
        crate::plan::schedule::last_slot(schedule, now),
        crate::plan::schedule::next_slot(schedule, now),
    ) else {
        return false;
    };
    let grace = spec
        .max_duration
        .unwrap_or_default()
        .max(chrono::TimeDelta::hours(1));
    let interval = next - last;
    match (last_passed, newest_backup) {
        (Some(passed), _) => now - passed > interval + grace,
        (None, Some(first)) => now - first > interval + grace,
        (None, None) => false,
    }
}

pub fn compute(
    desired: &DesiredState,
    observed: &ObservedState,
    repo: &RepoInput,
    now: DateTime<Utc>,
) -> Status {
    let rejected = repo.attempted.as_ref().filter(|a| !a.valid);
    let (ready, reason) = match (rejected, &repo.applied) {
        (Some(a), _) => (
            false,
            format!(
                "commit {} is invalid ({} problem(s)); the last valid revision stays in force: {}",
                &a.commit[..a.commit.len().min(12)],
                a.diagnostics.len(),
                a.diagnostics.first().cloned().unwrap_or_default()
            ),
        ),
        (None, None) => (false, "no valid policy revision applied yet".to_string()),
        (None, Some(_)) => (true, "policies applied".to_string()),
    };
    Status {
        ready,
        reason,
        applied: repo.applied.clone(),
        attempted: repo.attempted.as_ref().map(|a| a.commit.clone()),
        diagnostics: rejected.map(|a| a.diagnostics.clone()).unwrap_or_default(),
        policies: desired
            .policies
            .values()
            .map(|p| policy_status(p, observed, now))
            .collect(),
    }
}

fn policy_status(p: &BackupPolicy, observed: &ObservedState, now: DateTime<Utc>) -> PolicyStatus {
    let backups = observed.backups.get(&p.name).map_or(&[][..], Vec::as_slice);
    let newest = backups.iter().find(|b| b.health == Health::Verified);
    let rpo_met = p
        .rpo
        .map(|rpo| newest.is_some_and(|b| now - b.started_at <= rpo));
    let drills = observed.drills.get(&p.name);
    let mut drift = drift(p, observed, backups, rpo_met, now);
    let pitr = crate::pitr_status::of(p, observed.pitr.get(&p.name), now);
    drift.extend(pitr.iter().flat_map(|(_, d)| d.iter().copied()));
    let (ready, reason) = condition(p, observed, newest.is_some(), rpo_met, &drift);
    PolicyStatus {
        name: p.name.clone(),
        storage: p.storage.clone(),
        ready,
        reason,
        suspended: p.suspend,
        last_good: newest.map(|b| LastGood {
            id: b.id.clone(),
            started_at: b.started_at,
            age_seconds: (now - b.started_at).num_seconds(),
            trigger: b.trigger,
            size: b.size,
        }),
        rpo_seconds: p.rpo.map(|r| r.num_seconds()),
        rpo_met,
        next_run: if p.suspend {
            None
        } else {
            p.schedule
                .as_ref()
                .and_then(|s| crate::plan::schedule::next_slot(s, now))
        },
        backups: backups.len(),
        last_drill_passed: drills.and_then(|d| d.last_passed),
        last_drill_verdict: drills
            .and_then(|d| d.last_passed_verdict)
            .map(|ok| if ok { "passed" } else { "failed" }),
        drift,
        pitr: pitr.map(|(st, _)| st),
    }
}

/// The drift kinds present now.
fn drift(
    p: &BackupPolicy,
    observed: &ObservedState,
    backups: &[BackupRecord],
    rpo_met: Option<bool>,
    now: DateTime<Utc>,
) -> Vec<DriftKind> {
    let newest = backups.iter().find(|b| b.health == Health::Verified);
    let drills = observed.drills.get(&p.name);
    let mut drift = Vec::new();
    if rpo_met == Some(false) {
        drift.push(DriftKind::RpoMissed);
    }
    if observed.failures.contains_key(&p.name) {
        drift.push(DriftKind::BackupFailed);
    }
    if backups.iter().any(|b| b.health == Health::Missing) {
        drift.push(DriftKind::ArtifactMissing);
    }
    if backups.iter().any(|b| b.health == Health::Corrupt) {
        drift.push(DriftKind::ArtifactCorrupt);
    }
    if drills.and_then(|d| d.last_passed_verdict) == Some(false) {
        drift.push(DriftKind::DrillFailed);
    }
    if let Some(spec) = &p.drill
        && drill_overdue(
            spec,
            drills.and_then(|d| d.last_passed),
            newest.map(|b| b.started_at),
            now,
        )
    {
        drift.push(DriftKind::DrillOverdue);
    }
    drift
}

/// Ready or not, and why: suspension first, then a failing backup, a missed
/// RPO, a running backup, no backup yet, else the drift (if any).
fn condition(
    p: &BackupPolicy,
    observed: &ObservedState,
    has_backup: bool,
    rpo_met: Option<bool>,
    drift: &[DriftKind],
) -> (bool, String) {
    if p.suspend {
        (true, "suspended".to_string())
    } else if let Some(f) = observed.failures.get(&p.name) {
        (
            false,
            format!("{} failed attempt(s), last: {}", f.consecutive, f.error),
        )
    } else if rpo_met == Some(false) {
        (false, "rpo missed".to_string())
    } else if observed.running.contains(&p.name) {
        (true, "backup running".to_string())
    } else if !has_backup {
        (true, "no backup yet".to_string())
    } else if drift.is_empty() {
        (true, "backups current".to_string())
    } else {
        let kinds: Vec<&str> = drift.iter().map(|k| k.as_str()).collect();
        (false, kinds.join(", "))
    }
}
