//! Tests of `load` as a whole: a complete example, every diagnostic kind
//! with its exact file:line, and the generated schema file.

use std::path::PathBuf;

use chrono::TimeDelta;

use super::*;

const STORAGE: &str = "\
apiVersion: safepoint/v1
kind: Storage
metadata:
  name: primary
spec:
  type: local
  path: /var/lib/safepoint/backups
  encryption:
    ageRecipients: [age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p]
";

const NOTIFIER: &str = "\
apiVersion: safepoint/v1
kind: Notifier
metadata:
  name: oncall
spec:
  email:
    to: [oncall@example.com]
    from: safepoint@example.com
  webhook:
    url: https://hooks.example.com/safepoint
    secretFrom: {env: WEBHOOK_SECRET}
";

/// A complete example policy using every kind of field, verbatim.
const POLICY: &str = r#"apiVersion: safepoint/v1
kind: BackupPolicy
metadata:
  name: orders-db
  labels: {team: payments}
spec:
  source:
    type: postgres                    # postgres | mysql | sqlite | directory | command
    url: postgres://backup@db.internal:5432/orders
    passwordFrom: {env: ORDERS_DB_PASSWORD}   # or {file: /run/secrets/orders}
  storage: primary                    # a Storage name
  schedule: {cron: "0 */6 * * *", timezone: UTC}
  rpo: 6h                             # newest good backup older than this = drift
  releases:
    tagPattern: "v*"                  # a new matching tag => release baseline backup
  deploy:
    before: snapshot                  # what `deploy start` does for this policy
    onSuccess: baseline               # backup marking the new known-good state
    onFailure: [pin-pre-deploy, forensic-snapshot, alert]
  retention:
    keepLast: 3
    keepHourly: 24
    keepDaily: 7
    keepWeekly: 4
    keepMonthly: 12
    keepYearly: 0
    keepReleases: 10                  # release baselines and their pre-deploy snapshots
  drill:
    schedule: {cron: "30 3 * * *"}
    target:                           # segregated scratch server, never the source
      type: postgres
      url: postgres://drill@scratch.internal:5432/postgres
    verify:
      completeness: exact             # exact | estimate | off: per-table row counts vs the backup's
      checks:
        - name: users exist
          sql: "select count(*) from users"
          expect: ">= 1"
    maxDuration: 15m                  # the recovery-time objective the drill must meet
  alerts: {notifiers: [oncall]}
  suspend: false
"#;

fn file(path: &str, text: &str) -> PolicyFile {
    PolicyFile::new(path, text)
}

fn base() -> Vec<PolicyFile> {
    vec![
        file("policies/storage.yaml", STORAGE),
        file("policies/notifier.yaml", NOTIFIER),
    ]
}

/// Loads `files` expecting failure; the diagnostics as `file:line: message`.
fn problems(files: &[PolicyFile]) -> Vec<Diagnostic> {
    match load(files) {
        Ok(state) => panic!("expected diagnostics, got {state:#?}"),
        Err(diags) => diags,
    }
}

/// The example policy with `edit` applied to its text.
fn policy_with(edit: impl Fn(&str) -> String) -> Vec<PolicyFile> {
    let mut files = base();
    files.push(file("policies/orders.yaml", &edit(POLICY)));
    files
}

/// The single diagnostic; asserts its file, line and a part of its message.
fn only(diags: &[Diagnostic], file: &str, line: usize, message_part: &str) -> Diagnostic {
    assert_eq!(diags.len(), 1, "{}", render(diags));
    let d = diags[0].clone();
    assert_eq!((d.file.as_str(), d.line), (file, line), "{d}");
    assert!(d.message.contains(message_part), "{d}");
    d
}

fn render(diags: &[Diagnostic]) -> String {
    diags.iter().map(|d| format!("{d}\n")).collect()
}

const ORDERS: &str = "policies/orders.yaml";

