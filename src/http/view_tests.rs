use chrono::TimeDelta;

use super::*;

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-29T12:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

fn policy(name: &str, ready: bool) -> PolicyStatus {
    PolicyStatus {
        name: name.into(),
        storage: "local".into(),
        ready,
        reason: if ready {
            "ok".into()
        } else {
            "backup failed: <boom>".into()
        },
        suspended: false,
        last_good: None,
        rpo_seconds: Some(7200),
        rpo_met: Some(ready),
        next_run: Some(now() + TimeDelta::minutes(30)),
        backups: 0,
        last_drill_passed: None,
        last_drill_verdict: None,
        drift: if ready {
            vec![]
        } else {
            vec![DriftKind::BackupFailed]
        },
        pitr: None,
    }
}

fn inputs() -> Inputs {
    Inputs {
        status: Some(Status {
            ready: false,
            reason: "commit bbbb was rejected".into(),
            applied: Some("aaaa".into()),
            attempted: Some("bbbb".into()),
            diagnostics: vec!["policies/orders.yaml:7:3: unknown field `schedul`".into()],
            policies: vec![
                policy("orders", true),
                policy("<script>alert(1)</script>", false),
            ],
        }),
        cycle_at: Some(now()),
        cycle_error: None,
        backups: Vec::new(),
        deploys: vec![DeployRecord {
            release: "v1.4.0".into(),
            policy: "orders".into(),
            phase: "finish".into(),
            status: "failure".into(),
            backup_id: None,
            caller: "ci".into(),
            detail: String::new(),
            at: now() - TimeDelta::hours(3),
        }],
        drills: Vec::new(),
        alerts: Vec::new(),
        now: now(),
        days: 30,
    }
}

#[test]
fn the_index_shows_policies_the_stalled_reason_and_a_deploy_mark_and_escapes_names() {
    let html = index(&inputs()).unwrap();
    assert!(html.contains(r#"data-policy="orders""#), "{html}");
    assert!(
        html.contains("orders.yaml:7:3: unknown field `schedul`"),
        "{html}"
    );
    assert!(
        html.contains(r#"data-kind="deploy-finish" data-status="failure""#),
        "{html}"
    );
    assert!(
        !html.contains("<script>"),
        "a policy name is escaped: {html}"
    );
    assert!(html.contains("&lt;script&gt;"), "{html}");
    assert!(html.contains("backup failed: &lt;boom&gt;"), "{html}");
}

#[test]
fn policy_and_backup_pages_answer_none_for_unknown_names() {
    let i = inputs();
    let html = policy_page(&i, "orders").unwrap().unwrap();
    assert!(html.contains("Policy orders"), "{html}");
    assert!(policy_page(&i, "nope").is_none());
    assert!(backup(&i, "nope").is_none());
    assert!(!html.contains("recoverable window"), "not a PITR policy");
}

#[test]
fn a_pitr_policy_page_shows_its_recoverable_window_and_gaps() {
    let mut i = inputs();
    if let Some(st) = &mut i.status {
        st.policies[0].pitr = Some(crate::pitr_status::PitrStatus {
            window_start: Some(now() - TimeDelta::days(1)),
            window_end: Some(now() - TimeDelta::seconds(3)),
            end_lsn: Some("0/6000080".into()),
            lag_bytes: Some(0),
            lag_seconds: Some(3),
            allowed_lag_seconds: 80,
            gaps: vec!["000000010000000000000004".into()],
            checked_at: Some(now()),
        });
    }
    let html = policy_page(&i, "orders").unwrap().unwrap();
    assert!(html.contains("recoverable window"), "{html}");
    assert!(
        html.contains("(WAL lag 3s); missing WAL 000000010000000000000004"),
        "{html}"
    );
}

use super::policy as policy_page;
