//! Pure data records that cross layers: what an executed action, a drill
//! and a revision attempt produced, and the alert state that is persisted.
//! Producers (engine), stores (catalog) and consumers (metrics, status,
//! notify, CLI) all name these types here, so none imports another for them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{ActionKind, Trigger};

/// The result of one executed action.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub policy: String,
    pub action: ActionKind,
    pub backup_id: Option<String>,
    /// The backup's trigger (backups only).
    pub trigger: Option<Trigger>,
    pub ok: bool,
    /// Wall time the action took.
    pub seconds: f64,
    pub detail: String,
}

/// The result of one drill.
#[derive(Debug, Clone, Serialize)]
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

/// Who a policy's notices go to: one `Notifier` document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipient {
    pub notifier: String,
    /// `spec.email.from`; the daemon's `--smtp-from` when absent.
    pub from: Option<String>,
    pub to: Vec<String>,
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
