//! deploy/prometheus and deploy/grafana: the alert rules pass `promtool`'s
//! checks and unit tests, and rules and dashboard only use metric names the
//! daemon exports (and each rule's runbook section exists).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use chrono::Utc;
use safepoint::drill::DrillOutcome;
use safepoint::metrics::Metrics;
use safepoint::model::Outcome;
use safepoint::observed::Trigger;
use safepoint::status::{LastGood, PolicyStatus, Status};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn promtool(args: &[&str], dir: &Path) {
    let out = std::process::Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("promtool runs (apt-get install prometheus; see .ci/run)");
    assert!(
        out.status.success(),
        "promtool {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn alert_rules_are_valid_and_pass_their_promtool_unit_tests() {
    let dir = root().join("deploy/prometheus");
    promtool(&["check", "rules", "rules.yml"], &dir);
    promtool(&["test", "rules", "rules_test.yml"], &dir);
}

/// Every sample name the daemon can export, from a registry holding one
/// series of each family.
fn exported_names() -> BTreeSet<String> {
    let m = Metrics::new();
    let now = Utc::now();
    m.record_outcomes(&[Outcome {
        policy: "p".into(),
        action: safepoint::model::ActionKind::Backup,
        backup_id: None,
        trigger: Some(Trigger::Schedule),
        release: None,
        ok: true,
        seconds: 1.0,
        detail: String::new(),
        retries: 1,
    }]);
    m.record_cycle(0.1);
    m.record_error("cycle", "catalog");
    m.record_drills(&[Ok(DrillOutcome {
        policy: "p".into(),
        backup_id: "x".into(),
        passed: true,
        scratch: String::new(),
        restore_seconds: Some(3.0),
        checks: vec![],
    })]);
    m.record_notification("email", true);
    m.set_queued(0);
    m.set_state(&Status {
        ready: true,
        reason: String::new(),
        applied: Some("a".into()),
        attempted: Some("a".into()),
        diagnostics: vec![],
        policies: vec![PolicyStatus {
            name: "p".into(),
            storage: "s".into(),
            ready: true,
            reason: String::new(),
            suspended: false,
            last_good: Some(LastGood {
                id: "x".into(),
                started_at: now,
                age_seconds: 0,
                trigger: Trigger::Schedule,
                size: 1,
            }),
            rpo_seconds: Some(60),
            rpo_met: Some(true),
            next_run: None,
            backups: 1,
            last_drill_passed: Some(now),
            last_drill_verdict: Some("passed"),
            drift: vec![],
            pitr: None,
        }],
    });
    let text = m.encode_classic().unwrap();
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let (name, kind) = rest.split_once(' ').unwrap();
        if kind == "histogram" {
            for suffix in ["_bucket", "_sum", "_count"] {
                names.insert(format!("{name}{suffix}"));
            }
        } else {
            names.insert(name.to_string());
        }
    }
    names
}

fn referenced(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("safepoint_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        out.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    out
}

#[test]
fn rules_and_dashboard_use_only_metrics_the_daemon_exports() {
    let exported = exported_names();
    assert!(exported.contains("safepoint_drills_total"), "{exported:?}");
    let rules = std::fs::read_to_string(root().join("deploy/prometheus/rules.yml")).unwrap();
    let dashboard_text =
        std::fs::read_to_string(root().join("deploy/grafana/dashboard.json")).unwrap();
    let dashboard: serde_json::Value =
        serde_json::from_str(&dashboard_text).expect("dashboard.json is valid JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() >= 8);
    let mut exprs = String::new();
    for p in panels {
        for t in p["targets"].as_array().into_iter().flatten() {
            exprs.push_str(t["expr"].as_str().unwrap_or_default());
            exprs.push('\n');
        }
    }
    for (what, text) in [("rules.yml", &rules), ("dashboard.json", &exprs)] {
        let used = referenced(text);
        assert!(!used.is_empty(), "{what} references no metric");
        let unknown: Vec<_> = used.difference(&exported).collect();
        assert!(
            unknown.is_empty(),
            "{what} uses metrics the daemon does not export: {unknown:?}"
        );
    }
    for needed in [
        "safepoint_backup_last_success_timestamp_seconds",
        "safepoint_policy_rpo_seconds",
        "safepoint_backup_size_bytes",
        "safepoint_backup_duration_seconds_bucket",
        "safepoint_drills_total",
        "safepoint_drill_restore_seconds_bucket",
        "safepoint_drift",
    ] {
        assert!(exprs.contains(needed), "dashboard shows {needed}");
    }
}

#[test]
fn every_alert_has_a_runbook_section_in_docs_operations() {
    let rules = std::fs::read_to_string(root().join("deploy/prometheus/rules.yml")).unwrap();
    let runbook = std::fs::read_to_string(root().join("docs/operations.md")).unwrap();
    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    assert!(alerts.len() >= 8);
    for alert in alerts {
        assert!(
            runbook.contains(&format!("### {alert}\n")),
            "docs/operations.md has no `### {alert}` section"
        );
        assert!(
            rules.contains(&format!("docs/operations.md#{}", alert.to_lowercase())),
            "{alert} links its runbook section"
        );
    }
}
