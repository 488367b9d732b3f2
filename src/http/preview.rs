//! IO: `POST /api/v1/previews` — the consequences of proposed policy files
//! against the daemon's revision in force and the backups its catalog
//! knows, never executed (`crate::preview`). Needs a bearer token: it takes
//! a large body and a fleet-sized computation, and it shows backup ids.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Json, Response};
use chrono::Utc;
use serde::Deserialize;

use super::{ApiState, error};
use crate::policy::PolicyFile;
use crate::preview::{self, Proposal};

/// Largest preview request (the proposed repository's policy files).
pub const PREVIEW_BODY_LIMIT: usize = 16 * 1024 * 1024;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PreviewRequest {
    /// The ref the files were read at (shown in the title).
    #[serde(rename = "ref")]
    git_ref: Option<String>,
    /// The commit it resolved to.
    commit: Option<String>,
    /// Every policy file of the proposed revision, path relative to the
    /// repository root.
    files: Vec<UploadedFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UploadedFile {
    path: String,
    text: String,
}

pub async fn preview(State(s): State<ApiState>, headers: HeaderMap, bytes: Bytes) -> Response {
    if s.control.auth.caller(&headers).is_none() {
        return super::api::unauthorized();
    }
    let request: PreviewRequest = match serde_json::from_slice(&bytes) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "invalid JSON body: {e}; expected {{\"ref\", \"commit\", \"files\": [{{\"path\", \"text\"}}]}}"
                ),
            );
        }
    };
    let Some(in_force) = s.snapshot.borrow().in_force.clone() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "no revision in force yet: the daemon has not applied a valid revision or finished a cycle",
        );
    };
    // The catalog as the daemon read it after its last cycle (reading
    // every backup row again took ~24 s at 2 M backups); before the first,
    // read now.
    let cached = s.snapshot.borrow().observed.clone();
    let observed = match cached {
        Some(o) => o,
        None => match preview::observed(&s.catalog).await {
            Ok(o) => Arc::new(o),
            Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        },
    };
    let proposal = Proposal {
        git_ref: request.git_ref,
        commit: request.commit,
        files: request
            .files
            .into_iter()
            .map(|f| PolicyFile::new(f.path, f.text))
            .collect(),
    };
    let computed = tokio::task::spawn_blocking(move || {
        let f = Arc::clone(&in_force);
        preview::report(
            Some(&f.commit),
            &f.desired,
            proposal,
            &observed,
            Utc::now(),
            &f.options,
            &f.permissions,
        )
    })
    .await;
    match computed {
        Ok(report) => Json(report).into_response(),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("preview failed: {e}"),
        ),
    }
}
