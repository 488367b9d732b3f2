//! `safepoint preview --ref R`: what merging the policy revision at R would
//! do, compared with the revision in force, never executed. In-process it
//! reads the catalog; with `--server` it uploads the policy files of R (read
//! from the local checkout) to the daemon, which previews them against its
//! live state (docs/ARCHITECTURE.md, "Previews"). Exit codes: 0 nothing
//! refused, 1 refused (invalid revision or an unacknowledged destructive
//! change), 2 could not run.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, bail};
use chrono::Utc;

use crate::cli::{Cli, Output};
use crate::engine::context::{Context, RepoState};
use crate::git::{self, RepoConfig};
use crate::preview::{self, Proposal};

/// Resolves `git_ref` in `cfg`'s repository and reads its policy files.
async fn proposal(cfg: RepoConfig, git_ref: &str) -> anyhow::Result<Proposal> {
    let r = git_ref.to_string();
    let (commit, files) = tokio::task::spawn_blocking(move || {
        git::sync(&cfg)?;
        let commit = git::resolve(&cfg, &r)?;
        let (_, files) = git::read(&cfg, &commit)?;
        Ok::<_, git::GitError>((commit, files))
    })
    .await??;
    Ok(Proposal {
        git_ref: Some(git_ref.to_string()),
        commit: Some(commit),
        files,
    })
}

fn print(output: Output, report: &serde_json::Value) -> anyhow::Result<u8> {
    if output == Output::Json {
        outln!("{}", serde_json::to_string_pretty(report)?);
    } else {
        out!("{}", report["markdown"].as_str().unwrap_or_default());
    }
    for r in report["refusals"].as_array().into_iter().flatten() {
        eprintln!("refused: {}", r.as_str().unwrap_or_default());
    }
    Ok(if report["refused"].as_bool().unwrap_or(true) {
        1
    } else {
        0
    })
}

/// In-process: the proposal against the revision the daemon applied last
/// (recorded in the catalog) and the backups the catalog knows.
pub(super) async fn run(ctx: &Context, git_ref: &str, output: Output) -> anyhow::Result<u8> {
    let proposal = proposal(ctx.settings.repo.clone(), git_ref).await?;
    let state = RepoState::load(ctx).await?;
    let observed = preview::observed(&ctx.catalog).await?;
    let empty = Default::default();
    let (base, current) = match &state.applied {
        Some(a) => (Some(a.revision.commit.as_str()), &a.desired),
        None => (None, &empty),
    };
    let report = preview::report(
        base,
        current,
        proposal,
        &observed,
        Utc::now(),
        &ctx.settings.plan,
        &ctx.settings.permissions,
    );
    print(output, &serde_json::to_value(&report)?)
}

/// `--server URL`: uploads the policy files of `git_ref` from the local
/// checkout (`--repo`, default `.`); the daemon answers the preview.
pub(super) async fn remote(server: &str, cli: &Cli, git_ref: &str) -> anyhow::Result<u8> {
    if git::is_remote(&cli.repo) {
        bail!(
            "with --server, --repo must be a local checkout (the CI workspace), not {}; the proposed files are read there and uploaded",
            cli.repo
        );
    }
    let location = std::env::current_dir()
        .context("cannot read the current directory")?
        .join(&cli.repo);
    let cfg = RepoConfig {
        location: location.to_string_lossy().into_owned(),
        branch: cli.branch.clone(),
        path: cli.path.clone(),
        // Never used: a local repository is read in place.
        mirror: Path::new(&cli.repo).join(".git"),
    };
    let p = proposal(cfg, git_ref).await?;
    let files: Vec<serde_json::Value> = p
        .files
        .iter()
        .map(|f| serde_json::json!({"path": f.path, "text": f.text}))
        .collect();
    let body = serde_json::json!({"ref": p.git_ref, "commit": p.commit, "files": files});
    let url = format!("{}/api/v1/previews", server.trim_end_matches('/'));
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(120))
        .build()
        .context("cannot build the HTTP client")?;
    let response = client
        .post(&url)
        .bearer_auth(crate::cli::remote::token(cli)?)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body.to_string())
        .send()
        .await
        .with_context(|| {
            format!("cannot reach {url}; is the daemon running with --listen there?")
        })?;
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    let json: serde_json::Value =
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
    if status.is_success() {
        return print(cli.output, &json);
    }
    let error = json["error"]
        .as_str()
        .map_or_else(|| json.to_string(), str::to_string);
    if status == reqwest::StatusCode::UNAUTHORIZED {
        eprintln!(
            "error: the server refused the token (401); check --token-file / SAFEPOINT_TOKEN"
        );
    } else {
        eprintln!("error: {url} answered {status}: {error}");
    }
    Ok(2)
}
