//! Examples in the documents, executed from the documents themselves: every
//! ```` ```yaml ```` block of docs/policy-reference.md validates (alone when it
//! is self-contained, and all together), the shipped policies/ validate, and
//! the script lines of docs/ci/gitlab-ci.yml run against a real daemon the
//! way GitLab runs them (script in order, stop at the first failure, then
//! after_script with CI_JOB_STATUS).

use std::path::{Path, PathBuf};

use crate::common::{Fixture, STORAGE};
use crate::contract_cli::run;
use crate::contract_server::Daemon;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The bodies of the fenced blocks of `lang` in a Markdown file.
pub fn fenced_blocks(doc: &str, lang: &str) -> Vec<String> {
    let open = format!("```{lang}");
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in doc.lines() {
        match &mut current {
            None if line.trim_end() == open => current = Some(String::new()),
            Some(_) if line.trim_end() == "```" => blocks.extend(current.take()),
            Some(block) => {
                block.push_str(line);
                block.push('\n');
            }
            None => {}
        }
    }
    blocks
}

fn validate(dir: &Path) -> serde_json::Value {
    let mut cmd = assert_cmd::Command::cargo_bin("safepoint").unwrap();
    cmd.current_dir(dir)
        .args(["validate"])
        .arg(dir)
        .args(["--output", "json"]);
    let (code, out, err) = run(&mut cmd);
    let v: serde_json::Value = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("validate {}: no JSON ({e}): {out}{err}", dir.display()));
    assert_eq!(code, Some(0), "{} does not validate: {v:#}", dir.display());
    v
}

#[test]
fn every_yaml_example_of_the_policy_reference_validates() {
    let doc = std::fs::read_to_string(root().join("docs/policy-reference.md")).unwrap();
    let blocks = fenced_blocks(&doc, "yaml");
    assert!(blocks.len() >= 4, "found {} yaml blocks", blocks.len());
    let all = tempfile::tempdir().unwrap();
    for (i, block) in blocks.iter().enumerate() {
        std::fs::write(all.path().join(format!("example-{i}.yaml")), block).unwrap();
        // A Storage or Notifier stands alone; a BackupPolicy names others.
        if !block.contains("kind: BackupPolicy") {
            let alone = tempfile::tempdir().unwrap();
            std::fs::write(alone.path().join("example.yaml"), block).unwrap();
            validate(alone.path());
        }
    }
    let v = validate(all.path());
    assert!(v["policies"].as_u64().unwrap() >= 1, "{v}");
    assert!(v["storages"].as_u64().unwrap() >= 2, "{v}");
    assert!(v["notifiers"].as_u64().unwrap() >= 1, "{v}");
}

#[test]
fn the_shipped_policies_validate() {
    let dir: PathBuf = root().join("policies");
    let v = validate(&dir);
    let yaml = std::fs::read_dir(&dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "yaml" || x == "yml")
        })
        .count();
    assert_eq!(v["files"].as_u64().unwrap() as usize, yaml, "{v}");
    assert!(v["policies"].as_u64().unwrap() >= 1, "{v}");
}

/// The `- ` lines of a top-level-job list key (`script:`, `after_script:`).
fn gitlab_lines(yaml: &str, key: &str) -> Vec<String> {
    let lines: Vec<&str> = yaml.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.trim() == format!("{key}:"))
        .unwrap_or_else(|| panic!("no {key}:"));
    lines[at + 1..]
        .iter()
        .map(|l| l.trim())
        .take_while(|l| l.starts_with('-') || l.starts_with('#'))
        .filter_map(|l| l.strip_prefix("- "))
        .map(str::to_string)
        .collect()
}

const TOKEN: &str = "contract-token-0123456789";

