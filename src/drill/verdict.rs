//! Pure: the checks of a drill that compare values — completeness of the
//! restored copy against the manifest's counts, the user's expectations on
//! query results, and the recovery-time objective.

use std::collections::BTreeMap;

use crate::model::CheckResult;
use crate::policy::Completeness;

/// Tolerance of `completeness: estimate` (relative difference per table).
pub const ESTIMATE_TOLERANCE: f64 = 0.10;

/// Compares the counts taken at backup time with those of the restored copy.
pub fn completeness(
    mode: Completeness,
    expected: &BTreeMap<String, u64>,
    actual: &BTreeMap<String, u64>,
) -> Option<CheckResult> {
    if mode == Completeness::Off {
        return None;
    }
    let mut problems = Vec::new();
    for (table, want) in expected {
        match actual.get(table) {
            None => problems.push(format!("{table}: missing (expected {want})")),
            Some(got) => {
                let ok = match mode {
                    Completeness::Exact => got == want,
                    _ => {
                        let diff = (*got as f64 - *want as f64).abs();
                        diff <= (*want as f64 * ESTIMATE_TOLERANCE).max(1.0)
                    }
                };
                if !ok {
                    problems.push(format!("{table}: {got} (expected {want})"));
                }
            }
        }
    }
    for table in actual.keys().filter(|t| !expected.contains_key(*t)) {
        problems.push(format!("{table}: not in the backup's manifest"));
    }
    let label = if mode == Completeness::Exact {
        "exact"
    } else {
        "estimate"
    };
    Some(CheckResult {
        name: format!("completeness ({label})"),
        passed: problems.is_empty(),
        detail: if problems.is_empty() {
            format!("{} tables/entries match the manifest", expected.len())
        } else {
            problems.join("; ")
        },
    })
}

/// The restore-time check against `maxDuration` (the RTO).
pub fn recovery_time(seconds: f64, max_seconds: Option<i64>) -> CheckResult {
    match max_seconds {
        Some(max) => CheckResult {
            name: "recovery time".into(),
            passed: seconds <= max as f64,
            detail: format!("restored in {seconds:.1}s, maxDuration is {max}s"),
        },
        None => CheckResult {
            name: "recovery time".into(),
            passed: true,
            detail: format!("restored in {seconds:.1}s (no maxDuration set)"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn exact_completeness_names_every_difference() {
        let want = counts(&[("users", 2), ("events", 500)]);
        assert!(
            completeness(Completeness::Exact, &want, &want)
                .unwrap()
                .passed
        );
        let got = counts(&[("users", 2), ("events", 0), ("extra", 1)]);
        let c = completeness(Completeness::Exact, &want, &got).unwrap();
        assert!(!c.passed);
        assert!(
            c.detail.contains("events: 0 (expected 500)") && c.detail.contains("extra"),
            "{}",
            c.detail
        );
        assert!(completeness(Completeness::Off, &want, &got).is_none());
    }

    #[test]
    fn estimate_completeness_allows_ten_percent() {
        let want = counts(&[("t", 1000)]);
        assert!(
            completeness(Completeness::Estimate, &want, &counts(&[("t", 950)]))
                .unwrap()
                .passed
        );
        assert!(
            !completeness(Completeness::Estimate, &want, &counts(&[("t", 800)]))
                .unwrap()
                .passed
        );
    }

    #[test]
    fn recovery_time_is_checked_against_max_duration() {
        assert!(recovery_time(2.0, Some(60)).passed);
        assert!(!recovery_time(61.0, Some(60)).passed);
        assert!(recovery_time(1e6, None).passed);
    }
}
