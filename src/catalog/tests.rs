//! The catalog's test suite, run against both backends: a SQLite file in a
//! temp dir and a uniquely named database on the local PostgreSQL
//! (127.0.0.1:5432, user postgres, trust), dropped at the end.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use chrono::{DateTime, TimeDelta, TimeZone, Utc};

use super::*;
use crate::model::{ActiveAlert, AuditKind, Recipient, RunOutcome};
use crate::observed::Health;
use crate::storage::{ArtifactInfo, PIN_FORMAT};

/// A throwaway catalog database; a PostgreSQL one is dropped on drop.
pub(super) struct Scratch {
    dir: tempfile::TempDir,
    pg_name: Option<String>,
}

fn psql(sql: &str) {
    let out = Command::new("psql")
        .args([
            "-X",
            "-q",
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            "postgres",
        ])
        .args(["-v", "ON_ERROR_STOP=1", "-c", sql])
        .output()
        .expect("psql runs");
    assert!(
        out.status.success(),
        "{sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Scratch {
    pub(super) fn new(backend: Backend) -> Scratch {
        static N: AtomicU32 = AtomicU32::new(0);
        let pg_name = (backend == Backend::Postgres).then(|| {
            let name = format!(
                "sp_catalog_{}_{}",
                std::process::id(),
                N.fetch_add(1, Ordering::SeqCst)
            );
            psql(&format!("CREATE DATABASE {name}"));
            name
        });
        Scratch {
            dir: tempfile::tempdir().unwrap(),
            pg_name,
        }
    }

    fn location(&self) -> Location {
        match &self.pg_name {
            Some(name) => Location::parse(
                &format!("postgres://postgres@127.0.0.1:5432/{name}"),
                self.dir.path(),
            )
            .unwrap()
            .with_audit_head(self.dir.path().join("pg.audit-head")),
            None => Location::Sqlite(self.dir.path().join("catalog.db")),
        }
    }

    pub(super) async fn open(&self) -> Catalog {
        Catalog::open(&self.location()).await.unwrap()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Some(name) = &self.pg_name {
            psql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
        }
    }
}

pub(super) const BOTH: [Backend; 2] = [Backend::Sqlite, Backend::Postgres];

fn t(secs: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap() + TimeDelta::milliseconds(secs * 1000 + 250)
}

fn manifest(policy: &str, id: &str, at: DateTime<Utc>) -> Manifest {
    Manifest {
        format: 1,
        id: id.into(),
        policy: policy.into(),
        storage: "local".into(),
        source_kind: "sqlite".into(),
        trigger: Trigger::Schedule,
        release: Some("v1".into()),
        commit: Some("abc".into()),
        requested_by: None,
        started_at: at,
        finished_at: at + TimeDelta::seconds(3),
        artifact: ArtifactInfo {
            file: "data.zst".into(),
            size: 1234,
            raw_size: 5000,
            checksum: "blake3:00".into(),
            compression: "zstd".into(),
            encryption: None,
        },
        tools: BTreeMap::new(),
        counts: BTreeMap::new(),
        status: "complete".into(),
    }
}

fn revision(commit: &str, valid: bool, at: DateTime<Utc>) -> RevisionRecord {
    RevisionRecord {
        commit: commit.into(),
        branch: "main".into(),
        author: "a".into(),
        summary: "s".into(),
        attempted_at: at,
        valid,
        diagnostics: if valid {
            vec![]
        } else {
            vec!["x.yaml:1: bad".into()]
        },
    }
}

/// Writes one of everything the catalog holds.
async fn fill(c: &Catalog) {
    c.record_revision(&revision("good", true, t(0)))
        .await
        .unwrap();
    c.record_revision(&revision("bad", false, t(1)))
        .await
        .unwrap();
    for (i, id) in ["b1", "b2", "b3"].into_iter().enumerate() {
        c.upsert_backup(
            &manifest("app", id, t(10 * i as i64)),
            Health::Verified,
            Some(t(40)),
        )
        .await
        .unwrap();
    }
    let pin = PinMarker {
        format: PIN_FORMAT,
        policy: "app".into(),
        id: "b1".into(),
        reason: "legal hold".into(),
        pinned_by: "ops@host".into(),
        pinned_at: t(50),
        release: Some("v1".into()),
    };
    assert!(c.set_pin("b1", Some(&pin)).await.unwrap());
    c.set_health("b2", Health::Corrupt, Some("checksum"), t(51))
        .await
        .unwrap();
    c.mark_deleted("b3", t(52)).await.unwrap();
    let run = |outcome: Option<RunOutcome>| async move {
        let id = c
            .start_run(&NewRun {
                policy: "app",
                backup_id: "bx",
                storage: "local",
                trigger: Trigger::Schedule,
                release: None,
                requested_by: None,
                started_at: t(60),
            })
            .await
            .unwrap();
        if let Some(outcome) = outcome {
            c.finish_run(id, outcome, Some(("io", "disk full")), t(61))
                .await
                .unwrap();
        }
        id
    };
    run(Some(RunOutcome::Succeeded)).await;
    run(Some(RunOutcome::Failed)).await;
    run(Some(RunOutcome::Failed)).await;
    run(None).await;
    c.event(t(70), AuditKind::BackupSucceeded, Some("app"), "took b1")
        .await
        .unwrap();
    c.audit(
        t(71),
        AuditKind::BackupFailed,
        None,
        "ops@host",
        "password=hunter2 failed",
    )
    .await
    .unwrap();
    c.record_deploy(&DeployRecord {
        release: "v2".into(),
        policy: "app".into(),
        phase: "start".into(),
        status: "ok".into(),
        backup_id: Some("b1".into()),
        caller: "ci".into(),
        detail: String::new(),
        at: t(80),
    })
    .await
    .unwrap();
    assert!(c.arm_releases("app", t(81)).await.unwrap());
    assert!(!c.arm_releases("app", t(82)).await.unwrap());
    c.mark_release("app", "v1", "existing", None, t(81))
        .await
        .unwrap();
    c.mark_release("app", "v1", "done", Some("b1"), t(83))
        .await
        .unwrap();
    let d1 = c
        .start_drill("app", "b1", "sqlite:/tmp/x", "sp_drill_1", None, t(90))
        .await
        .unwrap();
    c.finish_drill(d1, true, Some(1.5), &[], t(91))
        .await
        .unwrap();
    let d2 = c
        .start_drill(
            "app",
            "b1",
            "sqlite:/tmp/x",
            "sp_drill_2",
            Some("ops"),
            t(92),
        )
        .await
        .unwrap();
    assert!(d2 > d1);
    let alert = ActiveAlert {
        policy: "app".into(),
        reason: "backup-failed".into(),
        since: t(100),
        notified_at: t(101),
        detail: "disk full".into(),
        recipients: vec![Recipient {
            notifier: "ops".into(),
            from: None,
            to: vec!["ops@example.com".into()],
            webhook: None,
        }],
    };
    let note = NewNotification {
        channel: "email".into(),
        kind: "FIRING".into(),
        policy: "app".into(),
        reason: "backup-failed".into(),
        notifier: "ops".into(),
        sender: None,
        recipients: vec!["ops@example.com".into()],
        subject: "app failing".into(),
        body: "disk full".into(),
        webhook: None,
    };
    c.save_alerts(&[alert], &[note.clone(), note], t(102))
        .await
        .unwrap();
}

#[tokio::test]
async fn every_record_reads_back_the_same_on_both_backends() {
    let mut seen = Vec::new();
    for backend in BOTH {
        let scratch = Scratch::new(backend);
        let c = scratch.open().await;
        assert_eq!(c.backend(), backend);
        fill(&c).await;
        assert_eq!(c.last_applied().await.unwrap().unwrap().commit, "good");
        assert_eq!(
            c.last_attempted().await.unwrap().unwrap().diagnostics,
            ["x.yaml:1: bad"]
        );
        let backups = c.backups().await.unwrap();
        assert_eq!(backups.len(), 2, "the deleted one is hidden");
        assert_eq!(backups[0].record.id, "b2", "newest first");
        assert_eq!(backups[0].record.health, Health::Corrupt);
        let b1 = c.backup("b1").await.unwrap().unwrap();
        assert_eq!(b1.pin.as_ref().unwrap().pinned_at, t(50));
        assert_eq!(b1.record.started_at, t(0), "sub-second times survive");
        assert_eq!(c.backup_history().await.unwrap().len(), 3);
        let failures = c.failures().await.unwrap();
        assert_eq!(failures["app"].consecutive, 2);
        assert_eq!(failures["app"].at, t(61));
        assert_eq!(c.running_runs().await.unwrap().len(), 1);
        assert_eq!(c.recent_runs(2).await.unwrap().len(), 2);
        assert_eq!(c.runs_since(t(0)).await.unwrap().len(), 3);
        assert_eq!(c.runs_since(t(61)).await.unwrap().len(), 0);
        let entries = c.audit_entries(None).await.unwrap();
        assert_eq!(entries.len(), 2);
        assert!(!entries[1].message.contains("hunter2"), "redacted");
        assert_eq!(c.audit_entries(Some(t(71))).await.unwrap().len(), 1);
        assert_eq!(c.deploys(Some("v2")).await.unwrap()[0].at, t(80));
        assert_eq!(c.handled_releases("app").await.unwrap(), ["v1"]);
        let history = c.drill_history().await.unwrap();
        assert_eq!(history["app"].last_passed, Some(t(90)));
        assert_eq!(history["app"].last_attempt, Some(t(92)));
        assert!(history["app"].running);
        assert_eq!(c.running_drills().await.unwrap().len(), 1);
        assert_eq!(
            c.drills(Some("app"), 10).await.unwrap()[1].restore_seconds,
            Some(1.5)
        );
        assert_eq!(c.alerts().await.unwrap()[0].since, t(100));
        assert_eq!(c.pending_notifications().await.unwrap(), 2);
        assert_eq!(c.next_notification_at(true).await.unwrap(), Some(t(102)));
        assert_eq!(
            c.next_notification_at(false).await.unwrap(),
            None,
            "mail only"
        );
        let due = c.due_notifications(t(102), false).await.unwrap();
        assert_eq!(due.len(), 2);
        c.notification_sent(due[0].id, t(103)).await.unwrap();
        c.notification_failed(due[1].id, "refused", Some(t(200)), t(103))
            .await
            .unwrap();
        assert!(c.due_notifications(t(150), false).await.unwrap().is_empty());
        assert_eq!(
            c.due_notifications(t(150), true).await.unwrap()[0].attempts,
            1
        );
        c.notification_failed(due[1].id, "rejected", None, t(104))
            .await
            .unwrap();
        assert_eq!(c.pending_notifications().await.unwrap(), 0);
        assert!(c.ping().await);
        seen.push((
            backups.iter().map(|b| b.record.clone()).collect::<Vec<_>>(),
            c.recent_runs(10).await.unwrap(),
            c.table_counts().await.unwrap(),
        ));
        c.close().await;
    }
    assert_eq!(seen[0], seen[1], "both backends answer the same");
}

#[tokio::test]
async fn concurrent_appends_from_separate_pools_form_one_chain() {
    for backend in BOTH {
        let scratch = Scratch::new(backend);
        // Separate pools stand for separate processes (replicas, CLI).
        let writers = [
            scratch.open().await,
            scratch.open().await,
            scratch.open().await,
        ];
        let mut tasks = Vec::new();
        for (w, c) in writers.iter().enumerate() {
            for task in 0..4 {
                let c = c.clone();
                tasks.push(tokio::spawn(async move {
                    for i in 0..10 {
                        let msg = format!("writer {w} task {task} entry {i}");
                        c.event(Utc::now(), AuditKind::BackupSucceeded, None, &msg)
                            .await
                            .unwrap();
                    }
                }));
            }
        }
        for task in tasks {
            task.await.unwrap();
        }
        let entries = writers[0].audit_entries(None).await.unwrap();
        assert_eq!(entries.len(), 120, "{backend:?}");
        let head = writers[0].audit_head();
        let verdict = crate::audit::verify(&entries, head.as_ref().map(|(s, h)| (*s, h.as_str())));
        assert!(verdict.ok, "{backend:?}: {:?}", verdict.problem);
        for c in &writers {
            c.close().await;
        }
    }
}

#[tokio::test]
async fn a_sqlite_catalog_copies_into_an_empty_postgres_one_and_only_an_empty_one() {
    let source_scratch = Scratch::new(Backend::Sqlite);
    let source = source_scratch.open().await;
    fill(&source).await;
    let target_scratch = Scratch::new(Backend::Postgres);
    let target = target_scratch.open().await;
    let report = source.copy_into(&target).await.unwrap();
    assert!(report.tables.iter().all(|c| c.source == c.target));
    assert_eq!(
        report
            .tables
            .iter()
            .find(|c| c.table == "audit")
            .unwrap()
            .target,
        2
    );
    let entries = target.audit_entries(None).await.unwrap();
    assert_eq!(entries, source.audit_entries(None).await.unwrap());
    let head = target.audit_head().unwrap();
    assert!(crate::audit::verify(&entries, Some((head.0, head.1.as_str()))).ok);
    assert_eq!(
        target.backups().await.unwrap(),
        source.backups().await.unwrap()
    );
    assert_eq!(
        target.recent_runs(10).await.unwrap(),
        source.recent_runs(10).await.unwrap()
    );
    assert_eq!(
        target.drills(None, 10).await.unwrap(),
        source.drills(None, 10).await.unwrap()
    );
    assert_eq!(
        target.alerts().await.unwrap(),
        source.alerts().await.unwrap()
    );
    assert_eq!(
        target.deploys(None).await.unwrap(),
        source.deploys(None).await.unwrap()
    );
    // Identities continue after the copied rows; the chain goes on.
    let run = target
        .start_run(&NewRun {
            policy: "app",
            backup_id: "b9",
            storage: "local",
            trigger: Trigger::Manual,
            release: None,
            requested_by: None,
            started_at: t(300),
        })
        .await
        .unwrap();
    assert_eq!(run, 5);
    target
        .event(t(301), AuditKind::BackupSucceeded, None, "after")
        .await
        .unwrap();
    let entries = target.audit_entries(None).await.unwrap();
    assert!(crate::audit::verify(&entries, None).ok);
    let err = source.copy_into(&target).await.unwrap_err();
    assert!(err.to_string().contains("not empty"), "{err}");
}
