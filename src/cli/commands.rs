//! The commands: thin wrappers that wire settings, call `reconcile` and print.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use chrono::{TimeDelta, Utc};
use tokio::sync::watch;

use super::table::{age, bytes, render};
use super::{AuditCommand, Cli, Command, ExportFormat, Output, ReportFormat};
use crate::catalog::Catalog;
use crate::daemon;
use crate::engine::{self, restore::Which};
use crate::executor::{self, RestoreTarget};
use crate::git::RepoConfig;
use crate::monitor::Monitor;
use crate::observed::{BackupRequest, Trigger};
use crate::plan::PlanOptions;
use crate::policy::{self, PolicyFile};
use crate::reconcile::{self, Context, RepoState, Scope};
use crate::settings::Settings;
use crate::status;

pub async fn run(cli: Cli) -> anyhow::Result<u8> {
    // Validation reads files only: it runs here even with --server (CI).
    if let Command::Validate { dir } = &cli.command {
        let dir = dir.clone().unwrap_or_else(|| PathBuf::from(&cli.path));
        let permissions = validate_permissions(&cli, &dir)?;
        return validate(&dir, &permissions, cli.output);
    }
    // Run by PostgreSQL during recovery: no catalog, no repository.
    if let Command::WalFetch {
        recovery,
        wal_file,
        destination,
    } = &cli.command
    {
        return super::pitr::wal_fetch(recovery, wal_file, destination).await;
    }
    if let Some(server) = cli.server.clone() {
        if let Command::Preview { git_ref } = &cli.command {
            return super::preview::remote(&server, &cli, git_ref).await;
        }
        return super::remote::run(&server, cli).await;
    }
    let settings = settings(&cli)?;
    let catalog = Catalog::open_sqlite(&settings.catalog_path).await?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let ctx = Context {
        settings: Arc::new(settings),
        catalog,
        hard_stop: stop_rx,
        actor: if matches!(cli.command, Command::Daemon { .. }) {
            "daemon".to_string()
        } else {
            caller()
        },
    };
    let code = match cli.command {
        Command::Validate { .. } => unreachable!("handled above"),
        Command::Plan => plan(&ctx, cli.output).await?,
        Command::Preview { git_ref } => super::preview::run(&ctx, &git_ref, cli.output).await?,
        Command::Status => show_status(&ctx, cli.output).await?,
        Command::List { policy } => list(&ctx, policy.as_deref(), cli.output).await?,
        Command::Backup { policy } => backup(&ctx, &policy, cli.output).await?,
        Command::Prune { dry_run, orphans } => {
            prune(ctx.clone(), dry_run, orphans, cli.output).await?
        }
        Command::Restore {
            backup_id,
            policy,
            latest,
            release,
            pre_deploy,
            to,
            to_password_from,
            force,
            to_time,
            to_dir,
            start,
        } => {
            if let Some(dir) = to_dir {
                let args = super::pitr::Args::new(policy, to_time, latest, dir, start, force)?;
                return super::pitr::restore(&ctx, args, cli.output).await;
            }
            let to = to.unwrap_or_default();
            let which = Which {
                backup_id,
                policy,
                latest,
                release,
                pre_deploy,
            };
            let password_from = to_password_from
                .map(|r| executor::secret::parse_reference(&r))
                .transpose()?;
            let opts = executor::RestoreOptions {
                force,
                password_from,
                command: None,
            };
            restore(&ctx, which, &to, opts, cli.output).await?
        }
        Command::WalFetch { .. } => unreachable!("handled above"),
        Command::Drill { policy, backup } => drill(&ctx, &policy, backup, cli.output).await?,
        Command::Deploy { command } => {
            super::deploy::run(&ctx, &stop_tx, command, cli.output).await?
        }
        Command::Pin { backup_id, reason } => {
            super::deploy::pin(&ctx, &backup_id, Some(&reason), cli.output).await?
        }
        Command::Unpin { backup_id } => {
            super::deploy::pin(&ctx, &backup_id, None, cli.output).await?
        }
        Command::Audit { command } => audit(&ctx, command, cli.output).await?,
        Command::Report { since, format } => report(&ctx, &since, format).await?,
        Command::Notify(super::NotifyCommand::Test { notifier, smtp }) => {
            super::notify_test::run(&ctx, &notifier, &smtp, cli.output).await?
        }
        Command::Catalog(super::CatalogCommand::Rebuild) => {
            super::rebuild::run(&ctx, cli.output).await?
        }
        Command::Daemon {
            fetch_interval,
            concurrency,
            request_concurrency,
            shutdown_grace,
            once,
            observability,
        } => {
            let mut settings = (*ctx.settings).clone();
            let own = observability.secret_files();
            settings.permissions = Arc::new(super::permissions::load(
                cli.permissions.as_deref(),
                &settings.base_dir,
                &cli.path,
                &[
                    own,
                    super::permissions::own_paths(
                        &settings.data_dir,
                        &settings.catalog_path,
                        settings.age_identity_file.as_deref(),
                        cli.token_file.as_deref(),
                    ),
                ]
                .concat(),
            )?);
            settings.fetch_interval = Duration::from_secs(fetch_interval.max(1));
            settings.concurrency = concurrency.max(1);
            settings.shutdown_grace = Duration::from_secs(shutdown_grace);
            let ctx = Context {
                settings: Arc::new(settings),
                ..ctx.clone()
            };
            let mut options = observability.options(once)?;
            options.plan = ctx.settings.plan.clone();
            options.permissions = ctx.settings.permissions.clone();
            let monitor = Monitor::start(&ctx.catalog, options).await?;
            let result =
                daemon::run(ctx.clone(), stop_tx, once, request_concurrency, &monitor).await;
            monitor.shutdown().await;
            result?;
            0
        }
    };
    ctx.catalog.close().await;
    Ok(code)
}

