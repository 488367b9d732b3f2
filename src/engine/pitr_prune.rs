//! Engine: WAL retention of PITR policies, with the safety of backup
//! pruning.
//!
//! - After `prune` deleted a base backup of a PITR policy, and after every
//!   cycle that prunes (`retain`: also WAL archived before the first base
//!   backup, when none was deleted), the WAL objects before the start of
//!   the oldest base backup the catalog still holds are deleted (oldest
//!   first). Every base backup in the catalog counts as
//!   kept — pinned, pin unknown, missing or corrupt ones too —, nothing is
//!   deleted while the policy has none, history files are kept, and a
//!   listing that fails deletes nothing.
//! - A policy removed from Git whose backups are all gone (orphans are only
//!   deleted by `prune --orphans`): `prune --orphans` drops its replication
//!   slot (the server stops retaining WAL for it) and deletes its WAL
//!   archive. Where the slot is comes from the catalog (`pitr_archives.source`,
//!   recorded by the archiver), since the policy is no longer in Git.

use std::path::PathBuf;
use std::sync::Arc;

use chrono::Utc;
use serde::{Deserialize, Serialize};

use crate::engine::context::{Context, blocking, storage_for};
use crate::executor::pitr_base::BaseBackup;
use crate::executor::pitr_wal::Stream;
use crate::model::{AuditKind, SecretRef};
use crate::policy::DesiredState;
use crate::storage::Storage;
use crate::storage::wal;

/// WAL objects a prune deletes for one policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WalPrune {
    pub policy: String,
    /// Object names, oldest first.
    pub objects: Vec<String>,
    /// Why: the oldest kept base backup and its first segment.
    pub reason: String,
}

/// The WAL objects of `policy` before the first segment of the oldest base
/// backup the catalog holds besides `deleting` (what the same prune
/// deletes); `None` when the policy has no such base backup.
pub async fn plan(
    ctx: &Context,
    st: Arc<dyn Storage>,
    policy: &str,
    deleting: &[String],
) -> Result<Option<WalPrune>, String> {
    let rows = ctx.catalog.backups().await.map_err(|e| e.to_string())?;
    let oldest = rows
        .iter()
        .filter(|r| r.record.policy == policy && !deleting.contains(&r.record.id))
        .filter_map(|r| {
            Some((
                r.record.id.clone(),
                BaseBackup::from_tools(&r.manifest.tools)?,
            ))
        })
        .min_by_key(|(_, b)| (position(&b.start_wal).to_string(), b.start_lsn));
    let Some((id, base)) = oldest else {
        return Ok(None);
    };
    let name = policy.to_string();
    let objects = blocking(move || wal::list(&*st, &name))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("cannot list the WAL archive of {policy}, nothing deleted: {e}"))?;
    let keep_from = position(&base.start_wal);
    let objects: Vec<String> = objects
        .into_iter()
        .filter(|o| !o.wal.ends_with(".history"))
        .filter(|o| position(o.segment()) < keep_from)
        .map(|o| o.object)
        .collect();
    Ok(Some(WalPrune {
        policy: policy.to_string(),
        objects,
        reason: format!(
            "before {}, the first segment of base backup {id} (the oldest kept)",
            base.start_wal
        ),
    }))
}

/// The log and segment part of a segment name (fixed-width hex: sorts by
/// WAL position whatever the timeline and the segment size).
fn position(segment: &str) -> &str {
    segment.get(8..).unwrap_or(segment)
}

/// Deletes the objects of `prune` (oldest first) and audits it; returns how
/// many were deleted.
pub async fn apply(ctx: &Context, st: Arc<dyn Storage>, prune: &WalPrune) -> Result<usize, String> {
    if prune.objects.is_empty() {
        return Ok(0);
    }
    let (policy, objects) = (prune.policy.clone(), prune.objects.clone());
    let deleted = blocking(move || {
        for (n, o) in objects.iter().enumerate() {
            if let Err(e) = st.remove_wal(&policy, o) {
                return Ok::<_, String>((n, Some(e.to_string())));
            }
        }
        Ok((objects.len(), None))
    })
    .await
    .map_err(|e| e.to_string())??;
    let (n, failed) = deleted;
    let mut msg = format!(
        "deleted {n} WAL object(s) of {} {}",
        prune.policy, prune.reason
    );
    if let Some(e) = &failed {
        msg.push_str(&format!("; then a delete failed, the rest stays: {e}"));
    }
    let kind = if failed.is_some() {
        AuditKind::PruneFailed
    } else {
        AuditKind::BackupPruned
    };
    ctx.catalog
        .audit(Utc::now(), kind, Some(&prune.policy), &ctx.actor, &msg)
        .await
        .map_err(|e| format!("{msg}; but its audit entry could not be written: {e}"))?;
    tracing::info!(policy = %prune.policy, deleted = n, "WAL pruned");
    match failed {
        Some(_) => Err(msg),
        None => Ok(n),
    }
}

