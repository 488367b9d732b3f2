use super::*;

fn at(minutes: i64) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-25T06:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
        + TimeDelta::minutes(minutes)
}

fn oncall() -> Vec<Recipient> {
    vec![Recipient {
        notifier: "oncall".into(),
        from: None,
        to: vec!["ops@example.com".into()],
        webhook: None,
    }]
}

fn problem(policy: &str, reason: &str) -> Problem {
    Problem {
        policy: policy.into(),
        reason: reason.into(),
        detail: format!("{reason} detail"),
        recipients: oncall(),
    }
}

/// Runs the machine over `rounds` (minute, problems present) and returns, per
/// round, the notices as `KIND policy/reason`.
fn run(rounds: &[(i64, Vec<Problem>)], reminder_minutes: i64) -> Vec<Vec<String>> {
    let mut state = Vec::new();
    let mut out = Vec::new();
    for (minute, problems) in rounds {
        let step = step(
            &state,
            problems,
            &BTreeMap::new(),
            at(*minute),
            TimeDelta::minutes(reminder_minutes),
        );
        out.push(
            step.notices
                .iter()
                .map(|n| format!("{} {}/{}", n.kind.as_str(), n.policy, n.reason))
                .collect(),
        );
        state = step.state;
    }
    out
}

/// (name, rounds of (minute, problems), reminder minutes, expected notices per round)
type Case = (
    &'static str,
    Vec<(i64, Vec<Problem>)>,
    i64,
    Vec<Vec<&'static str>>,
);

#[test]
fn alert_lifecycle_table() {
    let failed = || vec![problem("orders", "backup-failed")];
    let cases: Vec<Case> = vec![
        (
            "a new problem sends one mail, persisting sends nothing, clearing sends resolved",
            vec![(0, failed()), (5, failed()), (10, failed()), (15, vec![])],
            0,
            vec![
                vec!["FIRING orders/backup-failed"],
                vec![],
                vec![],
                vec!["RESOLVED orders/backup-failed"],
            ],
        ),
        (
            "a persisting problem is re-notified once per reminder interval",
            vec![
                (0, failed()),
                (59, failed()),
                (60, failed()),
                (100, failed()),
                (120, failed()),
            ],
            60,
            vec![
                vec!["FIRING orders/backup-failed"],
                vec![],
                vec!["REMINDER orders/backup-failed"],
                vec![],
                vec!["REMINDER orders/backup-failed"],
            ],
        ),
        (
            "each policy and reason is its own alert",
            vec![
                (0, vec![problem("orders", "backup-failed")]),
                (
                    1,
                    vec![
                        problem("orders", "backup-failed"),
                        problem("orders", "rpo-missed"),
                        problem("users", "rpo-missed"),
                    ],
                ),
                (2, vec![problem("users", "rpo-missed")]),
            ],
            0,
            vec![
                vec!["FIRING orders/backup-failed"],
                vec!["FIRING orders/rpo-missed", "FIRING users/rpo-missed"],
                vec![
                    "RESOLVED orders/backup-failed",
                    "RESOLVED orders/rpo-missed",
                ],
            ],
        ),
        (
            "a problem that returns after clearing fires again",
            vec![(0, failed()), (1, vec![]), (2, failed())],
            0,
            vec![
                vec!["FIRING orders/backup-failed"],
                vec!["RESOLVED orders/backup-failed"],
                vec!["FIRING orders/backup-failed"],
            ],
        ),
        (
            "no problems, no mail",
            vec![(0, vec![]), (1, vec![])],
            60,
            vec![vec![], vec![]],
        ),
        (
            "the same problem listed twice is one alert",
            vec![(
                0,
                vec![
                    problem("orders", "rpo-missed"),
                    problem("orders", "rpo-missed"),
                ],
            )],
            0,
            vec![vec!["FIRING orders/rpo-missed"]],
        ),
    ];
    for (name, rounds, reminder, expected) in cases {
        let got = run(&rounds, reminder);
        let expected: Vec<Vec<String>> = expected
            .into_iter()
            .map(|r| r.into_iter().map(String::from).collect())
            .collect();
        assert_eq!(got, expected, "{name}");
    }
}

