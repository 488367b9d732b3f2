//! Pure: the alert state machine. From the problems present now (derived from
//! `status::Status`), the alerts already open and `now`, it decides which
//! notices go out: one when a problem starts (per policy and reason), nothing
//! while it persists except a reminder every `reminder` interval, one when it
//! clears. The caller persists the returned state, so a restart sends nothing
//! twice.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};

use crate::model::DriftKind;
pub use crate::model::{ActiveAlert, Recipient, WebhookTarget};
use crate::policy::DesiredState;
use crate::status::Status;

/// A problem present now. `policy` is empty for the repository itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub policy: String,
    pub reason: String,
    /// What failed, in one or a few lines.
    pub detail: String,
    pub recipients: Vec<Recipient>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoticeKind {
    Firing,
    Reminder,
    Resolved,
    /// A one-off event (`event_notice`).
    Event,
    /// `safepoint notify test`.
    Test,
}

impl NoticeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NoticeKind::Firing => "FIRING",
            NoticeKind::Reminder => "REMINDER",
            NoticeKind::Resolved => "RESOLVED",
            NoticeKind::Event => "EVENT",
            NoticeKind::Test => "TEST",
        }
    }
}

/// One message to deliver to each of `recipients`: the rendered mail
/// (`subject`, `body`) and the structured fields the webhook payload carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub kind: NoticeKind,
    pub policy: String,
    pub reason: String,
    pub subject: String,
    pub body: String,
    pub recipients: Vec<Recipient>,
    /// What failed (or failed until it resolved).
    pub detail: String,
    /// What to run next; `None` when there is nothing to do (resolved).
    pub next: Option<String>,
    /// When the problem started (the event time for an event).
    pub since: DateTime<Utc>,
    /// When this notice was decided.
    pub at: DateTime<Utc>,
    /// The backups involved: the policy's newest verified backup, or for a
    /// deploy failure the pre-deploy snapshot.
    pub backups: Vec<String>,
    /// The exact command restoring the backup involved (deploy failures).
    pub restore_command: Option<String>,
}

/// What an event notice says besides its reason (`event_notice`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventDetail {
    pub detail: String,
    pub next: String,
    pub backups: Vec<String>,
    pub restore_command: Option<String>,
}

/// What one evaluation decided.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Step {
    pub notices: Vec<Notice>,
    pub state: Vec<ActiveAlert>,
}

/// The recipients of a policy's `spec.alerts.notifiers`.
pub fn policy_recipients(desired: &DesiredState, policy: &str) -> Vec<Recipient> {
    desired
        .policies
        .get(policy)
        .map_or_else(Vec::new, |p| recipients(desired, &p.alerts))
}

/// A one-off notice for an event rather than a condition (e.g. a failed
/// deploy): sent once, never reminded or resolved.
pub fn event_notice(
    policy: &str,
    reason: &str,
    event: EventDetail,
    recipients: Vec<Recipient>,
    now: DateTime<Utc>,
) -> Notice {
    let body = format!(
        "Policy:     {policy}\nEvent:      {reason}\nAt:         {}\n\nWhat failed: {}\n\nNext step: {}\n\n-- \nsafepoint\n",
        now.format("%Y-%m-%d %H:%M:%S UTC"),
        event.detail,
        event.next,
    );
    Notice {
        kind: NoticeKind::Event,
        policy: policy.to_string(),
        reason: reason.to_string(),
        subject: format!("[safepoint] {reason}: policy {policy}"),
        body,
        recipients,
        detail: event.detail,
        next: Some(event.next),
        since: now,
        at: now,
        backups: event.backups,
        restore_command: event.restore_command,
    }
}

