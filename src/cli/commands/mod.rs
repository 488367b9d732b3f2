//! The commands, one file per verb: each parses its arguments, calls the
//! engine and prints. `run` validates (files only), hands `--server` to
//! `remote`, builds the runtime context and dispatches; `shared` holds what
//! every verb needs (settings, caller, revision in force, printing).

mod audit;
mod backup;
mod catalog_migrate;
mod daemon;
mod deploy;
mod drill;
mod list;
mod notify_test;
mod pitr;
mod plan;
mod preview;
mod prune;
mod rebuild;
mod report;
mod restore;
mod shared;
mod status;
mod validate;

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::watch;

use crate::catalog::Catalog;
use crate::cli::{CatalogCommand, Cli, Command, NotifyCommand};
use crate::engine::context::Context;

pub async fn run(cli: Cli) -> anyhow::Result<u8> {
    // Validation reads files only: it runs here even with --server (CI).
    if let Command::Validate { dir } = &cli.command {
        let dir = dir.clone().unwrap_or_else(|| PathBuf::from(&cli.path));
        let permissions = validate::validate_permissions(&cli, &dir)?;
        return validate::validate(&dir, &permissions, cli.output);
    }
    // Run by PostgreSQL during recovery: no catalog, no repository.
    if let Command::WalFetch {
        recovery,
        wal_file,
        destination,
    } = &cli.command
    {
        return pitr::wal_fetch(recovery, wal_file, destination).await;
    }
    if let Some(server) = cli.server.clone() {
        if let Command::Preview { git_ref } = &cli.command {
            return preview::remote(&server, &cli, git_ref).await;
        }
        return crate::cli::remote::run(&server, cli).await;
    }
    let settings = shared::settings(&cli)?;
    let catalog = Catalog::open(&settings.catalog).await?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let ctx = Context {
        settings: Arc::new(settings),
        catalog,
        hard_stop: stop_rx,
        actor: if matches!(cli.command, Command::Daemon { .. }) {
            "daemon".to_string()
        } else {
            shared::caller()
        },
        // One node unless the daemon joins its replicas (`daemon`).
        leases: crate::lease::Leases::single_node(),
    };
    let code = dispatch(&ctx, stop_tx, cli).await?;
    ctx.catalog.close().await;
    Ok(code)
}

/// Runs one in-process command; its exit code.
async fn dispatch(ctx: &Context, stop: watch::Sender<bool>, cli: Cli) -> anyhow::Result<u8> {
    let output = cli.output;
    match cli.command {
        Command::Validate { .. } => unreachable!("handled by `run`"),
        Command::Plan => plan::plan(ctx, output).await,
        Command::Preview { git_ref } => preview::run(ctx, &git_ref, output).await,
        Command::Status => status::show_status(ctx, output).await,
        Command::List { policy } => list::list(ctx, policy.as_deref(), output).await,
        Command::Backup { policy } => backup::backup(ctx, &policy, output).await,
        Command::Prune { dry_run, orphans } => {
            prune::prune(ctx.clone(), dry_run, orphans, output).await
        }
        command @ Command::Restore { .. } => restore::from_command(ctx, command, output).await,
        Command::WalFetch { .. } => unreachable!("handled by `run`"),
        Command::Drill { policy, backup } => drill::drill(ctx, &policy, backup, output).await,
        Command::Deploy { command } => deploy::run(ctx, &stop, command, output).await,
        Command::Pin { backup_id, reason } => {
            deploy::pin(ctx, &backup_id, Some(&reason), output).await
        }
        Command::Unpin { backup_id } => deploy::pin(ctx, &backup_id, None, output).await,
        Command::Audit { command } => audit::audit(ctx, command, output).await,
        Command::Report { since, format } => report::report(ctx, &since, format).await,
        Command::Notify(NotifyCommand::Test { notifier, smtp }) => {
            notify_test::run(ctx, &notifier, &smtp, output).await
        }
        Command::Catalog(CatalogCommand::Rebuild) => rebuild::run(ctx, output).await,
        Command::Catalog(CatalogCommand::Migrate {
            to,
            to_password_file,
        }) => catalog_migrate::run(ctx, &to, to_password_file.as_deref(), output).await,
        Command::Daemon {
            fetch_interval,
            concurrency,
            request_concurrency,
            shutdown_grace,
            once,
            replica,
            observability,
        } => {
            let flags = daemon::Flags {
                fetch_interval,
                concurrency,
                request_concurrency,
                shutdown_grace,
                once,
                replica,
                observability,
                permissions: cli.permissions,
                path: cli.path,
                token_file: cli.token_file,
            };
            daemon::run(ctx, stop, flags).await
        }
    }
}
