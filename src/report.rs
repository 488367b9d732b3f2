//! Pure: the compliance report: per policy, over a window ending at
//! `now`, how often the RPO was met, backups taken and failed, what is kept,
//! whether retention was honoured, drills and deploys. Rendered as Markdown
//! (readable as is) or JSON (stable, documented in docs/report.md).

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;

use crate::audit::Entry;
use crate::model::{AuditKind, RunOutcome};
use crate::observed::{Health, Trigger};
use crate::policy::DesiredState;

/// A backup as history knows it (deleted ones included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoricBackup {
    pub id: String,
    pub policy: String,
    pub trigger: Trigger,
    pub release: Option<String>,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub health: Health,
    pub pinned: bool,
    pub deleted_at: Option<DateTime<Utc>>,
}

/// A finished run (one backup attempt).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoricRun {
    pub policy: String,
    pub started_at: DateTime<Utc>,
    /// `Succeeded`, `Failed` or `Interrupted`.
    pub outcome: RunOutcome,
}

pub struct Inputs<'a> {
    pub desired: &'a DesiredState,
    pub backups: &'a [HistoricBackup],
    pub runs: &'a [HistoricRun],
    pub audit: &'a [Entry],
    pub since: DateTime<Utc>,
    pub now: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// Version of this JSON shape.
    pub format: u32,
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
    pub policies: Vec<PolicyReport>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PolicyReport {
    pub policy: String,
    pub rpo_seconds: Option<i64>,
    /// Share of the window (from the first completed backup or the window start) during
    /// which a completed backup younger than the RPO existed; `None` without RPO.
    pub rpo_met_percent: Option<f64>,
    pub backups_taken: usize,
    pub backups_failed: usize,
    /// Backups that existed at the window's end (`until`): taken before it and
    /// not deleted by then.
    pub kept: usize,
    pub oldest_kept: Option<DateTime<Utc>>,
    pub newest_kept: Option<DateTime<Utc>>,
    /// Backups deleted inside the window `[since, until]`.
    pub pruned: usize,
    /// Every deletion in the window was a retention decision recorded in the
    /// audit log, and no pinned backup was deleted.
    pub retention_honoured: bool,
    pub unhealthy: usize,
    pub drills_passed: usize,
    pub drills_failed: usize,
    pub deploys: Vec<DeployEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeployEntry {
    pub release: String,
    pub pre_deploy_backup: String,
    pub at: DateTime<Utc>,
}

/// Seconds of `[from, to]` covered by the union of `intervals`.
fn covered(
    mut intervals: Vec<(DateTime<Utc>, DateTime<Utc>)>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> TimeDelta {
    intervals.sort();
    let mut total = TimeDelta::zero();
    let mut cursor = from;
    for (start, end) in intervals {
        let start = start.max(cursor);
        let end = end.min(to);
        if end > start {
            total += end - start;
            cursor = end;
        }
    }
    total
}

pub fn build(inputs: &Inputs<'_>) -> Report {
    let mut names: Vec<&str> = inputs.desired.policies.keys().map(String::as_str).collect();
    for b in inputs.backups {
        if !names.contains(&b.policy.as_str()) {
            names.push(&b.policy);
        }
    }
    names.sort_unstable();
    let policies = names
        .into_iter()
        .map(|name| policy_report(inputs, name))
        .collect();
    Report {
        format: 1,
        since: inputs.since,
        until: inputs.now,
        policies,
    }
}

fn policy_report(inputs: &Inputs<'_>, name: &str) -> PolicyReport {
    let (since, now) = (inputs.since, inputs.now);
    let backups: Vec<&HistoricBackup> =
        inputs.backups.iter().filter(|b| b.policy == name).collect();
    let rpo = inputs.desired.policies.get(name).and_then(|p| p.rpo);
    let runs: Vec<&HistoricRun> = inputs
        .runs
        .iter()
        .filter(|r| r.policy == name && r.started_at >= since && r.started_at <= now)
        .collect();
    // Kept: existed at the window's end (taken before it, not deleted by then).
    // With `now` the time of the report this is "the backups that exist now".
    let kept: Vec<&&HistoricBackup> = backups
        .iter()
        .filter(|b| b.started_at <= now && b.deleted_at.is_none_or(|d| d > now))
        .collect();
    let deleted_in_window: Vec<&&HistoricBackup> = backups
        .iter()
        .filter(|b| b.deleted_at.is_some_and(|d| d >= since && d <= now))
        .collect();
    PolicyReport {
        policy: name.to_string(),
        rpo_seconds: rpo.map(|r| r.num_seconds()),
        rpo_met_percent: rpo.map(|rpo| rpo_met_percent(&backups, rpo, since, now)),
        backups_taken: runs
            .iter()
            .filter(|r| r.outcome == RunOutcome::Succeeded)
            .count(),
        backups_failed: runs
            .iter()
            .filter(|r| r.outcome != RunOutcome::Succeeded)
            .count(),
        kept: kept.len(),
        oldest_kept: kept.iter().map(|b| b.started_at).min(),
        newest_kept: kept.iter().map(|b| b.started_at).max(),
        pruned: deleted_in_window.len(),
        retention_honoured: retention_honoured(inputs, name, &deleted_in_window),
        unhealthy: kept.iter().filter(|b| b.health != Health::Verified).count(),
        drills_passed: audited(inputs, name, AuditKind::DrillPassed).count(),
        drills_failed: audited(inputs, name, AuditKind::DrillFailed).count(),
        deploys: deploys(&backups, since),
    }
}

/// Share of `[from, now]` (from the first completed backup or `since`)
/// during which a completed backup younger than `rpo` existed, in percent
/// rounded to two decimals.
fn rpo_met_percent(
    backups: &[&HistoricBackup],
    rpo: TimeDelta,
    since: DateTime<Utc>,
    now: DateTime<Utc>,
) -> f64 {
    let first = backups.iter().map(|b| b.finished_at).min();
    let from = first.map_or(since, |f| f.max(since)).min(now);
    let window = now - from;
    if window <= TimeDelta::zero() {
        return if backups.is_empty() { 0.0 } else { 100.0 };
    }
    let intervals = backups
        .iter()
        .filter(|b| b.health == Health::Verified || b.deleted_at.is_some())
        .map(|b| {
            let end = (b.started_at + rpo).min(b.deleted_at.unwrap_or(now));
            (b.finished_at, end)
        })
        .collect();
    let pct = covered(intervals, from, now).num_milliseconds() as f64
        / window.num_milliseconds() as f64
        * 100.0;
    (pct * 100.0).round() / 100.0
}

/// The audit entries of `kind` about `name` since the window's start.
fn audited<'a>(
    inputs: &'a Inputs<'_>,
    name: &'a str,
    kind: AuditKind,
) -> impl Iterator<Item = &'a Entry> {
    inputs.audit.iter().filter(move |e| {
        e.policy.as_deref() == Some(name) && e.at >= inputs.since && e.kind == kind.as_str()
    })
}