#[test]
fn spec_example_loads_into_the_expected_model() {
    let mut files = base();
    files.push(file(ORDERS, POLICY));
    let state = load(&files).unwrap_or_else(|d| panic!("{}", render(&d)));
    let utc = chrono_tz::UTC;
    let expected = BackupPolicy {
        name: "orders-db".into(),
        labels: [("team".to_owned(), "payments".to_owned())].into(),
        source: Source::Postgres {
            url: "postgres://backup@db.internal:5432/orders".into(),
            password_from: Some(SecretRef::Env("ORDERS_DB_PASSWORD".into())),
            bin_dir: None,
            pitr: None,
        },
        storage: "primary".into(),
        schedule: Some(Schedule {
            cron: "0 */6 * * *".into(),
            timezone: utc,
        }),
        rpo: Some(TimeDelta::hours(6)),
        release_tag_pattern: Some("v*".into()),
        deploy: DeploySpec {
            snapshot_before: true,
            baseline_on_success: true,
            on_failure: vec![
                OnFailure::PinPreDeploy,
                OnFailure::ForensicSnapshot,
                OnFailure::Alert,
            ],
        },
        retention: Retention {
            keep_last: 3,
            keep_hourly: 24,
            keep_daily: 7,
            keep_weekly: 4,
            keep_monthly: 12,
            keep_yearly: 0,
            keep_releases: 10,
        },
        drill: Some(DrillSpec {
            schedule: Some(Schedule {
                cron: "30 3 * * *".into(),
                timezone: utc,
            }),
            target: DrillTarget::Postgres {
                url: "postgres://drill@scratch.internal:5432/postgres".into(),
                password_from: None,
            },
            completeness: Completeness::Exact,
            checks: vec![DrillCheck {
                name: "users exist".into(),
                sql: "select count(*) from users".into(),
                expect: crate::model::Expectation::parse(">= 1").unwrap(),
            }],
            max_duration: Some(TimeDelta::minutes(15)),
        }),
        alerts: vec!["oncall".into()],
        suspend: false,
        timeout: TimeDelta::hours(1),
    };
    assert_eq!(state.policies.len(), 1);
    assert_eq!(state.policies["orders-db"], expected);
    assert_eq!(
        state.storages["primary"],
        StorageSpec {
            name: "primary".into(),
            kind: StorageKind::Local {
                path: PathBuf::from("/var/lib/safepoint/backups")
            },
            age_recipients: vec![
                "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p".into()
            ],
        }
    );
    assert_eq!(
        state.notifiers["oncall"],
        NotifierSpec {
            name: "oncall".into(),
            email: Some(EmailNotifier {
                to: vec!["oncall@example.com".into()],
                from: Some("safepoint@example.com".into()),
            }),
            webhook: Some(WebhookNotifier {
                url: "https://hooks.example.com/safepoint".into(),
                secret_from: Some(SecretRef::Env("WEBHOOK_SECRET".into())),
                format: crate::policy::model::WebhookFormat::Json,
            }),
        }
    );
}

#[test]
fn minimal_policy_gets_the_documented_defaults() {
    let mut files = base();
    files.push(file(
        "p.yaml",
        "apiVersion: safepoint/v1\nkind: BackupPolicy\nmetadata: {name: files}\n\
         spec:\n  source: {type: directory, path: /srv/files}\n  storage: primary\n",
    ));
    let state = load(&files).unwrap_or_else(|d| panic!("{}", render(&d)));
    let p = &state.policies["files"];
    assert_eq!(p.retention, backup_policy::DEFAULT_RETENTION);
    assert_eq!(p.retention.keep_last, 7);
    assert_eq!(p.timeout, TimeDelta::hours(1));
    assert!(!p.suspend);
    assert_eq!(p.deploy, DeploySpec::default());
    assert_eq!(p.schedule, None);
    assert_eq!(
        p.source,
        Source::Directory {
            path: "/srv/files".into(),
            exclude: vec![]
        }
    );
}

#[test]
fn empty_policy_directory_is_a_valid_empty_state() {
    assert_eq!(load(&[]), Ok(DesiredState::default()));
    let files = [
        file("a.yaml", ""),
        file("b.yaml", "# only a comment\n---\n"),
    ];
    assert_eq!(load(&files), Ok(DesiredState::default()));
}

#[test]
fn multi_document_file_loads_every_document() {
    let text = format!("{STORAGE}---\n{NOTIFIER}---\n{POLICY}");
    let state = load(&[file("all.yaml", &text)]).unwrap_or_else(|d| panic!("{}", render(&d)));
    assert_eq!(state.storages.len(), 1);
    assert_eq!(state.notifiers.len(), 1);
    assert_eq!(state.policies.len(), 1);
}

#[test]
fn multi_document_file_reports_lines_within_the_whole_file() {
    let text = format!(
        "{STORAGE}---\n{NOTIFIER}---\n{}",
        POLICY.replace("keepDaily", "keepDialy")
    );
    let diags = problems(&[file("all.yaml", &text)]);
    // 9 storage lines + `---` + 11 notifier lines + `---` + line 23 of the policy.
    only(&diags, "all.yaml", 22 + 23, "unknown field `keepDialy`");
}

