//! Pure: semantic checks of a `BackupPolicy` spec (deploy, retention, drill,
//! releases, durations) and its conversion into `model::BackupPolicy`.
//! References to storages and notifiers are checked later, across documents.
//! The `drill` block has a file of its own (`drill`).

mod drill;

use std::collections::BTreeMap;

use chrono::TimeDelta;

use super::model::{self, DeploySpec, OnFailure, Retention};
use super::raw;
use super::source::source;
use super::validate::{Sink, duration, schedule};
use drill::drill;

/// Retention when the `retention` block is absent.
pub(crate) const DEFAULT_RETENTION: Retention = Retention {
    keep_last: 7,
    keep_hourly: 0,
    keep_daily: 0,
    keep_weekly: 0,
    keep_monthly: 0,
    keep_yearly: 0,
    keep_releases: 0,
};

/// Upper bound for one backup run when `timeout` is absent.
pub(crate) const DEFAULT_TIMEOUT: TimeDelta = TimeDelta::hours(1);

pub(crate) fn backup_policy(
    sink: &mut Sink<'_>,
    name: &str,
    labels: BTreeMap<String, String>,
    spec: raw::BackupPolicySpec,
) -> Option<model::BackupPolicy> {
    let source_type = spec.source.kind;
    let pitr = spec.source.pitr.is_some();
    let source = source(sink, spec.source, name);
    let schedule = spec.schedule.map(|s| schedule(sink, "/spec/schedule", s));
    let rpo = duration(sink, "/spec/rpo", spec.rpo.as_deref());
    let timeout = duration(sink, "/spec/timeout", spec.timeout.as_deref());
    let releases = spec.releases.map(|r| tag_pattern(sink, r.tag_pattern));
    let deploy = spec
        .deploy
        .map(|d| deploy(sink, d))
        .unwrap_or(Some(DeploySpec::default()));
    let retention = retention(sink, spec.retention);
    let drill = spec
        .drill
        .map(|d| drill(sink, d, source_type, source.as_ref(), pitr));
    let suspend = spec.suspend.unwrap_or(false);
    Some(model::BackupPolicy {
        name: name.to_owned(),
        labels,
        source: source?,
        storage: spec.storage,
        schedule: schedule.flatten_ok()?,
        rpo: rpo.ok()?,
        release_tag_pattern: releases.flatten_ok()?,
        deploy: deploy?,
        retention: retention?,
        drill: drill.flatten_ok()?,
        alerts: spec.alerts.map(|a| a.notifiers).unwrap_or_default(),
        suspend,
        timeout: timeout.ok()?.unwrap_or(DEFAULT_TIMEOUT),
    })
}

/// `Option<Option<T>>` where the inner `None` means "reported invalid".
pub(super) trait FlattenOk<T> {
    fn flatten_ok(self) -> Option<Option<T>>;
}

impl<T> FlattenOk<T> for Option<Option<T>> {
    fn flatten_ok(self) -> Option<Option<T>> {
        match self {
            None => Some(None),
            Some(None) => None,
            Some(Some(v)) => Some(Some(v)),
        }
    }
}

fn tag_pattern(sink: &mut Sink<'_>, pattern: String) -> Option<String> {
    match glob::Pattern::new(&pattern) {
        Ok(_) if !pattern.is_empty() => Some(pattern),
        Ok(_) => {
            sink.err(
                "/spec/releases/tagPattern",
                "empty release tag pattern".to_owned(),
                "use a glob such as `v*`".to_owned(),
            );
            None
        }
        Err(e) => {
            sink.err(
                "/spec/releases/tagPattern",
                format!("invalid release tag pattern `{pattern}`: {}", e.msg),
                "use a glob such as `v*` or `release-[0-9]*`".to_owned(),
            );
            None
        }
    }
}

fn deploy(sink: &mut Sink<'_>, d: raw::Deploy) -> Option<DeploySpec> {
    let snapshot_before = d.before == Some(raw::Before::Snapshot);
    let mut on_failure: Vec<OnFailure> = Vec::new();
    let mut ok = true;
    for (i, f) in d.on_failure.unwrap_or_default().into_iter().enumerate() {
        let ptr = format!("/spec/deploy/onFailure/{i}");
        let f = match f {
            raw::OnFailure::PinPreDeploy => OnFailure::PinPreDeploy,
            raw::OnFailure::ForensicSnapshot => OnFailure::ForensicSnapshot,
            raw::OnFailure::Alert => OnFailure::Alert,
        };
        if on_failure.contains(&f) {
            ok = false;
            sink.err(
                &ptr,
                "action listed twice in `onFailure`".to_owned(),
                "remove the repetition".to_owned(),
            );
        } else if f == OnFailure::PinPreDeploy && !snapshot_before {
            ok = false;
            sink.err(
                &ptr,
                "`pin-pre-deploy` needs a pre-deploy snapshot, but `deploy.before` is not `snapshot`".to_owned(),
                "set `deploy.before: snapshot` or remove `pin-pre-deploy`".to_owned(),
            );
        }
        on_failure.push(f);
    }
    ok.then_some(DeploySpec {
        snapshot_before,
        baseline_on_success: d.on_success == Some(raw::OnSuccess::Baseline),
        on_failure,
    })
}

fn retention(sink: &mut Sink<'_>, r: Option<raw::RetentionSpec>) -> Option<Retention> {
    let Some(r) = r else {
        return Some(DEFAULT_RETENTION);
    };
    let retention = Retention {
        keep_last: r.keep_last.unwrap_or(0),
        keep_hourly: r.keep_hourly.unwrap_or(0),
        keep_daily: r.keep_daily.unwrap_or(0),
        keep_weekly: r.keep_weekly.unwrap_or(0),
        keep_monthly: r.keep_monthly.unwrap_or(0),
        keep_yearly: r.keep_yearly.unwrap_or(0),
        keep_releases: r.keep_releases.unwrap_or(0),
    };
    if retention.keeps_nothing() {
        sink.err_key(
            "/spec/retention",
            "retention keeps nothing: every rule is 0 or missing".to_owned(),
            "keep at least one backup, e.g. `keepLast: 3` (without a `retention` block the default is `keepLast: 7`)"
                .to_owned(),
        );
        return None;
    }
    Some(retention)
}
