//! Engine: the runtime context every use case runs over (settings, catalog,
//! shutdown signal, actor), the policy revision in force, and the errors of
//! the reconcile path.

use std::sync::Arc;

use tokio::sync::watch;

use crate::catalog::{Catalog, CatalogError, RevisionRecord};
use crate::git::{self, GitError, Revision};
use crate::lease::Leases;
use crate::policy::{self, DesiredState};
use crate::settings::Settings;
use crate::storage::{self, Storage};

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Git(#[from] GitError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("no valid policy revision has been applied yet: {0}")]
    NoValidRevision(String),
    #[error("internal task failed: {0}")]
    Join(String),
}

impl ReconcileError {
    /// Bounded label for metrics (`safepoint_reconcile_errors_total{kind}`).
    pub fn kind(&self) -> &'static str {
        match self {
            ReconcileError::Git(_) => "git",
            ReconcileError::Catalog(_) => "catalog",
            ReconcileError::NoValidRevision(_) => "no-valid-revision",
            ReconcileError::Join(_) => "internal",
        }
    }
}

/// Handles shared by every reconcile step.
#[derive(Clone)]
pub struct Context {
    pub settings: Arc<Settings>,
    pub catalog: Catalog,
    /// Set to `true` to cancel running backups at once (after the grace period).
    pub hard_stop: watch::Receiver<bool>,
    /// Who acts, for the audit log: `daemon`, or `user@host` for CLI commands.
    pub actor: String,
    /// Which policies this process may act on (all of them on one node).
    pub leases: Leases,
}

/// The policy revision in force and the last one tried.
#[derive(Debug, Clone, Default)]
pub struct RepoState {
    pub applied: Option<Applied>,
    pub attempted: Option<RevisionRecord>,
}

#[derive(Debug, Clone)]
pub struct Applied {
    pub revision: Revision,
    pub desired: DesiredState,
}

pub async fn blocking<T: Send + 'static, E: Send + 'static>(
    f: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<Result<T, E>, ReconcileError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ReconcileError::Join(e.to_string()))
}

/// The storage `name` of `desired`, opened relative to the data directory;
/// `None` when the revision does not declare it.
pub fn storage_for(ctx: &Context, desired: &DesiredState, name: &str) -> Option<Arc<dyn Storage>> {
    desired
        .storages
        .get(name)
        .map(|spec| Arc::from(storage::open(spec, &ctx.settings.base_dir)))
}

impl RepoState {
    /// Restores the last applied revision recorded in the catalog, so that a
    /// bad head commit after a restart does not leave the daemon without policies.
    pub async fn load(ctx: &Context) -> Result<RepoState, ReconcileError> {
        let mut state = RepoState {
            applied: None,
            attempted: ctx.catalog.last_attempted().await?,
        };
        if let Some(rev) = ctx.catalog.last_applied().await? {
            let cfg = ctx.settings.repo.clone();
            let commit = rev.commit.clone();
            if let Ok(Ok((revision, files))) = blocking(move || git::read(&cfg, &commit)).await
                && let Ok(desired) = policy::load_permitted(&files, &ctx.settings.permissions)
            {
                state.applied = Some(Applied { revision, desired });
            }
        }
        // A commit rejected before may pass the operator's permissions as
        // they are now (e.g. `command` granted since): let refresh retry it.
        if let Some(att) = state.attempted.as_ref().filter(|a| !a.valid) {
            let (cfg, commit) = (ctx.settings.repo.clone(), att.commit.clone());
            if let Ok(Ok((_, files))) = blocking(move || git::read(&cfg, &commit)).await
                && policy::load_permitted(&files, &ctx.settings.permissions).is_ok()
            {
                state.attempted = None;
            }
        }
        Ok(state)
    }

    pub fn desired(&self) -> Result<&DesiredState, ReconcileError> {
        match (&self.applied, &self.attempted) {
            (Some(a), _) => Ok(&a.desired),
            (None, Some(att)) => Err(ReconcileError::NoValidRevision(format!(
                "commit {} was rejected:\n  {}",
                att.commit,
                att.diagnostics.join("\n  ")
            ))),
            (None, None) => Err(ReconcileError::NoValidRevision(
                "the policy repository has not been read".into(),
            )),
        }
    }
}
