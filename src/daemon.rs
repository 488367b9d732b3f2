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
//!
//! The daemon owns the job channel and composes its parts as siblings: the
//! two lanes, the HTTP server (`http`, enqueuing jobs) and the monitor
//! (status, metrics, API snapshot and alerts after each cycle, notice
//! delivery). None of them knows the others; they share only the channel,
//! the metrics registry and the snapshot the daemon hands each.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use tokio::sync::{Mutex, Notify, mpsc, watch};
use tokio::task::JoinHandle;

use crate::catalog::Catalog;
use crate::engine::context::{Context, ReconcileError, RepoState};
use crate::engine::cycle::{self, CycleReport};
use crate::engine::execute::Scope;
use crate::engine::refresh::refresh;
use crate::git;
use crate::http::{self, ApiState, Snapshot};
use crate::jobs::{self, Board, Job};
use crate::metrics::Metrics;
use crate::monitor::{Monitor, MonitorConfig};
use crate::notify::Mailer;
use crate::replica::{Keeper, ReplicaConfig};
use crate::settings::Settings;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot listen on {addr}: {source}; pass another --listen address (SAFEPOINT_LISTEN)")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// How the daemon serves and reports (from the command line).
pub struct Options {
    /// Where the HTTP API listens; `None` serves nothing (`daemon --once`).
    pub listen: Option<SocketAddr>,
    pub mailer: Option<Mailer>,
    /// Re-notify a persisting problem after this long (0 = never).
    pub reminder: TimeDelta,
    /// How often the delivery task looks for notices queued by another
    /// process (the CLI); notices this process queues go out at once.
    pub outbox_poll: Duration,
    /// API tokens and the Git webhook secret.
    pub auth: Arc<http::api::Auth>,
    /// The planner's options (previews use them, as the daemon does).
    pub plan: crate::plan::PlanOptions,
    /// The operator's permissions (previews validate with them, as the daemon does).
    pub permissions: Arc<crate::policy::Permissions>,
    /// Several replicas on one catalog: this replica's lease settings
    /// (`ctx.leases` is then replicated); `None` on one node.
    pub replica: Option<crate::replica::ReplicaConfig>,
}

/// The job channel: the API sends jobs, the requested lane takes them;
/// jobs that waited for a running backup come back through a clone.
struct Channel {
    tx: mpsc::Sender<Job>,
    rx: mpsc::Receiver<Job>,
}

/// Binds the listener (failing loudly when it cannot) and serves the API
/// until `stop`.
async fn serve_http(
    addr: SocketAddr,
    state: ApiState,
    stop: watch::Receiver<bool>,
) -> Result<JoinHandle<()>, DaemonError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| DaemonError::Listen { addr, source })?;
    let bound = listener.local_addr().unwrap_or(addr);
    tracing::info!(addr = %bound, "http api listening (/metrics, /healthz, /readyz, /api/v1/...)");
    let router = http::router(state);
    Ok(tokio::spawn(async move {
        if let Err(e) = http::serve(listener, router, stop).await {
            tracing::error!(error = %e, "http api stopped");
        }
    }))
}

/// Runs the daemon until SIGTERM/SIGINT (or, with `once`, one scheduled
/// cycle): creates the job channel, the metrics registry and the API
/// snapshot, starts the HTTP server (with a listen address) and the monitor,
/// runs the lanes, then stops the server and the monitor (which makes a last
/// delivery attempt).
pub async fn run(
    ctx: Context,
    stop: watch::Sender<bool>,
    once: bool,
    request_concurrency: usize,
    options: Options,
) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::new());
    let (snapshot, snapshot_rx) = watch::channel(Arc::new(Snapshot::default()));
    let (tx, rx) = mpsc::channel(1024);
    let git_wake = Arc::new(Notify::new());
    let (server_stop, server_stop_rx) = watch::channel(false);
    let server = match options.listen {
        Some(addr) => Some(
            serve_http(
                addr,
                api_state(
                    &ctx.catalog,
                    &metrics,
                    snapshot_rx,
                    &options,
                    &tx,
                    &git_wake,
                ),
                server_stop_rx,
            )
            .await?,
        ),
        None => None,
    };
    let monitor = Monitor::start(MonitorConfig {
        catalog: ctx.catalog.clone(),
        metrics,
        snapshot,
        mailer: options.mailer,
        reminder: options.reminder,
        // Without a listener (`--once`) notices go out at shutdown only.
        outbox_poll: options.listen.map(|_| options.outbox_poll),
        plan: options.plan,
        permissions: options.permissions,
        leases: ctx.leases.clone(),
    });
    let channel = Channel { tx, rx };
    let lane_options = LaneOptions {
        once,
        request_concurrency,
        replica: options.replica,
    };
    let result = lanes(ctx, stop, lane_options, &monitor, channel, &git_wake).await;
    let _ = server_stop.send(true);
    if let Some(server) = server {
        let _ = server.await;
    }
    monitor.shutdown().await;
    result
}

