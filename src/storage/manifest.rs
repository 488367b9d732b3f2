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