fn settings(cli: &Cli) -> anyhow::Result<Settings> {
    let base_dir = std::env::current_dir().context("cannot read the current directory")?;
    let data_dir = base_dir.join(&cli.data_dir);
    std::fs::create_dir_all(&data_dir).with_context(|| {
        format!(
            "cannot create the data directory {}; pass --data-dir DIR",
            data_dir.display()
        )
    })?;
    let location = if crate::git::is_remote(&cli.repo) {
        cli.repo.clone()
    } else {
        base_dir.join(&cli.repo).to_string_lossy().into_owned()
    };
    let age_identity_file = cli.age_identity_file.as_ref().map(|p| base_dir.join(p));
    let catalog_path = cli
        .catalog
        .clone()
        .map_or_else(|| data_dir.join("catalog.db"), |c| base_dir.join(c));
    let own = super::permissions::own_paths(
        &data_dir,
        &catalog_path,
        age_identity_file.as_deref(),
        cli.token_file.as_deref(),
    );
    let permissions =
        super::permissions::load(cli.permissions.as_deref(), &base_dir, &cli.path, &own)?;
    Ok(Settings {
        permissions: Arc::new(permissions),
        catalog_path,
        repo: RepoConfig {
            location,
            branch: cli.branch.clone(),
            path: cli.path.clone(),
            mirror: data_dir.join("repo.git"),
        },
        data_dir,
        base_dir,
        fetch_interval: Duration::from_secs(60),
        concurrency: 2,
        verify_interval: TimeDelta::seconds(cli.verify_interval.max(0)),
        shutdown_grace: Duration::from_secs(30),
        plan: PlanOptions {
            deletion_guard: cli.deletion_guard,
            ..PlanOptions::default()
        },
        age_identity_file,
    })
}

/// The planner's notes about `policy`, or `default` when it said nothing.
fn why_not(plan: &crate::plan::Plan, policy: &str, default: &str) -> String {
    let why: Vec<&str> = plan
        .notes
        .iter()
        .filter(|n| n.policy == policy)
        .map(|n| n.text.as_str())
        .collect();
    if why.is_empty() {
        default.to_string()
    } else {
        why.join("; ")
    }
}

fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    outln!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// `user@host` of whoever runs the CLI, recorded with manual actions.
pub fn caller() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| user_from_passwd().unwrap_or_else(|| "unknown".into()));
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown-host".into());
    format!("{user}@{host}")
}

