//! Pure data: the manifest written next to every artifact. It is the
//! single source of truth for a backup; the catalog is a cache of manifests.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::observed::Trigger;

/// Manifest format version written by this build.
pub const MANIFEST_FORMAT: u32 = 1;
/// File name of the manifest inside a backup's directory.
pub const MANIFEST_FILE: &str = "manifest.json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub format: u32,
    pub id: String,
    pub policy: String,
    pub storage: String,
    /// `postgres`, `mysql`, `sqlite`, `directory` or `command`.
    pub source_kind: String,
    pub trigger: Trigger,
    pub release: Option<String>,
    /// Policy-repository commit that was applied when the backup was taken.
    pub commit: Option<String>,
    pub requested_by: Option<String>,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub artifact: ArtifactInfo,
    /// Versions of the tools that produced the artifact (e.g. `pg_dump`).
    #[serde(default)]
    pub tools: BTreeMap<String, String>,
    /// Row count per table (database sources) taken in the same snapshot as
    /// the dump, or entry counts for directories (`files`, `bytes`).
    #[serde(default)]
    pub counts: BTreeMap<String, u64>,
    /// Always `complete`: a manifest is written only after the artifact is
    /// fully stored and its checksum verified.
    pub status: String,
}

/// Reads the manifest stored as `<policy>/<id>/manifest.json`. Storage is
/// not trusted to be well-formed (a hand edit, another tool, a bucket others
/// can write): besides the JSON, the manifest must name the backup it lies
/// in, be a format this build reads, say `complete`, and name its artifact
/// as a plain file inside the backup's directory — never `../…` or an
/// absolute path that would make verify, restore or a drill read a file
/// outside the storage. The error is the reason, shown with the path.
pub fn parse(bytes: &[u8], policy: &str, id: &str) -> Result<Manifest, String> {
    let m: Manifest = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if m.policy != policy || m.id != id {
        return Err(format!(
            "it names backup {}/{} but lies in {policy}/{id}",
            m.policy, m.id
        ));
    }
    if m.format == 0 || m.format > MANIFEST_FORMAT {
        return Err(format!(
            "manifest format {} is not one this safepoint reads (1..={MANIFEST_FORMAT}); \
             a newer safepoint wrote it: upgrade",
            m.format
        ));
    }
    if m.status != "complete" {
        return Err(format!(
            "its status is `{}`, not `complete`: never trusted as a backup",
            m.status
        ));
    }
    if !is_plain_file_name(&m.artifact.file) {
        return Err(format!(
            "its artifact `{}` is not a plain file name inside the backup's directory",
            m.artifact.file.escape_debug()
        ));
    }
    Ok(m)
}

/// A single path component: not empty, not `.`/`..`, no separator, no NUL.
fn is_plain_file_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\\', '\0'])
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArtifactInfo {
    /// File name relative to the backup's directory, e.g. `data.sqlite.zst`.
    pub file: String,
    /// Bytes stored (after compression and encryption).
    pub size: u64,
    /// Bytes produced by the source before compression.
    pub raw_size: u64,
    /// `blake3:<hex>` of the stored bytes.
    pub checksum: String,
    /// `zstd`.
    pub compression: String,
    /// `age` when encrypted, absent otherwise.
    pub encryption: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::parse;

    fn manifest(file: &str, status: &str, format: u32) -> Vec<u8> {
        serde_json::json!({
            "format": format, "id": "b1", "policy": "p", "storage": "s",
            "sourceKind": "sqlite", "trigger": "schedule", "release": null,
            "commit": null, "requestedBy": null,
            "startedAt": "2026-11-29T10:00:00Z", "finishedAt": "2026-11-29T10:00:01Z",
            "artifact": {"file": file, "size": 1, "rawSize": 1, "checksum": "blake3:00",
                         "compression": "zstd", "encryption": null},
            "status": status,
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn a_manifest_as_written_is_read() {
        let m = parse(&manifest("data.sqlite.zst", "complete", 1), "p", "b1").unwrap();
        assert_eq!(m.artifact.file, "data.sqlite.zst");
    }

    #[test]
    fn an_artifact_outside_the_backup_directory_is_refused() {
        for file in [
            "../../etc/shadow",
            "/etc/shadow",
            "..",
            ".",
            "",
            "a/b",
            "a\\b",
            "a\0b",
        ] {
            let err = parse(&manifest(file, "complete", 1), "p", "b1").unwrap_err();
            assert!(err.contains("not a plain file name"), "{file:?}: {err}");
        }
    }

    #[test]
    fn another_backup_a_newer_format_or_an_incomplete_status_is_refused() {
        let ok = manifest("f", "complete", 1);
        assert!(parse(&ok, "p", "b2").unwrap_err().contains("lies in p/b2"));
        assert!(parse(&ok, "q", "b1").unwrap_err().contains("lies in q/b1"));
        let newer = parse(&manifest("f", "complete", 2), "p", "b1").unwrap_err();
        assert!(newer.contains("upgrade"), "{newer}");
        let partial = parse(&manifest("f", "partial", 1), "p", "b1").unwrap_err();
        assert!(partial.contains("not `complete`"), "{partial}");
    }
}
