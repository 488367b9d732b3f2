//! IO: the Prometheus metrics (`GET /metrics`, OpenMetrics text) and the
//! registry behind them. Gauges are set from the state after each cycle
//! (`status::Status`), counters and histograms from what was executed
//! (`model::Outcome`). Every label value is bounded: policy names (from
//! Git), triggers, outcomes, drift kinds and error kinds; never ids or texts.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

use crate::model::{ActionKind, DriftKind, DrillOutcome, Outcome, RunOutcome};
use crate::status::Status;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PolicyLabels {
    policy: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackupLabels {
    policy: String,
    trigger: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DriftLabels {
    policy: String,
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    policy: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    stage: String,
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RevisionLabels {
    applied: String,
    attempted: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChannelLabels {
    channel: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
}

type F64Gauge = Gauge<f64, AtomicU64>;

fn seconds_histogram() -> Histogram {
    // 0.5 s .. ~4.5 h
    Histogram::new(exponential_buckets(0.5, 2.0, 16))
}

fn cycle_histogram() -> Histogram {
    // 5 ms .. ~160 s
    Histogram::new(exponential_buckets(0.005, 2.0, 16))
}

/// The registry and typed handles on every metric.
pub struct Metrics {
    registry: Registry,
    backup_last_success: Family<PolicyLabels, F64Gauge>,
    backup_size: Family<PolicyLabels, Gauge>,
    policy_rpo: Family<PolicyLabels, Gauge>,
    policy_ready: Family<PolicyLabels, Gauge>,
    backups: Family<BackupLabels, Counter>,
    backup_retries: Family<PolicyLabels, Counter>,
    backup_duration: Family<PolicyLabels, Histogram, fn() -> Histogram>,
    drift: Family<DriftLabels, Gauge>,
    drill_last_success: Family<PolicyLabels, F64Gauge>,
    drill_restore: Family<PolicyLabels, Histogram, fn() -> Histogram>,
    drills: Family<OutcomeLabels, Counter>,
    reconcile_duration: Histogram,
    reconcile_errors: Family<ErrorLabels, Counter>,
    revision_info: Family<RevisionLabels, Gauge>,
    /// No labels; a family so that it has no series before the first read.
    revision_valid: Family<Vec<(String, String)>, Gauge>,
    notifications: Family<ChannelLabels, Counter>,
    notifications_queued: Gauge,
    replica_leases: Gauge,
    /// PITR policies: window start/end (Unix seconds), WAL lag (bytes, seconds).
    pitr: [Family<PolicyLabels, F64Gauge>; 4],
}

/// Name and help of the `pitr` gauges, in order.
const PITR_GAUGES: [(&str, &str); 4] = [
    (
        "pitr_window_start_timestamp_seconds",
        "PITR policies: the earliest time a restore can reach (end of the oldest usable base backup)",
    ),
    (
        "pitr_window_end_timestamp_seconds",
        "PITR policies: the latest time up to which everything the server wrote is archived",
    ),
    (
        "pitr_wal_lag_bytes",
        "PITR policies: how far the WAL archive was behind the server at the archiver's last sample",
    ),
    (
        "pitr_wal_lag_seconds",
        "PITR policies: seconds since the WAL archive last held everything the server had written",
    ),
];

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("safepoint");
        let m = Metrics {
            backup_last_success: Family::default(),
            backup_size: Family::default(),
            policy_rpo: Family::default(),
            policy_ready: Family::default(),
            backups: Family::default(),
            backup_retries: Family::default(),
            backup_duration: Family::new_with_constructor(seconds_histogram),
            drift: Family::default(),
            drill_last_success: Family::default(),
            drill_restore: Family::new_with_constructor(seconds_histogram),
            drills: Family::default(),
            reconcile_duration: cycle_histogram(),
            reconcile_errors: Family::default(),
            revision_info: Family::default(),
            revision_valid: Family::default(),
            notifications: Family::default(),
            notifications_queued: Gauge::default(),
            replica_leases: Gauge::default(),
            pitr: Default::default(),
            registry: Registry::default(),
        };
        m.register_backups(&mut registry);
        m.register_cycles(&mut registry);
        Metrics { registry, ..m }
    }

    /// The families of backups and drills.
    fn register_backups(&self, r: &mut Registry) {
        let m = self;
        r.register(
            "backup_last_success_timestamp_seconds",
            "Start time (Unix seconds) of the newest verified backup of the policy: the point in time it captures",
            m.backup_last_success.clone(),
        );
        r.register(
            "backup_size_bytes",
            "Stored (compressed) size of the newest verified backup of the policy",
            m.backup_size.clone(),
        );
        r.register(
            "policy_rpo_seconds",
            "The policy's recovery point objective (spec.rpo); absent when the policy sets none",
            m.policy_rpo.clone(),
        );
        r.register(
            "policy_ready",
            "1 when the policy is Ready, 0 when Stalled (see `safepoint status` for the reason)",
            m.policy_ready.clone(),
        );
        r.register(
            "backups",
            "Backups executed, by policy, trigger and outcome (succeeded|failed)",
            m.backups.clone(),
        );
        r.register(
            "backup_retries",
            "Backup attempts that failed transiently (lost connection, server restarting, lock timeout) and were retried",
            m.backup_retries.clone(),
        );
        r.register(
            "backup_duration_seconds",
            "Wall time of backups, from lock to verified manifest",
            m.backup_duration.clone(),
        );
        r.register(
            "drift",
            "1 while the policy shows the drift kind, 0 otherwise",
            m.drift.clone(),
        );
        r.register(
            "drill_last_success_timestamp_seconds",
            "Start time (Unix seconds) of the policy's last passed recovery drill",
            m.drill_last_success.clone(),
        );
        r.register(
            "drill_restore_seconds",
            "Measured restore time of recovery drills",
            m.drill_restore.clone(),
        );
        r.register(
            "drills",
            "Recovery drills, by policy and outcome (passed|failed|error: could not run)",
            m.drills.clone(),
        );
        for ((name, help), family) in PITR_GAUGES.iter().zip(&m.pitr) {
            r.register(*name, *help, family.clone());
        }
    }

    /// The families of cycles, revisions, notifications and the build.
    fn register_cycles(&self, r: &mut Registry) {
        let m = self;
        r.register(
            "reconcile_duration_seconds",
            "Wall time of one reconcile cycle (observe, plan, execute)",
            m.reconcile_duration.clone(),
        );
        r.register(
            "reconcile_errors",
            "Reconcile steps that failed, by stage (refresh|cycle|status|alerts) and error kind",
            m.reconcile_errors.clone(),
        );
        r.register(
            "policy_revision_info",
            "The policy-repository commit in force (applied) and the last one tried (attempted)",
            m.revision_info.clone(),
        );
        r.register(
            "policy_revision_valid",
            "1 when the last attempted policy commit passed validation, 0 when it was rejected",
            m.revision_valid.clone(),
        );
        r.register(
            "notifications",
            "Alert notifications delivered or failed, by channel (email) and outcome (sent|failed)",
            m.notifications.clone(),
        );
        r.register(
            "notifications_queued",
            "Alert notifications waiting for delivery (retried with backoff)",
            m.notifications_queued.clone(),
        );
        r.register(
            "replica_leases",
            "Leases this replica holds (policies it acts on, plus the coordinator lease); 0 on one node",
            m.replica_leases.clone(),
        );
        // A gauge fixed at 1 rather than an OpenMetrics `info`: the classic
        // text parser (`promtool check metrics`) rejects that type.
        let build = Family::<BuildLabels, Gauge>::default();
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION").to_string(),
            })
            .set(1);
        r.register("build_info", "safepoint build information", build);
    }

    /// The PITR gauges of a policy that has a window (absent otherwise).
    fn set_pitr(&self, p: &crate::status::PolicyStatus) {
        let Some(w) = &p.pitr else {
            return;
        };
        let labels = PolicyLabels {
            policy: p.name.clone(),
        };
        let at = |t: Option<chrono::DateTime<chrono::Utc>>| {
            t.map(|t| t.timestamp_millis() as f64 / 1000.0)
        };
        let values = [
            at(w.window_start),
            at(w.window_end),
            w.lag_bytes.map(|b| b as f64),
            w.lag_seconds.map(|s| s as f64),
        ];
        for (family, value) in self.pitr.iter().zip(values) {
            if let Some(v) = value {
                family.get_or_create(&labels).set(v);
            }
        }
    }

    /// The OpenMetrics text exposition (ends with `# EOF`).
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }

    /// The classic Prometheus text format (0.0.4), for scrapers that do not
    /// ask for OpenMetrics (curl, `promtool check metrics`): counter families
    /// are named with their `_total` suffix and there is no `# EOF`.
    pub fn encode_classic(&self) -> Result<String, std::fmt::Error> {
        Ok(to_classic(&self.encode()?))
    }

    /// Counters and histograms of executed actions.
    pub fn record_outcomes(&self, outcomes: &[Outcome]) {
        for o in outcomes.iter().filter(|o| o.action == ActionKind::Backup) {
            let trigger = o.trigger.map_or("unknown", |t| t.as_str());
            self.backups
                .get_or_create(&BackupLabels {
                    policy: o.policy.clone(),
                    trigger: trigger.to_string(),
                    outcome: if o.ok {
                        RunOutcome::Succeeded
                    } else {
                        RunOutcome::Failed
                    }
                    .to_string(),
                })
                .inc();
            let policy = PolicyLabels {
                policy: o.policy.clone(),
            };
            self.backup_duration
                .get_or_create(&policy)
                .observe(o.seconds);
            if o.retries > 0 {
                self.backup_retries
                    .get_or_create(&policy)
                    .inc_by(u64::from(o.retries));
            }
        }
    }

    pub fn record_cycle(&self, seconds: f64) {
        self.reconcile_duration.observe(seconds);
    }

    /// A failed step; `kind` is an error's bounded `kind()`.
    pub fn record_error(&self, stage: &str, kind: &str) {
        self.reconcile_errors
            .get_or_create(&ErrorLabels {
                stage: stage.to_string(),
                kind: kind.to_string(),
            })
            .inc();
    }

    /// Drills a cycle ran: `Ok` with a verdict, `Err((policy, error))` when
    /// the drill could not run at all (outcome `error`).
    pub fn record_drills(&self, drills: &[Result<DrillOutcome, (String, String)>]) {
        for d in drills {
            let (policy, outcome, restore) = match d {
                Ok(d) => (
                    &d.policy,
                    if d.passed { "passed" } else { "failed" },
                    d.restore_seconds,
                ),
                Err((policy, _)) => (policy, "error", None),
            };
            self.drills
                .get_or_create(&OutcomeLabels {
                    policy: policy.clone(),
                    outcome: outcome.to_string(),
                })
                .inc();
            if let Some(seconds) = restore {
                self.drill_restore
                    .get_or_create(&PolicyLabels {
                        policy: policy.clone(),
                    })
                    .observe(seconds);
            }
        }
    }

    pub fn record_notification(&self, channel: &str, sent: bool) {
        self.notifications
            .get_or_create(&ChannelLabels {
                channel: channel.to_string(),
                outcome: if sent { "sent" } else { "failed" }.to_string(),
            })
            .inc();
    }

    /// Leases this replica holds (several replicas on one catalog).
    pub fn set_replica_leases(&self, n: usize) {
        self.replica_leases
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    pub fn set_queued(&self, n: i64) {
        self.notifications_queued.set(n);
    }

    /// Replaces every state gauge with what `status` says now; policies that
    /// left the repository lose their series.
    pub fn set_state(&self, status: &Status) {
        self.backup_last_success.clear();
        self.drill_last_success.clear();
        self.backup_size.clear();
        self.policy_rpo.clear();
        self.policy_ready.clear();
        self.drift.clear();
        for family in &self.pitr {
            family.clear();
        }
        for p in &status.policies {
            self.set_pitr(p);
            let labels = PolicyLabels {
                policy: p.name.clone(),
            };
            if let Some(good) = &p.last_good {
                self.backup_last_success
                    .get_or_create(&labels)
                    .set(good.started_at.timestamp_millis() as f64 / 1000.0);
                self.backup_size
                    .get_or_create(&labels)
                    .set(i64::try_from(good.size).unwrap_or(i64::MAX));
            }
            if let Some(at) = p.last_drill_passed {
                self.drill_last_success
                    .get_or_create(&labels)
                    .set(at.timestamp_millis() as f64 / 1000.0);
            }
            if let Some(rpo) = p.rpo_seconds {
                self.policy_rpo.get_or_create(&labels).set(rpo);
            }
            self.policy_ready
                .get_or_create(&labels)
                .set(i64::from(p.ready));
            for kind in DriftKind::MEASURED {
                self.drift
                    .get_or_create(&DriftLabels {
                        policy: p.name.clone(),
                        kind: kind.as_str().to_string(),
                    })
                    .set(i64::from(p.drift.contains(kind)));
            }
        }
        self.revision_info.clear();
        if status.applied.is_some() || status.attempted.is_some() {
            self.revision_info
                .get_or_create(&RevisionLabels {
                    applied: status.applied.clone().unwrap_or_default(),
                    attempted: status.attempted.clone().unwrap_or_default(),
                })
                .set(1);
            // A rejected commit always carries at least one diagnostic.
            self.revision_valid
                .get_or_create(&Vec::new())
                .set(i64::from(status.diagnostics.is_empty()));
        }
    }
}

/// OpenMetrics text as written by `encode` -> Prometheus text 0.0.4.
pub fn to_classic(openmetrics: &str) -> String {
    let counters: std::collections::BTreeSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| line.strip_prefix(p).map(|rest| (p, rest)));
        match meta {
            Some((prefix, rest)) => {
                let name = rest.split(' ').next().unwrap_or_default();
                if counters.contains(name) {
                    out.push_str(prefix);
                    out.push_str(name);
                    out.push_str("_total");
                    out.push_str(&rest[name.len()..]);
                } else {
                    out.push_str(line);
                }
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
#[path = "metrics_tests.rs"]
mod tests;
