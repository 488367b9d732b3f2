//! IO: alerting. `evaluate` runs the pure state machine (`alerts`) on the
//! current status, persists the new alert state and queues the notices in the
//! catalog's outbox in one transaction; `deliver` sends what is due by SMTP
//! and reschedules failures with exponential backoff, so an SMTP outage
//! delays mails but never loses them or stops the daemon.

pub mod alerts;
pub mod smtp;

use chrono::{DateTime, TimeDelta, Utc};

use crate::catalog::{Catalog, CatalogError, NewNotification};
use crate::metrics::Metrics;
use crate::policy::DesiredState;
use crate::status::Status;
use alerts::Notice;
pub use smtp::{Mailer, SmtpSettings, SmtpTls};

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(
        "invalid email address `{address}`: {source}; fix the Notifier's email.to/from or --smtp-from"
    )]
    Address {
        address: String,
        #[source]
        source: lettre::address::AddressError,
    },
    #[error(
        "no sender address: set --smtp-from (SAFEPOINT_SMTP_FROM) or the Notifier's email.from"
    )]
    NoSender,
    #[error("cannot build the mail: {0}")]
    Build(String),
    #[error("smtp server {host}: {source}")]
    Smtp {
        host: String,
        /// A 5xx answer or a setup error: retrying cannot help.
        permanent: bool,
        #[source]
        source: lettre::transport::smtp::Error,
    },
}

impl NotifyError {
    pub fn kind(&self) -> &'static str {
        match self {
            NotifyError::Catalog(_) => "catalog",
            NotifyError::Address { .. } => "address",
            NotifyError::NoSender => "no-sender",
            NotifyError::Build(_) => "build",
            NotifyError::Smtp { .. } => "smtp",
        }
    }

    /// Whether a later attempt may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            NotifyError::Smtp { permanent, .. } => !permanent,
            NotifyError::Catalog(_) => true,
            _ => false,
        }
    }
}

/// Runs the alert state machine on `status` and queues its notices (as
/// email, when `email` is configured). Returns the notices decided.
pub async fn evaluate(
    catalog: &Catalog,
    desired: &DesiredState,
    status: &Status,
    now: DateTime<Utc>,
    reminder: TimeDelta,
    email: bool,
) -> Result<Vec<Notice>, NotifyError> {
    let previous = catalog.alerts().await?;
    let problems = alerts::problems(status, desired);
    let last_good = alerts::last_good_lines(status, now);
    let step = alerts::step(&previous, &problems, &last_good, now, reminder);
    let mut queue = Vec::new();
    for n in &step.notices {
        log_notice(n);
        if email {
            queue.extend(notifications(n));
        }
    }
    catalog.save_alerts(&step.state, &queue, now).await?;
    Ok(step.notices)
}

fn log_notice(n: &Notice) {
    let what = if n.policy.is_empty() {
        "repository"
    } else {
        n.policy.as_str()
    };
    tracing::warn!(policy = %what, reason = %n.reason, kind = n.kind.as_str(), recipients = n.recipients.len(), "alert");
}

/// One email per recipient notifier.
fn notifications(n: &Notice) -> Vec<NewNotification> {
    n.recipients
        .iter()
        .map(|r| NewNotification {
            channel: "email".into(),
            kind: n.kind.as_str().into(),
            policy: n.policy.clone(),
            reason: n.reason.clone(),
            notifier: r.notifier.clone(),
            sender: r.from.clone(),
            recipients: r.to.clone(),
            subject: n.subject.clone(),
            body: n.body.clone(),
        })
        .collect()
}

/// Queues a one-off event notice (e.g. a failed deploy) for the policy's
/// email notifiers. Any process may queue; the daemon delivers it (within a
/// minute). Returns the number of mails queued.
pub async fn queue_event(
    catalog: &Catalog,
    desired: &DesiredState,
    policy: &str,
    reason: &str,
    detail: &str,
    next: &str,
    now: DateTime<Utc>,
) -> Result<usize, NotifyError> {
    let recipients = alerts::policy_recipients(desired, policy);
    let n = alerts::event_notice(policy, reason, detail, next, recipients, now);
    log_notice(&n);
    let queue = notifications(&n);
    catalog.queue_notifications(&queue, now).await?;
    Ok(queue.len())
}

/// Retry delay after `attempts` failed attempts: 30 s doubling up to 1 h,
/// plus up to 10 s of jitter derived from the id (no randomness needed).
pub fn backoff(attempts: i64, id: i64) -> TimeDelta {
    let exp = attempts.clamp(1, 8) - 1;
    let base = (30_i64 << exp).min(3600);
    TimeDelta::seconds(base + id.rem_euclid(11))
}

/// What one delivery pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delivery {
    pub sent: usize,
    pub failed: usize,
    pub pending: i64,
}

/// Sends the due notifications (every pending one when `ignore_backoff`, as
/// on startup). Stops the pass at the first transient failure: the server is
/// probably down, and everything stays queued for the next pass.
pub async fn deliver(
    catalog: &Catalog,
    mailer: &Mailer,
    metrics: &Metrics,
    now: DateTime<Utc>,
    ignore_backoff: bool,
) -> Result<Delivery, NotifyError> {
    let mut report = Delivery::default();
    for queued in catalog.due_notifications(now, ignore_backoff).await? {
        let n = &queued.item;
        let result = mailer
            .send(n.sender.as_deref(), &n.recipients, &n.subject, &n.body)
            .await;
        let at = Utc::now();
        match result {
            Ok(()) => {
                catalog.notification_sent(queued.id, at).await?;
                metrics.record_notification("email", true);
                report.sent += 1;
                let msg = format!(
                    "sent {} {} mail via notifier {} to {}",
                    n.kind,
                    n.reason,
                    n.notifier,
                    n.recipients.join(", ")
                );
                tracing::info!(policy = %n.policy, "{msg}");
                let policy = Some(n.policy.as_str()).filter(|p| !p.is_empty());
                catalog
                    .event(at, crate::model::AuditKind::AlertSent, policy, &msg)
                    .await?;
            }
            Err(e) => {
                metrics.record_notification("email", false);
                report.failed += 1;
                let transient = e.is_transient();
                let retry = transient.then(|| at + backoff(queued.attempts + 1, queued.id));
                catalog
                    .notification_failed(queued.id, &e.to_string(), retry, at)
                    .await?;
                match retry {
                    Some(t) => {
                        tracing::warn!(error = %e, retry_at = %t, subject = %n.subject, "alert mail not delivered; queued for retry")
                    }
                    None => {
                        tracing::error!(error = %e, subject = %n.subject, "alert mail cannot be delivered; dropped")
                    }
                }
                if transient {
                    break;
                }
            }
        }
    }
    report.pending = catalog.pending_notifications().await?;
    metrics.set_queued(report.pending);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_30_seconds_and_is_capped_at_an_hour() {
        let secs = |a| backoff(a, 0).num_seconds();
        assert_eq!(secs(1), 30);
        assert_eq!(secs(2), 60);
        assert_eq!(secs(3), 120);
        assert_eq!(secs(8), 3600);
        assert_eq!(secs(50), 3600);
        assert!(backoff(1, 7).num_seconds() <= 40);
    }
}
