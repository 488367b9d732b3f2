//! `safepoint drill POLICY [--backup ID]`: a restore drill now. Exit 1 when
//! it fails, 4 for an unknown policy or one without `drill:`.

use anyhow::bail;

use super::shared::{loaded_state, print_json, why_not};
use crate::cli::Output;
use crate::engine::context::Context;
use crate::engine::cycle;
use crate::engine::execute::Scope;

pub(super) async fn drill(
    ctx: &Context,
    policy: &str,
    backup: Option<String>,
    output: Output,
) -> anyhow::Result<u8> {
    let state = loaded_state(ctx).await?;
    let desired = state.desired()?;
    match desired.policies.get(policy) {
        None => {
            eprintln!("error: policy {policy} is not in the applied revision");
            return Ok(4);
        }
        Some(p) if p.drill.is_none() => {
            eprintln!(
                "error: policy {policy} declares no `drill:` (target, verify, maxDuration); add one to run drills"
            );
            return Ok(4);
        }
        Some(_) => {}
    }
    let request = crate::observed::DrillRequest {
        policy: policy.to_string(),
        backup_id: backup,
        requested_by: ctx.actor.clone(),
    };
    let scope = Scope::Drills(vec![policy.to_string()]);
    let report = cycle::cycle_with(ctx, &state, Vec::new(), vec![request], scope, false).await?;
    let Some(result) = report.drills.into_iter().next() else {
        let why = why_not(&report.plan, policy, "nothing to drill");
        bail!("no drill was run for {policy}: {why}");
    };
    let outcome = match result {
        Ok(o) => o,
        Err((_, why)) => bail!("drill of {policy} could not run: {why}"),
    };
    if output == Output::Json {
        print_json(&outcome)?;
    } else {
        outln!(
            "drill {} of backup {} (scratch {}):",
            policy,
            outcome.backup_id,
            outcome.scratch
        );
        for c in &outcome.checks {
            outln!(
                "  {} {}: {}",
                if c.passed { "ok    " } else { "FAILED" },
                c.name,
                c.detail
            );
        }
        outln!(
            "verdict: {}",
            if outcome.passed { "PASSED" } else { "FAILED" }
        );
    }
    Ok(if outcome.passed { 0 } else { 1 })
}
