//! IO: the daemon loop. Wakes on a due schedule/RPO deadline (the plan's
//! `next_wakeup`), on a change of a local policy repository (file events), on
//! the fetch interval, and runs one reconcile cycle each time. SIGTERM/SIGINT
//! stops taking new work, lets running backups finish within the grace
//! period, then cancels them (recorded as failed, partial data removed).

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::{Notify, watch};

use crate::monitor::Monitor;
use crate::reconcile::{self, Context, RepoState, Scope};
use crate::{git, jobs};

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

pub async fn run(
    ctx: Context,
    stop: watch::Sender<bool>,
    once: bool,
    monitor: &Monitor,
) -> anyhow::Result<()> {
    let mut state = RepoState::load(&ctx).await?;
    let wake = Arc::new(Notify::new());
    let _watch = git::watch_dir(&ctx.settings.repo).and_then(|dir| match git::watch::watch(&dir, wake.clone()) {
        Ok(w) => {
            tracing::info!(dir = %dir.display(), "watching the policy repository for commits");
            Some(w)
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch the policy repository; polling every fetch interval instead");
            None
        }
    });
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    let mut jobs = monitor.jobs.lock().ok().and_then(|mut j| j.take());
    let git_wake = monitor.git_wake.clone();
    tracing::info!(
        repo = %ctx.settings.repo.location,
        branch = %ctx.settings.repo.branch,
        path = %ctx.settings.repo.path,
        data_dir = %ctx.settings.data_dir.display(),
        "safepoint daemon started"
    );
    loop {
        if let Err(e) = reconcile::refresh(&ctx, &mut state).await {
            monitor.refresh_failed(&e);
            tracing::error!(error = %e, "cannot read the policy repository; retrying at the next wake-up");
        }
        let mut sleep_for = ctx.settings.fetch_interval;
        if state.applied.is_some() {
            let started = std::time::Instant::now();
            let cycle = reconcile::cycle(&ctx, &state, Vec::new(), Scope::All, false);
            tokio::pin!(cycle);
            let result = tokio::select! {
                r = &mut cycle => r,
                _ = &mut shutdown => {
                    tracing::info!(grace_seconds = ctx.settings.shutdown_grace.as_secs(), "shutdown requested: no new work; waiting for running backups");
                    tokio::select! {
                        r = &mut cycle => {
                            monitor.after_cycle(&state, Some(&r), started.elapsed()).await;
                            log_cycle(r);
                        }
                        _ = tokio::time::sleep(ctx.settings.shutdown_grace) => {
                            tracing::warn!("grace period over: cancelling running backups");
                            let _ = stop.send(true);
                            let r = cycle.await;
                            monitor.after_cycle(&state, Some(&r), started.elapsed()).await;
                            log_cycle(r);
                        }
                    }
                    tracing::info!("safepoint daemon stopped");
                    return Ok(());
                }
            };
            monitor
                .after_cycle(&state, Some(&result), started.elapsed())
                .await;
            let again = log_cycle(result);
            if once {
                return Ok(());
            }
            if again {
                // Something was executed: re-plan at once so the next wake-up
                // reflects the new state (a failure backs off in the planner).
                continue;
            }
        } else {
            monitor.after_cycle(&state, None, Duration::ZERO).await;
        }
        if state.applied.is_none() && once {
            anyhow::bail!("no valid policy revision to apply; run `safepoint validate`");
        }
        if let Ok(Some(next)) = reconcile::next_wakeup(&ctx, &state).await {
            let until = (next - Utc::now()).to_std().unwrap_or(Duration::ZERO);
            sleep_for = sleep_for.min(until.max(Duration::from_millis(200)));
        }
        tokio::select! {
            _ = tokio::time::sleep(sleep_for) => {}
            _ = wake.notified() => tracing::debug!("policy repository changed"),
            _ = git_wake.notified() => tracing::info!("push webhook: fetching the policy repository"),
            Some(job) = recv(&mut jobs) => {
                // Take every job that is already waiting: they share one cycle.
                let mut batch = vec![job];
                if let Some(rx) = jobs.as_mut() {
                    while let Ok(more) = rx.try_recv() {
                        batch.push(more);
                    }
                }
                if let Err(e) = reconcile::refresh(&ctx, &mut state).await {
                    tracing::error!(error = %e, "cannot read the policy repository; jobs run on the last applied revision");
                }
                let started = std::time::Instant::now();
                for report in jobs::run_batch(&ctx, &state, batch).await {
                    monitor.after_cycle(&state, Some(&Ok(report)), started.elapsed()).await;
                }
            }
            _ = &mut shutdown => {
                tracing::info!("safepoint daemon stopped");
                return Ok(());
            }
        }
    }
}

/// The next job, or never when the daemon takes no jobs.
async fn recv(jobs: &mut Option<tokio::sync::mpsc::Receiver<jobs::Job>>) -> Option<jobs::Job> {
    match jobs {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Logs a cycle; true when actions were executed and all succeeded.
fn log_cycle(result: Result<reconcile::CycleReport, reconcile::ReconcileError>) -> bool {
    match result {
        Ok(report) => {
            for note in &report.plan.notes {
                tracing::info!(policy = %note.policy, "{}", note.text);
            }
            for p in &report.observe.problems {
                tracing::error!("{p}");
            }
            !report.outcomes.is_empty() && report.outcomes.iter().all(|o| o.ok)
        }
        Err(e) => {
            tracing::error!(error = %e, "reconcile cycle failed");
            false
        }
    }
}
