//! IO: alerting. `evaluate` runs the pure state machine (`alerts`) on the
//! current status, persists the new alert state and queues the notices in the
//! catalog's outbox in one transaction (one row per notifier and channel:
//! email, webhook); `deliver` sends what is due by SMTP or HTTP and
//! reschedules transient failures with exponential backoff, so an outage
//! delays notices but never loses them or stops the daemon; a permanent
//! refusal (SMTP 5xx, HTTP 4xx) is dropped with its reason recorded.
//! `test` sends one test notice straight through a notifier (`notify test`).

pub mod alerts;
pub mod payload;
pub mod smtp;
pub mod webhook;

use chrono::{DateTime, TimeDelta, Utc};

use std::collections::BTreeSet;

use crate::catalog::{Catalog, CatalogError, NewNotification, QueuedNotification};
use crate::metrics::Metrics;
use crate::policy::DesiredState;
use crate::status::Status;
use alerts::{Notice, Recipient};
use payload::Payload;
pub use smtp::{Mailer, SmtpSettings, SmtpTls};
pub use webhook::{Answer, Poster};

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
    #[error(
        "no SMTP server configured: pass --smtp-host (SAFEPOINT_SMTP_HOST) and the other --smtp-* options"
    )]
    NoSmtp,
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
    #[error(
        "smtp server {host} did not complete the delivery within {seconds} s (--smtp-timeout); \
         the notice stays queued and is retried: check that the host and port are an SMTP server \
         that answers"
    )]
    SmtpTimeout { host: String, seconds: u64 },
    /// `url` is shown without path or query (`webhook::redacted`).
    #[error("webhook {url}: {message}")]
    Webhook {
        url: String,
        /// A 4xx answer or a setup error: retrying cannot help.
        permanent: bool,
        message: String,
    },
    #[error("cannot encode the webhook payload: {0}")]
    Payload(#[from] serde_json::Error),
}

impl NotifyError {
    pub fn kind(&self) -> &'static str {
        match self {
            NotifyError::Catalog(_) => "catalog",
            NotifyError::Address { .. } => "address",
            NotifyError::NoSender => "no-sender",
            NotifyError::NoSmtp => "no-smtp",
            NotifyError::Build(_) => "build",
            NotifyError::Smtp { .. } => "smtp",
            NotifyError::SmtpTimeout { .. } => "smtp-timeout",
            NotifyError::Webhook { .. } => "webhook",
            NotifyError::Payload(_) => "payload",
        }
    }

    /// Whether a later attempt may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            NotifyError::Smtp { permanent, .. } | NotifyError::Webhook { permanent, .. } => {
                !permanent
            }
            NotifyError::Catalog(_) | NotifyError::SmtpTimeout { .. } => true,
            _ => false,
        }
    }
}

/// Runs the alert state machine on `status` and queues its notices: to
/// each recipient's webhook, and by email when `email` (an SMTP server is
/// configured). Returns the notices decided.
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
        queue.extend(crate::catalog::outbox_rows(n, email)?);
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

/// How notices leave: SMTP (when configured) and HTTP.
#[derive(Clone)]
pub struct Channels {
    pub mailer: Option<Mailer>,
    pub poster: Poster,
}

impl Channels {
    /// Sends one queued notification; `Ok` carries a line for the log.
    async fn send(&self, id: i64, n: &NewNotification) -> Result<String, NotifyError> {
        match (&n.webhook, &self.mailer) {
            (Some(target), _) => {
                let mut p: Payload = serde_json::from_str(&n.body)?;
                p.id = format!("{}-{id}", n.notifier);
                let answer = self.poster.post(target, &p, Utc::now()).await?;
                Ok(format!(
                    "posted {} {} webhook via notifier {} to {} ({})",
                    n.kind,
                    n.reason,
                    n.notifier,
                    webhook::redacted(&target.url),
                    answer.status
                ))
            }
            (None, Some(mailer)) => {
                mailer
                    .send(n.sender.as_deref(), &n.recipients, &n.subject, &n.body)
                    .await?;
                Ok(format!(
                    "sent {} {} mail via notifier {} to {}",
                    n.kind,
                    n.reason,
                    n.notifier,
                    n.recipients.join(", ")
                ))
            }
            (None, None) => Err(NotifyError::NoSmtp),
        }
    }

    /// Whether this process can send `n` (email needs an SMTP server).
    fn can_send(&self, n: &NewNotification) -> bool {
        n.webhook.is_some() || self.mailer.is_some()
    }
}

/// Sends the due notifications (every pending one when `ignore_backoff`, as
/// on startup). After a transient failure the rest of that destination (the
/// SMTP server, or one notifier's webhook) waits for the next pass: it is
/// probably down, and everything stays queued. A destination that accepted
/// a notice again gets the rest of its queue at once, backoff or not: an
/// outage's notices go out when the server is back, not up to an hour later.
/// Mail stays queued while no SMTP server is configured.
pub async fn deliver(
    catalog: &Catalog,
    channels: &Channels,
    metrics: &Metrics,
    now: DateTime<Utc>,
    ignore_backoff: bool,
) -> Result<Delivery, NotifyError> {
    let mut pass = Pass {
        catalog,
        channels,
        metrics,
        report: Delivery::default(),
        down: BTreeSet::new(),
        up: BTreeSet::new(),
    };
    pass.run(now, ignore_backoff, None).await?;
    if !ignore_backoff && !pass.up.is_empty() {
        let up = std::mem::take(&mut pass.up);
        pass.run(now, true, Some(&up)).await?;
    }
    let mut report = pass.report;
    report.pending = catalog.pending_notifications().await?;
    metrics.set_queued(report.pending);
    Ok(report)
}