#[test]
fn unknown_field_gets_did_you_mean_hint() {
    let diags = problems(&policy_with(|p| p.replace("keepDaily", "keepDialy")));
    let d = only(
        &diags,
        ORDERS,
        23,
        "unknown field `keepDialy` in `spec.retention`",
    );
    assert_eq!(d.column, 5);
    assert_eq!(d.hint.as_deref(), Some("did you mean `keepDaily`?"));
}

#[test]
fn unknown_field_without_close_match_lists_the_allowed_fields() {
    let diags = problems(&policy_with(|p| {
        p.replace("  suspend: false", "  colour: red")
    }));
    let d = only(&diags, ORDERS, 41, "unknown field `colour` in `spec`");
    assert!(
        d.hint
            .as_deref()
            .is_some_and(|h| h.starts_with("allowed fields here: alerts, deploy")),
        "{d}"
    );
}

#[test]
fn wrong_type_is_reported_at_the_value() {
    let diags = problems(&policy_with(|p| {
        p.replace("keepLast: 3", "keepLast: three")
    }));
    only(
        &diags,
        ORDERS,
        21,
        "`spec.retention.keepLast` must be a whole number",
    );
}

#[test]
fn missing_required_field_is_reported_at_its_parent() {
    let diags = problems(&policy_with(|p| p.replace("  storage: primary", "")));
    let d = only(&diags, ORDERS, 6, "missing field `storage` in `spec`");
    assert!(
        d.hint
            .as_deref()
            .is_some_and(|h| h.starts_with("add `storage:`"))
    );
}

#[test]
fn wrong_api_version_is_reported() {
    let diags = problems(&policy_with(|p| p.replace("safepoint/v1", "safepoint/v2")));
    let d = only(&diags, ORDERS, 1, "unsupported apiVersion `safepoint/v2`");
    assert_eq!(d.hint.as_deref(), Some("set `apiVersion: safepoint/v1`"));
}

#[test]
fn unknown_kind_is_reported() {
    let diags = problems(&policy_with(|p| {
        p.replace("kind: BackupPolicy", "kind: BackupPolcy")
    }));
    let d = only(&diags, ORDERS, 2, "unknown kind `BackupPolcy`");
    assert_eq!(d.hint.as_deref(), Some("did you mean `BackupPolicy`?"));
}

#[test]
fn name_must_be_a_dns_label() {
    let diags = problems(&policy_with(|p| {
        p.replace("name: orders-db", "name: Orders_DB")
    }));
    only(
        &diags,
        ORDERS,
        4,
        "invalid name `Orders_DB`: not a DNS label",
    );
}

#[test]
fn duplicate_name_points_at_the_second_and_mentions_the_first() {
    let mut files = policy_with(|p| p.to_owned());
    files.push(file("policies/z.yaml", POLICY));
    let diags = problems(&files);
    let d = only(
        &diags,
        "policies/z.yaml",
        4,
        "duplicate BackupPolicy name `orders-db`",
    );
    assert!(
        d.message
            .contains("first defined at policies/orders.yaml:4"),
        "{d}"
    );
}

#[test]
fn same_name_in_different_kinds_is_allowed() {
    let mut files = base();
    files.push(file(
        "n.yaml",
        &NOTIFIER.replace("name: oncall", "name: primary"),
    ));
    assert!(load(&files).is_ok());
}

#[test]
fn bad_cron_gets_the_parser_error_and_an_example() {
    let diags = problems(&policy_with(|p| p.replace("0 */6 * * *", "0 */6 * *")));
    let d = only(&diags, ORDERS, 12, "invalid cron expression `0 */6 * *`");
    assert!(
        d.hint
            .as_deref()
            .is_some_and(|h| h.contains("`0 */6 * * *`"))
    );
    let diags = problems(&policy_with(|p| p.replace("30 3 * * *", "61 3 * * *")));
    only(&diags, ORDERS, 29, "invalid cron expression `61 3 * * *`");
}

#[test]
fn unknown_time_zone_is_reported_with_a_suggestion() {
    let diags = problems(&policy_with(|p| {
        p.replace("timezone: UTC", "timezone: Europe/Berln")
    }));
    let d = only(&diags, ORDERS, 12, "unknown time zone `Europe/Berln`");
    assert_eq!(d.hint.as_deref(), Some("did you mean `Europe/Berlin`?"));
}

