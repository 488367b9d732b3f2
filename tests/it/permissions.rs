//! The operator's permissions (`--permissions`): what a merged policy may
//! touch. Each attack of a policy author (command source reading the token
//! file, directory source on the daemon's secrets or data dir, another
//! team's secrets, a database host of the author's choosing) is rejected by
//! `validate` and by the daemon (Stalled, nothing runs) with file:line, and
//! allowed only where the operator grants it; the daemon's own files never.

use std::path::{Path, PathBuf};

use crate::common::{Fixture, PERMISSIVE, STORAGE, dir_policy, git, sqlite_policy};

fn policy(name: &str, labels: &str, source: &str) -> String {
    format!(
        "apiVersion: safepoint/v1\nkind: BackupPolicy\nmetadata:\n  name: {name}\n  labels: {{{labels}}}\n\
         spec:\n  source:\n{source}\n  storage: local\n  retention: {{keepLast: 2}}\n  schedule: {{cron: \"0 * * * *\"}}\n"
    )
}

/// A token file like the one `--api-tokens-file` names, outside the work dir.
fn token_file(f: &Fixture) -> PathBuf {
    let dir = f.tmp.path().join("etc-safepoint");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("api-tokens");
    std::fs::write(&file, "ci 0123456789abcdef0123456789\n").unwrap();
    file
}

/// `safepoint validate` of the fixture's policy directory: (exit code, stdout).
fn validate(f: &Fixture, env: &[(&str, &Path)]) -> (Option<i32>, String) {
    let mut cmd = f.cmd();
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd
        .arg("validate")
        .arg(f.repo().join("policies"))
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code(), text)
}

