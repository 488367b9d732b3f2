use std::path::PathBuf;

use super::*;
use crate::policy::{Diagnostic, PolicyFile, load_permitted};

const TWO_TEAMS: &str = r#"apiVersion: safepoint/v1
kind: Permissions
grants:
  - name: everyone
    sourceKinds: [postgres, sqlite]
  - name: payments
    match:
      paths: ["teams/payments/**"]
    sourceKinds: [directory]
    sourceRoots: [/srv/payments]
    scratchRoots: [/var/tmp/drills/payments]
    hosts: ["*.payments.internal:5432"]
    secrets:
      env: ["PAYMENTS_*"]
      files: ["/run/secrets/payments/*"]
  - name: web
    match:
      labels: {team: web}
    hosts: [pg.web.internal]
    secrets:
      env: ["WEB_*"]
"#;

fn two_teams() -> Permissions {
    let mut p = parse("/etc/safepoint/permissions.yaml", TWO_TEAMS).expect("valid");
    p.policy_root = "policies".into();
    p.base_dir = PathBuf::from("/srv/work");
    p.protected.push(Protected {
        path: PathBuf::from("/etc/safepoint/tokens"),
        what: "API tokens file".into(),
    });
    p.protected.push(Protected {
        path: PathBuf::from("/srv/work/.safepoint"),
        what: "data directory".into(),
    });
    p
}

fn policy(labels: &str, source: &str) -> String {
    format!(
        "apiVersion: safepoint/v1\nkind: BackupPolicy\nmetadata:\n  name: p\n  labels: {{{labels}}}\n\
         spec:\n  storage: local\n  source:\n{source}\n---\napiVersion: safepoint/v1\nkind: Storage\n\
         metadata: {{name: local}}\nspec: {{type: local, path: /backups}}\n"
    )
}

fn check(perms: &Permissions, path: &str, text: &str) -> Vec<Diagnostic> {
    let files = [PolicyFile::new(path, text)];
    load_permitted(&files, perms).err().unwrap_or_default()
}

#[test]
fn the_two_team_file_parses_into_grants_with_their_lines() {
    let p = two_teams();
    let names: Vec<&str> = p.grants.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(names, ["everyone", "payments", "web"]);
    assert_eq!(p.grants[1].line, 6);
    assert_eq!(p.grants[1].source_roots, [PathBuf::from("/srv/payments")]);
}

#[test]
fn a_bad_operator_file_reports_every_problem_with_its_line() {
    let text = "apiVersion: safepoint/v1\nkind: Permissions\ngrants:\n  - name: a\n    sourceKinds: [comand]\n    sourceRoots: [relative/dir]\n    hosts: [\"db:99999\"]\n  - name: a\n";
    let diags = parse("perm.yaml", text).unwrap_err();
    let lines: Vec<usize> = diags.iter().map(|d| d.line).collect();
    assert_eq!(lines, [5, 6, 7, 8], "{diags:#?}");
    assert!(diags[0].hint.as_deref().unwrap().contains("`command`"));
    let unknown = parse("perm.yaml", "apiVersion: safepoint/v1\nkind: Permissions\ngrants:\n  - name: a\n    sourcekinds: [sqlite]\n").unwrap_err();
    assert_eq!(unknown[0].line, 5, "{unknown:#?}");
    assert!(unknown[0].message.contains("sourcekinds"), "{unknown:#?}");
}

#[test]
fn command_sources_need_a_grant() {
    let cmd = "    type: command\n    backupCommand: 'id; cat /etc/safepoint/tokens'";
    let diags = check(
        &Permissions::single_team(),
        "policies/x.yaml",
        &policy("", cmd),
    );
    assert_eq!(diags.len(), 1, "{diags:#?}");
    assert_eq!(diags[0].line, 9);
    assert!(
        diags[0]
            .message
            .contains("source type `command` is not allowed"),
        "{}",
        diags[0]
    );
    assert!(diags[0].hint.as_deref().unwrap().contains("sourceKinds"));
    assert!(
        check(
            &Permissions::unrestricted(),
            "policies/x.yaml",
            &policy("", cmd)
        )
        .is_empty()
    );
}

#[test]
fn directory_sources_stay_inside_the_roots_of_their_team() {
    let p = two_teams();
    let src = |path: &str| format!("    type: directory\n    path: {path}");
    assert!(
        check(
            &p,
            "policies/teams/payments/a.yaml",
            &policy("", &src("/srv/payments/uploads"))
        )
        .is_empty()
    );
    let outside = check(
        &p,
        "policies/teams/payments/a.yaml",
        &policy("", &src("/srv/web")),
    );
    assert!(
        outside[0].message.contains("source path `/srv/web`"),
        "{outside:#?}"
    );
    assert!(
        outside[0]
            .hint
            .as_deref()
            .unwrap()
            .contains("`payments` (line 6)")
    );
    // Another team's file: not even the source type is granted.
    let other = check(
        &p,
        "policies/teams/web/a.yaml",
        &policy("", &src("/srv/payments/uploads")),
    );
    assert!(
        other[0].message.contains("source type `directory`"),
        "{other:#?}"
    );
}

