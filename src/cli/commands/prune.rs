//! `safepoint prune [--dry-run] [--orphans]`: the deletions retention asks
//! for, and nothing else. A dry run also lists the WAL objects of PITR
//! policies that would go (JSON: `delete-wal`/`drop-slot` items after the
//! `delete` actions).

use std::sync::Arc;

use super::shared::{loaded_state, print_json, print_outcomes};
use crate::cli::Output;
use crate::engine::context::Context;
use crate::engine::cycle;
use crate::engine::execute::Scope;
use crate::engine::pitr_prune;

pub(super) async fn prune(
    ctx: Context,
    dry_run: bool,
    orphans: bool,
    output: Output,
) -> anyhow::Result<u8> {
    let mut settings = (*ctx.settings).clone();
    settings.plan.prune_orphans = orphans;
    let ctx = Context {
        settings: Arc::new(settings),
        ..ctx
    };
    let state = loaded_state(&ctx).await?;
    let report = cycle::cycle(&ctx, &state, Vec::new(), Scope::Deletions, dry_run).await?;
    let deletions: Vec<_> = report
        .plan
        .actions
        .iter()
        .filter(|a| Scope::Deletions.includes(a))
        .collect();
    let desired = state.desired()?;
    if dry_run {
        let deleting: Vec<(String, String)> = deletions
            .iter()
            .filter_map(|a| match a {
                crate::plan::Action::Delete {
                    policy, backup_id, ..
                } => Some((policy.clone(), backup_id.clone())),
                _ => None,
            })
            .collect();
        let wal = pitr_prune::preview(&ctx, desired, &deleting, orphans)
            .await
            .map_err(anyhow::Error::msg)?;
        if output == Output::Json {
            let mut items = serde_json::to_value(&deletions)?
                .as_array()
                .cloned()
                .unwrap_or_default();
            items.extend(wal.json());
            print_json(&items)?;
        } else if deletions.is_empty() && wal.is_empty() {
            outln!("nothing to prune");
        } else {
            for line in wal.lines() {
                outln!("{line}");
            }
            for a in &deletions {
                if let crate::plan::Action::Delete {
                    policy,
                    backup_id,
                    reason,
                    ..
                } = a
                {
                    outln!("would delete {policy}/{backup_id} — {reason}");
                }
            }
        }
        return Ok(0);
    }
    let (failed, dropped) = if orphans {
        drop_retired(&ctx, desired).await?
    } else {
        (false, false)
    };
    if report.outcomes.is_empty() && output == Output::Table {
        if !failed && !dropped {
            outln!("nothing to prune");
        }
        return Ok(u8::from(failed));
    }
    print_outcomes(&report.outcomes, output).map(|code| code.max(u8::from(failed)))
}

/// Removed PITR policies whose backups are all gone: their slot and WAL
/// archive. Returns (a drop failed, something was dropped).
async fn drop_retired(
    ctx: &Context,
    desired: &crate::policy::DesiredState,
) -> anyhow::Result<(bool, bool)> {
    let (mut failed, mut dropped) = (false, false);
    for r in pitr_prune::retired(ctx, desired, &[])
        .await
        .map_err(anyhow::Error::msg)?
    {
        match pitr_prune::drop_retired(ctx, desired, &r).await {
            Ok(done) => {
                outln!("{done}");
                dropped = true;
            }
            Err(e) => {
                eprintln!("error: {e}");
                failed = true;
            }
        }
    }
    Ok((failed, dropped))
}
