//! Engine: how a backup found in storage enters the catalog (the catalog is a
//! cache of storage). Used by observation (an untracked manifest, audited one
//! by one) and by `catalog rebuild` (audited once, as a summary).

use chrono::{DateTime, Utc};

use crate::catalog::CatalogError;
use crate::engine::context::Context;
use crate::model::{AuditKind, Health};
use crate::storage::Manifest;

/// How an import is recorded in the audit log.
pub enum Record<'a> {
    /// One `untracked-artifact` entry naming the storage it was found in.
    Untracked {
        storage: &'a str,
        now: DateTime<Utc>,
    },
    /// Nothing per backup: the caller records a summary (`catalog-rebuilt`).
    InSummary,
}

/// Imports `manifest` as verified, never checked yet: the next observation
/// verifies its checksum.
pub async fn import_manifest(
    ctx: &Context,
    manifest: &Manifest,
    record: Record<'_>,
) -> Result<(), CatalogError> {
    ctx.catalog
        .upsert_backup(manifest, Health::Verified, None)
        .await?;
    if let Record::Untracked { storage, now } = record {
        let msg = format!(
            "imported untracked backup {}/{} found in storage {storage}",
            manifest.policy, manifest.id
        );
        ctx.catalog
            .audit(
                now,
                AuditKind::UntrackedArtifact,
                Some(&manifest.policy),
                &ctx.actor,
                &msg,
            )
            .await?;
        tracing::warn!("{msg}");
    }
    Ok(())
}
