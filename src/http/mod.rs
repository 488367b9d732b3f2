//! IO: the daemon's HTTP listener (loopback by default). The status pages
//! (`/`, `/policies/{name}`, `/backups/{id}`, in `pages`), `GET /metrics` (OpenMetrics text, or the classic text format when the
//! scraper does not ask for OpenMetrics), `/healthz` (the process answers),
//! `/readyz` (the catalog answers, a valid revision is applied and the last
//! cycle did not fail),
//! `/api/v1/status`, `/api/v1/plan` (both from the daemon's last cycle) and
//! `/api/v1/backups` (the catalog). Every request has a body size limit and
//! a timeout. The mutating endpoints are in `api`; docs/openapi.yaml
//! describes them all (tests/it/openapi.rs keeps it in step with `router`).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::watch;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;

pub mod api;
mod pages;
pub mod preview;
pub mod timeline;
pub mod view;

use crate::catalog::Catalog;
use crate::metrics::Metrics;
use crate::plan::Plan;
use crate::status::Status;

/// Largest request body accepted (413 above).
pub const BODY_LIMIT: usize = 64 * 1024;
/// Requests taking longer are answered 408 (except those waiting for a
/// job's outcome, see `router_with`).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What the daemon's last cycle left for the API.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Snapshot {
    /// When the last cycle ended; `None` before the first.
    pub at: Option<DateTime<Utc>>,
    pub status: Option<Status>,
    pub plan: Option<Plan>,
    /// Why the last cycle failed, if it did.
    pub cycle_error: Option<String>,
    /// The revision in force, for `POST /api/v1/previews`.
    #[serde(skip)]
    pub in_force: Option<Arc<InForce>>,
    /// The backups, runs and drills the catalog held at `at` (what status
    /// was computed from): previews answer from it instead of reading every
    /// catalog row per request.
    #[serde(skip)]
    pub observed: Option<Arc<crate::observed::ObservedState>>,
}

/// The revision in force and the planner's options (previews compare a
/// proposal with it).
#[derive(Debug)]
pub struct InForce {
    pub commit: String,
    pub desired: crate::policy::DesiredState,
    pub options: crate::plan::PlanOptions,
    pub permissions: Arc<crate::policy::Permissions>,
}

impl Snapshot {
    /// `Ok` when ready, else the reason.
    pub fn readiness(&self) -> Result<(), String> {
        if self.at.is_none() {
            return Err("no reconcile cycle has finished yet".into());
        }
        if let Some(e) = &self.cycle_error {
            return Err(format!("the last reconcile cycle failed: {e}"));
        }
        match &self.status {
            Some(s) if s.applied.is_some() => Ok(()),
            Some(s) => Err(s.reason.clone()),
            None => Err("no status yet".into()),
        }
    }
}

#[derive(Clone)]
pub struct ApiState {
    pub metrics: Arc<Metrics>,
    pub snapshot: watch::Receiver<Arc<Snapshot>>,
    pub catalog: Catalog,
    pub control: api::Control,
}

pub(crate) fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": message.into() }))).into_response()
}

/// OpenMetrics when the scraper asks for it (Prometheus does), else the
/// classic text format (curl, `promtool check metrics`).
async fn metrics(State(s): State<ApiState>, headers: HeaderMap) -> Response {
    let openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    let (content_type, encoded) = if openmetrics {
        (OPENMETRICS, s.metrics.encode())
    } else {
        (PROMETHEUS_TEXT, s.metrics.encode_classic())
    };
    match encoded {
        Ok(text) => ([(header::CONTENT_TYPE, content_type)], text).into_response(),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode metrics: {e}"),
        ),
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(s): State<ApiState>) -> Response {
    // The snapshot is as old as the last cycle: ask the catalog now.
    let reachable = tokio::time::timeout(std::time::Duration::from_secs(2), s.catalog.ping()).await;
    if !matches!(reachable, Ok(true)) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "not ready: the catalog {} is unreachable\n",
                s.catalog.location()
            ),
        )
            .into_response();
    }
    let snapshot = s.snapshot.borrow().clone();
    match snapshot.readiness() {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {reason}\n"),
        )
            .into_response(),
    }
}

async fn status(State(s): State<ApiState>) -> Response {
    let snapshot = s.snapshot.borrow().clone();
    match &snapshot.status {
        Some(st) => Json(st).into_response(),
        None => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "no reconcile cycle has finished yet",
        ),
    }
}

async fn plan(State(s): State<ApiState>) -> Response {
    let snapshot = s.snapshot.borrow().clone();
    match &snapshot.plan {
        Some(p) => Json(p).into_response(),
        None => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "no plan yet: no valid revision applied or no cycle finished",
        ),
    }
}

async fn backups(State(s): State<ApiState>) -> Response {
    match s.catalog.backups().await {
        Ok(rows) => Json(rows).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "no such endpoint; see docs/operations.md",
    )
}

pub fn router(state: ApiState) -> Router {
    router_with(state, REQUEST_TIMEOUT)
}

/// `read_timeout` bounds every request (answered 408) except those that wait
/// for a job's outcome: the daemon loop answers them within their
/// `timeoutSeconds` (at most `api::MAX_WAIT`, else 504), so their bound is
/// that plus `read_timeout`. A gate whose backups take longer than
/// `read_timeout` must not be cut off while its snapshot is being taken.
pub fn router_with(state: ApiState, read_timeout: Duration) -> Router {
    let jobs = Router::new()
        .route("/api/v1/deploys/{release}/{phase}", post(api::deploy))
        .route("/api/v1/policies/{name}/{action}", post(api::policy_action))
        .route("/api/v1/jobs/{id}", get(api::job))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            api::MAX_WAIT + read_timeout,
        ));
    Router::new()
        .route("/", get(pages::index))
        .route("/policies/{name}", get(pages::policy))
        .route("/backups/{id}", get(pages::backup))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/api/v1/status", get(status))
        .route("/api/v1/plan", get(plan))
        .route("/api/v1/backups", get(backups))
        .route("/api/v1/drills", get(api::drills))
        .route("/api/v1/hooks/git", post(api::git_hook))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            read_timeout,
        ))
        .merge(jobs)
        .fallback(not_found)
        .with_state(state.clone())
        .layer(RequestBodyLimitLayer::new(BODY_LIMIT))
        .merge(previews(state, read_timeout))
}

/// `POST /api/v1/previews` takes a whole policy repository: its own body limit.
fn previews(state: ApiState, read_timeout: Duration) -> Router {
    Router::new()
        .route("/api/v1/previews", post(preview::preview))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            read_timeout,
        ))
        .with_state(state)
        .layer(axum::extract::DefaultBodyLimit::max(
            preview::PREVIEW_BODY_LIMIT,
        ))
        .layer(RequestBodyLimitLayer::new(preview::PREVIEW_BODY_LIMIT))
}

/// Serves `router` on `listener` until `stop` turns true; requests in flight
/// are finished (graceful shutdown).
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await
}

#[cfg(test)]
mod tests;
