//! IO: the daemon loop, in two lanes that share the applied revision. The
//! scheduled lane wakes on a due schedule/RPO deadline (the plan's
//! `next_wakeup`), on a change of a local policy repository (file events), on
//! the fetch interval, and runs one reconcile cycle of scheduled work
//! (`Scope::Scheduled`) each time, its backups bounded by `--concurrency`.
//! The requested lane (`jobs::lane`) runs API work concurrently, bounded by
//! `--request-concurrency`, so a gate never waits for another policy's work.
//! SIGTERM/SIGINT stops both lanes taking new work, lets running backups
//! finish within the grace period, then cancels them (recorded as failed,
//! partial data removed).

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::{Mutex, Notify, watch};

use crate::monitor::Monitor;
use crate::reconcile::{self, Context, RepoState, Scope};
use crate::settings::Settings;
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

/// Runs the two lanes until SIGTERM/SIGINT (or, with `once`, one scheduled
/// cycle): the scheduled lane here, the requested lane in `jobs::lane` with
/// at most `request_concurrency` cycles and backups of its own at once.
pub async fn run(
    ctx: Context,
    stop: watch::Sender<bool>,
    once: bool,
    request_concurrency: usize,
    monitor: &Monitor,
) -> anyhow::Result<()> {
    let state = Mutex::new(RepoState::load(&ctx).await?);
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
    let queue = monitor.jobs.lock().ok().and_then(|mut j| j.take());
    tracing::info!(
        repo = %ctx.settings.repo.location,
        branch = %ctx.settings.repo.branch,
        path = %ctx.settings.repo.path,
        data_dir = %ctx.settings.data_dir.display(),
        request_concurrency,
        "safepoint daemon started"
    );
    let (quit, quit_rx) = watch::channel(false);
    let lane_ctx = Context {
        settings: Arc::new(Settings {
            concurrency: request_concurrency.max(1),
            ..(*ctx.settings).clone()
        }),
        ..ctx.clone()
    };
    let requested = async {
        if let Some((requeue, rx)) = queue.filter(|_| !once) {
            jobs::lane(&lane_ctx, &state, rx, requeue, monitor, quit_rx.clone()).await;
        }
    };
    let scheduled = async {
        let lanes = Lane {
            ctx: &ctx,
            state: &state,
            monitor,
            wake: &wake,
        };
        let result = lanes.scheduled(once, quit_rx.clone()).await;
        let _ = quit.send(true);
        result
    };
    let archiving = crate::engine::pitr::supervise(&ctx, &state, quit_rx.clone());
    let both = async { tokio::join!(scheduled, requested, archiving).0 };
    tokio::pin!(both);
    tokio::select! {
        result = &mut both => result,
        _ = &mut shutdown => {
            tracing::info!(grace_seconds = ctx.settings.shutdown_grace.as_secs(), "shutdown requested: no new work; waiting for running backups");
            let _ = quit.send(true);
            tokio::select! {
                _ = &mut both => {}
                _ = tokio::time::sleep(ctx.settings.shutdown_grace) => {
                    tracing::warn!("grace period over: cancelling running backups");
                    let _ = stop.send(true);
                    let _ = both.await;
                }
            }
            tracing::info!("safepoint daemon stopped");
            Ok(())
        }
    }
}

/// What the scheduled lane works with.
struct Lane<'a> {
    ctx: &'a Context,
    /// Shared with the requested lane: refreshes take turns.
    state: &'a Mutex<RepoState>,
    monitor: &'a Monitor,
    wake: &'a Notify,
}

impl Lane<'_> {
    /// Refreshes the shared state and returns a copy to plan with.
    async fn refreshed(&self) -> RepoState {
        let mut state = self.state.lock().await;
        if let Err(e) = reconcile::refresh(self.ctx, &mut state).await {
            self.monitor.refresh_failed(&e);
            tracing::error!(error = %e, "cannot read the policy repository; retrying at the next wake-up");
        }
        state.clone()
    }

    /// The scheduled lane: one cycle of everything nobody asked for (with
    /// `once`, everything) per wake-up, until `quit` is set.
    async fn scheduled(&self, once: bool, mut quit: watch::Receiver<bool>) -> anyhow::Result<()> {
        let ctx = self.ctx;
        let scope = if once { Scope::All } else { Scope::Scheduled };
        while !*quit.borrow() {
            let state = self.refreshed().await;
            let mut sleep_for = ctx.settings.fetch_interval;
            if state.applied.is_some() {
                let started = std::time::Instant::now();
                let result = reconcile::cycle(ctx, &state, Vec::new(), scope.clone(), false).await;
                self.monitor
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
                self.monitor.after_cycle(&state, None, Duration::ZERO).await;
                if once {
                    anyhow::bail!("no valid policy revision to apply; run `safepoint validate`");
                }
            }
            if let Ok(Some(next)) = reconcile::next_wakeup(ctx, &state).await {
                let until = (next - Utc::now()).to_std().unwrap_or(Duration::ZERO);
                sleep_for = sleep_for.min(until.max(Duration::from_millis(200)));
            }
            tokio::select! {
                _ = tokio::time::sleep(sleep_for) => {}
                _ = self.wake.notified() => tracing::debug!("policy repository changed"),
                _ = self.monitor.git_wake.notified() => tracing::info!("push webhook: fetching the policy repository"),
                _ = quit.wait_for(|q| *q) => {}
            }
        }
        Ok(())
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
