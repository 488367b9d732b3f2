//! `safepoint report --since D`: the compliance report (JSON or Markdown).

use chrono::Utc;

use super::shared::{loaded_state, print_json, window_start};
use crate::cli::ReportFormat;
use crate::engine::context::Context;
use crate::policy;

pub(super) async fn report(ctx: &Context, since: &str, format: ReportFormat) -> anyhow::Result<u8> {
    let state = loaded_state(ctx).await?;
    let empty = policy::DesiredState::default();
    let desired = state.applied.as_ref().map_or(&empty, |a| &a.desired);
    let now = Utc::now();
    let since = window_start(since)?;
    let backups = ctx.catalog.backup_history().await?;
    let runs = ctx.catalog.runs_since(since).await?;
    let audit = ctx.catalog.audit_entries(Some(since)).await?;
    let report = crate::report::build(&crate::report::Inputs {
        desired,
        backups: &backups,
        runs: &runs,
        audit: &audit,
        since,
        now,
    });
    match format {
        ReportFormat::Json => print_json(&report)?,
        ReportFormat::Md => out!("{}", crate::report::markdown(&report)),
    }
    Ok(0)
}