/// The API's handles into the daemon.
fn api_state(
    catalog: &Catalog,
    metrics: &Arc<Metrics>,
    snapshot: watch::Receiver<Arc<Snapshot>>,
    options: &Options,
    jobs: &mpsc::Sender<Job>,
    git_wake: &Arc<Notify>,
) -> ApiState {
    ApiState {
        metrics: metrics.clone(),
        snapshot,
        catalog: catalog.clone(),
        control: http::api::Control {
            auth: options.auth.clone(),
            jobs: Some(jobs.clone()),
            board: Arc::new(Board::default()),
            git_wake: git_wake.clone(),
        },
    }
}

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

/// How the lanes run (from the command line).
struct LaneOptions {
    /// One scheduled cycle, then stop (`--once`).
    once: bool,
    /// Cycles (and backups within each) of the requested lane at once.
    request_concurrency: usize,
    /// Several replicas: this replica's lease settings.
    replica: Option<ReplicaConfig>,
}

/// Watches a local policy repository for commits (rings `wake`).
fn watch_repo(ctx: &Context, wake: &Arc<Notify>) -> Option<git::watch::Watch> {
    let dir = git::watch_dir(&ctx.settings.repo)?;
    match git::watch::watch(&dir, wake.clone()) {
        Ok(w) => {
            tracing::info!(dir = %dir.display(), "watching the policy repository for commits");
            Some(w)
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch the policy repository; polling every fetch interval instead");
            None
        }
    }
}

/// Runs the two lanes until SIGTERM/SIGINT (or, with `once`, one scheduled
/// cycle): the scheduled lane here, the requested lane in `jobs::lane` with
/// at most `request_concurrency` cycles and backups of its own at once.
/// With several replicas the lease keeper runs beside them: it takes its
/// leases before the lanes start and renews them until every lane stopped
/// (work still running in the grace period keeps its leases), then leaves.
async fn lanes(
    ctx: Context,
    stop: watch::Sender<bool>,
    options: LaneOptions,
    monitor: &Monitor,
    channel: Channel,
    git_wake: &Notify,
) -> anyhow::Result<()> {
    let state = Mutex::new(RepoState::load(&ctx).await?);
    let keeper_wake = Notify::new();
    // Woken by repository file events, and by the keeper taking leases.
    let wake = Arc::new(Notify::new());
    let _watch = watch_repo(&ctx, &wake);
    let keeper = options.replica.clone().map(|config| Keeper {
        catalog: ctx.catalog.clone(),
        leases: ctx.leases.clone(),
        config,
        state: &state,
        locks_dir: ctx.settings.locks_dir(),
        wake: &keeper_wake,
        gained: wake.clone(),
    });
    if let Some(k) = &keeper {
        // Leases first: the coordinator applies the head revision (the
        // others follow it), then every replica takes its policies, so the
        // first cycle already acts on them.
        k.round(&k.names().await).await;
        if let Err(e) = refresh(&ctx, &mut *state.lock().await).await {
            tracing::error!(error = %e, "cannot read the policy repository; retrying at the next wake-up");
        }
        k.round(&k.names().await).await;
        tracing::info!(replica = %k.config.id, leases = ctx.leases.held().len(), coordinator = ctx.leases.is_coordinator(), "replica joined");
    }
    let (keeper_quit, keeper_quit_rx) = watch::channel(false);
    let names = match &keeper {
        Some(k) => k.names().await,
        None => Vec::new(),
    };
    let keeping = async {
        if let Some(k) = &keeper {
            k.run(names, keeper_quit_rx).await;
        }
    };
    let lane = Lane {
        ctx: &ctx,
        state: &state,
        monitor,
        wake: &wake,
        git_wake,
        keeper_wake: &keeper_wake,
    };
    let working = async {
        let result = run_lanes(lane, stop, &options, channel).await;
        let _ = keeper_quit.send(true);
        result
    };
    tokio::join!(working, keeping).0
}

