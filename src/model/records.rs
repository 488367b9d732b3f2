//! Pure data records that cross layers: what an executed action, a drill
//! and a revision attempt produced, and the alert state that is persisted.
//! Producers (engine), stores (catalog) and consumers (metrics, status,
//! notify, CLI) all name these types here, so none imports another for them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use std::path::PathBuf;

use super::{ActionKind, Trigger};

/// The result of one executed action.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Outcome {
    pub policy: String,
    pub action: ActionKind,
    pub backup_id: Option<String>,
    /// The backup's trigger (backups only).
    pub trigger: Option<Trigger>,
    /// The release the backup was requested for (backups only). With
    /// `policy` and `trigger` it names the request the outcome answers: the
    /// planner takes one backup per distinct policy, trigger and release,
    /// so two gates of one policy for two releases get their own answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub release: Option<String>,
    pub ok: bool,
    /// Wall time the action took.
    pub seconds: f64,
    pub detail: String,
    /// Transient failures retried before this result (backups only).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub retries: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// The result of one drill.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DrillOutcome {
    pub policy: String,
    pub backup_id: String,
    pub passed: bool,
    pub scratch: String,
    pub restore_seconds: Option<f64>,
    pub checks: Vec<CheckResult>,
}

/// One named check of a drill.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckResult {
    pub name: String,
    pub passed: bool,
    pub detail: String,
}

/// One policy-repository revision the daemon tried to apply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RevisionRecord {
    pub commit: String,
    pub branch: String,
    pub author: String,
    pub summary: String,
    pub attempted_at: DateTime<Utc>,
    pub valid: bool,
    /// Rendered diagnostics (`file:line: message (hint: ...)`) when invalid.
    pub diagnostics: Vec<String>,
}

/// Who a policy's notices go to: one `Notifier` document (its email
/// addresses, its webhook, or both).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipient {
    pub notifier: String,
    /// `spec.email.from`; the daemon's `--smtp-from` when absent.
    pub from: Option<String>,
    /// `spec.email.to`; empty without `email`.
    pub to: Vec<String>,
    /// `spec.webhook`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookTarget>,
}

/// Where and how a webhook notice is posted (the secret by reference only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookTarget {
    pub url: String,
    #[serde(default)]
    pub secret_from: Option<SecretRef>,
    #[serde(default)]
    pub format: WebhookFormat,
}

/// The body a webhook notifier posts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WebhookFormat {
    /// The versioned safepoint JSON payload (docs/webhook-payload.schema.json).
    #[default]
    Json,
    /// A Slack/Mattermost incoming-webhook message (`{"text": ...}`).
    Slack,
}

/// A reference to a secret held outside Git. The value is never stored in
/// the model, only where to read it from at execution time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SecretRef {
    Env(String),
    File(PathBuf),
}

/// An open alert, as persisted between cycles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveAlert {
    pub policy: String,
    pub reason: String,
    pub since: DateTime<Utc>,
    pub notified_at: DateTime<Utc>,
    pub detail: String,
    pub recipients: Vec<Recipient>,
}

/// The restore point a `deploy start` created on the server of a PITR
/// policy, recorded on the release's start row: the target of `restore
/// --before-deploy` (`recovery_target_name`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeployRestorePoint {
    pub name: String,
    /// Its WAL position (`16/B374D848`).
    pub lsn: String,
}

/// The WAL archive of a PITR policy as its archiver last found it (catalog
/// `pitr_archives`, written after its flushes): the recoverable window, the
/// missing segments and how far the archive was behind the server.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PitrArchive {
    pub policy: String,
    /// The earliest time recovery can reach: the end of the oldest verified
    /// base backup from whose start on the archive has no gap.
    pub window_start: Option<DateTime<Utc>>,
    /// The latest time up to which everything the server had written is
    /// archived (the server's position sampled then was stored).
    pub window_end: Option<DateTime<Utc>>,
    /// The end of the archived WAL (`16/B374D848`).
    pub end_lsn: Option<String>,
    /// The server's position at the last sample minus `end_lsn`.
    pub lag_bytes: Option<u64>,
    /// Missing segments after the oldest base backup's start, as
    /// `first..last` segment names (one name for a single segment).
    pub gaps: Vec<String>,
    pub checked_at: DateTime<Utc>,
}
