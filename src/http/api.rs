//! IO: the mutating API. Every endpoint here needs `Authorization: Bearer
//! <token>` (tokens compared in constant time), except the Git push webhook,
//! which needs a valid `X-Hub-Signature-256` HMAC (GitHub's format). Work is
//! enqueued to the daemon's requested lane (`jobs`), never executed here;
//! `GET /api/v1/jobs/{id}` reports a job's progress (what it waits for).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use hmac::{KeyInit, Mac};
use serde::Deserialize;
use tokio::sync::{Notify, mpsc};

use super::ApiState;
use crate::deploy::Selection;
use crate::jobs::{Board, Job, JobAnswer, JobError, JobKind};

/// Longest a caller may wait for a job's outcome (`timeoutSeconds`).
pub const MAX_WAIT: Duration = Duration::from_secs(24 * 3600);

/// Tokens and secrets of the API (from files/env at startup).
#[derive(Default)]
pub struct Auth {
    /// (token name, BLAKE3 of the token): comparing hashes is constant-time.
    tokens: Vec<(String, blake3::Hash)>,
    webhook_secret: Option<Vec<u8>>,
}

impl Auth {
    pub fn new(tokens: Vec<(String, String)>, webhook_secret: Option<Vec<u8>>) -> Auth {
        Auth {
            tokens: tokens
                .into_iter()
                .map(|(name, token)| (name, blake3::hash(token.as_bytes())))
                .collect(),
            webhook_secret,
        }
    }

    /// The name of the token presented, if it is one of ours.
    pub(crate) fn caller(&self, headers: &HeaderMap) -> Option<&str> {
        let presented = headers
            .get(header::AUTHORIZATION)?
            .to_str()
            .ok()?
            .strip_prefix("Bearer ")?
            .trim();
        let hash = blake3::hash(presented.as_bytes());
        let mut found = None;
        for (name, token) in &self.tokens {
            // blake3::Hash's == is constant-time; look at every token anyway.
            if *token == hash {
                found = Some(name.as_str());
            }
        }
        found
    }
}

/// Parses a tokens file: one `name token` (or `name:token`) per line, `#` comments.
pub fn parse_tokens(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, token) = line
            .split_once(char::is_whitespace)
            .or_else(|| line.split_once(':'))
            .ok_or_else(|| format!("line {}: expected `name token`", n + 1))?;
        let token = token.trim();
        if token.len() < 16 {
            return Err(format!(
                "line {}: token of {name} is shorter than 16 characters",
                n + 1
            ));
        }
        out.push((name.trim().to_string(), token.to_string()));
    }
    Ok(out)
}

/// Handles of the API into the daemon.
#[derive(Clone)]
pub struct Control {
    pub auth: Arc<Auth>,
    /// `None` when no daemon loop takes jobs (then mutating calls answer 503).
    pub jobs: Option<mpsc::Sender<Job>>,
    /// Every job's progress and answer (`GET /api/v1/jobs/{id}`).
    pub board: Arc<Board>,
    /// Wakes the daemon to fetch the policy repository now.
    pub git_wake: Arc<Notify>,
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": message.into() }))).into_response()
}

pub(crate) fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        Json(serde_json::json!({"error": "missing or invalid bearer token"})),
    )
        .into_response()
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
struct Body {
    policies: Vec<String>,
    selector: BTreeMap<String, String>,
    /// `success` or `failure` (finish).
    status: Option<String>,
    backup: Option<String>,
    /// Wait for the outcome (default true).
    wait: Option<bool>,
    /// Give up waiting after this many seconds (default 3600, at most `MAX_WAIT`).
    timeout_seconds: Option<u64>,
}

fn parse(bytes: &Bytes) -> Result<Body, Box<Response>> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Body::default());
    }
    serde_json::from_slice(bytes).map_err(|e| {
        Box::new(error(
            StatusCode::BAD_REQUEST,
            format!("invalid JSON body: {e}"),
        ))
    })
}

async fn submit(control: &Control, kind: JobKind, caller: &str, body: &Body) -> Response {
    let Some(jobs) = &control.jobs else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "this server runs no daemon loop",
        );
    };
    let wait = body.wait.unwrap_or(true);
    let limit = Duration::from_secs(body.timeout_seconds.unwrap_or(3600));
    if limit > MAX_WAIT {
        return error(
            StatusCode::BAD_REQUEST,
            format!(
                "timeoutSeconds is at most {}; wait: false and poll GET /api/v1/jobs/{{id}} for longer jobs",
                MAX_WAIT.as_secs()
            ),
        );
    }
    let (job, mut view) = control.board.create(kind, format!("token:{caller}"));
    let id = job.progress_id();
    if jobs.send(job).await.is_err() {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the daemon is shutting down",
        );
    }
    if !wait {
        return (
            StatusCode::ACCEPTED,
            Json(serde_json::json!({
                "accepted": true,
                "job": id,
                "href": format!("/api/v1/jobs/{id}"),
            })),
        )
            .into_response();
    }
    match tokio::time::timeout(limit, view.wait_for(|v| v.answer.is_some())).await {
        Ok(Ok(v)) => reply(v.answer.as_ref()),
        Ok(Err(_)) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the daemon stopped before answering",
        ),
        Err(_) => error(
            StatusCode::GATEWAY_TIMEOUT,
            format!(
                "no outcome within {}s; the job goes on: GET /api/v1/jobs/{id}",
                limit.as_secs()
            ),
        ),
    }
}

