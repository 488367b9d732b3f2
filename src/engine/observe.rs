//! Engine: observe — read catalog and storage into an `ObservedState`,
//! reconciling the catalog with storage on the way: runs of dead processes
//! are closed as interrupted, untracked manifests imported, artifacts
//! checked (size every cycle, checksum every `verify_interval`), pins
//! reconciled with their markers (`crate::pins`), vanished backups marked
//! missing, leftovers of dead runs removed. A storage that cannot be listed
//! is reported incomplete, so nothing on it is pruned.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::catalog::BackupRow;
use crate::engine::context::{Context, ReconcileError, blocking, storage_for};
use crate::engine::import;
use crate::lock;
use crate::model::{AuditKind, RunOutcome};
use crate::observed::{BackupRecord, BackupRequest, DrillRequest, Health, ObservedState};
use crate::pins::{self, ListedPins};
use crate::policy::DesiredState;
use crate::storage::{self, Leftover, Listing, Manifest, Storage};

/// What observation found besides the state itself (for logs and status).
#[derive(Debug, Clone, Default, Serialize)]
pub struct ObserveReport {
    pub imported: Vec<String>,
    /// Pins restored into the catalog from their marker in storage.
    pub pins_restored: Vec<String>,
    /// Pin markers rewritten into storage from the catalog.
    pub pin_markers_rewritten: Vec<String>,
    pub interrupted: Vec<String>,
    pub leftovers_removed: Vec<String>,
    pub problems: Vec<String>,
}

/// Reads catalog and storage into an `ObservedState`, reconciling the catalog
/// with storage on the way: untracked manifests are imported, pins are
/// reconciled with their markers in storage (`crate::pins`), vanished or
/// altered artifacts are marked, runs of dead processes are closed as
/// interrupted and their leftovers removed.
pub async fn observe(
    ctx: &Context,
    desired: &DesiredState,
    requests: Vec<BackupRequest>,
    drill_requests: Vec<DrillRequest>,
    now: DateTime<Utc>,
) -> Result<(ObservedState, ObserveReport), ReconcileError> {
    let mut pass = Observation {
        ctx,
        desired,
        now,
        locks: ctx.settings.locks_dir(),
        report: ObserveReport::default(),
        running: BTreeSet::new(),
        incomplete: BTreeSet::new(),
        pin_unknown: BTreeMap::new(),
    };
    pass.close_dead_runs().await?;
    let known: BTreeMap<String, BackupRow> = ctx
        .catalog
        .backups()
        .await?
        .into_iter()
        .map(|b| (b.record.id.clone(), b))
        .collect();
    let mut storage_names: BTreeSet<String> = desired.storages.keys().cloned().collect();
    storage_names.extend(known.values().map(|b| b.record.storage.clone()));
    for name in storage_names {
        pass.storage(&known, name).await?;
    }
    let mut backups = backups_by_policy(ctx).await?;
    mark_pin_unknown(&mut backups, &pass.pin_unknown);
    let observed = ObservedState {
        backups,
        running: pass.running,
        failures: ctx.catalog.failures().await?,
        incomplete_storages: pass.incomplete,
        requests,
        drills: ctx.catalog.drill_history().await?,
        drill_requests,
        pitr: ctx.catalog.pitr_archives().await?,
        ..ObservedState::default()
    }
    .indexed();
    Ok((observed, pass.report))
}

/// The catalog's backups grouped per policy, newest first (the catalog
/// query orders them), as `ObservedState::backups` wants them.
pub async fn backups_by_policy(
    ctx: &Context,
) -> Result<BTreeMap<String, Vec<BackupRecord>>, ReconcileError> {
    let mut backups: BTreeMap<String, Vec<BackupRecord>> = BTreeMap::new();
    for row in ctx.catalog.backups().await? {
        backups
            .entry(row.record.policy.clone())
            .or_default()
            .push(row.record);
    }
    Ok(backups)
}

/// Hands the backups whose pin marker could not be read to the planner as
/// `pin_unknown` (never pruned while it lasts).
fn mark_pin_unknown(
    backups: &mut BTreeMap<String, Vec<BackupRecord>>,
    unknown: &BTreeMap<String, String>,
) {
    if unknown.is_empty() {
        return;
    }
    for b in backups.values_mut().flatten() {
        if let Some(why) = unknown.get(&b.id) {
            b.pin_unknown = Some(why.clone());
        }
    }
}

