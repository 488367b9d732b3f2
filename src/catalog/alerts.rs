//! IO: the catalog's alert tables (migrations 0002, 0007): open alerts and
//! the notification outbox (email and webhook; a decided notice becomes its
//! rows through `outbox_rows`, for the alert evaluation and for one-off
//! events such as a failed deploy). Saving an evaluation (new
//! alert state plus the notifications it produced) is one transaction, and
//! every commit that queues something rings the outbox bell (`Catalog::
//! outbox_bell`), so the daemon's delivery task sends it at once.

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::{Catalog, CatalogError, get_ots, get_ts, q, ts};
use crate::model::{ActiveAlert, Recipient, WebhookTarget};
use crate::notify::alerts::Notice;
use crate::notify::payload::Payload;

/// A notification to queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewNotification {
    pub channel: String,
    pub kind: String,
    pub policy: String,
    pub reason: String,
    pub notifier: String,
    pub sender: Option<String>,
    pub recipients: Vec<String>,
    pub subject: String,
    /// The mail text, or for a webhook the version-1 JSON payload.
    pub body: String,
    /// Where a webhook notice goes (`channel = "webhook"`).
    pub webhook: Option<WebhookTarget>,
}

/// A queued notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedNotification {
    pub id: i64,
    pub attempts: i64,
    pub item: NewNotification,
}

/// The outbox rows of a decided notice: one email per recipient notifier
/// with addresses (when `email`), one webhook post (the version-1 JSON
/// payload) per recipient notifier with a webhook.
pub fn outbox_rows(n: &Notice, email: bool) -> Result<Vec<NewNotification>, serde_json::Error> {
    let mut out = Vec::new();
    for r in &n.recipients {
        let row = |channel: &str| NewNotification {
            channel: channel.into(),
            kind: n.kind.as_str().into(),
            policy: n.policy.clone(),
            reason: n.reason.clone(),
            notifier: r.notifier.clone(),
            sender: None,
            recipients: Vec::new(),
            subject: n.subject.clone(),
            body: String::new(),
            webhook: None,
        };
        if email && !r.to.is_empty() {
            out.push(NewNotification {
                sender: r.from.clone(),
                recipients: r.to.clone(),
                body: n.body.clone(),
                ..row("email")
            });
        }
        if let Some(target) = &r.webhook {
            out.push(NewNotification {
                body: serde_json::to_string(&Payload::new(n, &r.notifier))?,
                webhook: Some(target.clone()),
                ..row("webhook")
            });
        }
    }
    Ok(out)
}

impl Catalog {
    pub async fn alerts(&self) -> Result<Vec<ActiveAlert>, CatalogError> {
        let rows = sqlx::query("SELECT * FROM alerts ORDER BY policy, reason")
            .fetch_all(&self.pool)
            .await
            .map_err(q("select alerts"))?;
        rows.into_iter()
            .map(|row| {
                let recipients: String = row.get("recipients");
                Ok(ActiveAlert {
                    policy: row.get("policy"),
                    reason: row.get("reason"),
                    since: get_ts(&row, "since")?,
                    notified_at: get_ts(&row, "notified_at")?,
                    detail: row.get("detail"),
                    recipients: serde_json::from_str::<Vec<Recipient>>(&recipients).map_err(
                        |e| CatalogError::Corrupt {
                            what: "alerts.recipients",
                            value: e.to_string(),
                        },
                    )?,
                })
            })
            .collect()
    }

    /// Queues notifications outside the alert state machine (events).
    pub async fn queue_notifications(
        &self,
        queue: &[NewNotification],
        now: DateTime<Utc>,
    ) -> Result<(), CatalogError> {
        let mut tx = self.pool.begin().await.map_err(q("begin queue"))?;
        insert_notifications(&mut tx, queue, now).await?;
        tx.commit().await.map_err(q("commit queue"))?;
        self.ring_outbox(queue);
        Ok(())
    }

