//! Valid policy repositories load into the expected model, defaults included.

use std::path::PathBuf;

use chrono::TimeDelta;

use super::*;

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
fn same_name_in_different_kinds_is_allowed() {
    let mut files = base();
    files.push(file(
        "n.yaml",
        &NOTIFIER.replace("name: oncall", "name: primary"),
    ));
    assert!(load(&files).is_ok());
}

#[test]
fn utf8_bytes_decode_unchanged() {
    let f = PolicyFile::from_bytes("a.yaml", "name: ädä ✓\n".as_bytes().to_vec());
    assert_eq!(f, PolicyFile::new("a.yaml", "name: ädä ✓\n"));
}
