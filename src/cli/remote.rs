//! `--server URL`: the same commands against a running daemon's HTTP API,
//! authenticated with a bearer token, so a CI runner needs no database or
//! storage credentials. Exit codes as in-process: 0 ok, 1 a step failed,
//! 2 could not run (also 401/413), 4 unknown release or policy (404).

use std::time::Duration;

use anyhow::{Context as _, bail};
use reqwest::StatusCode;

use super::{Cli, Command, DeployCommand, DeployStatus, Output};

pub(super) fn token(cli: &Cli) -> anyhow::Result<String> {
    if let Some(path) = &cli.token_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read --token-file {}", path.display()))?;
        return Ok(text.trim().to_string());
    }
    std::env::var("SAFEPOINT_TOKEN").map_err(|_| {
        anyhow::anyhow!(
            "--server needs a token: --token-file PATH, SAFEPOINT_TOKEN_FILE or SAFEPOINT_TOKEN"
        )
    })
}

fn selector_map(selector: &[String]) -> anyhow::Result<serde_json::Map<String, serde_json::Value>> {
    let mut map = serde_json::Map::new();
    for s in selector {
        let Some((k, v)) = s.split_once('=') else {
            bail!("--selector {s}: expected key=value");
        };
        map.insert(k.trim().into(), v.trim().into());
    }
    Ok(map)
}

pub async fn run(server: &str, cli: Cli) -> anyhow::Result<u8> {
    let base = server.trim_end_matches('/').to_string();
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .build()
        .context("cannot build the HTTP client")?;
    let output = cli.output;
    let (method_post, path, body) = request(&cli.command)?;
    let url = format!("{base}{path}");
    let request = if method_post {
        let body = body.to_string();
        client
            .post(&url)
            .bearer_auth(token(&cli)?)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
    } else {
        client.get(&url)
    };
    let response = request.send().await.with_context(|| {
        format!("cannot reach {url}; is the daemon running with --listen there?")
    })?;
    let mut status = response.status();
    let text = response.text().await.unwrap_or_default();
    let mut json: serde_json::Value =
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
    if status == StatusCode::ACCEPTED
        && let Some(href) = json["href"].as_str()
    {
        let deadline = body["timeoutSeconds"]
            .as_i64()
            .map(|s| std::time::Instant::now() + Duration::from_secs(s.max(0) as u64));
        let job_url = format!("{base}{href}");
        (status, json) = follow(&client, &job_url, &token(&cli)?, deadline).await?;
    }
    // The same contract as in-process: `list --policy P` shows P's backups only.
    if let (Command::List { policy: Some(p) }, Some(rows)) = (&cli.command, json.as_array_mut()) {
        rows.retain(|r| r["record"]["policy"].as_str() == Some(p.as_str()));
    }
    if output == Output::Json || !status.is_success() && status != StatusCode::UNPROCESSABLE_ENTITY
    {
        outln!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        print_human(&json)?;
    }
    Ok(exit_code(&cli.command, status, &json, &url))
}

/// The API call a command makes: (POST?, path, JSON body).
fn request(command: &Command) -> anyhow::Result<(bool, String, serde_json::Value)> {
    Ok(match command {
        Command::Deploy {
            command:
                DeployCommand::Start {
                    release,
                    policy,
                    selector,
                    timeout,
                },
        } => {
            let timeout = match timeout {
                Some(t) => Some(
                    crate::policy::parse_duration(t)
                        .map_err(|e| anyhow::anyhow!("--timeout {t}: {e}"))?
                        .num_seconds(),
                ),
                None => None,
            };
            let body = serde_json::json!({
                "policies": policy, "selector": selector_map(selector)?,
                // A gate always waits (for the job's answer, see `follow`):
                // exiting 0 before the snapshot exists would let the deploy run
                // unprotected.
                "wait": false,
                "timeoutSeconds": timeout,
            });
            (true, format!("/api/v1/deploys/{release}/start"), body)
        }
        Command::Deploy {
            command:
                DeployCommand::Finish {
                    release,
                    status,
                    policy,
                    selector,
                },
        } => {
            let status = if *status == DeployStatus::Success {
                "success"
            } else {
                "failure"
            };
            let body = serde_json::json!({"policies": policy, "selector": selector_map(selector)?, "status": status, "wait": false});
            (true, format!("/api/v1/deploys/{release}/finish"), body)
        }
        Command::Backup { policy } => (
            true,
            format!("/api/v1/policies/{policy}/backup"),
            serde_json::json!({"wait": false}),
        ),
        Command::Drill { policy, backup } => (
            true,
            format!("/api/v1/policies/{policy}/drill"),
            serde_json::json!({"backup": backup, "wait": false}),
        ),
        Command::Status => (false, "/api/v1/status".into(), serde_json::Value::Null),
        Command::Plan => (false, "/api/v1/plan".into(), serde_json::Value::Null),
        Command::List { .. } => (false, "/api/v1/backups".into(), serde_json::Value::Null),
        other => bail!(
            "{} runs in-process only; drop --server",
            format!("{other:?}")
                .split_whitespace()
                .next()
                .unwrap_or("this command")
                .to_lowercase()
        ),
    })
}

