//! IO wiring: pins. A pin is recorded twice: in the catalog (what the planner
//! reads) and as the marker `pin.json` next to the backup's manifest in
//! storage (what survives the loss of the catalog). `pin`/`unpin` write and
//! remove both; `reconcile_listing` brings the two sides together whenever a
//! storage is listed (every observation, `catalog rebuild`).
//!
//! Which side wins. A pin is removed only by `unpin`, which removes the marker
//! first and the catalog's pin after it; `pin` writes the catalog first (the
//! planner sees it at once) and the marker after it. So any disagreement
//! resolves to "pinned", reported as an audit event and a log line:
//! - marker present, catalog not pinned (the catalog was lost and rebuilt, or
//!   a backup was imported): the catalog is pinned from the marker
//!   (`pin-restored`);
//! - catalog pinned, marker absent or different (a marker write failed, the
//!   storage lost it, or it was re-pinned with another reason): the marker is
//!   rewritten from the catalog, the newest write (`pin-marker-rewritten`);
//! - marker unreadable and catalog not pinned: the pin state is unknown; the
//!   backup is handed to the planner with `pin_unknown` and is never pruned
//!   while that lasts (reported every observation). With the catalog pinned,
//!   the marker is rewritten from it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::catalog::{BackupRow, CatalogError};
use crate::engine::context::{Context, storage_for};
use crate::model::AuditKind;
use crate::policy::DesiredState;
use crate::storage::{PIN_FORMAT, PinMarker, Storage, StorageError, UnreadablePin};

#[derive(Debug, thiserror::Error)]
pub enum PinError {
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("no backup {0}; run `safepoint list` to see the backups")]
    UnknownBackup(String),
    #[error("{0}")]
    Storage(String),
}

impl PinError {
    pub fn kind(&self) -> &'static str {
        match self {
            PinError::Catalog(_) => "catalog",
            PinError::UnknownBackup(_) => "unknown-backup",
            PinError::Storage(_) => "storage",
        }
    }
}

/// The result of `pin`.
#[derive(Debug, Clone, Serialize)]
pub struct Pinned {
    pub marker: PinMarker,
    /// Why the marker could not be written to storage; the catalog holds the
    /// pin and the next observation writes the marker.
    pub marker_error: Option<String>,
    /// What was recorded in the audit log.
    pub message: String,
}

async fn on_storage<T: Send + 'static>(
    st: Arc<dyn Storage>,
    f: impl FnOnce(&dyn Storage) -> Result<T, StorageError> + Send + 'static,
) -> Result<T, String> {
    match tokio::task::spawn_blocking(move || f(&*st)).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(e) => Err(format!("internal task failed: {e}")),
    }
}

async fn write_marker(
    ctx: &Context,
    desired: &DesiredState,
    storage: &str,
    marker: &PinMarker,
) -> Result<(), String> {
    let Some(st) = storage_for(ctx, desired, storage) else {
        return Err(format!(
            "storage {storage} is not declared in the applied revision"
        ));
    };
    let m = marker.clone();
    on_storage(st, move |st| st.write_pin(&m)).await
}

/// Pins backup `id`: the catalog first, then the marker in storage.
pub async fn pin(
    ctx: &Context,
    desired: &DesiredState,
    id: &str,
    reason: &str,
    release: Option<&str>,
) -> Result<Pinned, PinError> {
    let row = ctx
        .catalog
        .backup(id)
        .await?
        .ok_or_else(|| PinError::UnknownBackup(id.to_string()))?;
    let now = Utc::now();
    let marker = PinMarker {
        format: PIN_FORMAT,
        policy: row.record.policy.clone(),
        id: id.to_string(),
        reason: reason.to_string(),
        pinned_by: ctx.actor.clone(),
        pinned_at: now,
        release: release.map(str::to_string),
    };
    if !ctx.catalog.set_pin(id, Some(&marker)).await? {
        return Err(PinError::UnknownBackup(id.to_string()));
    }
    let written = write_marker(ctx, desired, &row.record.storage, &marker).await;
    let mut message = format!(
        "pinned backup {}/{id} ({reason}); `safepoint unpin {id}` releases it",
        marker.policy
    );
    if let Err(e) = &written {
        message.push_str(&format!(
            "; the pin marker could not be written to storage {} ({e}): the pin holds in the catalog and the next observation writes the marker",
            row.record.storage
        ));
        tracing::error!(backup = id, "{message}");
    } else {
        tracing::info!(backup = id, "{message}");
    }
    ctx.catalog
        .audit(
            now,
            AuditKind::Pin,
            Some(&marker.policy),
            &ctx.actor,
            &message,
        )
        .await?;
    Ok(Pinned {
        marker,
        marker_error: written.err(),
        message,
    })
}

