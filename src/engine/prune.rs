//! Engine: prune — delete one backup the plan no longer keeps: storage first
//! (manifest, pin marker, artifact), then the catalog, then the audit log.

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
    match blocking(move || st.remove(&p, &i)).await {
        Ok(Ok(())) => {
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
            if let Err(e) = ctx
                .catalog
                .audit(now, AuditKind::PruneFailed, Some(policy), &ctx.actor, &msg)
                .await
            {
                msg.push_str(&format!("; and its audit entry could not be written: {e}"));
            }
            Err(msg)
        }
        Err(e) => Err(format!("delete of {policy}/{id} failed: {e}")),
    }
}