/// `Status::all_ready` of the API's status answer.
fn all_ready(json: &serde_json::Value) -> bool {
    json["ready"] == true
        && json["policies"]
            .as_array()
            .is_none_or(|ps| ps.iter().all(|p| p["ready"] == true))
}

/// The in-process exit code for the API's answer.
fn exit_code(command: &Command, status: StatusCode, json: &serde_json::Value, url: &str) -> u8 {
    match status {
        // The in-process exit codes: `status` 1 when something is Stalled,
        // `plan` 1 when actions are pending.
        s if s.is_success() => match command {
            Command::Status if !all_ready(json) => 1,
            Command::Plan if json["actions"].as_array().is_some_and(|a| !a.is_empty()) => 1,
            _ => 0,
        },
        StatusCode::UNPROCESSABLE_ENTITY => 1,
        StatusCode::NOT_FOUND => 4,
        StatusCode::UNAUTHORIZED => {
            eprintln!(
                "error: the server refused the token (401); check --token-file / SAFEPOINT_TOKEN"
            );
            2
        }
        other => {
            eprintln!("error: {url} answered {other}");
            2
        }
    }
}

/// Long-polls a job (`GET /api/v1/jobs/{id}?after=V&waitSeconds=S`),
/// printing what it reports (e.g. "waiting for the running backup of orders
/// started at …") on stderr, until its answer: `(status, body)` of that answer.
async fn follow(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    deadline: Option<std::time::Instant>,
) -> anyhow::Result<(StatusCode, serde_json::Value)> {
    let mut version = 0;
    let mut printed = 0;
    loop {
        let left = deadline.map(|d| d.saturating_duration_since(std::time::Instant::now()));
        if left.is_some_and(|l| l.is_zero()) {
            bail!("no outcome within --timeout; the job goes on in the daemon: GET {url}");
        }
        let wait = left.map_or(30, |l| l.as_secs().clamp(1, 30));
        let view: serde_json::Value = client
            .get(format!("{url}?after={version}&waitSeconds={wait}"))
            .bearer_auth(token)
            .send()
            .await
            .with_context(|| format!("cannot reach {url} while following the job"))?
            .error_for_status()
            .with_context(|| format!("{url} refused to report the job"))?
            .bytes()
            .await
            .map_err(anyhow::Error::from)
            .and_then(|b| serde_json::from_slice(&b).map_err(anyhow::Error::from))
            .with_context(|| format!("{url} answered no job"))?;
        let messages = view["messages"].as_array().cloned().unwrap_or_default();
        for m in messages.iter().skip(printed) {
            eprintln!("{}", m.as_str().unwrap_or_default());
        }
        printed = printed.max(messages.len());
        version = view["version"].as_u64().unwrap_or(version);
        if let Some(result) = view.get("result").filter(|r| !r.is_null()) {
            let status = result["status"]
                .as_u64()
                .and_then(|s| StatusCode::from_u16(u16::try_from(s).ok()?).ok())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return Ok((status, result["body"].clone()));
        }
    }
}

/// Deploy reports and outcome lists as the in-process commands print them.
fn print_human(json: &serde_json::Value) -> anyhow::Result<()> {
    let steps = json.get("steps").and_then(|s| s.as_array());
    let items = steps.or_else(|| json.as_array());
    let Some(items) = items else {
        outln!("{}", serde_json::to_string_pretty(json).unwrap_or_default());
        return Ok(());
    };
    for s in items {
        let ok = s["ok"].as_bool().unwrap_or(false);
        outln!(
            "{} {} {}{}: {}",
            if ok { "ok" } else { "FAILED" },
            s["action"].as_str().unwrap_or("-"),
            s["policy"].as_str().unwrap_or("-"),
            s["backup_id"]
                .as_str()
                .map_or(String::new(), |id| format!(" {id}")),
            s["detail"].as_str().unwrap_or("")
        );
        if let Some(cmd) = s["restore_command"].as_str() {
            outln!("   restore with: {cmd}");
        }
    }
    if let Some(release) = json["release"].as_str() {
        let ok = json["ok"].as_bool().unwrap_or(false);
        outln!(
            "release {release}: {}",
            if ok {
                "all steps succeeded"
            } else {
                "FAILED (see above)"
            }
        );
    }
    Ok(())
}