#[test]
fn bad_durations_are_reported_at_each_field() {
    let diags = problems(&policy_with(|p| {
        p.replace("rpo: 6h", "rpo: 6 hours")
            .replace("maxDuration: 15m", "maxDuration: 0m")
            .replace("  suspend: false", "  timeout: 1y")
    }));
    let got: Vec<(usize, bool)> = diags
        .iter()
        .map(|d| {
            (
                d.line,
                d.hint.as_deref().is_some_and(|h| h.contains("`1h30m`")),
            )
        })
        .collect();
    assert_eq!(
        got,
        [(13, true), (39, true), (41, true)],
        "{}",
        render(&diags)
    );
    assert!(diags[0].message.contains("in `spec.rpo`"));
    assert!(diags[1].message.contains("is zero"));
    assert!(diags[2].message.contains("unknown unit `y`"));
}

#[test]
fn unknown_storage_reference_lists_the_known_ones() {
    let diags = problems(&policy_with(|p| {
        p.replace("storage: primary", "storage: archive")
    }));
    let d = only(&diags, ORDERS, 11, "unknown storage `archive`");
    assert_eq!(d.hint.as_deref(), Some("known storages: `primary`"));
    let diags = problems(&policy_with(|p| {
        p.replace("storage: primary", "storage: primay")
    }));
    let d = only(&diags, ORDERS, 11, "unknown storage `primay`");
    assert_eq!(d.hint.as_deref(), Some("did you mean `primary`?"));
}

#[test]
fn unknown_notifier_reference_is_reported() {
    let diags = problems(&policy_with(|p| {
        p.replace("notifiers: [oncall]", "notifiers: [oncall, pager]")
    }));
    let d = only(&diags, ORDERS, 40, "unknown notifier `pager`");
    assert_eq!(d.column, 32);
}

#[test]
fn retention_that_keeps_nothing_is_rejected() {
    let diags = problems(&policy_with(|p| {
        let start = p.find("    keepLast").unwrap_or_default();
        let end = p.find("  drill:").unwrap_or_default();
        format!(
            "{}    keepLast: 0\n    keepDaily: 0\n{}",
            &p[..start],
            &p[end..]
        )
    }));
    let d = only(&diags, ORDERS, 20, "retention keeps nothing");
    assert!(d.hint.as_deref().is_some_and(|h| h.contains("keepLast: 7")));
}

fn s3_storage(fields: &str) -> String {
    STORAGE.replace(
        "type: local\n  path: /var/lib/safepoint/backups",
        &format!("type: s3\n{fields}"),
    )
}

#[test]
fn s3_storage_loads_with_documented_defaults() {
    let text = s3_storage(
        "  bucket: backups\n  prefix: /prod/sp/\n  endpoint: http://127.0.0.1:9000\n  \
         credentials:\n    accessKeyIdFrom: {env: S3_KEY_ID}\n    secretAccessKeyFrom: {file: /run/secrets/s3}",
    );
    let state = load(&[file("s.yaml", &text)]).unwrap_or_else(|d| panic!("{}", render(&d)));
    assert_eq!(
        state.storages["primary"].kind,
        StorageKind::S3 {
            bucket: "backups".into(),
            prefix: "prod/sp".into(),
            region: "us-east-1".into(),
            endpoint: Some("http://127.0.0.1:9000".into()),
            path_style: true,
            allow_http: true,
            credentials: Some(S3Credentials {
                access_key_id_from: SecretRef::Env("S3_KEY_ID".into()),
                secret_access_key_from: SecretRef::File(PathBuf::from("/run/secrets/s3")),
            }),
        }
    );
    let aws = s3_storage("  bucket: backups\n  region: eu-central-1");
    let state = load(&[file("s.yaml", &aws)]).unwrap_or_else(|d| panic!("{}", render(&d)));
    assert!(matches!(
        &state.storages["primary"].kind,
        StorageKind::S3 {
            endpoint: None,
            path_style: false,
            allow_http: false,
            credentials: None,
            ..
        }
    ));
}

#[test]
fn s3_storage_needs_bucket_and_region_on_aws() {
    let diags = problems(&[file("s.yaml", &s3_storage("  prefix: x"))]);
    let text = render(&diags);
    assert!(text.contains("needs `bucket`"), "{text}");
    assert!(text.contains("needs `region`"), "{text}");
}