/// A test notice (`safepoint notify test`) for one notifier.
pub fn test_notice(recipient: Recipient, now: DateTime<Utc>) -> Notice {
    let detail = format!(
        "a test notice sent with `safepoint notify test {}`; nothing is wrong",
        recipient.notifier
    );
    Notice {
        kind: NoticeKind::Test,
        policy: String::new(),
        reason: "test".into(),
        subject: format!(
            "[safepoint] TEST notice via notifier {}",
            recipient.notifier
        ),
        body: format!(
            "This is a test notice from safepoint ({}).\nNotifier: {}\n\nIf you read this, alerts reach you.\n\n-- \nsafepoint\n",
            now.format("%Y-%m-%d %H:%M:%S UTC"),
            recipient.notifier
        ),
        recipients: vec![recipient],
        detail,
        next: None,
        since: now,
        at: now,
        backups: Vec::new(),
        restore_command: None,
    }
}

fn recipients(desired: &DesiredState, notifiers: &[String]) -> Vec<Recipient> {
    notifiers
        .iter()
        .filter_map(|n| desired.notifiers.get(n))
        .map(recipient)
        .filter(|r| !r.to.is_empty() || r.webhook.is_some())
        .collect()
}

/// One notifier as a recipient.
pub fn recipient(n: &crate::policy::NotifierSpec) -> Recipient {
    Recipient {
        notifier: n.name.clone(),
        from: n.email.as_ref().and_then(|e| e.from.clone()),
        to: n.email.as_ref().map_or_else(Vec::new, |e| e.to.clone()),
        webhook: n.webhook.as_ref().map(|w| WebhookTarget {
            url: w.url.clone(),
            secret_from: w.secret_from.clone(),
            format: w.format,
        }),
    }
}

fn short(commit: &str) -> &str {
    &commit[..commit.len().min(12)]
}

/// The problems `status` shows now: each drift kind of each policy, and a
/// rejected policy commit (sent to every email notifier of the revision in
/// force). A suspended policy does not alert on RPO.
pub fn problems(status: &Status, desired: &DesiredState) -> Vec<Problem> {
    let mut out = Vec::new();
    if !status.diagnostics.is_empty() {
        let all: Vec<String> = desired.notifiers.keys().cloned().collect();
        let mut detail = format!(
            "commit {} of the policy repository was rejected; the last valid revision ({}) stays in force.\n",
            status.attempted.as_deref().map_or("?", short),
            status.applied.as_deref().map_or("none", short),
        );
        for d in status.diagnostics.iter().take(10) {
            detail.push_str(&format!("  {d}\n"));
        }
        if status.diagnostics.len() > 10 {
            detail.push_str(&format!("  … and {} more\n", status.diagnostics.len() - 10));
        }
        out.push(Problem {
            policy: String::new(),
            reason: DriftKind::PolicyInvalid.as_str().into(),
            detail: detail.trim_end().to_string(),
            recipients: recipients(desired, &all),
        });
    }
    for p in &status.policies {
        let notifiers = desired
            .policies
            .get(&p.name)
            .map_or(&[][..], |d| d.alerts.as_slice());
        for kind in &p.drift {
            if p.suspended && *kind == DriftKind::RpoMissed {
                continue;
            }
            let detail = match kind {
                DriftKind::RpoMissed => match (&p.last_good, p.rpo_seconds) {
                    (Some(g), Some(rpo)) => format!(
                        "the newest verified backup is {} old; the RPO is {}",
                        human(g.age_seconds),
                        human(rpo)
                    ),
                    (None, Some(rpo)) => {
                        format!("there is no verified backup; the RPO is {}", human(rpo))
                    }
                    _ => "the RPO is not met".into(),
                },
                DriftKind::BackupFailed => p.reason.clone(),
                DriftKind::DrillFailed => format!(
                    "the last recovery drill did not pass; its backups are not proven restorable ({})",
                    p.reason
                ),
                DriftKind::DrillOverdue => match p.last_drill_passed {
                    Some(t) => format!(
                        "no recovery drill passed within the drill schedule; the last one passed {}",
                        t.format("%Y-%m-%d %H:%M UTC")
                    ),
                    None => "no recovery drill has passed yet".into(),
                },
                DriftKind::ArtifactMissing => {
                    "a stored backup's artifact is gone from storage".into()
                }
                DriftKind::ArtifactCorrupt => {
                    "a stored backup's artifact no longer matches its checksum".into()
                }
                DriftKind::WalArchiveGap | DriftKind::ArchiveBehindRpo => {
                    crate::pitr_status::detail(*kind, p.pitr.as_ref())
                }
                other => format!("drift {other}"),
            };
            out.push(Problem {
                policy: p.name.clone(),
                reason: kind.as_str().to_string(),
                detail,
                recipients: recipients(desired, notifiers),
            });
        }
    }
    out
}