#[test]
fn state_keeps_first_seen_time_and_updates_detail_and_recipients() {
    let first = step(
        &[],
        &[problem("orders", "backup-failed")],
        &BTreeMap::new(),
        at(0),
        TimeDelta::hours(1),
    );
    let mut later = problem("orders", "backup-failed");
    later.detail = "3 failed attempt(s)".into();
    later.recipients = vec![];
    let second = step(
        &first.state,
        &[later],
        &BTreeMap::new(),
        at(30),
        TimeDelta::hours(1),
    );
    assert!(second.notices.is_empty());
    assert_eq!(second.state[0].since, at(0));
    assert_eq!(second.state[0].notified_at, at(0));
    assert_eq!(second.state[0].detail, "3 failed attempt(s)");
    assert!(second.state[0].recipients.is_empty());
}

#[test]
fn mails_say_what_failed_since_when_the_last_good_backup_and_what_to_run() {
    let last_good = BTreeMap::from([(
        "orders".to_string(),
        "20261125T000000Z-abc123, taken …".to_string(),
    )]);
    let fired = step(
        &[],
        &[problem("orders", "backup-failed")],
        &last_good,
        at(0),
        TimeDelta::zero(),
    );
    let n = &fired.notices[0];
    assert_eq!(n.subject, "[safepoint] FIRING backup-failed: policy orders");
    assert!(n.body.contains("Policy:     orders"), "{}", n.body);
    assert!(
        n.body.contains("Since:      2026-11-25 06:00:00 UTC"),
        "{}",
        n.body
    );
    assert!(
        n.body.contains("Last good:  20261125T000000Z-abc123"),
        "{}",
        n.body
    );
    assert!(
        n.body.contains("What failed: backup-failed detail"),
        "{}",
        n.body
    );
    assert!(n.body.contains("`safepoint backup orders`"), "{}", n.body);
    assert_eq!(n.recipients, oncall());

    let resolved = step(&fired.state, &[], &last_good, at(90), TimeDelta::zero());
    let n = &resolved.notices[0];
    assert_eq!(
        n.subject,
        "[safepoint] RESOLVED backup-failed: policy orders"
    );
    assert!(n.body.contains("lasted 1h 30m"), "{}", n.body);
    assert!(resolved.state.is_empty());
}

#[test]
fn an_invalid_commit_alerts_every_notifier_of_the_revision_in_force() {
    use crate::policy::{EmailNotifier, NotifierSpec};
    let mut desired = DesiredState::default();
    for name in ["oncall", "dba"] {
        desired.notifiers.insert(
            name.into(),
            NotifierSpec {
                name: name.into(),
                email: Some(EmailNotifier {
                    to: vec![format!("{name}@example.com")],
                    from: None,
                }),
                webhook: None,
            },
        );
    }
    let status = Status {
        ready: false,
        reason: "invalid".into(),
        applied: Some("a".repeat(40)),
        attempted: Some("b".repeat(40)),
        diagnostics: vec!["policies/x.yaml:3:5: unknown field `schedul`".into()],
        policies: vec![],
    };
    let found = problems(&status, &desired);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].reason, "policy-invalid");
    assert_eq!(found[0].recipients.len(), 2);
    assert!(
        found[0]
            .detail
            .contains("bbbbbbbbbbbb of the policy repository was rejected")
    );
    assert!(found[0].detail.contains("policies/x.yaml:3:5"));
    let n = &step(&[], &found, &BTreeMap::new(), at(0), TimeDelta::zero()).notices[0];
    assert_eq!(
        n.subject,
        "[safepoint] FIRING policy-invalid: policy repository"
    );
    assert!(n.body.contains("`safepoint validate`"));
}

#[test]
fn durations_render_for_humans() {
    assert_eq!(human(45), "45s");
    assert_eq!(human(600), "10m");
    assert_eq!(human(7200), "2h");
    assert_eq!(human(5400), "1h 30m");
    assert_eq!(human(86_400 * 2 + 3600 * 4), "2d 4h");
}