    /// Replaces the open alerts with `state` and queues `queue`, atomically.
    pub async fn save_alerts(
        &self,
        state: &[ActiveAlert],
        queue: &[NewNotification],
        now: DateTime<Utc>,
    ) -> Result<(), CatalogError> {
        let mut tx = self.pool.begin().await.map_err(q("begin alerts"))?;
        sqlx::query("DELETE FROM alerts")
            .execute(&mut *tx)
            .await
            .map_err(q("clear alerts"))?;
        for a in state {
            sqlx::query(
                "INSERT INTO alerts (policy, reason, since, notified_at, detail, recipients)
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(&a.policy)
            .bind(&a.reason)
            .bind(ts(a.since))
            .bind(ts(a.notified_at))
            .bind(&a.detail)
            .bind(serde_json::to_string(&a.recipients).unwrap_or_else(|_| "[]".into()))
            .execute(&mut *tx)
            .await
            .map_err(q("insert alert"))?;
        }
        insert_notifications(&mut tx, queue, now).await?;
        tx.commit().await.map_err(q("commit alerts"))?;
        self.ring_outbox(queue);
        Ok(())
    }

    /// Pending notifications whose next attempt is due (all pending ones
    /// when `ignore_backoff`), oldest first.
    pub async fn due_notifications(
        &self,
        now: DateTime<Utc>,
        ignore_backoff: bool,
    ) -> Result<Vec<QueuedNotification>, CatalogError> {
        let rows = sqlx::query(
            "SELECT * FROM outbox WHERE state = 'pending' AND ($1 OR next_attempt_at <= $2) ORDER BY id",
        )
        .bind(ignore_backoff)
        .bind(ts(now))
        .fetch_all(&self.pool)
        .await
        .map_err(q("select due notifications"))?;
        rows.into_iter()
            .map(|row| {
                let recipients: String = row.get("recipients");
                let target: Option<String> = row.get("target");
                let webhook = match target {
                    Some(t) => {
                        Some(serde_json::from_str(&t).map_err(|e| CatalogError::Corrupt {
                            what: "outbox.target",
                            value: e.to_string(),
                        })?)
                    }
                    None => None,
                };
                Ok(QueuedNotification {
                    id: row.get("id"),
                    attempts: row.get("attempts"),
                    item: NewNotification {
                        channel: row.get("channel"),
                        kind: row.get("kind"),
                        policy: row.get("policy"),
                        reason: row.get("reason"),
                        notifier: row.get("notifier"),
                        sender: row.get("sender"),
                        recipients: serde_json::from_str(&recipients).map_err(|e| {
                            CatalogError::Corrupt {
                                what: "outbox.recipients",
                                value: e.to_string(),
                            }
                        })?,
                        subject: row.get("subject"),
                        body: row.get("body"),
                        webhook,
                    },
                })
            })
            .collect()
    }

    pub async fn notification_sent(&self, id: i64, at: DateTime<Utc>) -> Result<(), CatalogError> {
        sqlx::query(
            "UPDATE outbox SET state = 'sent', attempts = attempts + 1, done_at = $1, last_error = NULL WHERE id = $2",
        )
        .bind(ts(at))
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(q("mark notification sent"))?;
        Ok(())
    }

    /// Records a failed attempt: retried at `retry_at`, or never when `None`.
    pub async fn notification_failed(
        &self,
        id: i64,
        error: &str,
        retry_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<(), CatalogError> {
        sqlx::query(
            "UPDATE outbox SET attempts = attempts + 1, last_error = $1,
                    state = CASE WHEN $2 IS NULL THEN 'failed' ELSE 'pending' END,
                    next_attempt_at = COALESCE($3, next_attempt_at),
                    done_at = CASE WHEN $4 IS NULL THEN $5 ELSE NULL END
             WHERE id = $6",
        )
        .bind(error)
        .bind(retry_at.map(ts))
        .bind(retry_at.map(ts))
        .bind(retry_at.map(ts))
        .bind(ts(now))
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(q("mark notification failed"))?;
        Ok(())
    }

    /// Wakes the delivery task when something was queued.
    fn ring_outbox(&self, queue: &[NewNotification]) {
        if !queue.is_empty() {
            self.outbox_bell.notify_one();
        }
    }

    /// Rung after every commit that queued a notification (by this
    /// process); the delivery task waits on it.
    pub fn outbox_bell(&self) -> std::sync::Arc<tokio::sync::Notify> {
        self.outbox_bell.clone()
    }

    pub async fn pending_notifications(&self) -> Result<i64, CatalogError> {
        sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE state = 'pending'")
            .fetch_one(&self.pool)
            .await
            .map_err(q("count pending notifications"))
    }

    /// When the earliest pending notification is due (mail only counts
    /// when `email`: without an SMTP server it waits for a daemon with one).
    pub async fn next_notification_at(
        &self,
        email: bool,
    ) -> Result<Option<DateTime<Utc>>, CatalogError> {
        let row = sqlx::query(
            "SELECT MIN(next_attempt_at) AS at FROM outbox WHERE state = 'pending' AND ($1 OR channel != 'email')",
        )
        .bind(email)
        .fetch_one(&self.pool)
        .await
        .map_err(q("select next notification"))?;
        get_ots(&row, "at")
    }
}

async fn insert_notifications(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    queue: &[NewNotification],
    now: DateTime<Utc>,
) -> Result<(), CatalogError> {
    for n in queue {
        sqlx::query(
            "INSERT INTO outbox (created_at, channel, kind, policy, reason, notifier, sender,
                                     recipients, subject, body, next_attempt_at, target)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(ts(now))
        .bind(&n.channel)
        .bind(&n.kind)
        .bind(&n.policy)
        .bind(&n.reason)
        .bind(&n.notifier)
        .bind(&n.sender)
        .bind(serde_json::to_string(&n.recipients).unwrap_or_else(|_| "[]".into()))
        .bind(&n.subject)
        .bind(&n.body)
        .bind(ts(now))
        .bind(
            n.webhook
                .as_ref()
                .map(|t| serde_json::to_string(t).unwrap_or_default()),
        )
        .execute(&mut **tx)
        .await
        .map_err(q("queue notification"))?;
    }
    Ok(())
}
