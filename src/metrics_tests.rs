//! Unit tests of `metrics.rs`.

use super::*;

#[test]
fn classic_format_names_counters_with_total_and_drops_eof() {
    let om = "# HELP safepoint_backups Backups.\n# TYPE safepoint_backups counter\nsafepoint_backups_total{policy=\"a\"} 1\n# HELP safepoint_drift Drift.\n# TYPE safepoint_drift gauge\nsafepoint_drift 0\n# EOF\n";
    assert_eq!(
        to_classic(om),
        "# HELP safepoint_backups_total Backups.\n# TYPE safepoint_backups_total counter\nsafepoint_backups_total{policy=\"a\"} 1\n# HELP safepoint_drift Drift.\n# TYPE safepoint_drift gauge\nsafepoint_drift 0\n"
    );
}

#[test]
fn retried_attempts_are_counted_per_policy() {
    let m = Metrics::new();
    let outcome = |policy: &str, retries| Outcome {
        policy: policy.into(),
        action: ActionKind::Backup,
        backup_id: None,
        trigger: None,
        release: None,
        ok: true,
        seconds: 1.0,
        detail: String::new(),
        retries,
    };
    m.record_outcomes(&[outcome("a", 2), outcome("b", 0), outcome("a", 1)]);
    let text = m.encode_classic().unwrap();
    assert!(
        text.contains("safepoint_backup_retries_total{policy=\"a\"} 3"),
        "{text}"
    );
    assert!(
        !text.contains("safepoint_backup_retries_total{policy=\"b\"}"),
        "{text}"
    );
}