/// Every backup deleted in the window was unpinned and its deletion is a
/// retention decision recorded in the audit log (`backup-pruned`).
fn retention_honoured(inputs: &Inputs<'_>, name: &str, deleted: &[&&HistoricBackup]) -> bool {
    let pruned: Vec<&Entry> = audited(inputs, name, AuditKind::BackupPruned).collect();
    deleted
        .iter()
        .all(|b| !b.pinned && pruned.iter().any(|e| e.message.contains(&b.id)))
}

/// The pre-deploy snapshots taken since the window's start, oldest first.
fn deploys(backups: &[&HistoricBackup], since: DateTime<Utc>) -> Vec<DeployEntry> {
    let mut deploys: Vec<DeployEntry> = backups
        .iter()
        .filter(|b| b.trigger == Trigger::PreDeploy && b.started_at >= since)
        .map(|b| DeployEntry {
            release: b.release.clone().unwrap_or_default(),
            pre_deploy_backup: b.id.clone(),
            at: b.started_at,
        })
        .collect();
    deploys.sort_by_key(|d| d.at);
    deploys
}

fn ts(t: Option<DateTime<Utc>>) -> String {
    t.map_or("-".into(), |t| t.format("%Y-%m-%d %H:%M UTC").to_string())
}

/// The Markdown rendering.
pub fn markdown(r: &Report) -> String {
    let mut out = format!(
        "# safepoint compliance report\n\nWindow: {} to {}\n\n",
        r.since.format("%Y-%m-%d %H:%M UTC"),
        r.until.format("%Y-%m-%d %H:%M UTC")
    );
    out.push_str("| policy | RPO | RPO met | backups taken | failed | kept | oldest kept | newest kept | pruned | retention honoured | unhealthy | drills passed/failed |\n");
    out.push_str("|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    let mut deploys = BTreeMap::new();
    for p in &r.policies {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {}/{} |\n",
            p.policy,
            p.rpo_seconds
                .map_or("-".into(), |s| format!("{}h", s as f64 / 3600.0)),
            p.rpo_met_percent.map_or("-".into(), |v| format!("{v:.2}%")),
            p.backups_taken,
            p.backups_failed,
            p.kept,
            ts(p.oldest_kept),
            ts(p.newest_kept),
            p.pruned,
            if p.retention_honoured { "yes" } else { "NO" },
            p.unhealthy,
            p.drills_passed,
            p.drills_failed,
        ));
        if !p.deploys.is_empty() {
            deploys.insert(p.policy.clone(), &p.deploys);
        }
    }
    out.push_str("\n## Deploys\n\n");
    if deploys.is_empty() {
        out.push_str("No pre-deploy snapshots in this window.\n");
    }
    for (policy, list) in deploys {
        for d in list.iter() {
            out.push_str(&format!(
                "- {policy}: release {} — pre-deploy snapshot `{}` at {}\n",
                d.release,
                d.pre_deploy_backup,
                d.at.format("%Y-%m-%d %H:%M UTC")
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::GENESIS;
    use crate::policy::{PolicyFile, load};

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn backup(
        id: &str,
        start: &str,
        deleted: Option<&str>,
        trigger: Trigger,
        release: Option<&str>,
    ) -> HistoricBackup {
        HistoricBackup {
            id: id.into(),
            policy: "orders".into(),
            trigger,
            release: release.map(Into::into),
            started_at: t(start),
            finished_at: t(start) + TimeDelta::minutes(5),
            health: Health::Verified,
            pinned: false,
            deleted_at: deleted.map(t),
        }
    }

    fn entry(seq: i64, at: &str, kind: &str, message: &str) -> Entry {
        Entry {
            seq,
            at: t(at),
            kind: kind.into(),
            policy: Some("orders".into()),
            actor: "daemon".into(),
            message: message.into(),
            prev_hash: GENESIS.into(),
            hash: GENESIS.into(),
        }
    }

    #[test]
    fn report_over_a_scripted_history_is_pinned() {
        let desired = load(&[PolicyFile::new(
            "policies/orders.yaml",
            "apiVersion: safepoint/v1\nkind: Storage\nmetadata: {name: local}\nspec: {type: local, path: /b}\n---\napiVersion: safepoint/v1\nkind: BackupPolicy\nmetadata: {name: orders}\nspec:\n  source: {type: sqlite, path: /d/orders.db}\n  storage: local\n  schedule: {cron: \"0 */6 * * *\"}\n  rpo: 6h\n  retention: {keepLast: 2}\n",
        )])
        .unwrap();
        // Backups every 6h for two days, one gap of 12h (RPO missed for ~6h),
        // one pre-deploy snapshot, two pruned by retention: b1 inside the
        // window (pruned: 1), b2 ten minutes after the window's end, so at the
        // window's end it still existed (kept: b2, b3, b4 = 3).
        let backups = vec![
            backup(
                "b1",
                "2026-11-01T00:00:00Z",
                Some("2026-11-02T06:10:00Z"),
                Trigger::Schedule,
                None,
            ),
            backup(
                "b2",
                "2026-11-01T06:00:00Z",
                Some("2026-11-02T12:10:00Z"),
                Trigger::Schedule,
                None,
            ),
            backup("b3", "2026-11-01T18:00:00Z", None, Trigger::Schedule, None),
            backup(
                "b4",
                "2026-11-02T00:00:00Z",
                None,
                Trigger::PreDeploy,
                Some("v1.4.0"),
            ),
        ];
        let runs = vec![
            HistoricRun {
                policy: "orders".into(),
                started_at: t("2026-11-01T00:00:00Z"),
                outcome: RunOutcome::Succeeded,
            },
            HistoricRun {
                policy: "orders".into(),
                started_at: t("2026-11-01T06:00:00Z"),
                outcome: RunOutcome::Succeeded,
            },
            HistoricRun {
                policy: "orders".into(),
                started_at: t("2026-11-01T12:00:00Z"),
                outcome: RunOutcome::Failed,
            },
            HistoricRun {
                policy: "orders".into(),
                started_at: t("2026-11-01T18:00:00Z"),
                outcome: RunOutcome::Succeeded,
            },
            HistoricRun {
                policy: "orders".into(),
                started_at: t("2026-11-02T00:00:00Z"),
                outcome: RunOutcome::Succeeded,
            },
        ];
        let audit = vec![
            entry(
                1,
                "2026-11-02T06:10:00Z",
                AuditKind::BackupPruned.as_str(),
                "deleted backup orders/b1: not kept by any retention rule (keepLast=2)",
            ),
            entry(
                2,
                "2026-11-02T12:10:00Z",
                AuditKind::BackupPruned.as_str(),
                "deleted backup orders/b2: not kept by any retention rule (keepLast=2)",
            ),
        ];
        let report = build(&Inputs {
            desired: &desired,
            backups: &backups,
            runs: &runs,
            audit: &audit,
            since: t("2026-10-31T00:00:00Z"),
            now: t("2026-11-02T12:00:00Z"),
        });
        let p = &report.policies[0];
        assert_eq!(
            (p.backups_taken, p.backups_failed, p.kept, p.pruned),
            (4, 1, 3, 1)
        );
        assert_eq!(p.oldest_kept, Some(t("2026-11-01T06:00:00Z")));
        assert!(p.retention_honoured);
        insta::assert_snapshot!("report_markdown", markdown(&report));
        insta::assert_json_snapshot!("report_json", report);
    }

    #[test]
    fn a_deletion_without_a_retention_record_is_not_honoured() {
        let desired = DesiredState::default();
        let backups = vec![backup(
            "gone",
            "2026-11-01T00:00:00Z",
            Some("2026-11-01T10:00:00Z"),
            Trigger::Manual,
            None,
        )];
        let report = build(&Inputs {
            desired: &desired,
            backups: &backups,
            runs: &[],
            audit: &[],
            since: t("2026-10-31T00:00:00Z"),
            now: t("2026-11-02T00:00:00Z"),
        });
        assert!(!report.policies[0].retention_honoured);
    }
}