/// Releases backup `id`: the marker in storage first, then the catalog. When
/// the marker cannot be removed nothing changes (it would pin the backup
/// again at the next observation). Returns the audit message.
pub async fn unpin(ctx: &Context, desired: &DesiredState, id: &str) -> Result<String, PinError> {
    let row = ctx
        .catalog
        .backup(id)
        .await?
        .ok_or_else(|| PinError::UnknownBackup(id.to_string()))?;
    let (policy, storage) = (row.record.policy.clone(), row.record.storage.clone());
    let Some(st) = storage_for(ctx, desired, &storage) else {
        return Err(PinError::Storage(format!(
            "cannot unpin {policy}/{id}: its storage {storage} is not declared in the applied revision, so its pin marker cannot be removed; declare the storage again, then unpin"
        )));
    };
    let (p, i) = (policy.clone(), id.to_string());
    on_storage(st, move |st| st.remove_pin(&p, &i))
        .await
        .map_err(|e| {
            PinError::Storage(format!(
                "cannot unpin {policy}/{id}: {e}; it stays pinned, retry once the storage is reachable"
            ))
        })?;
    if !ctx.catalog.set_pin(id, None).await? {
        return Err(PinError::UnknownBackup(id.to_string()));
    }
    let message = format!("unpinned backup {policy}/{id}; retention applies to it again");
    tracing::info!(backup = id, "{message}");
    ctx.catalog
        .audit(
            Utc::now(),
            AuditKind::Unpin,
            Some(&policy),
            &ctx.actor,
            &message,
        )
        .await?;
    Ok(message)
}

/// What reconciling one storage's pins did.
#[derive(Debug, Default, Serialize)]
pub struct PinReport {
    /// Backup ids pinned in the catalog from their marker.
    pub restored: Vec<String>,
    /// Backup ids whose marker was rewritten from the catalog.
    pub rewritten: Vec<String>,
    /// Backup id -> why its pin state is unknown (marker unreadable).
    pub unknown: BTreeMap<String, String>,
    pub problems: Vec<String>,
}

/// The pin markers found in one listing of storage `st`.
pub struct ListedPins<'a> {
    pub markers: Vec<PinMarker>,
    pub unreadable: Vec<UnreadablePin>,
    /// Ids of the complete backups (manifest read) in the listing.
    pub listed: &'a BTreeSet<String>,
}

/// Reconciles the catalog's pins with the markers of one complete listing of
/// a storage (see the module documentation for which side wins). `known` is
/// the catalog as read before the listing; backups imported since have no
/// pin in the catalog.
pub async fn reconcile_listing(
    ctx: &Context,
    st: &Arc<dyn Storage>,
    found: ListedPins<'_>,
    known: &BTreeMap<String, BackupRow>,
    now: DateTime<Utc>,
) -> Result<PinReport, CatalogError> {
    let mut report = PinReport::default();
    restore_from_markers(ctx, st.name(), &found, known, now, &mut report).await?;
    rewrite_markers(ctx, st, &found, known, now, &mut report).await?;
    unknown_pin_states(st.name(), &found, known, &mut report);
    Ok(report)
}