/// After a backup of `policy` was deleted: its WAL no kept base backup needs.
pub async fn after_delete(
    ctx: &Context,
    desired: &DesiredState,
    policy: &str,
) -> Result<(), String> {
    let Some(p) = desired
        .policies
        .get(policy)
        .filter(|p| p.source.pitr().is_some())
    else {
        return Ok(());
    };
    let Some(st) = storage_for(ctx, desired, &p.storage) else {
        return Ok(());
    };
    if let Some(prune) = plan(ctx, st.clone(), policy, &[]).await? {
        apply(ctx, st, &prune).await?;
    }
    Ok(())
}

/// Where a PITR policy's slot and archive are, as its archiver recorded it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SlotSource {
    pub url: String,
    pub password_from: Option<SecretRef>,
    pub bin_dir: Option<PathBuf>,
    pub slot: String,
    pub storage: String,
}

impl SlotSource {
    fn stream(&self) -> Stream<'_> {
        Stream {
            url: &self.url,
            password_from: self.password_from.as_ref(),
            bin_dir: self.bin_dir.as_deref(),
            slot: &self.slot,
        }
    }
}

/// A removed PITR policy whose slot `prune --orphans` drops.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Retired {
    pub policy: String,
    pub source: SlotSource,
}

/// The policies that had an archiver, are no PITR policy of `desired` any
/// more, and have no backup left in the catalog besides `deleting` (policy,
/// id: what the same prune deletes).
pub async fn retired(
    ctx: &Context,
    desired: &DesiredState,
    deleting: &[(String, String)],
) -> Result<Vec<Retired>, String> {
    let sources = ctx
        .catalog
        .pitr_sources()
        .await
        .map_err(|e| e.to_string())?;
    let rows = ctx.catalog.backups().await.map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for (policy, json) in sources {
        let in_force = desired
            .policies
            .get(&policy)
            .is_some_and(|p| p.source.pitr().is_some());
        let left = rows.iter().any(|r| {
            r.record.policy == policy
                && !deleting
                    .iter()
                    .any(|(p, id)| *p == policy && *id == r.record.id)
        });
        if in_force || left {
            continue;
        }
        let source: SlotSource = serde_json::from_str(&json)
            .map_err(|e| format!("the recorded slot of {policy} is unreadable: {e}"))?;
        out.push(Retired { policy, source });
    }
    Ok(out)
}

/// Drops the slot of a retired policy, deletes its WAL archive (when its
/// storage is still declared) and forgets it; returns what was done.
pub async fn drop_retired(
    ctx: &Context,
    desired: &DesiredState,
    r: &Retired,
) -> Result<String, String> {
    let source = r.source.clone();
    blocking(move || source.stream().drop_slot())
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| {
            format!(
                "cannot drop slot {} of removed policy {}: {e}",
                r.source.slot, r.policy
            )
        })?;
    let mut done = format!(
        "dropped slot {} of removed policy {}",
        r.source.slot, r.policy
    );
    match storage_for(ctx, desired, &r.source.storage) {
        Some(st) => {
            let name = r.policy.clone();
            let list = st.clone();
            let objects = blocking(move || wal::list(&*list, &name))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
            let prune = WalPrune {
                policy: r.policy.clone(),
                objects: objects.into_iter().map(|o| o.object).collect(),
                reason: "(the policy was removed and its backups pruned)".into(),
            };
            let n = apply(ctx, st, &prune).await?;
            done.push_str(&format!(", deleted its {n} WAL object(s)"));
        }
        None => done.push_str(&format!(
            "; its WAL archive stays (storage {} is not declared)",
            r.source.storage
        )),
    }
    ctx.catalog
        .remove_pitr_archive(&r.policy)
        .await
        .map_err(|e| e.to_string())?;
    ctx.catalog
        .audit(
            Utc::now(),
            AuditKind::BackupPruned,
            Some(&r.policy),
            &ctx.actor,
            &done,
        )
        .await
        .map_err(|e| format!("{done}; but its audit entry could not be written: {e}"))?;
    Ok(done)
}

