//! Engine: identifiers safepoint generates.

use chrono::{DateTime, Utc};

/// A sortable, unique backup id: `20261125T061500Z-3f9a1c`.
pub fn new_backup_id(now: DateTime<Utc>, policy: &str) -> String {
    let mut h = blake3::Hasher::new();
    h.update(policy.as_bytes());
    h.update(&now.timestamp_nanos_opt().unwrap_or_default().to_le_bytes());
    h.update(&std::process::id().to_le_bytes());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    h.update(&nanos.to_le_bytes());
    format!(
        "{}-{}",
        now.format("%Y%m%dT%H%M%SZ"),
        &h.finalize().to_hex()[..6]
    )
}
