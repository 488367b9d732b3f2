//! `safepoint restore`: one backup (by id, latest, release, pre-deploy)
//! into a target through the one restore pipeline (`engine::restore`), with
//! progress on stderr. Exit 1 when the restored row counts differ.

use anyhow::{Context as _, bail};

use super::shared::{caller, loaded_state, print_json};
use crate::cli::{Command, Output};
use crate::engine::context::Context;
use crate::engine::{self, restore::Which};
use crate::executor::{self, RestoreTarget};

/// `safepoint restore …`: a PITR recovery into `--to-dir`, else one backup
/// into `--to`.
pub(super) async fn from_command(
    ctx: &Context,
    command: Command,
    output: Output,
) -> anyhow::Result<u8> {
    let Command::Restore {
        backup_id,
        policy,
        latest,
        release,
        pre_deploy,
        to,
        to_password_from,
        force,
        recount,
        jobs,
        to_time,
        before_deploy,
        to_dir,
        start,
    } = command
    else {
        unreachable!("called for `restore` only")
    };
    if let Some(dir) = to_dir {
        let goal = super::pitr::Asked::new(to_time, before_deploy, latest)?;
        let args = super::pitr::Args::new(policy, goal, dir, start, force)?;
        return super::pitr::restore(ctx, args, output).await;
    }
    let which = Which {
        backup_id,
        policy,
        latest,
        release,
        pre_deploy,
    };
    let target = Target {
        to: to.unwrap_or_default(),
        password_from: to_password_from,
        force,
        recount,
        jobs: jobs.map(usize::from),
    };
    restore(ctx, which, target, output).await
}

/// Where and how to restore: `--to`, `--to-password-from`, `--force`,
/// `--recount`, `--jobs`.
pub(super) struct Target {
    pub to: String,
    pub password_from: Option<String>,
    pub force: bool,
    pub recount: bool,
    pub jobs: Option<usize>,
}

impl Target {
    fn options(&self) -> anyhow::Result<executor::RestoreOptions> {
        let password_from = self
            .password_from
            .as_deref()
            .map(executor::secret::parse_reference)
            .transpose()?;
        Ok(executor::RestoreOptions {
            force: self.force,
            password_from,
            recount: self.recount,
            jobs: self.jobs,
            ..Default::default()
        })
    }
}

pub(super) async fn restore(
    ctx: &Context,
    which: Which,
    target: Target,
    output: Output,
) -> anyhow::Result<u8> {
    let mut opts = target.options()?;
    let to = target.to.as_str();
    let state = loaded_state(ctx).await?;
    let desired = state.desired()?;
    let rows = ctx.catalog.backups().await?;
    let Some(row) = engine::restore::select(&rows, &which)? else {
        bail!("no such backup; run `safepoint list` to see the backups");
    };
    let manifest = &row.manifest;
    let spec = desired.storages.get(&manifest.storage).with_context(|| {
        format!(
            "storage {} of backup {} is not declared in the applied policies",
            manifest.storage, manifest.id
        )
    })?;
    let target = RestoreTarget::parse(to);
    if let Some(crate::policy::Source::Command { restore, .. }) =
        desired.policies.get(&manifest.policy).map(|p| &p.source)
    {
        opts.command = restore.clone();
    }
    let progress = crate::cli::progress::Progress::start(manifest.artifact.raw_size);
    let wrap = |input| progress.wrap(input);
    let restored = engine::restore::run(
        ctx,
        engine::restore::Restore {
            manifest,
            storage: engine::restore::open_storage(ctx, spec),
            target: &target,
            options: &opts,
            create_dir: None,
            wrap: Some(&wrap),
        },
        &format!(
            "restored backup {}/{} into {target} by {}",
            manifest.policy,
            manifest.id,
            caller()
        ),
    )
    .await;
    progress.stop().await;
    let restored = restored?;
    let seconds = restored.seconds;
    let produced = restored.produced;
    let mismatched = crate::cli::progress::count_mismatches(&manifest.counts, &produced.counts);
    if output == Output::Json {
        print_json(
            &serde_json::json!({"backup": manifest.id, "target": target.to_string(),
            "seconds": seconds, "counts": produced.counts,
            "countMismatches": mismatched}),
        )?;
    } else {
        outln!(
            "restored {}/{} into {target} in {:.1}s",
            manifest.policy,
            manifest.id,
            seconds
        );
        for m in &mismatched {
            outln!("warning: {m}");
        }
    }
    Ok(if mismatched.is_empty() { 0 } else { 1 })
}
