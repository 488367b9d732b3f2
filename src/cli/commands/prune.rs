//! `safepoint prune [--dry-run] [--orphans]`: the deletions retention asks
//! for, and nothing else.

use std::sync::Arc;

use super::shared::{loaded_state, print_json, print_outcomes};
use crate::cli::Output;
use crate::engine::context::Context;
use crate::engine::cycle;
use crate::engine::execute::Scope;

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
    if dry_run {
        if output == Output::Json {
            print_json(&deletions)?;
        } else if deletions.is_empty() {
            outln!("nothing to prune");
        } else {
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
    if report.outcomes.is_empty() && output == Output::Table {
        outln!("nothing to prune");
        return Ok(0);
    }
    print_outcomes(&report.outcomes, output)
}