/// The lanes proper (see `lanes`), until they end or SIGTERM/SIGINT.
async fn run_lanes(
    lane: Lane<'_>,
    stop: watch::Sender<bool>,
    options: &LaneOptions,
    channel: Channel,
) -> anyhow::Result<()> {
    let (ctx, state, once) = (lane.ctx, lane.state, options.once);
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    tracing::info!(
        repo = %ctx.settings.repo.location,
        branch = %ctx.settings.repo.branch,
        path = %ctx.settings.repo.path,
        data_dir = %ctx.settings.data_dir.display(),
        request_concurrency = options.request_concurrency,
        "safepoint daemon started"
    );
    let (quit, quit_rx) = watch::channel(false);
    let lane_ctx = Context {
        settings: Arc::new(Settings {
            concurrency: options.request_concurrency.max(1),
            ..(*ctx.settings).clone()
        }),
        ..ctx.clone()
    };
    // Several replicas: jobs other replicas hand over join the requested lane.
    let claiming = jobs::claim_loop(ctx.clone(), channel.tx.clone(), quit_rx.clone());
    let requested = async {
        if !once {
            let Channel { tx, rx } = channel;
            jobs::lane(&lane_ctx, state, rx, tx, lane.monitor, quit_rx.clone()).await;
        }
    };
    let scheduled = async {
        let result = lane.scheduled(once, quit_rx.clone()).await;
        let _ = quit.send(true);
        result
    };
    let archiving = crate::engine::pitr::supervise(ctx, state, quit_rx.clone());
    let watching = watch_records(ctx, state, lane.monitor, quit_rx.clone());
    let both = async { tokio::join!(scheduled, requested, archiving, claiming, watching).0 };
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

/// Several replicas: while this replica is the coordinator, re-evaluates
/// status and alerts whenever another replica recorded something (a backup
/// failed on the policy's holder alerts at once, not at the coordinator's
/// next cycle). One small query per second.
async fn watch_records(
    ctx: &Context,
    state: &Mutex<RepoState>,
    monitor: &Monitor,
    mut quit: watch::Receiver<bool>,
) {
    if ctx.leases.replica().is_none() {
        return;
    }
    let mut seen = None;
    while !*quit.borrow() {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = quit.wait_for(|q| *q) => break,
        }
        if !ctx.leases.is_coordinator() {
            seen = None;
            continue;
        }
        let Ok(seq) = ctx.catalog.audit_seq().await else {
            continue;
        };
        if seen.replace(seq) != Some(seq) {
            let snapshot = state.lock().await.clone();
            monitor.records_changed(&snapshot).await;
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
    /// Rung by the Git push webhook: fetch now.
    git_wake: &'a Notify,
    /// Rung when a new revision was applied (the lease keeper assigns its
    /// policies at once).
    keeper_wake: &'a Notify,
}

impl Lane<'_> {
    /// Refreshes the shared state and returns a copy to plan with.
    async fn refreshed(&self) -> RepoState {
        let mut state = self.state.lock().await;
        match refresh(self.ctx, &mut state).await {
            Ok(true) => self.keeper_wake.notify_one(),
            Ok(false) => {}
            Err(e) => {
                self.monitor.refresh_failed(&e);
                tracing::error!(error = %e, "cannot read the policy repository; retrying at the next wake-up");
            }
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
                let result = cycle::cycle(ctx, &state, Vec::new(), scope.clone(), false).await;
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
            if let Ok(Some(next)) = cycle::next_wakeup(ctx, &state).await {
                let until = (next - Utc::now()).to_std().unwrap_or(Duration::ZERO);
                sleep_for = sleep_for.min(until.max(Duration::from_millis(200)));
            }
            tokio::select! {
                _ = tokio::time::sleep(sleep_for) => {}
                _ = self.wake.notified() => tracing::debug!("policy repository changed"),
                _ = self.git_wake.notified() => tracing::info!("push webhook: fetching the policy repository"),
                _ = quit.wait_for(|q| *q) => {}
            }
        }
        Ok(())
    }
}

/// Logs a cycle; true when actions were executed and all succeeded.
fn log_cycle(result: Result<CycleReport, ReconcileError>) -> bool {
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