/// What a prune would do to the WAL (`prune --dry-run`, `plan`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WalPreview {
    /// Per PITR policy, the WAL objects no remaining base backup needs.
    pub prunes: Vec<WalPrune>,
    /// Removed policies whose slot and archive `prune --orphans` drops.
    pub retired: Vec<Retired>,
}

impl WalPreview {
    pub fn is_empty(&self) -> bool {
        self.prunes.is_empty() && self.retired.is_empty()
    }

    /// One line per policy.
    pub fn lines(&self) -> Vec<String> {
        let mut lines = Vec::new();
        for w in &self.prunes {
            if let (Some(first), Some(last)) = (w.objects.first(), w.objects.last()) {
                lines.push(format!(
                    "would delete {} WAL object(s) of {} ({first} … {last}) — {}",
                    w.objects.len(),
                    w.policy,
                    w.reason
                ));
            }
        }
        for r in &self.retired {
            lines.push(format!(
                "would drop slot {} of removed policy {} and delete its WAL archive",
                r.source.slot, r.policy
            ));
        }
        lines
    }

    /// As items of `prune --dry-run --output json` (beside the planner's
    /// `delete` actions): `delete-wal` with every object, `drop-slot`.
    pub fn json(&self) -> Vec<serde_json::Value> {
        let wal = self.prunes.iter().map(|w| {
            serde_json::json!({
                "action": "delete-wal",
                "policy": w.policy,
                "objects": w.objects,
                "reason": w.reason,
            })
        });
        let slots = self.retired.iter().map(|r| {
            serde_json::json!({
                "action": "drop-slot",
                "policy": r.policy,
                "slot": r.source.slot,
                "reason": "the policy was removed and its backups are pruned",
            })
        });
        wal.chain(slots).collect()
    }
}

/// What a prune would do to the WAL: per PITR policy, the WAL objects no
/// base backup left after the deletions (`deleting`: policy and backup id)
/// needs — also when none of its base backups is deleted (WAL archived
/// before the first one) —; with `orphans`, the slots of removed policies it
/// would drop.
pub async fn preview(
    ctx: &Context,
    desired: &DesiredState,
    deleting: &[(String, String)],
    orphans: bool,
) -> Result<WalPreview, String> {
    let mut out = WalPreview::default();
    for (policy, p) in desired
        .policies
        .iter()
        .filter(|(_, p)| p.source.pitr().is_some())
    {
        let Some(st) = storage_for(ctx, desired, &p.storage) else {
            continue;
        };
        let ids: Vec<String> = deleting
            .iter()
            .filter(|(q, _)| q == policy)
            .map(|(_, id)| id.clone())
            .collect();
        if let Some(w) = plan(ctx, st, policy, &ids).await?
            && !w.objects.is_empty()
        {
            out.prunes.push(w);
        }
    }
    if orphans {
        out.retired = retired(ctx, desired, deleting).await?;
    }
    Ok(out)
}

/// WAL retention of the PITR policies `which` names (`None`: all) that this
/// process acts on: the WAL before the oldest kept base backup's first
/// segment, also when no base backup was pruned (WAL archived before the
/// first one). Policies whose storage listing was incomplete are skipped;
/// returns what failed.
pub async fn retain(
    ctx: &Context,
    desired: &DesiredState,
    which: Option<&[String]>,
    incomplete: &std::collections::BTreeSet<String>,
) -> Vec<String> {
    let mut failed = Vec::new();
    for (policy, p) in desired.policies.iter().filter(|(name, p)| {
        p.source.pitr().is_some()
            && which.is_none_or(|w| w.contains(name))
            && ctx.leases.holds(name)
            && !incomplete.contains(&p.storage)
    }) {
        let Some(st) = storage_for(ctx, desired, &p.storage) else {
            continue;
        };
        let pruned = match plan(ctx, st.clone(), policy, &[]).await {
            Ok(Some(w)) => apply(ctx, st, &w).await.map(|_| ()),
            Ok(None) => Ok(()),
            Err(e) => Err(e),
        };
        if let Err(e) = pruned {
            tracing::error!(policy = %policy, error = %e, "WAL retention failed");
            failed.push(format!("WAL retention of {policy}: {e}"));
        }
    }
    failed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_order_segments_across_timelines() {
        assert!(position("000000020000000000000003") < position("000000010000000000000004"));
        assert!(position("000000010000000100000000") > position("0000000100000000000000FF"));
    }
}
