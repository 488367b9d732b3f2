//! `safepoint catalog rebuild`: re-creates the catalog's backups from the
//! manifests in every declared storage. The catalog is a cache of storage,
//! so after it is lost this brings back everything retention,
//! RPO and release tracking need; nothing is taken or deleted. Imported
//! backups are re-verified (checksum) by the next cycle. Pins are restored
//! from their markers (`pin.json`) and reconciled as every observation does
//! (`crate::pins`); a marker that cannot be read is a problem (exit 1) and
//! its backup is never pruned until it is fixed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::Utc;
use serde::Serialize;

use crate::cli::Output;
use crate::cli::table::render;
use crate::engine::context::{Context, RepoState};
use crate::engine::import;
use crate::engine::refresh;
use crate::storage::{self, Storage};

#[derive(Debug, Default, Serialize)]
struct StorageReport {
    storage: String,
    location: String,
    found: usize,
    imported: usize,
    already_known: usize,
    /// Backup directories without a manifest (the daemon removes them).
    leftovers: usize,
    /// Pins restored from their marker in storage.
    pins_restored: usize,
    /// Pin markers rewritten from the catalog.
    pin_markers_rewritten: usize,
    problems: Vec<String>,
}

pub(super) async fn run(ctx: &Context, output: Output) -> anyhow::Result<u8> {
    let mut state = RepoState::load(ctx).await?;
    refresh::refresh(ctx, &mut state).await?;
    let desired = state.desired()?;
    let known: BTreeMap<String, crate::catalog::BackupRow> = ctx
        .catalog
        .backups()
        .await?
        .into_iter()
        .map(|b| (b.record.id.clone(), b))
        .collect();
    let mut reports = Vec::new();
    for spec in desired.storages.values() {
        reports.push(storage_report(ctx, spec, &known).await?);
    }
    let imported: usize = reports.iter().map(|r| r.imported).sum();
    let pins: usize = reports.iter().map(|r| r.pins_restored).sum();
    let problems: usize = reports.iter().map(|r| r.problems.len()).sum();
    let msg = format!(
        "catalog rebuilt from {} storage(s): {imported} backup(s) imported, {pins} pin(s) restored, {problems} problem(s)",
        reports.len(),
    );
    ctx.catalog
        .audit(
            Utc::now(),
            crate::model::AuditKind::CatalogRebuilt,
            None,
            &ctx.actor,
            &msg,
        )
        .await?;
    tracing::info!(imported, pins, problems, "catalog rebuilt");
    print(&reports, output)?;
    Ok(if problems == 0 { 0 } else { 1 })
}

/// Imports the manifests of one storage the catalog does not know and
/// reconciles its pins; what was found.
async fn storage_report(
    ctx: &Context,
    spec: &crate::policy::StorageSpec,
    known: &BTreeMap<String, crate::catalog::BackupRow>,
) -> anyhow::Result<StorageReport> {
    let st: Arc<dyn Storage> = Arc::from(storage::open(spec, &ctx.settings.base_dir));
    let mut report = StorageReport {
        storage: spec.name.clone(),
        location: st.describe(),
        ..StorageReport::default()
    };
    let st2 = st.clone();
    let listing = match tokio::task::spawn_blocking(move || st2.list()).await? {
        Err(e) => {
            report.problems.push(e.to_string());
            return Ok(report);
        }
        Ok(listing) => listing,
    };
    report.found = listing.manifests.len();
    report.leftovers = listing.leftovers.len();
    report
        .problems
        .extend(listing.unreadable.iter().map(ToString::to_string));
    for manifest in &listing.manifests {
        if known.contains_key(&manifest.id) {
            report.already_known += 1;
        } else {
            import::import_manifest(ctx, manifest, import::Record::InSummary).await?;
            report.imported += 1;
        }
    }
    let listed: BTreeSet<String> = listing.manifests.iter().map(|m| m.id.clone()).collect();
    let found = crate::pins::ListedPins {
        markers: listing.pins,
        unreadable: listing.unreadable_pins,
        listed: &listed,
    };
    let pins = crate::pins::reconcile_listing(ctx, &st, found, known, Utc::now()).await?;
    report.pins_restored = pins.restored.len();
    report.pin_markers_rewritten = pins.rewritten.len();
    report.problems.extend(pins.problems);
    Ok(report)
}

fn print(reports: &[StorageReport], output: Output) -> anyhow::Result<()> {
    if output == Output::Json {
        outln!("{}", serde_json::to_string_pretty(&reports)?);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = reports
        .iter()
        .map(|r| {
            vec![
                r.storage.clone(),
                r.location.clone(),
                r.found.to_string(),
                r.imported.to_string(),
                r.already_known.to_string(),
                r.leftovers.to_string(),
                r.pins_restored.to_string(),
                r.problems.join("; "),
            ]
        })
        .collect();
    out!(
        "{}",
        render(
            &[
                "STORAGE",
                "LOCATION",
                "BACKUPS",
                "IMPORTED",
                "KNOWN",
                "LEFTOVERS",
                "PINS RESTORED",
                "PROBLEMS"
            ],
            &rows
        )
    );
    Ok(())
}