#[test]
fn s3_endpoint_must_not_hold_credentials_or_plain_http_off_loopback() {
    let diags = problems(&[file(
        "s.yaml",
        &s3_storage("  bucket: backups\n  endpoint: http://minio.internal:9000"),
    )]);
    let d = only(&diags, "s.yaml", 8, "plain http endpoint");
    assert!(
        d.hint
            .as_deref()
            .is_some_and(|h| h.contains("allowHttp: true"))
    );
    let explicit =
        s3_storage("  bucket: backups\n  endpoint: http://minio.internal:9000\n  allowHttp: true");
    assert!(load(&[file("s.yaml", &explicit)]).is_ok());
    let diags = problems(&[file(
        "s.yaml",
        &s3_storage("  bucket: backups\n  endpoint: https://AKIAXXX:hunter2@minio.internal"),
    )]);
    let d = only(&diags, "s.yaml", 8, "password is written inline");
    assert!(!d.message.contains("hunter2"));
    let diags = problems(&[file(
        "s.yaml",
        &s3_storage("  bucket: Bad_Bucket\n  region: x\n  path: /x"),
    )]);
    let text = render(&diags);
    assert!(text.contains("not a valid bucket name"), "{text}");
    assert!(
        text.contains("`path` does not apply to a `s3` storage"),
        "{text}"
    );
}

#[test]
fn invalid_age_recipient_is_reported() {
    let text = STORAGE.replace("age1ql3z7hjy54", "age1ql3z7hjy55");
    let diags = problems(&[file("s.yaml", &text)]);
    only(&diags, "s.yaml", 9, "invalid age public key");
}

#[test]
fn source_fields_are_required_per_type() {
    let diags = problems(&policy_with(|p| {
        p.replace("    url: postgres://backup@db.internal:5432/orders\n", "")
    }));
    let d = only(&diags, ORDERS, 7, "a `postgres` source needs `url`");
    assert!(
        d.hint
            .as_deref()
            .is_some_and(|h| h.starts_with("add `url: postgres://"))
    );
    let diags = problems(&policy_with(|p| {
        p.replace("type: postgres                    #", "type: command #")
            .replace("url: postgres://backup@db.internal:5432/orders", "restoreCommand: cat")
            .replace("    passwordFrom: {env: ORDERS_DB_PASSWORD}   # or {file: /run/secrets/orders}\n", "")
            .replace("      completeness: exact ", "      completeness: off ")
            .replace("type: postgres\n", "type: directory\n")
            .replace("url: postgres://drill@scratch.internal:5432/postgres", "path: /tmp/d")
            .replace(
                "      checks:\n        - name: users exist\n          sql: \"select count(*) from users\"\n          expect: \">= 1\"\n",
                "",
            )
    }));
    only(
        &diags,
        ORDERS,
        7,
        "a `command` source needs `backupCommand`",
    );
}

#[test]
fn source_field_that_does_not_apply_is_an_error() {
    let diags = problems(&policy_with(|p| {
        p.replace(
            "passwordFrom: {env: ORDERS_DB_PASSWORD}",
            "path: /var/lib/x",
        )
    }));
    let d = only(
        &diags,
        ORDERS,
        10,
        "`path` does not apply to a `postgres` source",
    );
    assert!(
        d.hint
            .as_deref()
            .is_some_and(|h| h.contains("`url`, `passwordFrom`, `binDir` and `pitr`"))
    );
}

#[test]
fn drill_target_equal_to_the_source_is_rejected() {
    let diags = problems(&policy_with(|p| {
        p.replace(
            "postgres://drill@scratch.internal:5432/postgres",
            "postgresql://drill@DB.internal/orders",
        )
    }));
    only(&diags, ORDERS, 32, "drill target is the source database");
}

#[test]
fn drill_target_path_inside_the_source_is_rejected() {
    let mut files = base();
    files.push(file(
        "f.yaml",
        "apiVersion: safepoint/v1\nkind: BackupPolicy\nmetadata: {name: files}\nspec:\n\
         \x20 source: {type: directory, path: /srv/files/}\n  storage: primary\n\
         \x20 drill:\n    target: {type: directory, path: /srv/files/./drills}\n",
    ));
    let diags = problems(&files);
    only(&diags, "f.yaml", 8, "drill target is the source path");
}

#[test]
fn drill_target_type_must_fit_the_source() {
    let diags = problems(&policy_with(|p| {
        p.replace("type: postgres\n", "type: mysql\n")
            .replace("postgres://drill@scratch", "mysql://drill@scratch")
    }));
    let d = only(
        &diags,
        ORDERS,
        31,
        "a `mysql` drill target cannot restore a `postgres` source",
    );
    assert_eq!(d.hint.as_deref(), Some("use `type: postgres`"));
}

#[test]
fn tag_pattern_must_be_a_valid_glob() {
    let diags = problems(&policy_with(|p| {
        p.replace("tagPattern: \"v*\"", "tagPattern: \"v[\"")
    }));
    only(&diags, ORDERS, 15, "invalid release tag pattern `v[`");
}