/// The name of the current uid from /etc/passwd (no `USER` in cron/CI shells).
fn user_from_passwd() -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let uid = std::fs::metadata("/proc/self").ok()?.uid();
    std::fs::read_to_string("/etc/passwd")
        .ok()?
        .lines()
        .find_map(|line| {
            let mut fields = line.split(':');
            let name = fields.next()?;
            (fields.nth(1)?.parse::<u32>().ok()? == uid).then(|| name.to_string())
        })
}

// ---- validate ---------------------------------------------------------------

fn read_policy_dir(dir: &Path) -> std::io::Result<Vec<PolicyFile>> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let entry = entry?;
            let path = entry.path();
            if entry.file_type()?.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                let bytes = std::fs::read(&path)?;
                files.push(PolicyFile::from_bytes(path.to_string_lossy(), bytes));
            }
        }
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

/// The permissions `validate` checks against: the daemon's, as far as the
/// global flags and environment tell (nothing is created on disk).
fn validate_permissions(cli: &Cli, dir: &Path) -> anyhow::Result<policy::Permissions> {
    let base_dir = std::env::current_dir().context("cannot read the current directory")?;
    let data_dir = base_dir.join(&cli.data_dir);
    let catalog = cli
        .catalog
        .as_ref()
        .map_or_else(|| data_dir.join("catalog.db"), |c| base_dir.join(c));
    let own = super::permissions::own_paths(
        &data_dir,
        &catalog,
        cli.age_identity_file.as_deref(),
        cli.token_file.as_deref(),
    );
    let root = dir.to_string_lossy();
    super::permissions::load(cli.permissions.as_deref(), &base_dir, &root, &own)
}

fn validate(dir: &Path, permissions: &policy::Permissions, output: Output) -> anyhow::Result<u8> {
    let files = read_policy_dir(dir).with_context(|| {
        format!(
            "cannot read policy directory {}; pass the directory holding *.yaml policies",
            dir.display()
        )
    })?;
    let result = policy::load_permitted(&files, permissions);
    match (output, &result) {
        (Output::Json, Ok(d)) => {
            print_json(&serde_json::json!({"valid": true, "files": files.len(),
            "storages": d.storages.len(), "notifiers": d.notifiers.len(), "policies": d.policies.len(), "problems": []}))?
        }
        (Output::Json, Err(diags)) => print_json(
            &serde_json::json!({"valid": false, "files": files.len(), "problems": diags}),
        )?,
        (Output::Table, Ok(d)) => outln!(
            "{}: valid ({} files, {} policies, {} storages, {} notifiers)",
            dir.display(),
            files.len(),
            d.policies.len(),
            d.storages.len(),
            d.notifiers.len()
        ),
        (Output::Table, Err(diags)) => {
            for d in diags {
                outln!("{d}");
            }
            outln!("{}: {} problem(s) found", dir.display(), diags.len());
        }
    }
    Ok(if result.is_ok() { 0 } else { 1 })
}

// ---- plan / status / list ------------------------------------------------------

pub(super) async fn loaded_state(ctx: &Context) -> anyhow::Result<RepoState> {
    let mut state = RepoState::load(ctx).await?;
    reconcile::refresh(ctx, &mut state).await?;
    Ok(state)
}

async fn plan(ctx: &Context, output: Output) -> anyhow::Result<u8> {
    let state = loaded_state(ctx).await?;
    let report = reconcile::cycle(ctx, &state, Vec::new(), Scope::All, true).await?;
    match output {
        Output::Json => print_json(&report.plan)?,
        Output::Table => out!("{}", report.plan.render()),
    }
    Ok(if report.plan.is_empty() { 0 } else { 1 })
}

