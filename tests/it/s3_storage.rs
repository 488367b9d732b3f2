//! The S3 storage against a real S3-compatible server on loopback (s3s-fs):
//! multipart uploads, pagination, error messages, a server dying mid-upload.

use std::io::{Read, Write};
use std::time::Duration;

use object_store::{BackoffConfig, RetryConfig};
use safepoint::policy::{S3Credentials, SecretRef};
use safepoint::storage::s3::{S3Config, S3Options, S3Storage};
use safepoint::storage::{Manifest, Storage, pipeline};

use crate::s3_server::{ACCESS_KEY, S3Server, SECRET_KEY};

/// The smallest part S3 allows (5 MiB), two in flight; fail fast.
const PART: usize = 5 << 20;

fn options() -> S3Options {
    S3Options {
        part_size: PART,
        max_in_flight: 2 * PART,
        retry: RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(10),
                max_backoff: Duration::from_millis(50),
                base: 2.0,
            },
            max_retries: 1,
            retry_timeout: Duration::from_secs(2),
        },
        ..S3Options::default()
    }
}

fn config(server: &S3Server, bucket: &str) -> S3Config {
    config_with(server, bucket, SECRET_KEY)
}

/// Credentials by file reference (the env variant is covered end to end).
fn config_with(server: &S3Server, bucket: &str, secret: &str) -> S3Config {
    let dir = std::env::temp_dir();
    let tag = format!("{}-{bucket}-{secret}", std::process::id());
    let (id_file, key_file) = (
        dir.join(format!("sp-s3-id-{tag}")),
        dir.join(format!("sp-s3-key-{tag}")),
    );
    std::fs::write(&id_file, format!("{ACCESS_KEY}\n")).unwrap();
    std::fs::write(&key_file, format!("{secret}\n")).unwrap();
    S3Config {
        name: "remote".into(),
        bucket: bucket.into(),
        prefix: "team/sp".into(),
        region: "us-east-1".into(),
        endpoint: Some(server.endpoint()),
        path_style: true,
        allow_http: true,
        credentials: Some(S3Credentials {
            access_key_id_from: SecretRef::File(id_file),
            secret_access_key_from: SecretRef::File(key_file),
        }),
    }
}

fn storage(server: &S3Server, bucket: &str) -> S3Storage {
    S3Storage::new(config(server, bucket), options()).unwrap()
}

/// Incompressible-looking bytes (xorshift), so sizes are what they say.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

pub fn manifest(policy: &str, id: &str, file: &str, stored: &[u8]) -> Manifest {
    let (size, checksum) = pipeline::checksum_of(stored).unwrap();
    serde_json::from_value(serde_json::json!({
        "format": 1, "id": id, "policy": policy, "storage": "remote", "sourceKind": "command",
        "trigger": "manual", "release": null, "commit": null, "requestedBy": null,
        "startedAt": "2026-11-25T10:00:00Z", "finishedAt": "2026-11-25T10:00:01Z",
        "artifact": {"file": file, "size": size, "rawSize": size, "checksum": checksum,
                     "compression": "zstd", "encryption": null},
        "status": "complete"
    }))
    .unwrap()
}

fn store_backup(st: &S3Storage, policy: &str, id: &str, data: &[u8]) -> Manifest {
    let mut sink = st.create(policy, id, "data.bin").unwrap();
    // Uneven writes, as a compressor makes them.
    for chunk in data.chunks(10_007) {
        sink.write_all(chunk).unwrap();
    }
    sink.finish().unwrap();
    let m = manifest(policy, id, "data.bin", data);
    st.commit(&m).unwrap();
    m
}

#[test]
fn s3_storage_round_trips_small_and_multipart_artifacts() {
    let server = S3Server::start();
    server.create_bucket("round-trip");
    let st = storage(&server, "round-trip");
    let big = noise(2 * PART + 123, 7); // three parts
    let small = noise(1000, 8); // one PUT
    let m_big = store_backup(&st, "app", "20261125T100000Z-aaaaaa", &big);
    let m_small = store_backup(&st, "app", "20261125T110000Z-bbbbbb", &small);
    assert!(
        server.parts.load(std::sync::atomic::Ordering::SeqCst) == 3,
        "the big artifact went up in parts"
    );
    assert!(
        server
            .object_path("round-trip", "team/sp/app/20261125T100000Z-aaaaaa/data.bin")
            .exists(),
        "layout is <prefix>/<policy>/<id>/<file>"
    );

    let listing = st.list().unwrap();
    assert_eq!(listing.manifests, vec![m_big.clone(), m_small.clone()]);
    assert!(listing.leftovers.is_empty() && listing.unreadable.is_empty());
    for (m, data) in [(&m_big, &big), (&m_small, &small)] {
        let mut back = Vec::new();
        st.open(m).unwrap().read_to_end(&mut back).unwrap();
        assert_eq!(&back, data);
        assert_eq!(st.artifact_size(m).unwrap(), Some(data.len() as u64));
        assert_eq!(safepoint::storage::verify(&st, m).unwrap(), None);
    }
    assert!(matches!(
        st.create("app", "20261125T100000Z-aaaaaa", "data.bin"),
        Err(safepoint::storage::StorageError::Exists { .. })
    ));

    st.remove("app", &m_big.id).unwrap();
    assert_eq!(st.list().unwrap().manifests, vec![m_small]);
    assert_eq!(st.artifact_size(&m_big).unwrap(), None);
}