#[test]
fn password_in_a_url_is_an_inline_secret() {
    let diags = problems(&policy_with(|p| {
        p.replace("backup@db", "backup:hunter2@db")
    }));
    let d = only(
        &diags,
        ORDERS,
        9,
        "a password is written inline in a URL (`spec.source.url`)",
    );
    assert_eq!(
        d.hint.as_deref(),
        Some("remove the password from the URL and use passwordFrom: {env: NAME} or {file: PATH}")
    );
    assert!(!d.to_string().contains("hunter2"));
}

#[test]
fn secret_query_parameter_in_a_url_is_an_inline_secret() {
    let mut files = base();
    files[1] = file(
        "n.yaml",
        &NOTIFIER.replace("/safepoint", "/safepoint?token=abc123"),
    );
    let diags = problems(&files);
    only(
        &diags,
        "n.yaml",
        10,
        "URL query parameter `token` holds a secret",
    );
}

#[test]
fn age_secret_key_as_recipient_is_an_inline_secret() {
    let mut files = base();
    files[0] = file("s.yaml", &STORAGE.replace("age1ql3", "AGE-SECRET-KEY-1QQ"));
    let diags = problems(&files);
    only(
        &diags,
        "s.yaml",
        9,
        "an age secret key (identity) is written inline",
    );
}

#[test]
fn yaml_syntax_error_reports_its_line_and_other_files_still_validate() {
    let mut files = policy_with(|p| p.replace("keepDaily", "keepDialy"));
    files.push(file(
        "policies/broken.yaml",
        "apiVersion: safepoint/v1\nkind: [Storage\nmetadata: {}\n",
    ));
    let diags = problems(&files);
    assert_eq!(diags.len(), 2, "{}", render(&diags));
    assert_eq!(
        (diags[0].file.as_str(), diags[0].line),
        ("policies/broken.yaml", 3)
    );
    assert!(
        diags[0].message.starts_with("yaml syntax error"),
        "{}",
        diags[0]
    );
    assert_eq!((diags[1].file.as_str(), diags[1].line), (ORDERS, 23));
}

#[test]
fn duplicate_yaml_key_is_reported() {
    let diags = problems(&policy_with(|p| {
        p.replace("  suspend: false", "  suspend: false\n  rpo: 1h")
    }));
    only(&diags, ORDERS, 42, "duplicate key `rpo` (first at line 13)");
}

#[test]
fn one_file_with_many_problems_reports_all_of_them_at_once() {
    let broken = POLICY
        .replace("name: orders-db", "name: Orders")
        .replace("backup@db", "backup:pw@db")
        .replace("storage: primary", "storage: nowhere")
        .replace("0 */6 * * *", "every six hours")
        .replace("rpo: 6h", "rpo: 6")
        .replace("keepDaily", "keepDialy")
        .replace(
            "onFailure: [pin-pre-deploy,",
            "onFailure: [pin-pre-deploy, rollback,",
        )
        .replace(
            "postgres://drill@scratch.internal:5432/postgres",
            "postgres://backup@db.internal/orders",
        )
        .replace("notifiers: [oncall]", "notifiers: [pager]");
    let mut files = base();
    files.push(file(ORDERS, &broken));
    let diags = problems(&files);
    let lines: Vec<usize> = diags.iter().map(|d| d.line).collect();
    assert_eq!(
        lines,
        [4, 9, 11, 12, 13, 19, 23, 32, 40],
        "{}",
        render(&diags)
    );
}

#[test]
fn diagnostics_display_as_file_line_column_message_hint() {
    let diags = problems(&policy_with(|p| p.replace("keepDaily", "keepDialy")));
    assert_eq!(
        diags[0].to_string(),
        "policies/orders.yaml:23:5: unknown field `keepDialy` in `spec.retention` \
         (hint: did you mean `keepDaily`?)"
    );
}

#[test]
fn schema_file_is_up_to_date() {
    // Compared at compile time (no IO in the comparison); rewritten only on request.
    let committed = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/policies/schema.json"));
    let generated = format!(
        "{}\n",
        serde_json::to_string_pretty(&json_schema()).unwrap_or_default()
    );
    if option_env!("UPDATE_SCHEMA").is_some() || std::env::var_os("UPDATE_SCHEMA").is_some() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/policies/schema.json");
        std::fs::write(path, &generated).unwrap();
        return;
    }
    assert!(
        committed == generated,
        "policies/schema.json is out of date with the raw policy types in src/policy/raw.rs; \
         regenerate it with `UPDATE_SCHEMA=1 cargo test --lib policy::tests::schema_file_is_up_to_date` \
         and commit the result"
    );
}

