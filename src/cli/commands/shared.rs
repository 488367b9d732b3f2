//! What every command shares: the resolved settings, who runs the command,
//! the applied revision, JSON and outcome printing, and the planner's notes.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use chrono::{TimeDelta, Utc};

use crate::cli::{Cli, Output};
use crate::engine::context::{Context, RepoState};
use crate::engine::refresh;
use crate::git::RepoConfig;
use crate::plan::PlanOptions;
use crate::policy::PolicyFile;
use crate::settings::Settings;

pub(super) fn settings(cli: &Cli) -> anyhow::Result<Settings> {
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
    let (catalog, catalog_path) = super::catalog_migrate::location(cli, &base_dir, &data_dir)?;
    let own = crate::cli::permissions::own_paths(
        &data_dir,
        &catalog_path,
        age_identity_file.as_deref(),
        cli.token_file.as_deref(),
    );
    let permissions =
        crate::cli::permissions::load(cli.permissions.as_deref(), &base_dir, &cli.path, &own)?;
    Ok(Settings {
        permissions: Arc::new(permissions),
        catalog,
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
pub(super) fn why_not(plan: &crate::plan::Plan, policy: &str, default: &str) -> String {
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

pub(super) fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    outln!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// `user@host` of whoever runs the CLI, recorded with manual actions.
pub(super) fn caller() -> String {
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

/// Every policy file (`*.yaml`, `*.yml`) under `dir`, sorted by path.
pub(super) fn read_policy_dir(dir: &Path) -> std::io::Result<Vec<PolicyFile>> {
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

/// The repository state with the revision in force refreshed from Git.
pub(super) async fn loaded_state(ctx: &Context) -> anyhow::Result<RepoState> {
    let mut state = RepoState::load(ctx).await?;
    refresh::refresh(ctx, &mut state).await?;
    Ok(state)
}

pub(super) fn print_outcomes(
    outcomes: &[crate::model::Outcome],
    output: Output,
) -> anyhow::Result<u8> {
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

/// The start of a `--since` window ending now.
pub(super) fn window_start(since: &str) -> anyhow::Result<chrono::DateTime<Utc>> {
    let span = crate::policy::parse_duration(since)
        .map_err(|e| anyhow::anyhow!("--since {since}: {e}"))?;
    Ok(Utc::now() - span)
}