/// A notice's destination: its channel and, for webhooks, its notifier.
type Destination = (String, String);

/// One delivery run over the outbox.
struct Pass<'a> {
    catalog: &'a Catalog,
    channels: &'a Channels,
    metrics: &'a Metrics,
    report: Delivery,
    /// Destinations that failed transiently: skipped for the rest of the run.
    down: BTreeSet<Destination>,
    /// Destinations that accepted a notice.
    up: BTreeSet<Destination>,
}

impl Pass<'_> {
    /// Sends the due notices (`only`: of these destinations).
    async fn run(
        &mut self,
        now: DateTime<Utc>,
        ignore_backoff: bool,
        only: Option<&BTreeSet<Destination>>,
    ) -> Result<(), NotifyError> {
        for queued in self.catalog.due_notifications(now, ignore_backoff).await? {
            let n = &queued.item;
            let destination = (
                n.channel.clone(),
                match n.webhook {
                    Some(_) => n.notifier.clone(),
                    None => String::new(),
                },
            );
            if !self.channels.can_send(n)
                || self.down.contains(&destination)
                || only.is_some_and(|o| !o.contains(&destination))
            {
                continue;
            }
            let result = self.channels.send(queued.id, n).await;
            match result {
                Ok(msg) => {
                    self.sent(&queued, &msg).await?;
                    self.up.insert(destination);
                }
                Err(e) => {
                    if self.failed(&queued, &e).await? {
                        self.down.insert(destination);
                    }
                }
            }
        }
        Ok(())
    }

    async fn sent(&mut self, queued: &QueuedNotification, msg: &str) -> Result<(), NotifyError> {
        let (n, at) = (&queued.item, Utc::now());
        let policy = Some(n.policy.as_str()).filter(|p| !p.is_empty());
        self.catalog.notification_sent(queued.id, at).await?;
        self.metrics.record_notification(&n.channel, true);
        self.report.sent += 1;
        tracing::info!(policy = %n.policy, "{msg}");
        self.catalog
            .event(at, crate::model::AuditKind::AlertSent, policy, msg)
            .await?;
        Ok(())
    }

    /// Records a failed attempt; `true` when it is retried later (the
    /// destination is probably down).
    async fn failed(
        &mut self,
        queued: &QueuedNotification,
        e: &NotifyError,
    ) -> Result<bool, NotifyError> {
        let (n, at) = (&queued.item, Utc::now());
        let policy = Some(n.policy.as_str()).filter(|p| !p.is_empty());
        self.metrics.record_notification(&n.channel, false);
        self.report.failed += 1;
        let retry = e
            .is_transient()
            .then(|| at + backoff(queued.attempts + 1, queued.id));
        self.catalog
            .notification_failed(queued.id, &e.to_string(), retry, at)
            .await?;
        if let Some(t) = retry {
            tracing::warn!(error = %e, retry_at = %t, channel = %n.channel, subject = %n.subject, "alert notice not delivered; queued for retry");
            return Ok(true);
        }
        tracing::error!(error = %e, channel = %n.channel, subject = %n.subject, "alert notice cannot be delivered; dropped");
        let msg = format!(
            "dropped {} {} {} via notifier {}: {e}",
            n.kind, n.reason, n.channel, n.notifier
        );
        self.catalog
            .event(at, crate::model::AuditKind::AlertDropped, policy, &msg)
            .await?;
        Ok(false)
    }
}

/// What one channel of a notifier answered to a test notice.
#[derive(Debug)]
pub struct TestOutcome {
    pub channel: &'static str,
    /// The addresses, or the webhook URL without path.
    pub destination: String,
    pub result: Result<String, NotifyError>,
}

/// Sends a test notice straight through `recipient` (not via the outbox),
/// on each of its channels; email only when `mailer` is set.
pub async fn test(
    recipient: &Recipient,
    mailer: Option<&Mailer>,
    poster: &Poster,
    now: DateTime<Utc>,
) -> Vec<TestOutcome> {
    let n = alerts::test_notice(recipient.clone(), now);
    let mut out = Vec::new();
    if !recipient.to.is_empty() {
        let result = match mailer {
            Some(m) => m
                .send(
                    recipient.from.as_deref(),
                    &recipient.to,
                    &n.subject,
                    &n.body,
                )
                .await
                .map(|()| {
                    format!(
                        "accepted by the SMTP server {}:{}",
                        m.settings().host,
                        m.settings().port
                    )
                }),
            None => Err(NotifyError::NoSmtp),
        };
        out.push(TestOutcome {
            channel: "email",
            destination: recipient.to.join(", "),
            result,
        });
    }
    if let Some(target) = &recipient.webhook {
        let mut p = Payload::new(&n, &recipient.notifier);
        p.id = format!("{}-test-{}", recipient.notifier, now.timestamp());
        let result = poster.post(target, &p, now).await.map(|a| {
            format!("endpoint answered {} {}", a.status, a.body)
                .trim_end()
                .to_string()
        });
        out.push(TestOutcome {
            channel: "webhook",
            destination: webhook::redacted(&target.url),
            result,
        });
    }
    out
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