/// One daemon cycle, then the diagnostics `status` shows (empty = Ready
/// revision). Without any valid revision, `daemon --once` exits 2.
fn daemon_once(f: &Fixture, args: &[&str]) -> Vec<String> {
    let out = f
        .cmd()
        .args(["daemon", "--once"])
        .args(args)
        .output()
        .unwrap();
    let status = f.json(&["status"]);
    let diags: Vec<String> = status["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap().to_owned())
        .collect();
    let code = out.status.code();
    assert!(
        code == Some(0) || (code == Some(2) && !diags.is_empty()),
        "daemon --once: {code:?} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    diags
}

fn assert_one_diag(diags: &[String], at: &str, says: &str) {
    assert!(
        diags.iter().any(|d| d.contains(at) && d.contains(says)),
        "expected `{at}` … `{says}` in {diags:#?}"
    );
}

#[test]
fn a_command_source_is_refused_unless_the_operator_grants_it() {
    let f = Fixture::new(&[("storage.yaml", STORAGE)]);
    let tokens = token_file(&f);
    let marker = f.tmp.path().join("it-ran");
    let cmd = format!(
        "    type: command\n    backupCommand: 'id; cat {}; touch {}'",
        tokens.display(),
        marker.display()
    );
    f.commit(&[("steal.yaml", &policy("steal", "", &cmd))], "steal");

    let (code, text) = validate(&f, &[]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("steal.yaml:8:"), "{text}");
    assert!(
        text.contains("source type `command` is not allowed for BackupPolicy `steal` by the embedded default permissions"),
        "{text}"
    );
    let diags = daemon_once(&f, &[]);
    assert_one_diag(&diags, "policies/steal.yaml:8", "sourceKinds");
    assert!(!marker.exists(), "a rejected revision ran its command");
    assert!(!f.store().join("steal").exists());

    // The operator allows command sources: the same revision is valid and runs.
    f.permit(PERMISSIVE);
    assert_eq!(validate(&f, &[]).0, Some(0));
    assert!(daemon_once(&f, &[]).is_empty());
    assert!(marker.exists());
    assert_eq!(f.backups("steal").len(), 1);
}

#[test]
fn the_daemons_secrets_and_data_dir_are_never_a_source_whatever_the_grants() {
    let f = Fixture::new(&[("storage.yaml", STORAGE)]);
    f.permit(PERMISSIVE); // every root, every kind
    let tokens = token_file(&f);
    let tokens_dir = tokens.parent().unwrap().to_path_buf();
    f.commit(
        &[
            (
                "a.yaml",
                &dir_policy("tokens-dir", &tokens_dir.to_string_lossy()),
            ),
            ("b.yaml", &dir_policy("data-dir", "data")),
            ("c.yaml", &sqlite_policy("catalog", "data/catalog.db")),
        ],
        "steal the daemon's files",
    );
    let env = [("SAFEPOINT_API_TOKENS_FILE", tokens.as_path())];
    let (code, text) = validate(&f, &env);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("a.yaml:8:"), "{text}");
    assert!(
        text.contains("contains the daemon's API tokens file"),
        "{text}"
    );
    assert!(text.contains("b.yaml:8:"), "{text}");
    assert!(text.contains("is the daemon's data directory"), "{text}");
    assert!(text.contains("c.yaml:8:"), "{text}");

    let tokens_arg = tokens.to_string_lossy().into_owned();
    let diags = daemon_once(&f, &["--api-tokens-file", &tokens_arg]);
    assert_one_diag(&diags, "policies/a.yaml:8", "API tokens file");
    assert_one_diag(&diags, "policies/b.yaml:8", "data directory");
    assert_one_diag(&diags, "policies/c.yaml:8", "data directory");
    assert!(!f.store().exists(), "nothing ran");
}

#[test]
fn directory_sources_stay_under_the_granted_roots() {
    let f = Fixture::new(&[("storage.yaml", STORAGE)]);
    let root = f.work().join("team-a");
    std::fs::create_dir_all(root.join("files")).unwrap();
    std::fs::write(root.join("files/x"), "x").unwrap();
    std::fs::create_dir_all(f.work().join("other")).unwrap();
    f.permit(&format!(
        "apiVersion: safepoint/v1\nkind: Permissions\ngrants:\n  - name: team-a\n    sourceKinds: [directory]\n    sourceRoots: [{}]\n",
        root.display()
    ));
    f.commit(&[("a.yaml", &dir_policy("a", "other"))], "outside");
    let (code, text) = validate(&f, &[]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("a.yaml:8:"), "{text}");
    assert!(
        text.contains("`sourceRoots` of the grants that apply (`team-a` (line 4))"),
        "{text}"
    );
    assert_one_diag(&daemon_once(&f, &[]), "policies/a.yaml:8", "is not allowed");

    f.commit(&[("a.yaml", &dir_policy("a", "team-a/files"))], "inside");
    assert_eq!(validate(&f, &[]).0, Some(0));
    assert!(daemon_once(&f, &[]).is_empty());
    assert_eq!(f.backups("a").len(), 1);
}

const TWO_TEAMS: &str = r#"apiVersion: safepoint/v1
kind: Permissions
grants:
  - name: shared-storage
    match: {names: [local]}
  - name: payments
    match:
      paths: ["teams/payments/**"]
    sourceKinds: [postgres]
    hosts: ["pg.payments.internal:5432"]
    secrets:
      env: ["PAYMENTS_*"]
      files: ["/run/secrets/payments/*"]
  - name: web
    match:
      labels: {team: web}
    sourceKinds: [postgres]
    hosts: ["*.web.internal"]
    secrets:
      env: ["WEB_*"]
"#;

#[test]
fn secrets_and_database_hosts_belong_to_their_team() {
    let f = Fixture::new(&[("storage.yaml", STORAGE)]);
    f.permit(TWO_TEAMS);
    std::fs::create_dir_all(f.repo().join("policies/teams/web")).unwrap();
    std::fs::create_dir_all(f.repo().join("policies/teams/payments")).unwrap();
    let pg = |url: &str, secret: &str| {
        format!("    type: postgres\n    url: {url}\n    passwordFrom: {{{secret}}}")
    };
    let good_payments = policy(
        "pay",
        "",
        &pg(
            "postgres://backup@pg.payments.internal:5432/pay",
            "env: PAYMENTS_PG",
        ),
    );
    f.commit(
        &[
            (
                "teams/web/env.yaml",
                &policy(
                    "web-env",
                    "team: web",
                    &pg("postgres://backup@pg.web.internal/web", "env: PAYMENTS_PG"),
                ),
            ),
            (
                "teams/web/file.yaml",
                &policy(
                    "web-file",
                    "team: web",
                    &pg(
                        "postgres://backup@pg.web.internal/web",
                        "file: /run/secrets/payments/pg",
                    ),
                ),
            ),
            (
                "teams/web/host.yaml",
                &policy(
                    "web-host",
                    "team: web",
                    &pg(
                        "postgres://backup@collector.evil.example:5432/x",
                        "env: WEB_PG",
                    ),
                ),
            ),
            ("teams/payments/pay.yaml", &good_payments),
        ],
        "web reaches for payments' secrets",
    );
    let (code, text) = validate(&f, &[]);
    assert_eq!(code, Some(1), "{text}");
    for (file, what) in [
        (
            "teams/web/env.yaml:10:",
            "environment variable `PAYMENTS_PG` is not allowed for BackupPolicy `web-env`",
        ),
        (
            "teams/web/file.yaml:10:",
            "secret file `/run/secrets/payments/pg` is not allowed",
        ),
        (
            "teams/web/host.yaml:9:",
            "database host `collector.evil.example:5432` is not allowed",
        ),
    ] {
        assert!(
            text.contains(file) && text.contains(what),
            "{file} {what}: {text}"
        );
    }
    assert!(!text.contains("pay.yaml"), "{text}");
    let diags = daemon_once(&f, &[]);
    assert_one_diag(&diags, "policies/teams/web/env.yaml:10", "secrets.env");
    assert_one_diag(&diags, "policies/teams/web/host.yaml:9", "hosts");

    // What the operator grants passes: each team with its own secret and host.
    f.commit(
        &[
            (
                "teams/web/env.yaml",
                &policy(
                    "web-env",
                    "team: web",
                    &pg("postgres://backup@pg.web.internal/web", "env: WEB_PG"),
                ),
            ),
            (
                "teams/web/file.yaml",
                &policy(
                    "web-file",
                    "team: web",
                    &pg(
                        "postgres://backup@db2.web.internal:6432/web",
                        "env: WEB_OTHER",
                    ),
                ),
            ),
            (
                "teams/web/host.yaml",
                &good_payments
                    .replace("name: pay", "name: pay2")
                    .replace("labels: {}", "labels: {team: web}")
                    .replace("PAYMENTS_PG", "WEB_PG")
                    .replace("pg.payments.internal:5432", "pg.web.internal"),
            ),
        ],
        "each team its own",
    );
    let (code, text) = validate(&f, &[]);
    assert_eq!(code, Some(0), "{text}");
}

#[test]
fn a_symlink_to_the_daemons_files_is_refused_when_the_backup_runs() {
    let f = Fixture::new(&[("storage.yaml", STORAGE)]);
    f.permit(PERMISSIVE);
    f.commit(
        &[
            ("a.yaml", &dir_policy("innocent-dir", "innocent")),
            ("b.yaml", &sqlite_policy("innocent-db", "innocent.db")),
        ],
        "looks harmless",
    );
    // Validation sees ordinary paths; only at run time do they lead to the data dir.
    assert_eq!(validate(&f, &[]).0, Some(0));
    assert_eq!(
        f.json(&["status"])["ready"],
        true,
        "the revision is applied"
    );
    std::os::unix::fs::symlink(f.data(), f.work().join("innocent")).unwrap();
    std::os::unix::fs::symlink(f.data().join("catalog.db"), f.work().join("innocent.db")).unwrap();
    for name in ["innocent-dir", "innocent-db"] {
        let out = f.cmd().args(["backup", name]).output().unwrap();
        assert_eq!(out.status.code(), Some(1));
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(text.contains("refusing to read"), "{name}: {text}");
        assert!(f.backups(name).is_empty());
    }
    // A hard link to a secret inside an allowed directory is refused too.
    let tokens = token_file(&f);
    std::fs::remove_file(f.work().join("innocent")).unwrap();
    std::fs::create_dir_all(f.work().join("innocent")).unwrap();
    std::fs::hard_link(&tokens, f.work().join("innocent/notes.txt")).unwrap();
    let out = f
        .cmd()
        .env("SAFEPOINT_API_TOKENS_FILE", &tokens)
        .args(["backup", "innocent-dir"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("API tokens file"), "{text}");
}

#[test]
fn a_bad_permissions_file_stops_every_command_with_file_and_line() {
    let f = Fixture::new(&[("storage.yaml", STORAGE)]);
    f.permit("apiVersion: safepoint/v1\nkind: Permissions\ngrants:\n  - name: a\n    sourceKinds: [comand]\n    hosts: [\"db:99999\"]\n");
    for args in [
        &["status"][..],
        &["daemon", "--once"],
        &["validate", "policies"],
    ] {
        let out = f.cmd().args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        let file = f.permissions_file().display().to_string();
        assert!(err.contains(&format!("{file}:5:")), "{err}");
        assert!(err.contains("did you mean `command`?"), "{err}");
        assert!(err.contains(&format!("{file}:6:")), "{err}");
    }
}

/// The README quick start, unchanged: `safepoint daemon` in a checkout with
/// the example policies, on the embedded default permissions.
#[test]
fn the_quick_start_runs_on_the_embedded_default() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"));
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path();
    std::fs::create_dir_all(repo.join("policies")).unwrap();
    for entry in std::fs::read_dir(src.join("policies")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, repo.join("policies").join(path.file_name().unwrap())).unwrap();
    }
    std::fs::create_dir_all(repo.join("examples/files")).unwrap();
    std::fs::copy(src.join("examples/app.db"), repo.join("examples/app.db")).unwrap();
    for entry in std::fs::read_dir(src.join("examples/files")).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::copy(
                &path,
                repo.join("examples/files").join(path.file_name().unwrap()),
            )
            .unwrap();
        }
    }
    git(repo, &["init", "-q", "-b", "main"]);
    git(repo, &["add", "-A"]);
    git(repo, &["commit", "-q", "-m", "quick start"]);
    let run = |args: &[&str]| {
        let mut cmd = assert_cmd::Command::cargo_bin("safepoint").unwrap();
        for var in [
            "SAFEPOINT_DATA_DIR",
            "SAFEPOINT_REPO",
            "SAFEPOINT_PERMISSIONS",
        ] {
            cmd.env_remove(var);
        }
        cmd.current_dir(repo)
            .env("SAFEPOINT_LOG", "warn")
            .args(args);
        cmd
    };
    run(&["daemon", "--once"]).assert().success();
    let out = run(&["status", "--output", "json"]).output().unwrap();
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["ready"], true, "{status}");
    for p in status["policies"].as_array().unwrap() {
        assert!(p["last_good"]["id"].is_string(), "{p}");
    }
    run(&["validate", "policies"]).assert().success();
}
