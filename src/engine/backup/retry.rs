//! Transient failures of a backup (server unreachable or restarting, a
//! lost connection, a lock timeout) are retried with exponential backoff
//! and jitter, each attempt into a fresh artifact.

use super::{BackupJob, Failure, take_backup};
use crate::engine::context::blocking;
use crate::storage::Manifest;

/// Attempts of one backup run when failures are transient.
const BACKUP_ATTEMPTS: u32 = 3;

/// Backoff before retry `attempt` (1-based): 1 s, 2 s, ... times a random
/// factor in [0.5, 1.5) so that policies failing together spread out.
fn retry_delay(attempt: u32) -> std::time::Duration {
    use std::hash::{BuildHasher, Hasher};
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let jitter = 0.5 + (random % 1000) as f64 / 1000.0;
    std::time::Duration::from_secs_f64(2f64.powi(attempt as i32 - 1) * jitter)
}

/// Transient failures (server unreachable or restarting, lock timeouts) are
/// retried with exponential backoff and jitter, each attempt into a fresh
/// artifact after the previous attempt's partial data is removed.
/// `retries` counts the attempts that were retried.
pub(super) async fn with_retries(
    job: &BackupJob<'_>,
    retries: &mut u32,
) -> Result<Manifest, Failure> {
    let ctx = job.ctx;
    let mut attempt = 1;
    loop {
        match take_backup(job).await {
            Err(f) if f.transient && attempt < BACKUP_ATTEMPTS && !*ctx.hard_stop.borrow() => {
                let (st, p, i) = (
                    job.storage.clone(),
                    job.policy.name.clone(),
                    job.id.to_string(),
                );
                let _ = blocking(move || st.remove(&p, &i)).await;
                let wait = retry_delay(attempt);
                tracing::warn!(backup = %job.id, attempt, kind = f.kind, "transient failure, retrying in {:.1}s: {}", wait.as_secs_f64(), f.message);
                let mut stop = ctx.hard_stop.clone();
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = async { let _ = stop.wait_for(|s| *s).await; } => return Err(f),
                }
                attempt += 1;
                *retries += 1;
            }
            Err(mut f) => {
                if attempt > 1 {
                    f.message = format!("{} (attempt {attempt} of {BACKUP_ATTEMPTS})", f.message);
                }
                return Err(f);
            }
            ok => return ok,
        }
    }
}