#[test]
fn drill_of_a_command_source_needs_a_restore_command() {
    let mut files = base();
    files.push(file(
        "c.yaml",
        "apiVersion: safepoint/v1\nkind: BackupPolicy\nmetadata: {name: cmd}\nspec:\n\
         \x20 source: {type: command, backupCommand: \"etcdctl snapshot save /dev/stdout\"}\n\
         \x20 storage: primary\n  drill:\n    target: {type: directory, path: /tmp/drills}\n",
    ));
    let diags = problems(&files);
    only(
        &diags,
        "c.yaml",
        7,
        "a drill of a `command` source needs `source.restoreCommand`",
    );
}

#[test]
fn document_shape_problems_are_reported_not_panicked_on() {
    let cases = [
        ("- a\n- b\n", 1, "the document must be a mapping"),
        (
            "apiVersion: safepoint/v1\nmetadata: {name: a}\n",
            1,
            "missing field `kind`",
        ),
        (
            "apiVersion: safepoint/v1\nkind: Storage\nmetadata: {name: a}\nspec:\n",
            4,
            "`spec` must be a mapping, found nothing",
        ),
        ("a: &x [*x]\n", 1, "unknown anchor"),
        ("kind: !custom Storage\n", 1, "unsupported yaml tag"),
    ];
    for (text, line, part) in cases {
        let diags = problems(&[file("x.yaml", text)]);
        assert_eq!(diags[0].line, line, "{}", render(&diags));
        assert!(diags[0].message.contains(part), "{}", render(&diags));
    }
}

#[test]
fn cron_nicknames_and_six_field_crons_are_accepted() {
    for cron in ["@daily", "0 0 */6 * * *", "0 3 * * MON-FRI"] {
        let files = policy_with(|p| p.replace("0 */6 * * *", cron));
        assert!(load(&files).is_ok(), "{cron}");
    }
}

