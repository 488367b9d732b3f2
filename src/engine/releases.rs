//! Engine: release tags — a backup request for every new tag matching a
//! policy's `releases.tagPattern`; tags present when a pattern is first armed
//! are baseline (no backup), later ones are marked done by the backup.

use chrono::{DateTime, Utc};

use crate::engine::context::{Context, ReconcileError, blocking};
use crate::git;
use crate::observed::{BackupRequest, Trigger};
use crate::policy::{BackupPolicy, DesiredState};

/// A backup request for every tag matching a policy's `releases.tagPattern`
/// that has not been handled yet. The first time a policy's pattern is seen,
/// the tags that already exist are recorded as baseline (no backup), so adding
/// a policy to a repository with 200 old tags does not take 200 backups.
pub async fn release_requests(
    ctx: &Context,
    desired: &DesiredState,
    now: DateTime<Utc>,
) -> Result<Vec<BackupRequest>, ReconcileError> {
    let with_pattern: Vec<&BackupPolicy> = desired
        .policies
        .values()
        .filter(|p| p.release_tag_pattern.is_some())
        .collect();
    if with_pattern.is_empty() {
        return Ok(Vec::new());
    }
    let cfg = ctx.settings.repo.clone();
    let tags = blocking(move || git::tags(&cfg)).await??;
    let mut requests = Vec::new();
    for policy in with_pattern {
        let Some(pattern) = policy
            .release_tag_pattern
            .as_deref()
            .and_then(|p| glob::Pattern::new(p).ok())
        else {
            continue;
        };
        let matching: Vec<&String> = tags.iter().filter(|t| pattern.matches(t)).collect();
        if ctx.catalog.arm_releases(&policy.name, now).await? {
            for tag in &matching {
                ctx.catalog
                    .mark_release(&policy.name, tag, "existing", None, now)
                    .await?;
            }
            continue;
        }
        let handled = ctx.catalog.handled_releases(&policy.name).await?;
        for tag in matching {
            if !handled.contains(tag) {
                requests.push(BackupRequest {
                    policy: policy.name.clone(),
                    trigger: Trigger::Release,
                    release: Some(tag.clone()),
                    requested_by: format!("git tag {tag}"),
                });
            }
        }
    }
    Ok(requests)
}
