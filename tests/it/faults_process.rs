//! Process and data-directory faults of the fault matrix (docs/operations.md):
//! SIGKILL between the artifact and the manifest, SIGKILL in the middle of a
//! deletion, the data directory (the catalog) full. The kills are exact, not
//! timed: `strace` delivers SIGKILL at the one system call that marks the
//! moment (the rename of that backup's manifest; the unlink of that backup's
//! manifest or of the pin marker after it), and that call is not executed.

use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

use crate::common::{Fixture, PERMISSIVE, STORAGE, dir_policy, spawn};
use crate::contract_cli::mkfifo;
use crate::contract_server::{held_policy, open_writer, wait_for};
use crate::dbs::{backup_dirs, runs};

/// Runs `safepoint ARGS` under strace, which kills it with SIGKILL on the
/// first of `syscalls` touching `path` instead of executing it.
fn killed_at(f: &Fixture, syscalls: &str, path: &Path, args: &[&str]) -> ExitStatus {
    let mut cmd = Command::new("strace");
    cmd.args(["-f", "-qq", "-o", "/dev/null", "-P"]).arg(path);
    cmd.arg(format!("--trace={syscalls}"))
        .arg(format!("--inject={syscalls}:error=EIO:signal=KILL"))
        .arg("--")
        .arg(assert_cmd::cargo::cargo_bin("safepoint"))
        .current_dir(f.work())
        .env("SAFEPOINT_LOG", "warn")
        .args(f.global_args())
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // strace exits with the tracee's status; a killed tracee makes strace
    // kill itself with the same signal.
    cmd.status().expect("strace runs (apt-get install strace)")
}

fn files_fixture() -> Fixture {
    let f = Fixture::new(&[
        ("storage.yaml", STORAGE),
        ("files.yaml", &dir_policy("files", "d")),
    ]);
    std::fs::create_dir_all(f.work().join("d")).unwrap();
    std::fs::write(f.work().join("d/x"), "some content worth keeping").unwrap();
    f
}

fn ids(f: &Fixture) -> Vec<String> {
    f.backups("files")
        .iter()
        .map(|b| b["id"].as_str().unwrap().to_string())
        .collect()
}

/// Attaches strace to the running `pid` (all its threads, and those it
/// starts): SIGKILL on the first of `syscalls` touching `path`, instead of
/// executing it. Returns once every thread is traced.
fn kill_on(pid: u32, syscalls: &str, path: &Path) -> std::process::Child {
    let tracer = Command::new("strace")
        .args(["-f", "-qq", "-o", "/dev/null", "-p", &pid.to_string(), "-P"])
        .arg(path)
        .arg(format!("--trace={syscalls}"))
        .arg(format!("--inject={syscalls}:error=EIO:signal=KILL"))
        .spawn()
        .expect("strace runs (apt-get install strace)");
    wait_for("strace attached to every thread", || {
        std::fs::read_dir(format!("/proc/{pid}/task"))
            .unwrap()
            .filter_map(|t| t.ok())
            .all(|t| {
                std::fs::read_to_string(t.path().join("status")).is_ok_and(|st| {
                    st.lines().any(|l| {
                        l.starts_with("TracerPid:") && l.split_whitespace().nth(1) != Some("0")
                    })
                })
            })
    });
    tracer
}

#[test]
fn process_killed_between_artifact_and_manifest_leaves_an_invisible_leftover_that_is_removed() {
    // The backup's command reads a FIFO this test holds open: the backup
    // directory (its id) is known before the artifact is complete.
    let f = Fixture::new(&[
        ("storage.yaml", STORAGE),
        ("held.yaml", &held_policy("held")),
    ]);
    f.permit(PERMISSIVE);
    let fifo = f.work().join("gate.fifo");
    mkfifo(&fifo);
    let mut child = spawn(&f, &["backup", "held"]);
    let mut writer = open_writer(&fifo);
    writer.write_all(&vec![7u8; 1 << 20]).unwrap();
    wait_for("the backup directory", || {
        backup_dirs(&f, "held").len() == 1
    });
    let dir = std::fs::canonicalize(&backup_dirs(&f, "held")[0]).unwrap();
    let mut tracer = kill_on(
        child.id(),
        "rename,renameat,renameat2",
        &dir.join("manifest.json.tmp"),
    );
    // The command ends: artifact complete, read back, manifest written to
    // its temp file, and killed at its rename.
    drop(writer);
    let status = child.wait().unwrap();
    let _ = tracer.wait();
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");

    // The artifact is whole (the manifest's temp file, written after the
    // read-back, names its size), the manifest itself is not there.
    assert!(!dir.join("manifest.json").exists(), "no manifest");
    let pending: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json.tmp")).unwrap()).unwrap();
    let artifact = dir.join(pending["artifact"]["file"].as_str().unwrap());
    assert_eq!(
        std::fs::metadata(&artifact).unwrap().len(),
        pending["artifact"]["size"].as_u64().unwrap(),
        "the artifact was complete: {pending}"
    );

    // The next observation never lists it, removes it and records the run
    // interrupted.
    assert!(f.backups("held").is_empty(), "never listed");
    assert!(!dir.exists(), "leftover removed");
    assert_eq!(runs(&f, "held").last().unwrap().0, "interrupted");
}