/// A job's answer over HTTP: 200 with the report when what was asked
/// succeeded, 422 with the report when it did not (the gate blocks, the
/// drill failed), and for a job that could not run, its error with 404
/// (unknown release, policy or drill), 409 (nothing to drill), 503 (no
/// revision applied, shutting down) or 500.
pub(crate) fn answer_status(answer: &JobAnswer) -> (StatusCode, serde_json::Value) {
    match answer {
        Ok(result) => (
            if result.ok() {
                StatusCode::OK
            } else {
                StatusCode::UNPROCESSABLE_ENTITY
            },
            serde_json::to_value(result).unwrap_or_default(),
        ),
        Err(e) => {
            let status = match e {
                JobError::NotFound(_) => StatusCode::NOT_FOUND,
                JobError::NothingToDrill => StatusCode::CONFLICT,
                JobError::NoRevision(_) | JobError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
                JobError::Failed(_) => StatusCode::INTERNAL_SERVER_ERROR,
            };
            (status, serde_json::json!({ "error": e.to_string() }))
        }
    }
}

fn reply(answer: Option<&JobAnswer>) -> Response {
    let Some(answer) = answer else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "job without an answer");
    };
    let (status, body) = answer_status(answer);
    (status, Json(body)).into_response()
}

/// The job resource as served: the view, with the answer as `result`
/// (`{"status": <HTTP status>, "body": ...}`, what a waiting call would
/// have answered) once the job is done.
fn job_json(view: &crate::jobs::JobView) -> serde_json::Value {
    let mut json = serde_json::to_value(view).unwrap_or_default();
    json["result"] = match &view.answer {
        Some(answer) => {
            let (status, body) = answer_status(answer);
            serde_json::json!({ "status": status.as_u16(), "body": body })
        }
        None => serde_json::Value::Null,
    };
    json
}

/// Longest `waitSeconds` of `GET /api/v1/jobs/{id}`.
pub const MAX_POLL: Duration = Duration::from_secs(60);

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct JobQuery {
    /// Answer once the job's `version` is above this (long poll).
    after: Option<u64>,
    /// How long to wait for that (default 0, at most `MAX_POLL`).
    wait_seconds: Option<u64>,
}

/// `GET /api/v1/jobs/{id}`: where a job stands (queued, waiting for a
/// running backup of its policy, running, done with its answer). With
/// `after=V&waitSeconds=S` it answers as soon as the job changed past
/// version `V`, or after `S` seconds unchanged.
pub async fn job(
    State(s): State<ApiState>,
    Path(id): Path<u64>,
    Query(q): Query<JobQuery>,
    headers: HeaderMap,
) -> Response {
    if s.control.auth.caller(&headers).is_none() {
        return unauthorized();
    }
    let Some(mut view) = s.control.board.get(id) else {
        return error(
            StatusCode::NOT_FOUND,
            format!(
                "no job {id}: the API keeps the newest {} jobs",
                crate::jobs::Board::KEEP
            ),
        );
    };
    let limit = Duration::from_secs(q.wait_seconds.unwrap_or(0)).min(MAX_POLL);
    if let Some(after) = q.after {
        let changed = view.wait_for(|v| v.version > after || v.answer.is_some());
        let _ = tokio::time::timeout(limit, changed).await;
    }
    let current = job_json(&view.borrow());
    Json(current).into_response()
}

/// The caller's token name and the parsed body, or the 401/400 answer.
fn authorized(
    s: &ApiState,
    headers: &HeaderMap,
    bytes: &Bytes,
) -> Result<(String, Body), Box<Response>> {
    let caller = s
        .control
        .auth
        .caller(headers)
        .map(str::to_string)
        .ok_or_else(|| Box::new(unauthorized()))?;
    Ok((caller, parse(bytes)?))
}

fn selection(body: &Body) -> Selection {
    Selection {
        policies: body.policies.clone(),
        selectors: body.selector.clone().into_iter().collect(),
    }
}

pub async fn deploy(
    State(s): State<ApiState>,
    Path((release, phase)): Path<(String, String)>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Response {
    let (caller, body) = match authorized(&s, &headers, &bytes) {
        Ok(ok) => ok,
        Err(r) => return *r,
    };
    let kind = match phase.as_str() {
        "start" => JobKind::DeployStart {
            release,
            selection: selection(&body),
        },
        "finish" => match body.status.as_deref() {
            Some("success") => JobKind::DeployFinish {
                release,
                success: true,
                selection: selection(&body),
            },
            Some("failure") => JobKind::DeployFinish {
                release,
                success: false,
                selection: selection(&body),
            },
            _ => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "finish needs {\"status\": \"success\"|\"failure\"}",
                );
            }
        },
        other => {
            return error(
                StatusCode::NOT_FOUND,
                format!("no deploy phase {other}; use start or finish"),
            );
        }
    };
    submit(&s.control, kind, &caller, &body).await
}

