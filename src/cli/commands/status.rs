//! `safepoint status`: Ready/Stalled per repository and policy, last good
//! backup, RPO and next run. Exit 1 when the repository or a policy is
//! Stalled.

use chrono::{TimeDelta, Utc};

use super::shared::{loaded_state, print_json};
use crate::cli::Output;
use crate::cli::table::{age, render};
use crate::engine::context::Context;
use crate::engine::observe;
use crate::policy;
use crate::status;

pub(super) async fn show_status(ctx: &Context, output: Output) -> anyhow::Result<u8> {
    let state = loaded_state(ctx).await?;
    let now = Utc::now();
    let (observed, _) = match state.desired() {
        Ok(desired) => observe::observe(ctx, desired, Vec::new(), Vec::new(), now).await?,
        Err(_) => Default::default(),
    };
    let empty = policy::DesiredState::default();
    let desired = state.applied.as_ref().map_or(&empty, |a| &a.desired);
    let repo = status::RepoInput {
        applied: state.applied.as_ref().map(|a| a.revision.commit.clone()),
        attempted: state.attempted.clone(),
    };
    let st = status::compute(desired, &observed, &repo, now);
    if output == Output::Json {
        print_json(&st)?;
        return Ok(if st.all_ready() { 0 } else { 1 });
    }
    outln!(
        "repository: {} — applied {} / attempted {}",
        if st.ready {
            "Ready".to_string()
        } else {
            format!("Stalled: {}", st.reason)
        },
        st.applied
            .as_deref()
            .map_or("none", |c| &c[..c.len().min(12)]),
        st.attempted
            .as_deref()
            .map_or("none", |c| &c[..c.len().min(12)]),
    );
    let rows: Vec<Vec<String>> = st
        .policies
        .iter()
        .map(|p| {
            vec![
                p.name.clone(),
                if p.ready {
                    "Ready".into()
                } else {
                    "Stalled".into()
                },
                p.last_good.as_ref().map_or("-".into(), |g| g.id.clone()),
                p.last_good
                    .as_ref()
                    .map_or("-".into(), |g| age(TimeDelta::seconds(g.age_seconds))),
                match (p.rpo_seconds, p.rpo_met) {
                    (Some(r), Some(true)) => format!("met ({})", age(TimeDelta::seconds(r))),
                    (Some(r), _) => format!("MISSED ({})", age(TimeDelta::seconds(r))),
                    (None, _) => "-".into(),
                },
                p.next_run
                    .map_or("-".into(), |t| t.format("%Y-%m-%d %H:%M UTC").to_string()),
                p.reason.clone(),
            ]
        })
        .collect();
    out!(
        "{}",
        render(
            &[
                "POLICY",
                "STATE",
                "LAST GOOD",
                "AGE",
                "RPO",
                "NEXT RUN",
                "REASON"
            ],
            &rows
        )
    );
    Ok(if st.all_ready() { 0 } else { 1 })
}
