//! The deployment files, checked by what can run here (no Docker engine, no
//! cluster): Kubernetes manifests against the official schemas with
//! kubernetes-validate, the Dockerfile with the official Dockerfile parser.
//! Both tools live in the venv that `.ci/setup` creates.

use std::path::{Path, PathBuf};
use std::process::Command;

fn venv_bin(name: &str) -> PathBuf {
    let venv =
        std::env::var("SAFEPOINT_CI_VENV").unwrap_or_else(|_| "/opt/safepoint-ci/venv".into());
    let bin = Path::new(&venv).join("bin").join(name);
    assert!(
        bin.exists(),
        "{} is missing: run `bash .ci/setup` first (it installs the test tools)",
        bin.display()
    );
    bin
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn kubernetes_manifests_pass_strict_schema_validation() {
    let dir = root().join("deploy/kubernetes");
    let files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    assert!(files.len() >= 2);
    let out = Command::new(venv_bin("kubernetes-validate"))
        .arg("--strict")
        .args(&files)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    for kind in [
        "deployment/safepoint",
        "service/safepoint",
        "persistentvolumeclaim/safepoint-data",
        // The HA variant (safepoint-ha.yaml).
        "poddisruptionbudget/safepoint",
    ] {
        assert!(
            text.contains(&format!("passed for resource {kind}")),
            "{kind} not validated:\n{text}"
        );
    }
}

#[test]
fn dockerfile_parses_and_builds_the_binary_as_a_non_root_user() {
    let script = r#"
import json, sys, dockerfile
print(json.dumps([[c.cmd, list(c.value)] for c in dockerfile.parse_file(sys.argv[1])]))
"#;
    let out = Command::new(venv_bin("python"))
        .args(["-c", script])
        .arg(root().join("deploy/Dockerfile"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cmds: Vec<(String, Vec<String>)> = serde_json::from_slice(&out.stdout).unwrap();
    let froms = cmds.iter().filter(|(c, _)| c == "FROM").count();
    assert_eq!(froms, 2, "multi-stage build");
    let build = cmds
        .iter()
        .find(|(c, v)| c == "RUN" && v[0].contains("cargo build"))
        .expect("a cargo build step");
    assert!(build.1[0].contains("--locked") && build.1[0].contains("--bin safepoint"));
    // Every path copied from the build context exists in the repository.
    for (cmd, args) in &cmds {
        if cmd == "COPY" && !args[0].starts_with("--from") && !args[0].starts_with('/') {
            for src in &args[..args.len() - 1] {
                assert!(
                    root().join(src).exists(),
                    "COPY {src}: not in the repository"
                );
            }
        }
    }
    let user = cmds
        .iter()
        .rev()
        .find(|(c, _)| c == "USER")
        .expect("a USER instruction");
    assert_ne!(user.1[0], "root");
    assert_ne!(user.1[0], "0");
    let entry = cmds.iter().find(|(c, _)| c == "ENTRYPOINT").unwrap();
    assert!(entry.1.iter().any(|a| a.ends_with("/safepoint")));
}
