//! IO wiring: previews of a proposed policy revision (`safepoint preview`,
//! `POST /api/v1/previews`) and the deletion guard the daemon applies before
//! a new revision (`engine::refresh`). The observed state comes from the
//! catalog only — no storage is listed, nothing is written — and the
//! decisions from the pure `plan::preview`.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::catalog::{Catalog, CatalogError};
use crate::observed::{BackupRecord, ObservedState};
use crate::plan::PlanOptions;
use crate::plan::preview::{self, Preview};
use crate::policy::{self, DesiredState, PolicyFile};

/// What `safepoint preview` prints with `--output json` and the API answers.
#[derive(Debug, Clone, Serialize)]
pub struct PreviewReport {
    /// Commit of the revision in force the proposal is compared with
    /// (`None`: no revision applied yet, compared with an empty one).
    pub base: Option<String>,
    /// The ref asked for and the commit it resolved to.
    #[serde(rename = "ref")]
    pub git_ref: Option<String>,
    pub commit: Option<String>,
    /// False when the proposed revision does not validate.
    pub valid: bool,
    pub diagnostics: Vec<String>,
    /// True when the preview refuses the change (invalid, or a destructive
    /// consequence not acknowledged): exit code 1.
    pub refused: bool,
    pub refusals: Vec<String>,
    pub preview: Option<Preview>,
    /// The same, as Markdown for a pull-request comment.
    pub markdown: String,
}

/// The commit (or ref) shown in titles: 12 characters of a commit id.
fn short(s: &str) -> &str {
    if s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        &s[..12]
    } else {
        s
    }
}

/// The proposal's location, for a title.
pub struct Proposal {
    pub git_ref: Option<String>,
    pub commit: Option<String>,
    pub files: Vec<PolicyFile>,
}

/// Validates the proposal and previews it against `current` (commit
/// `base`). CPU-bound and pure apart from nothing: call it from
/// `spawn_blocking` on a large repository.
pub fn report(
    base: Option<&str>,
    current: &DesiredState,
    proposal: Proposal,
    observed: &ObservedState,
    now: DateTime<Utc>,
    options: &PlanOptions,
    permissions: &crate::policy::Permissions,
) -> PreviewReport {
    let shown = proposal
        .git_ref
        .as_deref()
        .or(proposal.commit.as_deref())
        .map_or("the proposed revision".to_string(), |r| {
            format!("`{}`", short(r))
        });
    let from = base.map_or("no revision".to_string(), |b| format!("`{}`", short(b)));
    let title = format!("{shown} against {from} in force");
    let mut out = PreviewReport {
        base: base.map(str::to_string),
        git_ref: proposal.git_ref,
        commit: proposal.commit,
        valid: true,
        diagnostics: Vec::new(),
        refused: false,
        refusals: Vec::new(),
        preview: None,
        markdown: String::new(),
    };
    match policy::load_permitted(&proposal.files, permissions) {
        Err(diags) => {
            out.valid = false;
            out.refused = true;
            out.diagnostics = diags.iter().map(ToString::to_string).collect();
            out.refusals = vec![format!(
                "the proposed revision is invalid ({} problem(s))",
                diags.len()
            )];
            let mut md = format!(
                "### safepoint preview: {title}\n\n**Invalid revision**: the daemon would reject it and keep the revision in force.\n\n"
            );
            for d in &out.diagnostics {
                md.push_str(&format!("- `{}`\n", d.replace('`', "'")));
            }
            out.markdown = md;
        }
        Ok(proposed) => {
            let p = preview::preview(current, &proposed, observed, now, options);
            out.refused = p.refused();
            out.refusals = p.refusals();
            out.markdown = p.markdown(&title);
            out.preview = Some(p.compact());
        }
    }
    out
}

/// The observed state as the catalog records it (the daemon's last
/// observation): backups, running policies, failures, drill history.
pub async fn observed(catalog: &Catalog) -> Result<ObservedState, CatalogError> {
    let mut backups: BTreeMap<String, Vec<BackupRecord>> = BTreeMap::new();
    for row in catalog.backups().await? {
        backups
            .entry(row.record.policy.clone())
            .or_default()
            .push(row.record);
    }
    let running: BTreeSet<String> = catalog
        .running_runs()
        .await?
        .into_iter()
        .map(|r| r.policy)
        .collect();
    Ok(ObservedState {
        backups,
        running,
        failures: catalog.failures().await?,
        drills: catalog.drill_history().await?,
        pitr: catalog.pitr_archives().await?,
        ..ObservedState::default()
    }
    .indexed())
}

/// The deletion guard before a revision is applied: `proposed` when every
/// destructive consequence against `current` is acknowledged, else the
/// refusals (recorded like validation problems: the revision is rejected,
/// status says Stalled, the revision in force stays).
pub async fn guard(
    catalog: &Catalog,
    current: Option<&DesiredState>,
    proposed: DesiredState,
    now: DateTime<Utc>,
    options: &PlanOptions,
) -> Result<Result<DesiredState, Vec<String>>, CatalogError> {
    let Some(current) = current else {
        // The first revision: nothing of it is in force to be destroyed.
        return Ok(Ok(proposed));
    };
    let observed = observed(catalog).await?;
    let p = preview::preview(current, &proposed, &observed, now, options);
    if p.refused() {
        Ok(Err(p
            .refusals()
            .into_iter()
            .map(|r| format!("deletion guard: {r}"))
            .collect()))
    } else {
        Ok(Ok(proposed))
    }
}