async fn show_status(ctx: &Context, output: Output) -> anyhow::Result<u8> {
    let state = loaded_state(ctx).await?;
    let now = Utc::now();
    let (observed, _) = match state.desired() {
        Ok(desired) => reconcile::observe(ctx, desired, Vec::new(), Vec::new(), now).await?,
        Err(_) => Default::default(),
    };
    let empty = policy::DesiredState::default();
    let desired = state.applied.as_ref().map_or(&empty, |a| &a.desired);
    let repo = status::RepoInput {
        applied: state.applied.as_ref().map(|a| a.revision.commit.clone()),
        attempted: state.attempted.clone(),
    };
    let st = status::compute(desired, &observed, &repo, now);
    if output == Output::Json {
        print_json(&st)?;
        return Ok(if st.ready { 0 } else { 1 });
    }
    outln!(
        "repository: {} — applied {} / attempted {}",
        if st.ready {
            "Ready".to_string()
        } else {
            format!("Stalled: {}", st.reason)
        },
        st.applied
            .as_deref()
            .map_or("none", |c| &c[..c.len().min(12)]),
        st.attempted
            .as_deref()
            .map_or("none", |c| &c[..c.len().min(12)]),
    );
    let rows: Vec<Vec<String>> = st
        .policies
        .iter()
        .map(|p| {
            vec![
                p.name.clone(),
                if p.ready {
                    "Ready".into()
                } else {
                    "Stalled".into()
                },
                p.last_good.as_ref().map_or("-".into(), |g| g.id.clone()),
                p.last_good
                    .as_ref()
                    .map_or("-".into(), |g| age(TimeDelta::seconds(g.age_seconds))),
                match (p.rpo_seconds, p.rpo_met) {
                    (Some(r), Some(true)) => format!("met ({})", age(TimeDelta::seconds(r))),
                    (Some(r), _) => format!("MISSED ({})", age(TimeDelta::seconds(r))),
                    (None, _) => "-".into(),
                },
                p.next_run
                    .map_or("-".into(), |t| t.format("%Y-%m-%d %H:%M UTC").to_string()),
                p.reason.clone(),
            ]
        })
        .collect();
    out!(
        "{}",
        render(
            &[
                "POLICY",
                "STATE",
                "LAST GOOD",
                "AGE",
                "RPO",
                "NEXT RUN",
                "REASON"
            ],
            &rows
        )
    );
    Ok(if st.ready { 0 } else { 1 })
}

async fn list(ctx: &Context, policy: Option<&str>, output: Output) -> anyhow::Result<u8> {
    let state = loaded_state(ctx).await?;
    let desired = state.desired()?;
    let now = Utc::now();
    let (observed, _) = reconcile::observe(ctx, desired, Vec::new(), Vec::new(), now).await?;
    let plan = crate::plan::plan(desired, &observed, now, &ctx.settings.plan);
    let rows_db = ctx.catalog.backups().await?;
    let mut items = Vec::new();
    for row in rows_db
        .iter()
        .filter(|r| policy.is_none_or(|p| r.record.policy == p))
    {
        let r = &row.record;
        let kept = plan.kept.iter().find(|k| k.backup_id == r.id);
        let why = match kept {
            Some(k) => k
                .reasons
                .iter()
                .map(|r| format!("{r:#}"))
                .collect::<Vec<_>>()
                .join(", "),
            None => plan
                .actions
                .iter()
                .find(|a| matches!(a, crate::plan::Action::Delete { backup_id, .. } if backup_id == &r.id))
                .map_or("-".into(), |a| format!("to prune: {}", a.reason())),
        };
        items.push((r.clone(), row.problem.clone(), why, row.pin.clone()));
    }
    if output == Output::Json {
        let json: Vec<_> = items
            .iter()
            .map(|(r, problem, why, pin)| {
                serde_json::json!({"backup": r, "problem": problem, "why": why, "pin": pin})
            })
            .collect();
        print_json(&json)?;
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|(r, problem, why, _)| {
            vec![
                r.policy.clone(),
                r.id.clone(),
                r.trigger.to_string()
                    + &r.release
                        .as_deref()
                        .map_or(String::new(), |t| format!(" {t}")),
                r.started_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                bytes(r.size),
                match problem {
                    Some(p) => format!("{} ({p})", r.health.as_str()),
                    None => r.health.as_str().to_string(),
                },
                why.clone(),
            ]
        })
        .collect();
    out!(
        "{}",
        render(
            &[
                "POLICY",
                "BACKUP",
                "TRIGGER",
                "STARTED (UTC)",
                "SIZE",
                "CHECKSUM",
                "KEPT BECAUSE"
            ],
            &rows
        )
    );
    Ok(0)
}

