//! Engine: prune — delete one backup the plan no longer keeps: marked deleted
//! in the catalog, then removed from storage (manifest, pin marker,
//! artifact), then audited. A process killed in between leaves either the
//! whole backup (its manifest is imported again by the next observation) or
//! a directory without manifest (a leftover the next observation removes),
//! never a catalog entry whose storage is gone (`missing`).

use chrono::Utc;

use crate::engine::context::{Context, blocking, storage_for};
use crate::model::AuditKind;
use crate::policy::DesiredState;

/// Deletes backup `id` of `policy` from `storage_name` for `reason`; a
/// failure leaves it tracked and is returned as one line.
pub async fn run_delete(
    ctx: &Context,
    desired: &DesiredState,
    policy: &str,
    storage_name: &str,
    id: &str,
    reason: &str,
) -> Result<(), String> {
    let Some(st) = storage_for(ctx, desired, storage_name) else {
        return Err(format!(
            "storage {storage_name} is not declared; backup {id} stays"
        ));
    };
    let (p, i) = (policy.to_string(), id.to_string());
    let now = Utc::now();
    ctx.catalog
        .mark_deleted(id, now)
        .await
        .map_err(|e| format!("delete of {policy}/{id} not started: {e}"))?;
    match blocking(move || st.remove(&p, &i)).await {
        Ok(Ok(())) => {
            // Again: an observation meanwhile may have re-imported it.
            ctx.catalog
                .mark_deleted(id, now)
                .await
                .map_err(|e| e.to_string())?;
            let msg = format!("deleted backup {policy}/{id}: {reason}");
            ctx.catalog
                .audit(now, AuditKind::BackupPruned, Some(policy), &ctx.actor, &msg)
                .await
                .map_err(|e| format!("{msg}; but its audit entry could not be written: {e}"))?;
            tracing::info!(policy, backup = id, reason, "backup pruned");
            // A PITR policy: the WAL no kept base backup needs any more.
            crate::engine::pitr_prune::after_delete(ctx, desired, policy)
                .await
                .map_err(|e| {
                    format!("deleted backup {policy}/{id}, but pruning its WAL failed: {e}")
                })
        }
        Ok(Err(e)) => {
            let mut msg = format!("delete of {policy}/{id} failed, it stays tracked: {e}");
            if let Err(e) = ctx.catalog.unmark_deleted(id).await {
                msg.push_str(&format!(
                    "; its catalog entry could not be restored ({e}), the next observation imports it again"
                ));
            }
            if let Err(e) = ctx
                .catalog
                .audit(now, AuditKind::PruneFailed, Some(policy), &ctx.actor, &msg)
                .await
            {
                msg.push_str(&format!("; and its audit entry could not be written: {e}"));
            }
            Err(msg)
        }
        Err(e) => {
            let _ = ctx.catalog.unmark_deleted(id).await;
            Err(format!("delete of {policy}/{id} failed: {e}"))
        }
    }
}
