//! Engine: the deploy gate of a PITR policy (`source.pitr`). No snapshot is
//! taken: `deploy start` creates a named restore point on the policy's
//! server (`executor::pitr_point`: `pg_create_restore_point`, then
//! `pg_switch_wal` so the segment holding it is complete), and answers once
//! that segment — and every segment from a verified base backup finished
//! before the point up to it — is archived complete in the policy's
//! storage. The gate's time is therefore one flush interval of the WAL
//! archiver, whatever the size of the database. The point is recorded on
//! the release's start row; `restore --before-deploy` recovers to it
//! (`recovery_target_name`), or to the start row's time when the release
//! recorded no point.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use super::{DeployError, Step};
use crate::catalog::{BackupRow, DeployRecord};
use crate::engine::context::{Context, blocking};
use crate::engine::restore::open_storage;
use crate::executor::pitr_base::{BaseBackup, format_lsn, parse_lsn};
use crate::executor::pitr_point::{self, RestorePoint};
use crate::model::{AuditKind, DeployRestorePoint, Health};
use crate::observed::BackupRequest;
use crate::policy::{BackupPolicy, DesiredState, Source, StorageSpec};
use crate::storage::wal;

/// How often the archive is listed while the gate waits.
const POLL: Duration = Duration::from_millis(200);
/// Waited beyond two flush intervals (an upload, a restarting receiver).
const GRACE: Duration = Duration::from_secs(60);
/// PostgreSQL's limit for a restore point name (bytes).
const NAME_MAX: usize = 63;

/// A PITR policy whose gate is a restore point.
pub(super) struct Gate {
    policy: BackupPolicy,
    storage: Option<StorageSpec>,
}

/// Takes the requests of PITR policies out of `requests`: their gate is a
/// restore point, not a snapshot.
pub(super) fn take(desired: &DesiredState, requests: &mut Vec<BackupRequest>) -> Vec<Gate> {
    let mut gates = Vec::new();
    requests.retain(|r| match desired.policies.get(&r.policy) {
        Some(p) if p.source.pitr().is_some() => {
            gates.push(Gate {
                policy: p.clone(),
                storage: desired.storages.get(&p.storage).cloned(),
            });
            false
        }
        _ => true,
    });
    gates
}

/// The restore point of every gate, recorded and audited; one step each.
pub(super) async fn run(
    ctx: &Context,
    release: &str,
    gates: Vec<Gate>,
) -> Result<Vec<Step>, DeployError> {
    let runs = gates.iter().map(|g| gate(ctx, release, g));
    futures_util::future::join_all(runs)
        .await
        .into_iter()
        .collect()
}

/// `safepoint-<release>-<policy>-<UTC time to the millisecond>`, unique per
/// attempt (a retried gate of a release creates a new point; recovery stops
/// at the first point of a name); shortened with a hash of release and
/// policy when longer than PostgreSQL allows.
pub fn point_name(release: &str, policy: &str, now: DateTime<Utc>) -> String {
    let stamp = now.format("%Y%m%dT%H%M%S%.3fZ");
    let name = format!("safepoint-{release}-{policy}-{stamp}");
    if name.len() <= NAME_MAX {
        return name;
    }
    let hash = blake3::hash(format!("{release}\0{policy}").as_bytes()).to_hex();
    format!("safepoint-{}-{stamp}", &hash[..16])
}

async fn gate(ctx: &Context, release: &str, gate: &Gate) -> Result<Step, DeployError> {
    let policy = gate.policy.name.clone();
    let started = Instant::now();
    let now = Utc::now();
    let name = point_name(release, &policy, now);
    let (point, archived) = match create(gate, &name).await {
        Ok(point) => {
            let archived = wait_archived(ctx, gate, &point).await;
            (Some(point), archived)
        }
        Err(e) => (None, Err(e)),
    };
    let detail = match (&point, &archived) {
        (Some(p), Ok(base)) => format!(
            "restore point `{}` at {} in {:.1}s; WAL archived from base backup {base} through segment {}",
            p.name,
            format_lsn(p.lsn),
            started.elapsed().as_secs_f64(),
            p.segment
        ),
        (_, Err(e)) => e.clone(),
        (None, Ok(_)) => unreachable!("archived implies a point"),
    };
    let ok = archived.is_ok();
    let recorded = point.as_ref().map(|p| DeployRestorePoint {
        name: p.name.clone(),
        lsn: format_lsn(p.lsn),
    });
    let record = DeployRecord {
        release: release.to_string(),
        policy: policy.clone(),
        phase: "start".into(),
        status: if ok { "ok" } else { "failed" }.into(),
        backup_id: None,
        caller: ctx.actor.clone(),
        detail: detail.clone(),
        at: now,
    };
    ctx.catalog
        .record_deploy_at_point(&record, recorded.as_ref())
        .await?;
    let msg = format!(
        "deploy start {release}: {}{detail}",
        if ok { "" } else { "restore point FAILED: " }
    );
    ctx.catalog
        .audit(now, AuditKind::DeployStart, Some(&policy), &ctx.actor, &msg)
        .await?;
    Ok(Step {
        restore_command: ok.then(|| restore_command(&policy, release)),
        policy,
        action: "restore point".into(),
        ok,
        backup_id: None,
        detail,
    })
}

