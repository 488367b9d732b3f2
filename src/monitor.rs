//! App: what the daemon reports after each cycle. Derives the status from
//! the catalog (after execution, so a backup that just failed or succeeded
//! counts), sets the metrics, publishes the snapshot the HTTP API serves and
//! runs the alert state machine. Also runs the notice delivery task (woken
//! by the catalog's outbox bell whenever this process queues a notice) and
//! stops it with the daemon. The daemon hands it the metrics registry and
//! the snapshot's sender; it knows neither the HTTP server nor the jobs.

use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::catalog::{Catalog, CatalogError};
use crate::engine::context::{ReconcileError, RepoState};
use crate::engine::cycle::CycleReport;
use crate::http::Snapshot;
use crate::lease::Leases;
use crate::metrics::Metrics;
use crate::notify::{self, Channels, Mailer};
use crate::observed::ObservedState;
use crate::policy::DesiredState;
use crate::status::{self, RepoInput};

/// What the monitor works with (from the daemon).
pub struct MonitorConfig {
    pub catalog: Catalog,
    pub metrics: Arc<Metrics>,
    /// The snapshot the HTTP API serves.
    pub snapshot: watch::Sender<Arc<Snapshot>>,
    pub mailer: Option<Mailer>,
    /// Re-notify a persisting problem after this long (0 = never).
    pub reminder: TimeDelta,
    /// How often the delivery task looks for notices other processes
    /// queued; `None` runs no delivery task (notices go out at shutdown).
    pub outbox_poll: Option<Duration>,
    /// The planner's options and the operator's permissions (previews of
    /// the revision in force use them).
    pub plan: crate::plan::PlanOptions,
    pub permissions: Arc<crate::policy::Permissions>,
    /// Several replicas: only the coordinator evaluates alerts and sends
    /// notices (once per notice, however many replicas run).
    pub leases: Leases,
}

pub struct Monitor {
    pub metrics: Arc<Metrics>,
    catalog: Catalog,
    snapshot: watch::Sender<Arc<Snapshot>>,
    channels: Option<Channels>,
    reminder: TimeDelta,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    /// Serialises `after_cycle`: both lanes finish cycles, and status,
    /// metrics and alerts are computed from the catalog one cycle at a time.
    after_cycle: tokio::sync::Mutex<()>,
    plan: crate::plan::PlanOptions,
    permissions: Arc<crate::policy::Permissions>,
    leases: Leases,
}

impl Monitor {
    /// Starts the notice delivery task (with `outbox_poll`).
    pub fn start(config: MonitorConfig) -> Monitor {
        let (stop, stop_rx) = watch::channel(false);
        let channels = match notify::Poster::new() {
            Ok(poster) => Some(Channels {
                mailer: config.mailer.clone(),
                poster,
            }),
            Err(e) => {
                tracing::error!(error = %e, "webhook notices cannot be sent");
                None
            }
        };
        let mut tasks = Vec::new();
        if let (Some(poll), Some(channels)) = (config.outbox_poll, channels.clone()) {
            tasks.push(tokio::spawn(delivery_loop(
                config.catalog.clone(),
                channels,
                config.metrics.clone(),
                poll,
                config.leases.clone(),
                stop_rx,
            )));
        }
        Monitor {
            metrics: config.metrics,
            catalog: config.catalog,
            snapshot: config.snapshot,
            channels,
            reminder: config.reminder,
            stop,
            tasks,
            after_cycle: tokio::sync::Mutex::new(()),
            plan: config.plan,
            permissions: config.permissions,
            leases: config.leases,
        }
    }

    /// Reading the policy repository failed (the last applied revision stays).
    pub fn refresh_failed(&self, e: &ReconcileError) {
        self.metrics.record_error("refresh", e.kind());
    }

    /// Several replicas: the coordinator re-evaluates status and alerts when
    /// another replica recorded something (the audit log moved), without a
    /// cycle of its own; the plan shown stays the last one it made.
    pub async fn records_changed(&self, state: &RepoState) {
        self.report(state, None, Duration::ZERO, true).await;
    }

    /// Everything the daemon reports after a cycle; `result` is `None` when
    /// no cycle could run (no valid revision applied yet).
    pub async fn after_cycle(
        &self,
        state: &RepoState,
        result: Option<&Result<CycleReport, ReconcileError>>,
        elapsed: Duration,
    ) {
        self.report(state, result, elapsed, false).await;
    }

    /// A cycle's counters (none for a status-only report).
    fn record_cycle(
        &self,
        result: Option<&Result<CycleReport, ReconcileError>>,
        elapsed: Duration,
    ) {
        if let Some(result) = result {
            self.metrics.record_cycle(elapsed.as_secs_f64());
            match result {
                Ok(report) => {
                    self.metrics.record_outcomes(&report.outcomes);
                    self.metrics.record_drills(&report.drills);
                }
                Err(e) => self.metrics.record_error("cycle", e.kind()),
            }
        }
    }