/// `3h 20m`, `2d 4h`, `45s`.
pub fn human(seconds: i64) -> String {
    let s = seconds.max(0);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86_400 => match (s % 3600) / 60 {
            0 => format!("{}h", s / 3600),
            m => format!("{}h {m}m", s / 3600),
        },
        _ => match (s % 86_400) / 3600 {
            0 => format!("{}d", s / 86_400),
            h => format!("{}d {h}h", s / 86_400),
        },
    }
}

fn when(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    format!(
        "{} ({} ago)",
        t.format("%Y-%m-%d %H:%M:%S UTC"),
        human((now - t).num_seconds())
    )
}

/// What the reader should run next, per reason.
pub fn next_step(policy: &str, reason: &str) -> String {
    match DriftKind::parse(reason) {
        Some(DriftKind::RpoMissed) => format!(
            "run `safepoint status` to see why no backup was taken, then `safepoint backup {policy}`"
        ),
        Some(DriftKind::BackupFailed) => format!(
            "fix the cause shown above, then run `safepoint backup {policy}` (`safepoint status` shows the state)"
        ),
        Some(DriftKind::ArtifactMissing | DriftKind::ArtifactCorrupt) => format!(
            "run `safepoint list --policy {policy}` to see which backup is affected, then `safepoint backup {policy}` for a fresh copy"
        ),
        Some(DriftKind::DrillFailed | DriftKind::DrillOverdue) => format!(
            "run `safepoint drill {policy}` and read its verdict (`safepoint status` shows the state)"
        ),
        Some(DriftKind::WalArchiveGap) => format!(
            "take a new base backup with `safepoint backup {policy}`: recovery works from it on (`safepoint status` shows the window)"
        ),
        Some(DriftKind::ArchiveBehindRpo) => format!(
            "check that `safepoint daemon` runs and can reach the server of {policy} (its log shows pg_receivewal's errors), then `safepoint status`"
        ),
        Some(DriftKind::PolicyInvalid) => {
            "run `safepoint validate` on the commit, fix every problem listed and push a new commit"
                .into()
        }
        _ => "run `safepoint status`".into(),
    }
}

fn subject(kind: NoticeKind, policy: &str, reason: &str) -> String {
    let what = if policy.is_empty() {
        "policy repository".to_string()
    } else {
        format!("policy {policy}")
    };
    format!("[safepoint] {} {reason}: {what}", kind.as_str())
}

fn body(
    kind: NoticeKind,
    alert: &ActiveAlert,
    last_good: Option<&String>,
    now: DateTime<Utc>,
) -> String {
    let mut b = String::new();
    let subject_line = if alert.policy.is_empty() {
        "Repository: the policy repository\n".to_string()
    } else {
        format!("Policy:     {}\n", alert.policy)
    };
    b.push_str(&subject_line);
    b.push_str(&format!("Problem:    {}\n", alert.reason));
    match kind {
        NoticeKind::Resolved => {
            b.push_str(&format!(
                "State:      resolved at {}\n",
                now.format("%Y-%m-%d %H:%M:%S UTC")
            ));
            b.push_str(&format!(
                "Since:      {} (lasted {})\n",
                alert.since.format("%Y-%m-%d %H:%M:%S UTC"),
                human((now - alert.since).num_seconds())
            ));
        }
        _ => {
            b.push_str(&format!("Since:      {}\n", when(alert.since, now)));
        }
    }
    if !alert.policy.is_empty() {
        b.push_str(&format!(
            "Last good:  {}\n",
            last_good.map_or("none", String::as_str)
        ));
    }
    b.push('\n');
    match kind {
        NoticeKind::Resolved | NoticeKind::Event | NoticeKind::Test => {
            b.push_str(&format!("What failed: {}\n", alert.detail));
            b.push_str("\nNothing to do; `safepoint status` shows the current state.\n");
        }
        _ => {
            b.push_str(&format!("What failed: {}\n", alert.detail));
            b.push_str(&format!(
                "\nNext step: {}\n",
                next_step(&alert.policy, &alert.reason)
            ));
            if kind == NoticeKind::Reminder {
                b.push_str("\nThis is a reminder: the problem persists.\n");
            }
        }
    }
    b.push_str("\n-- \nsafepoint daemon\n");
    b
}