/// How to get back to the restore point of `release`.
pub fn restore_command(policy: &str, release: &str) -> String {
    format!("safepoint restore --policy {policy} --before-deploy {release} --to-dir <DIR> --start")
}

async fn create(gate: &Gate, name: &str) -> Result<RestorePoint, String> {
    let Source::Postgres {
        url, password_from, ..
    } = &gate.policy.source
    else {
        return Err(format!(
            "policy {} is not a postgres source",
            gate.policy.name
        ));
    };
    pitr_point::create(url, password_from.as_ref(), name)
        .await
        .map_err(|e| {
            let text = e.to_string();
            let hint = if text.contains("permission denied") {
                "; grant the source's role `EXECUTE` on pg_create_restore_point(text) and pg_switch_wal() (docs/pitr.md)"
            } else {
                ""
            };
            format!("cannot create the restore point: {text}{hint}")
        })
}

/// Waits until the segment holding `point` is archived complete, and every
/// segment from the newest verified base backup finished before it; returns
/// that backup's id.
async fn wait_archived(ctx: &Context, gate: &Gate, point: &RestorePoint) -> Result<String, String> {
    let policy = &gate.policy.name;
    let spec = gate.storage.as_ref().ok_or_else(|| {
        format!(
            "storage {} of policy {policy} is not declared",
            gate.policy.storage
        )
    })?;
    let rows = ctx.catalog.backups().await.map_err(|e| e.to_string())?;
    let bases = bases_before(&rows, policy, point.lsn);
    if bases.is_empty() {
        return Err(format!(
            "restore point `{}` created, but no verified base backup of {policy} was finished before it, so nothing can recover to it: take one with `safepoint backup {policy}` and start the deploy again",
            point.name
        ));
    }
    let size = point.segment_size;
    let (tli, last) = wal::segment_number(&point.segment, size).ok_or_else(|| {
        format!(
            "the server named an unknown WAL segment `{}`",
            point.segment
        )
    })?;
    let interval = gate
        .policy
        .source
        .pitr()
        .and_then(|p| p.wal_flush_interval.to_std().ok())
        .unwrap_or(Duration::from_secs(10));
    let deadline = Instant::now() + interval * 2 + GRACE;
    let st = open_storage(ctx, spec);
    loop {
        let (st, name) = (st.clone(), policy.clone());
        let objects = blocking(move || wal::list(&*st, &name))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        let complete = wal::complete_segments(&objects, size);
        if complete.contains(&last) {
            return covered(&bases, &complete, (tli, last, size), &point.name);
        }
        if Instant::now() > deadline {
            return Err(format!(
                "restore point `{}` created, but WAL segment {} holding it was not archived within {}s: is `safepoint daemon` running and streaming the WAL of {policy} (see its log and `safepoint status`)?",
                point.name,
                point.segment,
                (interval * 2 + GRACE).as_secs()
            ));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The verified base backups of `policy` finished before `lsn`, newest first.
fn bases_before(rows: &[BackupRow], policy: &str, lsn: u64) -> Vec<(String, BaseBackup)> {
    let mut bases: Vec<(String, BaseBackup)> = rows
        .iter()
        .filter(|r| r.record.policy == policy && r.record.health == Health::Verified)
        .filter_map(|r| {
            Some((
                r.record.id.clone(),
                BaseBackup::from_tools(&r.manifest.tools)?,
            ))
        })
        .filter(|(_, b)| b.stop_lsn <= lsn)
        .collect();
    bases.sort_by_key(|b| std::cmp::Reverse(b.1.stop_lsn));
    bases
}

/// The newest base backup whose WAL up to segment `last` is all archived.
fn covered(
    bases: &[(String, BaseBackup)],
    complete: &std::collections::BTreeSet<u64>,
    (tli, last, size): (u32, u64, u64),
    point: &str,
) -> Result<String, String> {
    let mut gap = None;
    for (id, b) in bases {
        let first = b.start_lsn / size;
        match wal::first_missing(complete, first, last) {
            None => return Ok(id.clone()),
            Some(n) => gap = gap.or(Some((id, n))),
        }
    }
    let (id, n) = gap.expect("bases is not empty");
    Err(format!(
        "restore point `{point}` created, but the WAL archive has a gap: segment {} (needed from base backup {id} on) is not archived, so recovery would stop before the point; take a new base backup with `safepoint backup` and start the deploy again",
        wal::segment_name(tli, n, size)
    ))
}

/// What `restore --before-deploy` recovers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BeforeDeploy {
    /// The restore point the gate created (`recovery_target_name`).
    Point { name: String, lsn: u64 },
    /// No point recorded: the time `deploy start` was recorded.
    Time(DateTime<Utc>),
}

/// The target of `restore --before-deploy release` for `policy`.
pub async fn before_deploy(
    ctx: &Context,
    release: &str,
    policy: &str,
) -> Result<BeforeDeploy, DeployError> {
    let starts = ctx.catalog.deploy_starts(release, policy).await?;
    choose(&starts).ok_or_else(|| {
        DeployError::NotFound(format!(
            "release {release} has no recorded `deploy start` for policy {policy}: restore to a time with --to-time instead"
        ))
    })
}

/// The first point the release's start rows recorded (the state before
/// anything of the release ran; the WAL holds it even when that gate timed
/// out), else the time of the first start row.
pub fn choose(starts: &[(DeployRecord, Option<DeployRestorePoint>)]) -> Option<BeforeDeploy> {
    let point = starts.iter().find_map(|(_, p)| {
        let p = p.as_ref()?;
        Some(BeforeDeploy::Point {
            name: p.name.clone(),
            lsn: parse_lsn(&p.lsn)?,
        })
    });
    point.or_else(|| starts.first().map(|(d, _)| BeforeDeploy::Time(d.at)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start(at: &str, point: Option<(&str, &str)>) -> (DeployRecord, Option<DeployRestorePoint>) {
        let record = DeployRecord {
            release: "v1".into(),
            policy: "p".into(),
            phase: "start".into(),
            status: "ok".into(),
            backup_id: None,
            caller: "me".into(),
            detail: String::new(),
            at: at.parse().unwrap(),
        };
        let point = point.map(|(name, lsn)| DeployRestorePoint {
            name: name.into(),
            lsn: lsn.into(),
        });
        (record, point)
    }

    #[test]
    fn the_first_recorded_point_wins_else_the_first_start_time() {
        let t1 = "2026-11-29T10:00:00Z";
        let t2 = "2026-11-29T11:00:00Z";
        assert_eq!(choose(&[]), None);
        assert_eq!(
            choose(&[start(t1, None), start(t2, None)]),
            Some(BeforeDeploy::Time(t1.parse().unwrap()))
        );
        assert_eq!(
            choose(&[
                start(t1, None),
                start(t2, Some(("a", "0/3000060"))),
                start(t2, Some(("b", "0/4000060")))
            ]),
            Some(BeforeDeploy::Point {
                name: "a".into(),
                lsn: 0x300_0060
            })
        );
    }

    #[test]
    fn point_names_fit_postgres_and_stay_unique_per_attempt() {
        let now: DateTime<Utc> = "2026-11-29T10:42:00.123Z".parse().unwrap();
        assert_eq!(
            point_name("v1.4", "orders-db", now),
            "safepoint-v1.4-orders-db-20261129T104200.123Z"
        );
        let long = point_name(&"v".repeat(80), "orders-db", now);
        assert!(long.len() <= NAME_MAX, "{long}");
        assert!(long.ends_with("-20261129T104200.123Z"));
        assert_ne!(long, point_name(&"w".repeat(80), "orders-db", now));
    }
}