// ---- backup / prune ------------------------------------------------------------

async fn backup(ctx: &Context, policy: &str, output: Output) -> anyhow::Result<u8> {
    let state = loaded_state(ctx).await?;
    if !state.desired()?.policies.contains_key(policy) {
        let known: Vec<_> = state.desired()?.policies.keys().cloned().collect();
        bail!(
            "policy {policy} is not in the applied revision; known policies: {}",
            known.join(", ")
        );
    }
    let request = BackupRequest {
        policy: policy.to_string(),
        trigger: Trigger::Manual,
        release: None,
        requested_by: caller(),
    };
    let scope = Scope::answering(std::slice::from_ref(&request));
    let report = reconcile::cycle(ctx, &state, vec![request], scope, false).await?;
    if report.outcomes.is_empty() {
        let why = why_not(&report.plan, policy, "the planner produced no backup");
        bail!("no backup was taken for {policy}: {why}");
    }
    print_outcomes(&report.outcomes, output)
}

fn print_outcomes(outcomes: &[reconcile::Outcome], output: Output) -> anyhow::Result<u8> {
    if output == Output::Json {
        print_json(&outcomes)?;
    } else {
        for o in outcomes {
            outln!(
                "{} {} {}{}: {}",
                if o.ok { "ok" } else { "FAILED" },
                o.action,
                o.policy,
                o.backup_id
                    .as_deref()
                    .map_or(String::new(), |id| format!("/{id}")),
                o.detail
            );
        }
    }
    Ok(if outcomes.iter().all(|o| o.ok) { 0 } else { 1 })
}

async fn prune(ctx: Context, dry_run: bool, orphans: bool, output: Output) -> anyhow::Result<u8> {
    let mut settings = (*ctx.settings).clone();
    settings.plan.prune_orphans = orphans;
    let ctx = Context {
        settings: Arc::new(settings),
        ..ctx
    };
    let state = loaded_state(&ctx).await?;
    let report = reconcile::cycle(&ctx, &state, Vec::new(), Scope::Deletions, dry_run).await?;
    let deletions: Vec<_> = report
        .plan
        .actions
        .iter()
        .filter(|a| Scope::Deletions.includes(a))
        .collect();
    if dry_run {
        if output == Output::Json {
            print_json(&deletions)?;
        } else if deletions.is_empty() {
            outln!("nothing to prune");
        } else {
            for a in &deletions {
                if let crate::plan::Action::Delete {
                    policy,
                    backup_id,
                    reason,
                    ..
                } = a
                {
                    outln!("would delete {policy}/{backup_id} — {reason}");
                }
            }
        }
        return Ok(0);
    }
    if report.outcomes.is_empty() && output == Output::Table {
        outln!("nothing to prune");
        return Ok(0);
    }
    print_outcomes(&report.outcomes, output)
}

// ---- restore -----------------------------------------------------------------

