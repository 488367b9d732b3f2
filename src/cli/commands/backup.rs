//! `safepoint backup POLICY`: a manual backup, now.

use anyhow::bail;

use super::shared::{caller, loaded_state, print_outcomes, why_not};
use crate::cli::Output;
use crate::engine::context::Context;
use crate::engine::cycle;
use crate::engine::execute::Scope;
use crate::observed::{BackupRequest, Trigger};

pub(super) async fn backup(ctx: &Context, policy: &str, output: Output) -> anyhow::Result<u8> {
    let state = loaded_state(ctx).await?;
    if !state.desired()?.policies.contains_key(policy) {
        let known: Vec<_> = state.desired()?.policies.keys().cloned().collect();
        bail!(
            "policy {policy} is not in the applied revision; known policies: {}",
            known.join(", ")
        );
    }
    let request = BackupRequest {
        policy: policy.to_string(),
        trigger: Trigger::Manual,
        release: None,
        requested_by: caller(),
    };
    let scope = Scope::answering(std::slice::from_ref(&request));
    let report = cycle::cycle(ctx, &state, vec![request], scope, false).await?;
    if report.outcomes.is_empty() {
        let why = why_not(&report.plan, policy, "the planner produced no backup");
        bail!("no backup was taken for {policy}: {why}");
    }
    print_outcomes(&report.outcomes, output)
}
