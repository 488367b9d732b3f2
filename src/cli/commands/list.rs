//! `safepoint list [--policy P]`: every backup in the catalog with its
//! health and why retention keeps it (or that it is to be pruned).

use chrono::Utc;

use super::shared::{loaded_state, print_json};
use crate::cli::Output;
use crate::cli::table::{bytes, render};
use crate::engine::context::Context;
use crate::engine::observe;

pub(super) async fn list(
    ctx: &Context,
    policy: Option<&str>,
    output: Output,
) -> anyhow::Result<u8> {
    let state = loaded_state(ctx).await?;
    let desired = state.desired()?;
    let now = Utc::now();
    let (observed, _) = observe::observe(ctx, desired, Vec::new(), Vec::new(), now).await?;
    let plan = crate::plan::plan(desired, &observed, now, &ctx.settings.plan);
    let rows_db = ctx.catalog.backups().await?;
    let mut items = Vec::new();
    for row in rows_db
        .iter()
        .filter(|r| policy.is_none_or(|p| r.record.policy == p))
    {
        let r = &row.record;
        let kept = plan.kept.iter().find(|k| k.backup_id == r.id);
        let why = match kept {
            Some(k) => k
                .reasons
                .iter()
                .map(|r| format!("{r:#}"))
                .collect::<Vec<_>>()
                .join(", "),
            None => plan
                .actions
                .iter()
                .find(|a| matches!(a, crate::plan::Action::Delete { backup_id, .. } if backup_id == &r.id))
                .map_or("-".into(), |a| format!("to prune: {}", a.reason())),
        };
        items.push((r.clone(), row.problem.clone(), why, row.pin.clone()));
    }
    if output == Output::Json {
        let json: Vec<_> = items
            .iter()
            .map(|(r, problem, why, pin)| {
                serde_json::json!({"backup": r, "problem": problem, "why": why, "pin": pin})
            })
            .collect();
        print_json(&json)?;
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|(r, problem, why, _)| {
            vec![
                r.policy.clone(),
                r.id.clone(),
                r.trigger.to_string()
                    + &r.release
                        .as_deref()
                        .map_or(String::new(), |t| format!(" {t}")),
                r.started_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                bytes(r.size),
                match problem {
                    Some(p) => format!("{} ({p})", r.health.as_str()),
                    None => r.health.as_str().to_string(),
                },
                why.clone(),
            ]
        })
        .collect();
    out!(
        "{}",
        render(
            &[
                "POLICY",
                "BACKUP",
                "TRIGGER",
                "STARTED (UTC)",
                "SIZE",
                "CHECKSUM",
                "KEPT BECAUSE"
            ],
            &rows
        )
    );
    Ok(0)
}
