//! The router's timeouts on a real loopback listener: a call waiting for a
//! job's outcome is bounded by its `timeoutSeconds`, not by the read timeout.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Notify, mpsc, watch};

use super::api::{Auth, Control};
use super::{ApiState, Snapshot, router_with};
use crate::catalog::Catalog;
use crate::jobs::Job;
use crate::metrics::Metrics;

const TOKEN: &str = "unit-token-0123456789abcdef";

/// Serves the router with `read_timeout` on 127.0.0.1:0; the daemon loop is
/// the returned receiver (jobs sent to it are never answered).
async fn serve(
    read_timeout: Duration,
) -> (std::net::SocketAddr, mpsc::Receiver<Job>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let catalog = Catalog::open_sqlite(&dir.path().join("catalog.db"))
        .await
        .unwrap();
    let (jobs_tx, jobs_rx) = mpsc::channel(16);
    let (_snapshot_tx, snapshot) = watch::channel(Arc::new(Snapshot::default()));
    let state = ApiState {
        metrics: Arc::new(Metrics::new()),
        snapshot,
        catalog,
        control: Control {
            auth: Arc::new(Auth::new(vec![("ci".into(), TOKEN.into())], None)),
            jobs: Some(jobs_tx),
            board: Default::default(),
            git_wake: Arc::new(Notify::new()),
        },
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = router_with(state, read_timeout);
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, jobs_rx, dir)
}

/// The status code of a `POST path` with `body`.
async fn post(addr: std::net::SocketAddr, path: &str, body: &str) -> u16 {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_gate_waiting_longer_than_the_read_timeout_gets_its_own_504_not_408() {
    let (addr, mut jobs, _dir) = serve(Duration::from_millis(300)).await;
    let started = Instant::now();
    let code = post(
        addr,
        "/api/v1/deploys/v1/start",
        r#"{"policies": ["orders"], "timeoutSeconds": 1}"#,
    )
    .await;
    assert_eq!(code, 504, "the caller's timeoutSeconds decides, not 300 ms");
    assert!(started.elapsed() >= Duration::from_secs(1));
    let job = jobs.try_recv().expect("the job reached the daemon loop");
    assert_eq!(job.caller, "token:ci");
}

#[tokio::test]
async fn a_wait_beyond_the_maximum_is_refused_with_400() {
    let (addr, mut jobs, _dir) = serve(Duration::from_secs(30)).await;
    let too_long = super::api::MAX_WAIT.as_secs() + 1;
    let body = format!(r#"{{"timeoutSeconds": {too_long}}}"#);
    assert_eq!(
        post(addr, "/api/v1/policies/orders/backup", &body).await,
        400
    );
    assert!(jobs.try_recv().is_err(), "nothing was enqueued");
}