#[test]
fn s3_listing_pages_through_more_than_a_thousand_objects() {
    let server = S3Server::start();
    server.create_bucket("many");
    let st = storage(&server, "many");
    // 1100 leftovers (artifact, no manifest) sort before two complete backups,
    // so the manifests are only found on the second page of the listing.
    for i in 0..1100 {
        let key = server.object_path("many", &format!("team/sp/aaa/id-{i:05}/data.bin"));
        std::fs::create_dir_all(key.parent().unwrap()).unwrap();
        std::fs::write(key, b"x").unwrap();
    }
    let a = store_backup(&st, "zzz", "20261125T100000Z-aaaaaa", b"first");
    let b = store_backup(&st, "zzz", "20261125T110000Z-bbbbbb", b"second");
    let listing = st.list().unwrap();
    assert_eq!(listing.leftovers.len(), 1100);
    assert_eq!(listing.manifests, vec![a, b]);
}

fn error_of<T>(r: Result<T, safepoint::storage::StorageError>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn wrong_credentials_missing_bucket_and_dead_endpoint_are_explained() {
    let server = S3Server::start();
    server.create_bucket("exists");

    let st = S3Storage::new(config_with(&server, "exists", "not-the-secret"), options()).unwrap();
    let msg = error_of(st.list());
    assert!(
        msg.contains("refused the credentials for bucket exists"),
        "{msg}"
    );
    assert!(msg.contains(&server.endpoint()), "{msg}");
    assert!(!msg.contains("not-the-secret"), "{msg}");

    let msg = error_of(storage(&server, "no-such-bucket").create("app", "x", "f"));
    assert!(
        msg.contains("bucket no-such-bucket does not exist"),
        "{msg}"
    );

    let mut unset = config(&server, "exists");
    unset.credentials = Some(S3Credentials {
        access_key_id_from: SecretRef::Env("SAFEPOINT_TEST_UNSET_VARIABLE".into()),
        secret_access_key_from: SecretRef::Env("SAFEPOINT_TEST_UNSET_VARIABLE".into()),
    });
    let msg = error_of(S3Storage::new(unset, options()));
    assert!(
        msg.contains("environment variable SAFEPOINT_TEST_UNSET_VARIABLE, which is not set"),
        "{msg}"
    );

    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let mut cfg = config(&server, "exists");
    cfg.endpoint = Some(format!("http://{dead}"));
    let msg = error_of(S3Storage::new(cfg, options()).unwrap().list());
    assert!(
        msg.contains(&format!("cannot reach http://{dead}")),
        "{msg}"
    );
}

#[test]
fn server_stopped_mid_upload_leaves_no_visible_backup_and_no_manifest() {
    let server = S3Server::start_stopping_at_part(2);
    server.create_bucket("dies");
    let st = storage(&server, "dies");
    let data = noise(4 * PART, 9);
    let mut sink = st
        .create("app", "20261125T100000Z-cccccc", "data.bin")
        .unwrap();
    let written = data.chunks(10_007).try_for_each(|c| sink.write_all(c));
    let failed = match written {
        Err(e) => e.to_string(),
        Ok(()) => error_of(sink.finish()),
    };
    assert!(
        failed.contains("cannot reach") || failed.contains("upload"),
        "{failed}"
    );

    let server = server.restart();
    let st = storage(&server, "dies");
    let listing = st.list().unwrap();
    assert!(listing.manifests.is_empty(), "{:?}", listing.manifests);
    assert!(
        !server
            .object_path("dies", "team/sp/app/20261125T100000Z-cccccc/data.bin")
            .exists(),
        "an unfinished multipart upload is never a visible object"
    );
}
