//! `safepoint plan`: what the next cycle would do, and why, with the WAL of
//! PITR policies that pruning would remove (JSON: `wal`). Exit 1 when
//! actions or WAL deletions are pending.

use super::shared::{loaded_state, print_json};
use crate::cli::Output;
use crate::engine::context::Context;
use crate::engine::cycle;
use crate::engine::execute::Scope;
use crate::engine::pitr_prune;

pub(super) async fn plan(ctx: &Context, output: Output) -> anyhow::Result<u8> {
    let state = loaded_state(ctx).await?;
    let report = cycle::cycle(ctx, &state, Vec::new(), Scope::All, true).await?;
    // The WAL the planned deletions (and WAL retention) would remove.
    let deleting: Vec<(String, String)> = report
        .plan
        .actions
        .iter()
        .filter_map(|a| match a {
            crate::plan::Action::Delete {
                policy, backup_id, ..
            } => Some((policy.clone(), backup_id.clone())),
            _ => None,
        })
        .collect();
    let wal = pitr_prune::preview(ctx, state.desired()?, &deleting, false)
        .await
        .map_err(anyhow::Error::msg)?;
    match output {
        Output::Json => {
            let mut value = serde_json::to_value(&report.plan)?;
            if let Some(obj) = value.as_object_mut() {
                obj.insert("wal".into(), wal.json().into());
            }
            print_json(&value)?
        }
        Output::Table => {
            out!("{}", report.plan.render());
            for line in wal.lines() {
                outln!("{line}");
            }
        }
    }
    Ok(if report.plan.is_empty() && wal.is_empty() {
        0
    } else {
        1
    })
}