    /// The alert state machine, on the coordinator only (several replicas
    /// evaluate once, not once each). Queued notices ring the outbox bell.
    async fn evaluate_alerts(
        &self,
        desired: &DesiredState,
        st: &status::Status,
        now: chrono::DateTime<Utc>,
    ) {
        if !self.leases.is_coordinator() {
            return;
        }
        let mail = self.channels.as_ref().is_some_and(|c| c.mailer.is_some());
        if let Err(e) = notify::evaluate(&self.catalog, desired, st, now, self.reminder, mail).await
        {
            tracing::error!(error = %e, "alert evaluation failed; it is retried after the next cycle");
            self.metrics.record_error("alerts", e.kind());
        }
    }

    async fn report(
        &self,
        state: &RepoState,
        result: Option<&Result<CycleReport, ReconcileError>>,
        elapsed: Duration,
        keep_plan: bool,
    ) {
        let _one_at_a_time = self.after_cycle.lock().await;
        self.record_cycle(result, elapsed);
        let now = Utc::now();
        let empty = DesiredState::default();
        let desired = state.applied.as_ref().map_or(&empty, |a| &a.desired);
        let observed = match observed_from_catalog(&self.catalog).await {
            Ok(o) => o,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the catalog for status, metrics and alerts");
                self.metrics.record_error("status", e.kind());
                return;
            }
        };
        let repo = RepoInput {
            applied: state.applied.as_ref().map(|a| a.revision.commit.clone()),
            attempted: state.attempted.clone(),
        };
        let st = status::compute(desired, &observed, &repo, now);
        let observed = Arc::new(observed);
        self.metrics.set_state(&st);
        self.metrics.set_replica_leases(self.leases.held().len());
        self.evaluate_alerts(desired, &st, now).await;
        let (plan, cycle_error) = match result {
            Some(Ok(report)) => (Some(report.plan.clone()), None),
            Some(Err(e)) => (self.snapshot.borrow().plan.clone(), Some(e.to_string())),
            None if keep_plan => {
                let s = self.snapshot.borrow();
                (s.plan.clone(), s.cycle_error.clone())
            }
            None => (None, None),
        };
        let in_force = state.applied.as_ref().map(|a| {
            let previous = self.snapshot.borrow().in_force.clone();
            previous
                .filter(|f| f.commit == a.revision.commit)
                .unwrap_or_else(|| {
                    Arc::new(crate::http::InForce {
                        commit: a.revision.commit.clone(),
                        desired: a.desired.clone(),
                        options: self.plan.clone(),
                        permissions: self.permissions.clone(),
                    })
                })
        });
        self.snapshot.send_replace(Arc::new(Snapshot {
            at: Some(now),
            status: Some(st),
            plan,
            cycle_error,
            in_force,
            observed: Some(observed),
        }));
    }

    /// Stops the delivery task, then makes one last
    /// delivery attempt (bounded by the SMTP timeout) so that `--once` and a
    /// shutdown send what the last cycle decided.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        if let Some(channels) = self
            .channels
            .as_ref()
            .filter(|_| self.leases.is_coordinator())
        {
            match notify::deliver(&self.catalog, channels, &self.metrics, Utc::now(), true).await {
                Ok(d) if d.pending > 0 => tracing::warn!(
                    pending = d.pending,
                    "alert notices still queued; they are sent when the daemon runs again"
                ),
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "alert delivery failed"),
            }
        }
    }
}

impl crate::jobs::CycleObserver for Monitor {
    async fn cycle_done(&self, state: &RepoState, report: CycleReport, elapsed: Duration) {
        self.after_cycle(state, Some(&Ok(report)), elapsed).await;
    }
}

/// The state status needs, read from the catalog only (no storage listing).
async fn observed_from_catalog(catalog: &Catalog) -> Result<ObservedState, CatalogError> {
    crate::preview::observed(catalog).await
}

/// Sends queued notices: everything at start, then at once whatever this
/// process queues (the catalog's outbox bell), retries when they fall due,
/// and notices queued by other processes within `poll`, until stopped.
async fn delivery_loop(
    catalog: Catalog,
    channels: Channels,
    metrics: Arc<Metrics>,
    poll: Duration,
    leases: Leases,
    mut stop: watch::Receiver<bool>,
) {
    let bell = catalog.outbox_bell();
    let mut first = true;
    loop {
        // Armed before the pass, so a notice queued during it is not missed.
        let rung = bell.notified();
        tokio::pin!(rung);
        rung.as_mut().enable();
        let now = Utc::now();
        // Several replicas: only the coordinator sends (once per notice).
        if leases.is_coordinator() {
            if let Err(e) = notify::deliver(&catalog, &channels, &metrics, now, first).await {
                tracing::error!(error = %e, "alert delivery failed");
            }
            first = false;
        }
        let email = channels.mailer.is_some();
        let next = catalog.next_notification_at(email).await.ok().flatten();
        let poll = poll.max(Duration::from_millis(500));
        let wait = next
            .and_then(|t| (t - Utc::now()).to_std().ok())
            .unwrap_or(poll)
            .clamp(Duration::from_millis(500), poll);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = &mut rung => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}
