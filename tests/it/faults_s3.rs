//! S3 timeout of the fault matrix (docs/operations.md): an endpoint that
//! accepts connections and never answers. Every request ends with a timeout
//! (`S3Options::request_timeout`, 300 s by default, 1 s here; retried per
//! `retry`), so a listing and an upload fail with an error naming the
//! endpoint instead of hanging, and the upload never completes (no object,
//! so no manifest either).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use object_store::{BackoffConfig, RetryConfig};
use safepoint::policy::{S3Credentials, SecretRef};
use safepoint::storage::Storage;
use safepoint::storage::s3::{S3Config, S3Options, S3Storage};

/// A TCP server on loopback that accepts every connection, reads what it is
/// sent and never answers.
struct Silent {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
}

impl Silent {
    fn start() -> Silent {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let count = accepted.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                count.fetch_add(1, Ordering::SeqCst);
                let mut reader = conn.try_clone().unwrap();
                open.lock().unwrap().push(conn);
                std::thread::spawn(move || {
                    let mut buf = [0u8; 64 << 10];
                    while reader.read(&mut buf).is_ok_and(|n| n > 0) {}
                });
            }
        });
        Silent { addr, accepted }
    }
}

fn storage(server: &Silent) -> S3Storage {
    let dir = tempfile::tempdir().unwrap().keep();
    let (id, key) = (dir.join("id"), dir.join("key"));
    std::fs::write(&id, "AKIDEXAMPLE\n").unwrap();
    std::fs::write(&key, "not-a-real-secret\n").unwrap();
    let config = S3Config {
        name: "remote".into(),
        bucket: "silent".into(),
        prefix: "sp".into(),
        region: "us-east-1".into(),
        endpoint: Some(format!("http://{}", server.addr)),
        path_style: true,
        allow_http: true,
        credentials: Some(S3Credentials {
            access_key_id_from: SecretRef::File(id),
            secret_access_key_from: SecretRef::File(key),
        }),
    };
    let options = S3Options {
        part_size: 5 << 20,
        max_in_flight: 10 << 20,
        retry: RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(10),
                max_backoff: Duration::from_millis(50),
                base: 2.0,
            },
            max_retries: 1,
            retry_timeout: Duration::from_secs(5),
        },
        request_timeout: Duration::from_secs(1),
    };
    S3Storage::new(config, options).unwrap()
}

#[test]
fn s3_endpoint_that_never_answers_fails_listing_and_upload_with_a_timeout() {
    let server = Silent::start();
    let st = storage(&server);
    let endpoint = format!("http://{}", server.addr);

    let msg = match st.list() {
        Ok(_) => panic!("a listing of a silent server fails"),
        Err(e) => e.to_string(),
    };
    assert!(msg.contains(&format!("cannot reach {endpoint}")), "{msg}");
    assert!(
        msg.contains("timed out") || msg.contains("timeout"),
        "{msg}"
    );

    // 6 MiB: one part goes up while the rest waits for `finish`.
    let data = vec![0x42u8; 6 << 20];
    let msg = match st.create("app", "20261130T040000Z-aaaaaa", "data.bin") {
        Err(e) => e.to_string(),
        Ok(mut sink) => match sink.write_all(&data) {
            Err(e) => e.to_string(),
            Ok(()) => sink
                .finish()
                .expect_err("an upload to a silent server fails")
                .to_string(),
        },
    };
    assert!(msg.contains(&endpoint), "names the endpoint: {msg}");
    assert!(
        server.accepted.load(Ordering::SeqCst) >= 2,
        "the requests reached the server"
    );
}
