//! `safepoint daemon`: the settings the daemon runs with (its own secret
//! files protected from every policy), then `crate::daemon::run` until
//! SIGTERM (or one cycle with `--once`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::cli::daemon_args::{ObservabilityArgs, ReplicaArgs};
use crate::cli::permissions;
use crate::engine::context::Context;

/// The daemon's flags and the global flags it reads again.
pub(super) struct Flags {
    pub fetch_interval: u64,
    pub concurrency: usize,
    pub request_concurrency: usize,
    pub shutdown_grace: u64,
    pub once: bool,
    pub replica: ReplicaArgs,
    pub observability: ObservabilityArgs,
    /// `--permissions`, `--path`, `--token-file`.
    pub permissions: Option<PathBuf>,
    pub path: String,
    pub token_file: Option<PathBuf>,
}

pub(super) async fn run(
    ctx: &Context,
    stop: watch::Sender<bool>,
    flags: Flags,
) -> anyhow::Result<u8> {
    let mut settings = (*ctx.settings).clone();
    let own = flags.observability.secret_files();
    settings.permissions = Arc::new(permissions::load(
        flags.permissions.as_deref(),
        &settings.base_dir,
        &flags.path,
        &[
            own,
            permissions::own_paths(
                &settings.data_dir,
                &settings.catalog_path,
                settings.age_identity_file.as_deref(),
                flags.token_file.as_deref(),
            ),
        ]
        .concat(),
    )?);
    settings.fetch_interval = Duration::from_secs(flags.fetch_interval.max(1));
    settings.concurrency = flags.concurrency.max(1);
    settings.shutdown_grace = Duration::from_secs(flags.shutdown_grace);
    let replica = flags
        .replica
        .config(ctx.catalog.backend(), &settings.data_dir)?;
    let leases = match &replica {
        Some(r) => crate::lease::Leases::replicated(&r.id, r.margin()),
        None => crate::lease::Leases::single_node(),
    };
    let ctx = Context {
        settings: Arc::new(settings),
        leases,
        ..ctx.clone()
    };
    let mut options = flags.observability.options(flags.once)?;
    options.plan = ctx.settings.plan.clone();
    options.permissions = ctx.settings.permissions.clone();
    options.replica = replica;
    crate::daemon::run(ctx, stop, flags.once, flags.request_concurrency, options).await?;
    Ok(0)
}
