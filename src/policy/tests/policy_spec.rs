//! `BackupPolicy` fields: schedules, durations, retention, release tags and
//! references to storages and notifiers.

use super::*;

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
fn cron_nicknames_and_six_field_crons_are_accepted() {
    for cron in ["@daily", "0 0 */6 * * *", "0 3 * * MON-FRI"] {
        let files = policy_with(|p| p.replace("0 */6 * * *", cron));
        assert!(load(&files).is_ok(), "{cron}");
    }
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

#[test]
fn tag_pattern_must_be_a_valid_glob() {
    let diags = problems(&policy_with(|p| {
        p.replace("tagPattern: \"v*\"", "tagPattern: \"v[\"")
    }));
    only(&diags, ORDERS, 15, "invalid release tag pattern `v[`");
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