#[test]
fn process_killed_mid_delete_leaves_the_backup_whole_or_gone_never_missing() {
    let f = files_fixture();
    for _ in 0..3 {
        f.cmd().args(["backup", "files"]).assert().success();
    }
    let all = ids(&f);
    assert_eq!(all.len(), 3);
    // keepLast 2: prune deletes the oldest (listed last; ids taken within
    // one second do not sort by age).
    let oldest = all.last().unwrap().clone();
    let dir = std::fs::canonicalize(f.store().join("files").join(&oldest)).unwrap();
    let healthy = |f: &Fixture| {
        let status = f.json(&["status"]);
        assert_eq!(
            status["policies"][0]["drift"],
            serde_json::json!([]),
            "{status}"
        );
        for b in f.backups("files") {
            assert_eq!(b["health"], "verified", "{b}");
        }
    };

    // Killed at the manifest's unlink (not executed): the backup is whole,
    // listed and verified again by the next observation.
    let status = killed_at(
        &f,
        "unlink,unlinkat",
        &dir.join("manifest.json"),
        &["prune"],
    );
    assert!(!status.success(), "killed: {status:?}");
    assert!(dir.join("manifest.json").exists());
    assert_eq!(ids(&f), all, "still whole and listed");
    healthy(&f);

    // Killed right after the manifest is gone, at the pin marker's unlink:
    // the backup is gone (never `missing`), its leftover removed.
    let status = killed_at(&f, "unlink,unlinkat", &dir.join("pin.json"), &["prune"]);
    assert!(!status.success(), "killed: {status:?}");
    assert!(
        !dir.join("manifest.json").exists(),
        "manifest removed first"
    );
    assert!(dir.exists(), "the kill landed mid-delete");
    let kept: Vec<String> = all.iter().filter(|i| **i != oldest).cloned().collect();
    assert_eq!(ids(&f), kept, "gone");
    assert!(!dir.exists(), "leftover removed");
    healthy(&f);
}

/// A tmpfs of `size` at `dir`, unmounted on drop; `None` (with the reason
/// printed) when this machine refuses the mount (not root).
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(dir: &Path, size: &str) -> Option<SmallDisk> {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .unwrap();
        if !out.status.success() {
            eprintln!(
                "skipped: mounting a tmpfs needs root (CI runs as root): {}",
                String::from_utf8_lossy(&out.stderr)
            );
            return None;
        }
        Some(SmallDisk(dir.to_path_buf()))
    }

    /// Writes a file until the disk is full.
    fn fill(&self) {
        use std::io::Write;
        let mut filler = std::fs::File::create(self.0.join("filler")).unwrap();
        let chunk = vec![0x5au8; 64 << 10];
        loop {
            if let Err(e) = filler.write_all(&chunk).and_then(|()| filler.sync_all()) {
                assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
                break;
            }
        }
    }

    fn free(&self) {
        std::fs::remove_file(self.0.join("filler")).unwrap();
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn data_dir_full_fails_the_cycle_with_the_catalog_error_and_deletes_nothing() {
    let f = files_fixture();
    let Some(disk) = SmallDisk::mount(&f.data(), "4m") else {
        return;
    };
    for _ in 0..3 {
        f.cmd().args(["backup", "files"]).assert().success();
    }
    let before = backup_dirs(&f, "files");
    assert_eq!(before.len(), 3);

    // keepLast 2: the cycle would delete the oldest backup.
    disk.fill();
    let out = f.cmd().args(["daemon", "--once"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("catalog") && stderr.to_lowercase().contains("full"),
        "says what is full: {stderr}"
    );
    assert_eq!(backup_dirs(&f, "files"), before, "nothing deleted");

    // Space again: the same cycle runs and applies the retention.
    disk.free();
    f.cmd().args(["daemon", "--once"]).assert().success();
    assert_eq!(backup_dirs(&f, "files").len(), 2);
}
