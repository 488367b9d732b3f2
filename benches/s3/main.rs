//! Benchmark: uploading a 1 GiB artifact to a loopback S3 server (s3s-fs,
//! in this process). Compares object_store's raw multipart upload with
//! safepoint's S3 sink (same crate, same server), then runs a full
//! `safepoint backup` of a directory holding the file under `/usr/bin/time`
//! for wall time and peak RSS. Run: `benches/s3/run.sh` (docs/performance.md).

#[path = "../../tests/it/s3_server.rs"]
#[allow(dead_code)]
mod s3_server;

use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use object_store::aws::AmazonS3Builder;
use object_store::path::Path as Key;
use object_store::{ClientOptions, ObjectStoreExt, WriteMultipart};
use s3_server::{ACCESS_KEY, S3Server, SECRET_KEY};
use safepoint::policy::{S3Credentials, SecretRef};
use safepoint::storage::Storage;
use safepoint::storage::s3::{S3Config, S3Options, S3Storage};

const SIZE: usize = 1 << 30;
const CHUNK: usize = 8 << 20;

fn mb_s(bytes: usize, secs: f64) -> f64 {
    bytes as f64 / 1e6 / secs
}

fn write_noise(path: &Path) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut buf = vec![0u8; CHUNK];
    for _ in 0..SIZE / CHUNK {
        for word in buf.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            word.copy_from_slice(&x.to_le_bytes());
        }
        f.write_all(&buf).unwrap();
    }
    f.flush().unwrap();
}

fn raw_multipart(server: &S3Server, file: &Path) -> f64 {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let store = Arc::new(
        AmazonS3Builder::new()
            .with_bucket_name("bench")
            .with_region("us-east-1")
            .with_endpoint(server.endpoint())
            .with_access_key_id(ACCESS_KEY)
            .with_secret_access_key(SECRET_KEY)
            .with_client_options(ClientOptions::new().with_allow_http(true))
            .build()
            .unwrap(),
    );
    let mut input = std::fs::File::open(file).unwrap();
    let start = Instant::now();
    rt.block_on(async {
        let upload = store
            .put_multipart(&Key::from("raw/data.bin"))
            .await
            .unwrap();
        let mut w = WriteMultipart::new_with_chunk_size(upload, CHUNK);
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = input.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            w.wait_for_capacity(4).await.unwrap();
            w.write(&buf[..n]);
        }
        w.finish().await.unwrap();
    });
    start.elapsed().as_secs_f64()
}

fn safepoint_sink(server: &S3Server, file: &Path, work: &Path) -> f64 {
    let (id, secret) = (work.join("key-id"), work.join("secret"));
    std::fs::write(&id, ACCESS_KEY).unwrap();
    std::fs::write(&secret, SECRET_KEY).unwrap();
    let st = S3Storage::new(
        S3Config {
            name: "bench".into(),
            bucket: "bench".into(),
            prefix: "sink".into(),
            region: "us-east-1".into(),
            endpoint: Some(server.endpoint()),
            path_style: true,
            allow_http: true,
            credentials: Some(S3Credentials {
                access_key_id_from: SecretRef::File(id),
                secret_access_key_from: SecretRef::File(secret),
            }),
        },
        S3Options::default(),
    )
    .unwrap();
    let mut input = std::fs::File::open(file).unwrap();
    let start = Instant::now();
    let id = format!(
        "sink-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let mut sink = st.create("bench", &id, "data.bin").unwrap();
    std::io::copy(&mut input, &mut sink).unwrap();
    sink.finish().unwrap();
    start.elapsed().as_secs_f64()
}

fn git(dir: &Path, args: &[&str]) {
    let ok = Command::new("git")
        .args([
            "-c",
            "user.name=b",
            "-c",
            "user.email=b@b",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .current_dir(dir)
        .status()
        .unwrap()
        .success();
    assert!(ok, "git {args:?}");
}

/// `(wall seconds, peak RSS KiB)` of a full `safepoint backup`.
fn safepoint_backup(server: &S3Server, work: &Path) -> (f64, u64) {
    let repo = work.join("repo");
    std::fs::create_dir_all(repo.join("policies")).unwrap();
    std::fs::write(
        repo.join("policies/all.yaml"),
        format!(
            "apiVersion: safepoint/v1\nkind: Storage\nmetadata: {{name: remote}}\nspec:\n  type: s3\n  bucket: bench\n  prefix: e2e\n  endpoint: {}\n---\napiVersion: safepoint/v1\nkind: BackupPolicy\nmetadata: {{name: big}}\nspec:\n  source: {{type: directory, path: {}}}\n  storage: remote\n  retention: {{keepLast: 1}}\n",
            server.endpoint(),
            work.join("src").display()
        ),
    )
    .unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "bench"]);
    let out = Command::new("/usr/bin/time")
        .args(["-f", "%e %M"])
        .arg(env!("CARGO_BIN_EXE_safepoint"))
        .args(["--repo"])
        .arg(&repo)
        .arg("--data-dir")
        .arg(work.join("data"))
        .args(["backup", "big"])
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .env("SAFEPOINT_LOG", "warn")
        .current_dir(work)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "safepoint backup failed: {stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    let mut it = last.split_whitespace();
    let wall = it.next().and_then(|s| s.parse().ok()).unwrap_or(f64::NAN);
    let rss = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    (wall, rss)
}

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let work = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(work.path().join("src")).unwrap();
    let file = work.path().join("src/data.bin");
    write_noise(&file);
    let server = S3Server::start();
    server.create_bucket("bench");

    // Interleaved, best of three each: the machine is shared.
    let (mut raw, mut sink) = (f64::MAX, f64::MAX);
    for _ in 0..3 {
        raw = raw.min(raw_multipart(&server, &file));
        sink = sink.min(safepoint_sink(&server, &file, work.path()));
    }
    let (wall, rss_kib) = safepoint_backup(&server, work.path());
    println!("| what | seconds | MB/s |");
    println!("|---|---|---|");
    println!(
        "| object_store raw `WriteMultipart` (8 MiB parts, 4 in flight) | {raw:.2} | {:.0} |",
        mb_s(SIZE, raw)
    );
    println!(
        "| safepoint S3 sink (8 MiB parts, 2 in flight + 1 filling) | {sink:.2} | {:.0} |",
        mb_s(SIZE, sink)
    );
    println!(
        "| `safepoint backup` end to end (tar, zstd, BLAKE3, upload, read-back verify) | {wall:.2} | {:.0} |",
        mb_s(SIZE, wall)
    );
    println!();
    println!("sink / raw = {:.2}x", sink / raw);
    println!(
        "safepoint backup peak RSS = {:.1} MB",
        rss_kib as f64 * 1024.0 / 1e6
    );
}