#[test]
fn drill_expectations_use_the_grammar_drills_evaluate() {
    // Everything evaluation understands passes validation...
    for expect in ["!= 0", "= 1.5", "<= -2", "~ ^[a-z]+$", "non-empty"] {
        let files = policy_with(|p| p.replace(r#"expect: ">= 1""#, &format!("expect: {expect:?}")));
        assert!(load(&files).is_ok(), "{expect}");
    }
    // ...and everything it would reject is reported at file:line, a regex
    // that does not compile included.
    for (expect, part) in [
        ("~ (unclosed", "invalid regex"),
        ("~", "regex after `~` is empty"),
        (">= many", "is not a number"),
        ("at least one", "unknown expectation"),
    ] {
        let diags = problems(&policy_with(|p| {
            p.replace(r#"expect: ">= 1""#, &format!("expect: {expect:?}"))
        }));
        let d = only(&diags, ORDERS, 38, part);
        assert!(d.message.starts_with("invalid expectation"), "{d}");
    }
}

#[test]
fn a_file_that_is_not_utf8_is_one_diagnostic_and_the_others_are_still_checked() {
    let mut files = policy_with(|p| p.replace("keepDaily", "keepDialy"));
    let mut latin1 = b"apiVersion: safepoint/v1\nkind: Storage\nmetadata: {name: caf".to_vec();
    latin1.extend_from_slice(b"\xe9}\nspec: {type: local, path: /x}\n");
    files.push(PolicyFile::from_bytes("policies/latin1.yaml", latin1));
    let diags = problems(&files);
    assert_eq!(diags.len(), 2, "{}", render(&diags));
    let bad = diags
        .iter()
        .find(|d| d.file == "policies/latin1.yaml")
        .unwrap();
    assert_eq!((bad.line, bad.column), (3, 21), "{bad}");
    assert!(
        bad.message.contains("not UTF-8") && bad.message.contains("0xe9"),
        "{bad}"
    );
    assert!(
        diags
            .iter()
            .any(|d| d.file == ORDERS && d.message.contains("keepDialy"))
    );
}

#[test]
fn utf8_bytes_decode_unchanged() {
    let f = PolicyFile::from_bytes("a.yaml", "name: ädä ✓\n".as_bytes().to_vec());
    assert_eq!(f, PolicyFile::new("a.yaml", "name: ädä ✓\n"));
}

#[test]
fn bin_dir_is_a_postgres_source_field() {
    let files = policy_with(|p| {
        p.replace(
            "    passwordFrom: {env: ORDERS_DB_PASSWORD}",
            "    passwordFrom: {env: ORDERS_DB_PASSWORD}\n    binDir: /usr/lib/postgresql/17/bin",
        )
    });
    let state = load(&files).unwrap_or_else(|d| panic!("{}", render(&d)));
    match &state.policies["orders-db"].source {
        Source::Postgres { bin_dir, .. } => {
            assert_eq!(
                bin_dir.as_deref(),
                Some(std::path::Path::new("/usr/lib/postgresql/17/bin"))
            )
        }
        other => panic!("{other:?}"),
    }
    let files = policy_with(|p| {
        p.replace("type: postgres                    #", "type: mysql #")
            .replace(
                "postgres://backup@db.internal:5432/orders",
                "mysql://backup@db:3306/orders",
            )
            .replace(
                "    passwordFrom: {env: ORDERS_DB_PASSWORD}",
                "    binDir: /opt/bin",
            )
    });
    let diags = problems(&files);
    assert!(
        diags.iter().any(|d| d.message.contains("binDir")),
        "{}",
        render(&diags)
    );
}

#[test]
fn pitr_is_a_postgres_source_block_with_defaults_and_checked_fields() {
    // The example without its drill (not for PITR policies yet), with `block`.
    let with_drill = |block: &'static str| {
        policy_with(move |p| {
            p.replace(
                "    passwordFrom: {env: ORDERS_DB_PASSWORD}",
                &format!("    passwordFrom: {{env: ORDERS_DB_PASSWORD}}\n{block}"),
            )
        })
    };
    let with = |block: &'static str| {
        policy_with(move |p| {
            let start = p.find("  drill:").unwrap();
            let end = p.find("  alerts:").unwrap();
            format!("{}{}", &p[..start], &p[end..]).replace(
                "    passwordFrom: {env: ORDERS_DB_PASSWORD}",
                &format!("    passwordFrom: {{env: ORDERS_DB_PASSWORD}}\n{block}"),
            )
        })
    };
    let state = load(&with("    pitr: {}")).unwrap_or_else(|d| panic!("{}", render(&d)));
    let pitr = state.policies["orders-db"].source.pitr().cloned();
    assert_eq!(
        pitr,
        Some(Pitr {
            wal_flush_interval: TimeDelta::seconds(10),
            slot: "safepoint_orders_db".into(),
        })
    );
    let state = load(&with("    pitr: {walFlushInterval: 2s, slot: orders_wal}"))
        .unwrap_or_else(|d| panic!("{}", render(&d)));
    let pitr = state.policies["orders-db"].source.pitr().cloned();
    assert_eq!(
        pitr.map(|p| (p.wal_flush_interval, p.slot)),
        Some((TimeDelta::seconds(2), "orders_wal".into()))
    );
    let diags = problems(&with(
        "    pitr: {walFlushInterval: soon, slot: Orders-WAL}",
    ));
    let at = |needle: &str| {
        diags
            .iter()
            .find(|d| d.message.contains(needle))
            .map(|d| (d.file.clone(), d.line))
    };
    assert_eq!(
        at("invalid replication slot"),
        Some((ORDERS.to_string(), 11)),
        "{}",
        render(&diags)
    );
    assert_eq!(
        at("walFlushInterval"),
        Some((ORDERS.to_string(), 11)),
        "{}",
        render(&diags)
    );
    let diags = problems(&with("    pitr: {walFlushInterval: 2h}"));
    assert!(
        diags
            .iter()
            .any(|d| d.message.contains("longer than an hour")),
        "{}",
        render(&diags)
    );
    // The example policy has a drill: not for PITR policies yet.
    let diags = problems(&with_drill("    pitr: {}"));
    assert!(
        diags
            .iter()
            .any(|d| d.message.contains("drills of a PITR policy")),
        "{}",
        render(&diags)
    );
    let diags = problems(&with("    pitr: {walFlushInterval: 2h}"));
    assert!(
        diags
            .iter()
            .any(|d| d.message.contains("longer than an hour")),
        "{}",
        render(&diags)
    );
    let diags = problems(&policy_with(|p| {
        p.replace("type: postgres                    #", "type: mysql #")
            .replace(
                "postgres://backup@db.internal:5432/orders",
                "mysql://backup@db:3306/orders",
            )
            .replace(
                "    passwordFrom: {env: ORDERS_DB_PASSWORD}",
                "    pitr: {}",
            )
    }));
    assert!(
        diags.iter().any(|d| d.message.contains("pitr")),
        "{}",
        render(&diags)
    );
}
