//! IO: the read-only status pages on the daemon's listener: `/` (repository,
//! policies, timeline, open alerts, recent backups), `/policies/{name}` and
//! `/backups/{id}`. Each request reads the daemon's last status and the
//! catalog, and `view` renders them. Same router, body limit and timeout as
//! the API; the pages add a strict Content-Security-Policy (no script, no
//! external asset) and forbid framing.

use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use chrono::Utc;
use serde::Deserialize;

use super::ApiState;
use super::view::{self, Inputs};
use crate::catalog::CatalogError;

/// The timeline window when `?days=` is not given, and its bounds.
pub const DEFAULT_DAYS: i64 = 30;
const MAX_DAYS: i64 = 366;
/// How many drills a page reads.
const DRILLS: i64 = 500;

const CSP: &str =
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'";

#[derive(Debug, Deserialize)]
pub struct Window {
    days: Option<i64>,
}

async fn inputs(s: &ApiState, days: Option<i64>) -> Result<Inputs, CatalogError> {
    let snapshot = s.snapshot.borrow().clone();
    Ok(Inputs {
        status: snapshot.status.clone(),
        cycle_at: snapshot.at,
        cycle_error: snapshot.cycle_error.clone(),
        backups: s.catalog.backups().await?,
        deploys: s.catalog.deploys(None).await?,
        drills: s.catalog.drills(None, DRILLS).await?,
        alerts: s.catalog.alerts().await?,
        now: Utc::now(),
        days: days.unwrap_or(DEFAULT_DAYS).clamp(1, MAX_DAYS),
    })
}

fn page(status: StatusCode, html: String) -> Response {
    (
        status,
        [
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        Html(html),
    )
        .into_response()
}

fn failed(what: String) -> Response {
    tracing::error!(error = %what, "status page");
    page(
        StatusCode::INTERNAL_SERVER_ERROR,
        view::missing(&format!("The page cannot be shown: {what}")),
    )
}

fn rendered(result: Option<Result<String, String>>, missing: String) -> Response {
    match result {
        Some(Ok(html)) => page(StatusCode::OK, html),
        Some(Err(e)) => failed(e),
        None => page(StatusCode::NOT_FOUND, view::missing(&missing)),
    }
}

pub async fn index(State(s): State<ApiState>, Query(w): Query<Window>) -> Response {
    match inputs(&s, w.days).await {
        Ok(i) => rendered(Some(view::index(&i)), String::new()),
        Err(e) => failed(e.to_string()),
    }
}

pub async fn policy(
    State(s): State<ApiState>,
    Path(name): Path<String>,
    Query(w): Query<Window>,
) -> Response {
    match inputs(&s, w.days).await {
        Ok(i) => rendered(
            view::policy(&i, &name),
            format!("No policy named {name} is in force."),
        ),
        Err(e) => failed(e.to_string()),
    }
}

pub async fn backup(State(s): State<ApiState>, Path(id): Path<String>) -> Response {
    match inputs(&s, None).await {
        Ok(i) => rendered(
            view::backup(&i, &id),
            format!("The catalog has no backup {id}."),
        ),
        Err(e) => failed(e.to_string()),
    }
}
