//! Pure data: the pin marker (`pin.json`) stored next to a pinned backup's
//! manifest. The catalog holds the same pin for the planner; the marker is
//! what survives the loss of the catalog (`catalog rebuild` and every
//! observation restore pins from it). Written atomically after the backup is
//! complete, removed by `unpin`, deleted with the backup after its manifest.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::StorageError;

/// Pin marker format version written by this build.
pub const PIN_FORMAT: u32 = 1;
/// File name of the pin marker inside a backup's directory.
pub const PIN_FILE: &str = "pin.json";

/// Who pinned a backup, when, why, and for which release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PinMarker {
    pub format: u32,
    pub policy: String,
    /// The pinned backup's id.
    pub id: String,
    /// Why it is pinned (e.g. `failed deploy v1.4.0`, `legal hold`).
    pub reason: String,
    /// `user@host` for the CLI, `daemon`, or an API token's name.
    pub pinned_by: String,
    pub pinned_at: DateTime<Utc>,
    /// The release the pin is about (a failed deploy's tag), if any.
    pub release: Option<String>,
}

/// A backup whose pin marker exists but cannot be read: its pin state is
/// unknown, so retention must not delete it.
#[derive(Debug)]
pub struct UnreadablePin {
    pub policy: String,
    pub id: String,
    pub error: StorageError,
}

/// Parses a marker read from `<policy>/<id>/pin.json`; `Err` says why it is
/// not a marker for that backup.
pub fn parse_marker(bytes: &[u8], policy: &str, id: &str) -> Result<PinMarker, String> {
    let m: PinMarker = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if m.policy != policy || m.id != id {
        return Err(format!(
            "it names backup {}/{} but lies in {policy}/{id}",
            m.policy, m.id
        ));
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marker_round_trips_and_must_name_its_own_backup() {
        let m = PinMarker {
            format: PIN_FORMAT,
            policy: "orders".into(),
            id: "20261129T000000Z-abcd".into(),
            reason: "failed deploy v1.4.0".into(),
            pinned_by: "ci@runner".into(),
            pinned_at: DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
            release: Some("v1.4.0".into()),
        };
        let bytes = serde_json::to_vec(&m).unwrap();
        assert_eq!(parse_marker(&bytes, "orders", &m.id), Ok(m.clone()));
        assert!(
            parse_marker(&bytes, "other", &m.id)
                .unwrap_err()
                .contains("lies in other/")
        );
        assert!(parse_marker(b"{", "orders", &m.id).is_err());
    }
}