/// One observation in progress: what it found so far.
struct Observation<'a> {
    ctx: &'a Context,
    desired: &'a DesiredState,
    now: DateTime<Utc>,
    locks: PathBuf,
    report: ObserveReport,
    /// Policies with a live backup (their lock is held).
    running: BTreeSet<String>,
    /// Storages whose listing failed or that are no longer declared.
    incomplete: BTreeSet<String>,
    /// Backup id -> why its pin state is unknown.
    pin_unknown: BTreeMap<String, String>,
}

impl Observation<'_> {
    /// Runs recorded as running whose policy lock is free died with their
    /// process: closed as interrupted, their partial data removed.
    async fn close_dead_runs(&mut self) -> Result<(), ReconcileError> {
        let (ctx, now) = (self.ctx, self.now);
        for run in ctx.catalog.running_runs().await? {
            // Several replicas: a run of a policy another replica holds is
            // that replica's to close (it may be running there).
            if !ctx.leases.holds(&run.policy) {
                self.running.insert(run.policy.clone());
                continue;
            }
            match lock::try_lock(&self.locks, &run.policy) {
                Ok(Some(_held)) => {
                    let msg = format!(
                        "backup {} of {} was interrupted (the process running it died); partial data removed",
                        run.backup_id, run.policy
                    );
                    if let Some(st) = storage_for(ctx, self.desired, &run.storage) {
                        let (p, id) = (run.policy.clone(), run.backup_id.clone());
                        if let Ok(Err(e)) = blocking(move || st.remove(&p, &id)).await {
                            self.report.problems.push(e.to_string());
                        }
                    }
                    ctx.catalog
                        .finish_run(
                            run.id,
                            RunOutcome::Interrupted,
                            Some(("interrupted", &msg)),
                            now,
                        )
                        .await?;
                    ctx.catalog
                        .audit(
                            now,
                            AuditKind::BackupInterrupted,
                            Some(&run.policy),
                            &ctx.actor,
                            &msg,
                        )
                        .await?;
                    tracing::warn!(policy = %run.policy, backup = %run.backup_id, "{msg}");
                    self.report.interrupted.push(run.backup_id);
                }
                Ok(None) => {
                    self.running.insert(run.policy.clone());
                }
                Err(e) => self
                    .report
                    .problems
                    .push(format!("cannot check lock of {}: {e}", run.policy)),
            }
        }
        Ok(())
    }

    /// Lists storage `name` and reconciles the catalog with what it holds.
    async fn storage(
        &mut self,
        known: &BTreeMap<String, BackupRow>,
        name: String,
    ) -> Result<(), ReconcileError> {
        let Some(st) = storage_for(self.ctx, self.desired, &name) else {
            // Backups on a storage no longer declared cannot be checked.
            self.incomplete.insert(name);
            return Ok(());
        };
        let st2 = st.clone();
        let listing = match blocking(move || st2.list()).await? {
            Ok(listing) => listing,
            Err(e) => {
                tracing::error!(storage = %name, error = %e, "storage listing failed; nothing there is pruned this cycle");
                self.report.problems.push(e.to_string());
                self.incomplete.insert(name);
                return Ok(());
            }
        };
        let Listing {
            manifests,
            unreadable,
            pins,
            unreadable_pins,
            leftovers,
        } = listing;
        for bad in &unreadable {
            self.report.problems.push(bad.to_string());
        }
        let listed: BTreeSet<String> = manifests.iter().map(|m| m.id.clone()).collect();
        for manifest in manifests {
            self.manifest(&st, &name, known.get(&manifest.id), manifest)
                .await?;
        }
        let found = ListedPins {
            markers: pins,
            unreadable: unreadable_pins,
            listed: &listed,
        };
        let pins = pins::reconcile_listing(self.ctx, &st, found, known, self.now).await?;
        self.report.pins_restored.extend(pins.restored);
        self.report.pin_markers_rewritten.extend(pins.rewritten);
        self.report.problems.extend(pins.problems);
        self.pin_unknown.extend(pins.unknown);
        self.mark_missing(known, &name, &listed).await?;
        self.remove_leftovers(&st, leftovers).await
    }

    /// One listed manifest: imported when the catalog does not track it, its
    /// artifact checked (unhealthy backups are re-verified every cycle: a
    /// cheap size check must never declare a corrupt artifact good again).
    async fn manifest(
        &mut self,
        st: &Arc<dyn Storage>,
        storage_name: &str,
        row: Option<&BackupRow>,
        manifest: Manifest,
    ) -> Result<(), ReconcileError> {
        let (ctx, now) = (self.ctx, self.now);
        if row.is_none() {
            let untracked = import::Record::Untracked {
                storage: storage_name,
                now,
            };
            import::import_manifest(ctx, &manifest, untracked).await?;
            self.report.imported.push(manifest.id.clone());
        }
        let due = row.is_none_or(|r| {
            r.record.health != Health::Verified
                || r.checked_at
                    .is_none_or(|at| now - at >= ctx.settings.verify_interval)
        });
        let (st2, m2) = (st.clone(), manifest.clone());
        let check = if due {
            blocking(move || storage::verify(&*st2, &m2)).await?
        } else {
            blocking(move || storage::check_size(&*st2, &m2)).await?
        };
        let previous = row.map(|r| r.record.health).unwrap_or(Health::Verified);
        match check {
            Ok(None) => {
                if due || previous != Health::Verified {
                    ctx.catalog
                        .set_health(&manifest.id, Health::Verified, None, now)
                        .await?;
                }
            }
            Ok(Some(problem)) => {
                let health = problem.health;
                if previous != health {
                    let kind = problem.audit_kind();
                    let msg = format!("backup {}/{}: {problem}", manifest.policy, manifest.id);
                    ctx.catalog
                        .audit(now, kind, Some(&manifest.policy), &ctx.actor, &msg)
                        .await?;
                    tracing::error!("{msg}");
                }
                ctx.catalog
                    .set_health(&manifest.id, health, Some(&problem.detail), now)
                    .await?;
            }
            Err(e) => self.report.problems.push(e.to_string()),
        }
        Ok(())
    }

    /// Tracked backups of storage `name` absent from its listing are missing.
    async fn mark_missing(
        &self,
        known: &BTreeMap<String, BackupRow>,
        name: &str,
        listed: &BTreeSet<String>,
    ) -> Result<(), ReconcileError> {
        let (ctx, now) = (self.ctx, self.now);
        for row in known.values().filter(|r| r.record.storage == name) {
            if !listed.contains(&row.record.id) && row.record.health != Health::Missing {
                let problem = "manifest and artifact are gone from storage";
                let msg = format!("backup {}/{}: {problem}", row.record.policy, row.record.id);
                ctx.catalog
                    .set_health(&row.record.id, Health::Missing, Some(problem), now)
                    .await?;
                ctx.catalog
                    .audit(
                        now,
                        AuditKind::ArtifactMissing,
                        Some(&row.record.policy),
                        &ctx.actor,
                        &msg,
                    )
                    .await?;
                tracing::error!("{msg}");
            }
        }
        Ok(())
    }

    /// Partial data without a manifest is removed when no backup of its
    /// policy runs (the policy lock is free); otherwise that policy runs.
    async fn remove_leftovers(
        &mut self,
        st: &Arc<dyn Storage>,
        leftovers: Vec<Leftover>,
    ) -> Result<(), ReconcileError> {
        for leftover in leftovers {
            if self.running.contains(&leftover.policy) || !self.ctx.leases.holds(&leftover.policy) {
                continue;
            }
            match lock::try_lock(&self.locks, &leftover.policy) {
                Ok(Some(_held)) => {
                    let st2 = st.clone();
                    let (p, id) = (leftover.policy.clone(), leftover.id.clone());
                    match blocking(move || st2.remove(&p, &id)).await? {
                        Ok(()) => self
                            .report
                            .leftovers_removed
                            .push(format!("{}/{}", leftover.policy, leftover.id)),
                        Err(e) => self.report.problems.push(e.to_string()),
                    }
                }
                Ok(None) => {
                    self.running.insert(leftover.policy.clone());
                }
                Err(e) => self.report.problems.push(e.to_string()),
            }
        }
        Ok(())
    }
}
