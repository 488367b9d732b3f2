//! `deploy start|finish`, `pin`, `unpin`: thin wrappers over `crate::deploy`
//! and `crate::pins`.
//! Exit codes: 0 done, 1 a step failed (the gate blocks) or timed out,
//! 2 could not run, 4 unknown release or policy.

use anyhow::bail;
use tokio::sync::watch;

use super::shared::loaded_state;
use crate::cli::{DeployCommand, DeployStatus, Output};
use crate::deploy::{self, DeployError, DeployReport, Selection};
use crate::engine::context::Context;
use crate::pins::{self, PinError};

fn selection(policy: Vec<String>, selector: Vec<String>) -> anyhow::Result<Selection> {
    let mut selectors = Vec::new();
    for s in selector {
        let Some((k, v)) = s.split_once('=') else {
            bail!("--selector {s}: expected key=value, e.g. --selector team=payments");
        };
        selectors.push((k.trim().to_string(), v.trim().to_string()));
    }
    Ok(Selection {
        policies: policy,
        selectors,
    })
}

fn print(report: &DeployReport, output: Output) -> anyhow::Result<()> {
    if output == Output::Json {
        outln!("{}", serde_json::to_string_pretty(report)?);
        return Ok(());
    }
    for s in &report.steps {
        outln!(
            "{} {} {}{}: {}",
            if s.ok { "ok" } else { "FAILED" },
            s.action,
            s.policy,
            s.backup_id
                .as_deref()
                .map_or(String::new(), |id| format!(" {id}")),
            s.detail
        );
        if let Some(cmd) = &s.restore_command {
            outln!("   restore with: {cmd}");
        }
    }
    outln!(
        "release {}: {}",
        report.release,
        if report.ok {
            "all steps succeeded"
        } else {
            "FAILED (see above)"
        }
    );
    Ok(())
}

fn exit_code(result: Result<DeployReport, DeployError>, output: Output) -> anyhow::Result<u8> {
    match result {
        Ok(report) => {
            print(&report, output)?;
            Ok(if report.ok { 0 } else { 1 })
        }
        Err(DeployError::NotFound(msg)) => {
            eprintln!("error: {msg}");
            Ok(4)
        }
        Err(e) => Err(e.into()),
    }
}

pub(super) async fn run(
    ctx: &Context,
    stop: &watch::Sender<bool>,
    command: DeployCommand,
    output: Output,
) -> anyhow::Result<u8> {
    let state = loaded_state(ctx).await?;
    match command {
        DeployCommand::Start {
            release,
            policy,
            selector,
            timeout,
        } => {
            let selection = selection(policy, selector)?;
            let timeout = match timeout {
                Some(t) => Some(
                    crate::policy::parse_duration(&t)
                        .map_err(|e| anyhow::anyhow!("--timeout {t}: {e}"))?
                        .to_std()?,
                ),
                None => None,
            };
            let started = deploy::start(ctx, &state, &release, &selection);
            tokio::pin!(started);
            let result = match timeout {
                None => started.await,
                Some(limit) => tokio::select! {
                    r = &mut started => r,
                    _ = tokio::time::sleep(limit) => {
                        let _ = stop.send(true);
                        let _ = started.await;
                        eprintln!("error: deploy start {release} timed out after {}s; the deploy must not proceed", limit.as_secs());
                        return Ok(1);
                    }
                },
            };
            exit_code(result, output)
        }
        DeployCommand::Finish {
            release,
            status,
            policy,
            selector,
        } => {
            let selection = selection(policy, selector)?;
            let result = deploy::finish(
                ctx,
                &state,
                &release,
                status == DeployStatus::Success,
                &selection,
            )
            .await;
            exit_code(result, output)
        }
    }
}

/// `pin ID --reason R` (`reason` set) / `unpin ID`: in the catalog and as a
/// marker in storage (`crate::pins`). Exit 4 for an unknown backup, 1 when the
/// storage side failed (see the message for what holds).
pub(super) async fn pin(
    ctx: &Context,
    backup_id: &str,
    reason: Option<&str>,
    output: Output,
) -> anyhow::Result<u8> {
    let state = loaded_state(ctx).await?;
    let desired = state.desired()?;
    let result = match reason {
        Some(why) => pins::pin(ctx, desired, backup_id, why, None)
            .await
            .map(|p| (p.message, p.marker_error.is_some())),
        None => pins::unpin(ctx, desired, backup_id)
            .await
            .map(|message| (message, false)),
    };
    match result {
        Ok((message, false)) => {
            if output == Output::Json {
                let policy = ctx
                    .catalog
                    .backup(backup_id)
                    .await?
                    .map(|r| r.record.policy);
                let json = serde_json::json!({"backup": backup_id, "policy": policy, "pinned": reason, "message": message});
                outln!("{}", serde_json::to_string_pretty(&json)?);
            } else {
                outln!("{message}");
            }
            Ok(0)
        }
        Ok((message, true)) => {
            eprintln!("error: {message}");
            Ok(1)
        }
        Err(e @ PinError::UnknownBackup(_)) => {
            eprintln!("error: {e}");
            Ok(4)
        }
        Err(e @ PinError::Storage(_)) => {
            eprintln!("error: {e}");
            Ok(1)
        }
        Err(PinError::Catalog(e)) => Err(e.into()),
    }
}