fn gate_policy() -> String {
    "apiVersion: safepoint/v1\nkind: BackupPolicy\nmetadata:\n  name: orders\n  labels: {team: payments}\nspec:\n  source: {type: directory, path: d}\n  storage: local\n  deploy:\n    before: snapshot\n    onSuccess: baseline\n    onFailure: [pin-pre-deploy]\n  retention: {keepLast: 5}\n".into()
}

/// Runs the job as GitLab does; `deploy_ok` decides `./deploy.sh`'s exit.
fn gitlab_job(d: &Daemon, release: &str, deploy_ok: bool) -> (bool, String) {
    let yaml = std::fs::read_to_string(root().join("docs/ci/gitlab-ci.yml")).unwrap();
    let runner = tempfile::tempdir().unwrap();
    std::fs::write(
        runner.path().join("deploy.sh"),
        if deploy_ok {
            "#!/bin/sh\nexit 0\n"
        } else {
            "#!/bin/sh\necho deploy failed >&2\nexit 1\n"
        },
    )
    .unwrap();
    let bin_dir = assert_cmd::cargo::cargo_bin("safepoint")
        .parent()
        .unwrap()
        .to_path_buf();
    let sh = |line: &str, status: &str| {
        std::process::Command::new("sh")
            .args(["-ec", &format!("chmod +x deploy.sh; {line}")])
            .current_dir(runner.path())
            .env(
                "PATH",
                format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap()),
            )
            .env("SAFEPOINT_SERVER", d.url())
            .env("SAFEPOINT_TOKEN", TOKEN)
            .env("CI_COMMIT_TAG", release)
            .env("RELEASE", release)
            .env("CI_JOB_STATUS", status)
            .output()
            .unwrap()
    };
    let mut transcript = String::new();
    let mut ok = true;
    for line in gitlab_lines(&yaml, "script") {
        let out = sh(&line, "running");
        transcript += &format!(
            "$ {line}\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if !out.status.success() {
            ok = false;
            break;
        }
    }
    let status = if ok { "success" } else { "failed" };
    for line in gitlab_lines(&yaml, "after_script") {
        let out = sh(&line, status);
        transcript += &format!("$ {line}\n{}", String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "after_script failed: {transcript}");
    }
    assert!(
        !runner.path().join(".safepoint").exists(),
        "the runner kept no state"
    );
    (ok, transcript)
}

#[test]
fn the_gitlab_example_gates_records_success_and_pins_on_failure_against_a_real_daemon() {
    let f = Fixture::new(&[("storage.yaml", STORAGE), ("orders.yaml", &gate_policy())]);
    std::fs::create_dir_all(f.work().join("d")).unwrap();
    std::fs::write(f.work().join("d/data"), "x").unwrap();
    let d = Daemon::start(&f, &[]);

    let (ok, transcript) = gitlab_job(&d, "v3.0.0", true);
    assert!(ok, "{transcript}");
    let backups = f.backups("orders");
    let of = |trigger: &str, release: &str| {
        backups
            .iter()
            .filter(|b| b["trigger"] == trigger && b["release"] == release)
            .count()
    };
    assert_eq!(of("pre-deploy", "v3.0.0"), 1, "{backups:?}");
    assert!(
        backups
            .iter()
            .any(|b| b["release"] == "v3.0.0" && b["trigger"] != "pre-deploy"),
        "the success baseline: {backups:?}"
    );
    assert!(
        backups.iter().all(|b| b["pinned"].is_null()),
        "nothing pinned on success"
    );

    let (ok, transcript) = gitlab_job(&d, "v3.0.1", false);
    assert!(!ok, "the failed deploy fails the job: {transcript}");
    let pre = f
        .backups("orders")
        .into_iter()
        .find(|b| b["trigger"] == "pre-deploy" && b["release"] == "v3.0.1")
        .unwrap_or_else(|| panic!("no pre-deploy snapshot: {transcript}"));
    assert!(
        pre["pinned"].as_str().is_some_and(|p| p.contains("v3.0.1")),
        "after_script pinned the snapshot: {pre} {transcript}"
    );
}