async fn restore(
    ctx: &Context,
    which: Which,
    to: &str,
    mut opts: executor::RestoreOptions,
    output: Output,
) -> anyhow::Result<u8> {
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
    let progress = super::progress::Progress::start(manifest.artifact.raw_size);
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
    let mismatched = super::progress::count_mismatches(&manifest.counts, &produced.counts);
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

// ---- audit / report ------------------------------------------------------------

fn window_start(since: &str) -> anyhow::Result<chrono::DateTime<Utc>> {
    let span =
        policy::parse_duration(since).map_err(|e| anyhow::anyhow!("--since {since}: {e}"))?;
    Ok(Utc::now() - span)
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

async fn audit(ctx: &Context, command: AuditCommand, output: Output) -> anyhow::Result<u8> {
    match command {
        AuditCommand::Verify => {
            let entries = ctx.catalog.audit_entries(None).await?;
            let head = ctx.catalog.audit_head();
            let verdict =
                crate::audit::verify(&entries, head.as_ref().map(|(s, h)| (*s, h.as_str())));
            if output == Output::Json {
                print_json(&verdict)?;
            } else if let Some(p) = &verdict.problem {
                outln!("audit log TAMPERED at entry {}: {}", p.seq, p.what);
            } else {
                outln!(
                    "audit log intact: {} entries, chain verified",
                    verdict.entries
                );
            }
            Ok(if verdict.ok { 0 } else { 1 })
        }
        AuditCommand::Export { since, format } => {
            let since = since.as_deref().map(window_start).transpose()?;
            let entries = ctx.catalog.audit_entries(since).await?;
            match format {
                ExportFormat::Jsonl => {
                    for e in &entries {
                        outln!("{}", serde_json::to_string(e)?);
                    }
                }
                ExportFormat::Csv => {
                    outln!("seq,at,kind,policy,actor,message,prev_hash,hash");
                    for e in &entries {
                        outln!(
                            "{},{},{},{},{},{},{},{}",
                            e.seq,
                            e.at.to_rfc3339(),
                            csv_field(&e.kind),
                            csv_field(e.policy.as_deref().unwrap_or("")),
                            csv_field(&e.actor),
                            csv_field(&e.message),
                            e.prev_hash,
                            e.hash
                        );
                    }
                }
            }
            Ok(0)
        }
    }
}

async fn report(ctx: &Context, since: &str, format: ReportFormat) -> anyhow::Result<u8> {
    let state = loaded_state(ctx).await?;
    let empty = policy::DesiredState::default();
    let desired = state.applied.as_ref().map_or(&empty, |a| &a.desired);
    let now = Utc::now();
    let since = window_start(since)?;
    let backups = ctx.catalog.backup_history().await?;
    let runs = ctx.catalog.runs_since(since).await?;
    let audit = ctx.catalog.audit_entries(Some(since)).await?;
    let report = crate::report::build(&crate::report::Inputs {
        desired,
        backups: &backups,
        runs: &runs,
        audit: &audit,
        since,
        now,
    });
    match format {
        ReportFormat::Json => print_json(&report)?,
        ReportFormat::Md => out!("{}", crate::report::markdown(&report)),
    }
    Ok(0)
}

// ---- drill -------------------------------------------------------------------

async fn drill(
    ctx: &Context,
    policy: &str,
    backup: Option<String>,
    output: Output,
) -> anyhow::Result<u8> {
    let state = loaded_state(ctx).await?;
    let desired = state.desired()?;
    match desired.policies.get(policy) {
        None => {
            eprintln!("error: policy {policy} is not in the applied revision");
            return Ok(4);
        }
        Some(p) if p.drill.is_none() => {
            eprintln!(
                "error: policy {policy} declares no `drill:` (target, verify, maxDuration); add one to run drills"
            );
            return Ok(4);
        }
        Some(_) => {}
    }
    let request = crate::observed::DrillRequest {
        policy: policy.to_string(),
        backup_id: backup,
        requested_by: ctx.actor.clone(),
    };
    let scope = Scope::Drills(vec![policy.to_string()]);
    let report =
        reconcile::cycle_with(ctx, &state, Vec::new(), vec![request], scope, false).await?;
    let Some(result) = report.drills.into_iter().next() else {
        let why = why_not(&report.plan, policy, "nothing to drill");
        bail!("no drill was run for {policy}: {why}");
    };
    let outcome = match result {
        Ok(o) => o,
        Err((_, why)) => bail!("drill of {policy} could not run: {why}"),
    };
    if output == Output::Json {
        print_json(&outcome)?;
    } else {
        outln!(
            "drill {} of backup {} (scratch {}):",
            policy,
            outcome.backup_id,
            outcome.scratch
        );
        for c in &outcome.checks {
            outln!(
                "  {} {}: {}",
                if c.passed { "ok    " } else { "FAILED" },
                c.name,
                c.detail
            );
        }
        outln!(
            "verdict: {}",
            if outcome.passed { "PASSED" } else { "FAILED" }
        );
    }
    Ok(if outcome.passed { 0 } else { 1 })
}
