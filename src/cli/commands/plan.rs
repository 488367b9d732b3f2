//! `safepoint plan`: what the next cycle would do, and why. Exit 1 when
//! actions are pending.

use super::shared::{loaded_state, print_json};
use crate::cli::Output;
use crate::engine::context::Context;
use crate::engine::cycle;
use crate::engine::execute::Scope;

pub(super) async fn plan(ctx: &Context, output: Output) -> anyhow::Result<u8> {
    let state = loaded_state(ctx).await?;
    let report = cycle::cycle(ctx, &state, Vec::new(), Scope::All, true).await?;
    match output {
        Output::Json => print_json(&report.plan)?,
        Output::Table => out!("{}", report.plan.render()),
    }
    Ok(if report.plan.is_empty() { 0 } else { 1 })
}