pub async fn policy_action(
    State(s): State<ApiState>,
    Path((name, action)): Path<(String, String)>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Response {
    let (caller, body) = match authorized(&s, &headers, &bytes) {
        Ok(ok) => ok,
        Err(r) => return *r,
    };
    let kind = match action.as_str() {
        "backup" => JobKind::Backup { policy: name },
        "drill" => JobKind::Drill {
            policy: name,
            backup: body.backup.clone(),
        },
        other => {
            return error(
                StatusCode::NOT_FOUND,
                format!("no policy action {other}; use backup or drill"),
            );
        }
    };
    submit(&s.control, kind, &caller, &body).await
}

/// `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>` (GitHub).
pub fn signature_valid(secret: &[u8], body: &[u8], header_value: &str) -> bool {
    let Some(hex_sig) = header_value.trim().strip_prefix("sha256=") else {
        return false;
    };
    let Ok(sig) = hex::decode(hex_sig) else {
        return false;
    };
    let Ok(mut mac) = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

pub async fn git_hook(State(s): State<ApiState>, headers: HeaderMap, bytes: Bytes) -> Response {
    let Some(secret) = &s.control.auth.webhook_secret else {
        return error(
            StatusCode::UNAUTHORIZED,
            "no webhook secret is configured (--webhook-secret-file)",
        );
    };
    let signature = headers
        .get("x-hub-signature-256")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !signature_valid(secret, &bytes, signature) {
        return error(
            StatusCode::UNAUTHORIZED,
            "missing or invalid X-Hub-Signature-256",
        );
    }
    s.control.git_wake.notify_one();
    (
        StatusCode::ACCEPTED,
        Json(serde_json::json!({"fetch": "scheduled"})),
    )
        .into_response()
}

pub async fn drills(State(s): State<ApiState>) -> Response {
    match s.catalog.drills(None, 200).await {
        Ok(rows) => Json(rows).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_answers_map_to_the_documented_status_codes() {
        use crate::jobs::JobResult;
        let outcome = |ok: bool| crate::model::Outcome {
            policy: "orders".into(),
            action: crate::model::ActionKind::Backup,
            backup_id: ok.then(|| "b1".to_string()),
            trigger: Some(crate::model::Trigger::Manual),
            release: None,
            ok,
            seconds: 0.0,
            retries: 0,
            detail: "d".into(),
        };
        let status = |a: JobAnswer| answer_status(&a).0.as_u16();
        assert_eq!(status(Ok(JobResult::Backups(vec![outcome(true)]))), 200);
        let (code, body) = answer_status(&Ok(JobResult::Backups(vec![outcome(false)])));
        assert_eq!(code.as_u16(), 422);
        assert_eq!(
            body[0]["policy"], "orders",
            "the body is the outcomes: {body}"
        );
        assert_eq!(status(Err(JobError::NotFound("no release r9".into()))), 404);
        assert_eq!(status(Err(JobError::NothingToDrill)), 409);
        assert_eq!(status(Err(JobError::NoRevision("none".into()))), 503);
        assert_eq!(status(Err(JobError::ShuttingDown)), 503);
        assert_eq!(status(Err(JobError::Failed("disk full".into()))), 500);
        let (_, body) = answer_status(&Err(JobError::Failed("disk full".into())));
        assert_eq!(body, serde_json::json!({"error": "disk full"}));
    }

    #[test]
    fn github_signature_format_is_verified() {
        let secret = b"It's a Secret to Everybody";
        // GitHub's documented example payload and signature.
        let body = b"Hello, World!";
        let good = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert!(signature_valid(secret, body, good));
        assert!(!signature_valid(secret, b"Hello, World?", good));
        assert!(!signature_valid(b"wrong", body, good));
        assert!(!signature_valid(secret, body, "sha1=abc"));
        assert!(!signature_valid(secret, body, ""));
    }

    #[test]
    fn tokens_file_is_parsed_and_short_tokens_refused() {
        let t =
            parse_tokens("# ci tokens\nci-runner 0123456789abcdef0123\nops:fedcba9876543210fedc\n")
                .unwrap();
        assert_eq!(t[0].0, "ci-runner");
        assert_eq!(
            t[1],
            ("ops".to_string(), "fedcba9876543210fedc".to_string())
        );
        assert!(parse_tokens("x short").is_err());
    }

    #[test]
    fn only_a_known_bearer_token_names_a_caller() {
        let auth = Auth::new(vec![("ci".into(), "0123456789abcdef0123".into())], None);
        let mut h = HeaderMap::new();
        assert!(auth.caller(&h).is_none());
        h.insert(header::AUTHORIZATION, "Bearer nope".parse().unwrap());
        assert!(auth.caller(&h).is_none());
        h.insert(
            header::AUTHORIZATION,
            "Bearer 0123456789abcdef0123".parse().unwrap(),
        );
        assert_eq!(auth.caller(&h), Some("ci"));
    }
}