/// Marker present, catalog not pinned: the catalog is pinned from the marker.
async fn restore_from_markers(
    ctx: &Context,
    name: &str,
    found: &ListedPins<'_>,
    known: &BTreeMap<String, BackupRow>,
    now: DateTime<Utc>,
    report: &mut PinReport,
) -> Result<(), CatalogError> {
    let unpinned = |id: &str| known.get(id).and_then(|r| r.pin.as_ref()).is_none();
    for m in found
        .markers
        .iter()
        .filter(|m| found.listed.contains(&m.id) && unpinned(&m.id))
    {
        ctx.catalog.set_pin(&m.id, Some(m)).await?;
        let msg = format!(
            "backup {}/{} is pinned in storage {name} ({}, by {} at {}) but not in the catalog: pin restored",
            m.policy,
            m.id,
            m.reason,
            m.pinned_by,
            m.pinned_at.to_rfc3339()
        );
        ctx.catalog
            .audit(
                now,
                AuditKind::PinRestored,
                Some(&m.policy),
                &ctx.actor,
                &msg,
            )
            .await?;
        tracing::warn!("{msg}");
        report.restored.push(m.id.clone());
    }
    Ok(())
}

/// Catalog pinned, marker absent, unreadable or different: the marker is
/// rewritten from the catalog (a failed write is reported; the next
/// observation tries again).
async fn rewrite_markers(
    ctx: &Context,
    st: &Arc<dyn Storage>,
    found: &ListedPins<'_>,
    known: &BTreeMap<String, BackupRow>,
    now: DateTime<Utc>,
    report: &mut PinReport,
) -> Result<(), CatalogError> {
    let name = st.name().to_string();
    let markers: BTreeMap<&str, &PinMarker> =
        found.markers.iter().map(|m| (m.id.as_str(), m)).collect();
    let unreadable: BTreeSet<&str> = found.unreadable.iter().map(|u| u.id.as_str()).collect();
    let pinned_here = known
        .values()
        .filter(|r| r.record.storage == name && found.listed.contains(&r.record.id));
    for (row, pin) in pinned_here.filter_map(|r| r.pin.as_ref().map(|p| (r, p))) {
        let id = row.record.id.as_str();
        let state = match markers.get(id) {
            Some(m)
                if m.reason == pin.reason
                    && m.release == pin.release
                    && m.pinned_by == pin.pinned_by =>
            {
                continue;
            }
            Some(_) => "records another pin",
            None if unreadable.contains(id) => "is unreadable",
            None => "is missing",
        };
        let marker = pin.clone();
        match on_storage(st.clone(), move |st| st.write_pin(&marker)).await {
            Ok(()) => {
                let msg = format!(
                    "backup {}/{id} is pinned in the catalog ({}) but its pin marker in storage {name} {state}: marker rewritten",
                    pin.policy, pin.reason
                );
                ctx.catalog
                    .audit(
                        now,
                        AuditKind::PinMarkerRewritten,
                        Some(&pin.policy),
                        &ctx.actor,
                        &msg,
                    )
                    .await?;
                tracing::warn!("{msg}");
                report.rewritten.push(id.to_string());
            }
            Err(e) => {
                let msg = format!(
                    "backup {}/{id} is pinned in the catalog but its pin marker {state} and cannot be rewritten: {e}",
                    pin.policy
                );
                tracing::error!("{msg}");
                report.problems.push(msg);
            }
        }
    }
    Ok(())
}

/// Marker unreadable, catalog not pinned: the pin state is unknown (the
/// backup is never pruned while that lasts).
fn unknown_pin_states(
    name: &str,
    found: &ListedPins<'_>,
    known: &BTreeMap<String, BackupRow>,
    report: &mut PinReport,
) {
    for u in &found.unreadable {
        let pinned = known.get(&u.id).and_then(|r| r.pin.as_ref()).is_some();
        if pinned || !found.listed.contains(&u.id) {
            continue;
        }
        let problem = u.error.to_string();
        tracing::error!(backup = %u.id, policy = %u.policy, "{problem}");
        report.problems.push(problem);
        report.unknown.insert(
            u.id.clone(),
            format!("its pin marker in storage {name} is unreadable"),
        );
    }
}