/// One evaluation: `previous` open alerts and `current` problems at `now`.
/// `last_good` renders each policy's newest verified backup for the mails.
pub fn step(
    previous: &[ActiveAlert],
    current: &[Problem],
    last_good: &BTreeMap<String, String>,
    now: DateTime<Utc>,
    reminder: TimeDelta,
) -> Step {
    let key = |p: &str, r: &str| (p.to_string(), r.to_string());
    let open: BTreeMap<(String, String), &ActiveAlert> = previous
        .iter()
        .map(|a| (key(&a.policy, &a.reason), a))
        .collect();
    let mut out = Step::default();
    let mut seen = std::collections::BTreeSet::new();
    for p in current {
        let k = key(&p.policy, &p.reason);
        if !seen.insert(k.clone()) {
            continue;
        }
        let (alert, kind) = match open.get(&k) {
            None => (
                ActiveAlert {
                    policy: p.policy.clone(),
                    reason: p.reason.clone(),
                    since: now,
                    notified_at: now,
                    detail: p.detail.clone(),
                    recipients: p.recipients.clone(),
                },
                Some(NoticeKind::Firing),
            ),
            Some(a) => {
                let remind = reminder > TimeDelta::zero() && now - a.notified_at >= reminder;
                (
                    ActiveAlert {
                        notified_at: if remind { now } else { a.notified_at },
                        detail: p.detail.clone(),
                        recipients: p.recipients.clone(),
                        ..(*a).clone()
                    },
                    remind.then_some(NoticeKind::Reminder),
                )
            }
        };
        if let Some(kind) = kind {
            out.notices.push(notice(kind, &alert, last_good, now));
        }
        out.state.push(alert);
    }
    for a in previous {
        if !seen.contains(&key(&a.policy, &a.reason)) {
            out.notices
                .push(notice(NoticeKind::Resolved, a, last_good, now));
        }
    }
    out
}

fn notice(
    kind: NoticeKind,
    alert: &ActiveAlert,
    last_good: &BTreeMap<String, String>,
    now: DateTime<Utc>,
) -> Notice {
    let good = last_good.get(&alert.policy);
    Notice {
        kind,
        policy: alert.policy.clone(),
        reason: alert.reason.clone(),
        subject: subject(kind, &alert.policy, &alert.reason),
        body: body(kind, alert, good, now),
        recipients: alert.recipients.clone(),
        detail: alert.detail.clone(),
        next: (kind != NoticeKind::Resolved).then(|| next_step(&alert.policy, &alert.reason)),
        since: alert.since,
        at: now,
        // `last_good_lines` starts each line with the backup id.
        backups: good
            .and_then(|l| l.split(',').next())
            .map(|id| vec![id.to_string()])
            .unwrap_or_default(),
        restore_command: None,
    }
}

/// Each policy's newest verified backup as the mails show it.
pub fn last_good_lines(status: &Status, now: DateTime<Utc>) -> BTreeMap<String, String> {
    status
        .policies
        .iter()
        .filter_map(|p| {
            p.last_good.as_ref().map(|g| {
                (
                    p.name.clone(),
                    format!(
                        "{}, taken {} by {}",
                        g.id,
                        when(g.started_at, now),
                        g.trigger
                    ),
                )
            })
        })
        .collect()
}

#[cfg(test)]
#[path = "alerts_tests.rs"]
mod tests;