#[test]
fn the_daemons_own_files_are_never_readable() {
    let mut p = Permissions::unrestricted();
    p.base_dir = PathBuf::from("/srv/work");
    p.protected = two_teams().protected;
    for path in [
        "/etc/safepoint",
        "/etc/safepoint/tokens",
        ".safepoint",
        "./.safepoint/locks",
        "/",
    ] {
        let diags = check(
            &p,
            "x.yaml",
            &policy("", &format!("    type: directory\n    path: {path}")),
        );
        assert_eq!(diags.len(), 1, "{path}: {diags:#?}");
        assert!(diags[0].message.contains("the daemon's"), "{}", diags[0]);
    }
    let sqlite = check(
        &p,
        "x.yaml",
        &policy("", "    type: sqlite\n    path: .safepoint/catalog.db"),
    );
    assert!(sqlite[0].message.contains("data directory"), "{sqlite:#?}");
    let secret = "    type: postgres\n    url: postgres://u@h/db\n    passwordFrom: {file: /etc/safepoint/tokens}";
    assert!(
        check(&p, "x.yaml", &policy("", secret))[0]
            .message
            .contains("API tokens file")
    );
    let env = "    type: postgres\n    url: postgres://u@h/db\n    passwordFrom: {env: SAFEPOINT_SMTP_PASSWORD}";
    assert!(
        check(&p, "x.yaml", &policy("", env))[0]
            .message
            .contains("belongs to the daemon")
    );
}

#[test]
fn secrets_and_hosts_follow_the_team() {
    let p = two_teams();
    let pg = |url: &str, env: &str| {
        format!("    type: postgres\n    url: {url}\n    passwordFrom: {{env: {env}}}")
    };
    let web = "team: web";
    assert!(
        check(
            &p,
            "policies/w.yaml",
            &policy(web, &pg("postgres://u@pg.web.internal/db", "WEB_PG"))
        )
        .is_empty()
    );
    let stolen = check(
        &p,
        "policies/w.yaml",
        &policy(web, &pg("postgres://u@pg.web.internal/db", "PAYMENTS_PG")),
    );
    assert_eq!(stolen.len(), 1, "{stolen:#?}");
    assert!(
        stolen[0]
            .message
            .contains("environment variable `PAYMENTS_PG`"),
        "{}",
        stolen[0]
    );
    assert!(stolen[0].hint.as_deref().unwrap().contains("secrets.env"));
    let exfil = check(
        &p,
        "policies/w.yaml",
        &policy(web, &pg("postgres://u@evil.example:5432/db", "WEB_PG")),
    );
    assert!(
        exfil[0]
            .message
            .contains("database host `evil.example:5432`"),
        "{exfil:#?}"
    );
    let sneaky = check(
        &p,
        "policies/w.yaml",
        &policy(
            web,
            &pg(
                "postgres://u@pg.web.internal/db?host=evil.example",
                "WEB_PG",
            ),
        ),
    );
    assert!(sneaky[0].message.contains("evil.example"), "{sneaky:#?}");
    let file = "    type: postgres\n    url: postgres://u@pg.payments.internal/db\n    passwordFrom: {file: /run/secrets/payments/pg}";
    assert!(check(&p, "policies/teams/payments/a.yaml", &policy("", file)).is_empty());
    let nobody = check(&p, "policies/teams/ops/a.yaml", &policy("", file));
    assert_eq!(nobody.len(), 2, "{nobody:#?}");
}

#[test]
fn drill_targets_are_checked_like_sources() {
    let p = two_teams();
    let text = policy("", "    type: directory\n    path: /srv/payments/a").replace(
        "  storage: local\n",
        "  storage: local\n  drill:\n    target: {type: directory, path: /tmp/x}\n",
    );
    let diags = check(&p, "policies/teams/payments/a.yaml", &text);
    assert_eq!(diags.len(), 1, "{diags:#?}");
    assert!(
        diags[0].message.contains("drill scratch path `/tmp/x`"),
        "{}",
        diags[0]
    );
    let ok = text.replace("/tmp/x", "/var/tmp/drills/payments/a");
    assert!(check(&p, "policies/teams/payments/a.yaml", &ok).is_empty());
}
