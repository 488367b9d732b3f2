//! Pure: the policy documents exactly as written in YAML (camelCase, flat),
//! for serde and for the generated JSON schema. Nothing here is validated
//! beyond shape; `validate` turns these into the typed model.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;

/// One policy document. `kind` selects the shape of `spec`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(tag = "kind")]
#[schemars(title = "safepoint policy document")]
#[allow(clippy::large_enum_variant, dead_code)]
pub(crate) enum RawDocument {
    Storage(StorageDocument),
    Notifier(NotifierDocument),
    BackupPolicy(BackupPolicyDocument),
}

/// Fields every document has, whatever its kind.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct Metadata {
    /// DNS-label style: lowercase letters, digits and `-`, at most 63
    /// characters, unique per kind.
    pub name: String,
    /// Free-form labels, e.g. `team: payments` (used by `--selector`).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Free-form annotations. safepoint reads two (docs/policy-reference.md):
    /// `safepoint.io/allow-deletions: "N"` (BackupPolicy: this change may
    /// delete up to N of its backups) and `safepoint.io/allow-orphans:
    /// "a, b"` (any document: this change may orphan the history of the
    /// removed policies `a` and `b`).
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct StorageDocument {
    /// Always `safepoint/v1`.
    pub api_version: String,
    pub metadata: Metadata,
    pub spec: StorageSpec,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct NotifierDocument {
    /// Always `safepoint/v1`.
    pub api_version: String,
    pub metadata: Metadata,
    pub spec: NotifierSpec,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct BackupPolicyDocument {
    /// Always `safepoint/v1`.
    pub api_version: String,
    pub metadata: Metadata,
    pub spec: BackupPolicySpec,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum StorageType {
    /// A directory on the daemon's host.
    Local,
    /// S3 or an S3-compatible store (MinIO, Ceph, R2, ...).
    S3,
}

/// Where artifacts go.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct StorageSpec {
    #[serde(rename = "type")]
    pub kind: StorageType,
    /// `local`: the directory artifacts are written under (relative paths resolve against the daemon's working directory).
    pub path: Option<String>,
    /// `s3`: bucket name (required).
    pub bucket: Option<String>,
    /// `s3`: key prefix under which `<policy>/<backup-id>/` are written (default: the bucket root).
    pub prefix: Option<String>,
    /// `s3`: region (required without `endpoint`; default `us-east-1` with one).
    pub region: Option<String>,
    /// `s3`: endpoint URL of an S3-compatible store, e.g. `https://minio.internal:9000` (default: AWS).
    pub endpoint: Option<String>,
    /// `s3`: path-style requests (`endpoint/bucket/key`) instead of virtual-hosted style (default: true with `endpoint`, false for AWS).
    pub path_style: Option<bool>,
    /// `s3`: allow a plain `http://` endpoint that is not on loopback (default: false; loopback is always allowed).
    pub allow_http: Option<bool>,
    /// `s3`: access key by reference (default: the standard AWS environment variables, web identity or instance credentials).
    pub credentials: Option<S3Credentials>,
    pub encryption: Option<Encryption>,
}

/// An S3 access key, only by reference.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct S3Credentials {
    /// Access key id: `{env: NAME}` or `{file: PATH}`.
    pub access_key_id_from: SecretFrom,
    /// Secret access key: `{env: NAME}` or `{file: PATH}`.
    pub secret_access_key_from: SecretFrom,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct Encryption {
    /// age recipients (public keys `age1...` or `ssh-ed25519 ...`), never
    /// identities (secret keys).
    #[serde(default)]
    pub age_recipients: Vec<String>,
}

/// Where alerts go. At least one of `email` and `webhook`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct NotifierSpec {
    pub email: Option<Email>,
    pub webhook: Option<Webhook>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct Email {
    /// Recipient addresses (at least one).
    pub to: Vec<String>,
    /// Sender address; defaults to the daemon's SMTP settings.
    pub from: Option<String>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct Webhook {
    /// `http://` or `https://` URL receiving a JSON POST.
    pub url: String,
    /// HMAC-SHA256 signing secret, by reference.
    pub secret_from: Option<SecretFrom>,
    /// Body format: `json` (the versioned safepoint payload, default) or
    /// `slack` (a Slack/Mattermost incoming-webhook message).
    pub format: Option<WebhookFormat>,
}

#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum WebhookFormat {
    Json,
    Slack,
}

/// A secret held outside Git: exactly one of `env` or `file`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct SecretFrom {
    /// Name of an environment variable of the daemon.
    pub env: Option<String>,
    /// Path of a file readable by the daemon (e.g. `/run/secrets/orders`).
    pub file: Option<String>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct BackupPolicySpec {
    pub source: SourceSpec,
    /// Name of a `Storage` document.
    pub storage: String,
    pub schedule: Option<ScheduleSpec>,
    /// Recovery point objective, a duration such as `6h`: a newest good
    /// backup older than this is drift `rpo-missed`.
    pub rpo: Option<String>,
    pub releases: Option<Releases>,
    pub deploy: Option<Deploy>,
    /// Absent: `keepLast: 7`. Present: unset rules are 0.
    pub retention: Option<RetentionSpec>,
    pub drill: Option<Drill>,
    pub alerts: Option<Alerts>,
    /// `true` stops scheduled work for this policy (default `false`).
    pub suspend: Option<bool>,
    /// Upper bound for one backup run, a duration (default `1h`).
    pub timeout: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum SourceType {
    Postgres,
    Mysql,
    Sqlite,
    Directory,
    Command,
}

impl SourceType {
    pub fn name(self) -> &'static str {
        match self {
            SourceType::Postgres => "postgres",
            SourceType::Mysql => "mysql",
            SourceType::Sqlite => "sqlite",
            SourceType::Directory => "directory",
            SourceType::Command => "command",
        }
    }
}

/// The data source. Which fields apply depends on `type`:
/// `postgres`/`mysql`: `url`, `passwordFrom` (`postgres` also `binDir` and `pitr`); `sqlite`: `path`;
/// `directory`: `path`, `exclude`; `command`: `backupCommand`, `restoreCommand`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct SourceSpec {
    #[serde(rename = "type")]
    pub kind: SourceType,
    /// Connection URL without password, e.g. `postgres://backup@db:5432/orders`.
    pub url: Option<String>,
    pub password_from: Option<SecretFrom>,
    /// `postgres`: directory holding the `pg_dump` to use, e.g.
    /// `/usr/lib/postgresql/17/bin` (default: the newest installed client
    /// that is at least the server's major version).
    pub bin_dir: Option<String>,
    /// File (`sqlite`) or directory (`directory`) to back up.
    pub path: Option<String>,
    /// `directory`: glob patterns excluded from the archive.
    pub exclude: Option<Vec<String>>,
    /// `command`: shell command whose stdout is the backup.
    pub backup_command: Option<String>,
    /// `command`: shell command reading a backup on stdin (needed by drills).
    pub restore_command: Option<String>,
    /// `postgres`: point-in-time recovery. The scheduled backups become
    /// base backups (`pg_basebackup`) and the WAL is archived continuously
    /// (`pg_receivewal` on a physical replication slot) into the storage.
    pub pitr: Option<PitrSpec>,
}

/// Continuous WAL archiving of a `postgres` source (docs/pitr.md).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct PitrSpec {
    /// How often the WAL segment being written is copied to the storage
    /// (a duration, default `10s`): the achievable RPO.
    pub wal_flush_interval: Option<String>,
    /// Physical replication slot `pg_receivewal` streams from, created if
    /// missing (default `safepoint_<policy name with - as _>`).
    pub slot: Option<String>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct ScheduleSpec {
    /// Cron expression, 5 fields (or 6 with seconds), e.g. `0 */6 * * *`.
    pub cron: String,
    /// IANA time zone name (default `UTC`).
    pub timezone: Option<String>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct Releases {
    /// Glob matched against new Git tags, e.g. `v*`.
    pub tag_pattern: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Before {
    Snapshot,
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum OnSuccess {
    Baseline,
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum OnFailure {
    PinPreDeploy,
    ForensicSnapshot,
    Alert,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct Deploy {
    /// What `deploy start` does (default `none`).
    pub before: Option<Before>,
    /// What `deploy finish --status success` does (default `none`).
    pub on_success: Option<OnSuccess>,
    /// What `deploy finish --status failure` does (default: nothing).
    pub on_failure: Option<Vec<OnFailure>>,
}

#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct RetentionSpec {
    pub keep_last: Option<u32>,
    pub keep_hourly: Option<u32>,
    pub keep_daily: Option<u32>,
    pub keep_weekly: Option<u32>,
    pub keep_monthly: Option<u32>,
    pub keep_yearly: Option<u32>,
    /// Release baselines and their pre-deploy snapshots, per release tag.
    pub keep_releases: Option<u32>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct Drill {
    /// When drills run; absent = only on demand (`safepoint drill`).
    pub schedule: Option<ScheduleSpec>,
    /// Where the backup is restored; required, except for a PITR policy
    /// (`source.pitr`), whose drills restore into a scratch cluster under
    /// the daemon's data directory and take no `target`.
    pub target: Option<DrillTargetSpec>,
    pub verify: Option<Verify>,
    /// Recovery time objective the restore must meet, a duration.
    pub max_duration: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum DrillTargetType {
    Postgres,
    Mysql,
    Directory,
}

impl DrillTargetType {
    pub fn name(self) -> &'static str {
        match self {
            DrillTargetType::Postgres => "postgres",
            DrillTargetType::Mysql => "mysql",
            DrillTargetType::Directory => "directory",
        }
    }
}

/// Segregated scratch server (or directory), never the source.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct DrillTargetSpec {
    #[serde(rename = "type")]
    pub kind: DrillTargetType,
    /// `postgres`/`mysql`: URL of the scratch server (without password).
    pub url: Option<String>,
    pub password_from: Option<SecretFrom>,
    /// `directory`: root under which scratch directories are created.
    pub path: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Completeness {
    Exact,
    Estimate,
    Off,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct Verify {
    /// Per-table row counts compared with the backup's manifest.
    pub completeness: Option<Completeness>,
    #[serde(default)]
    pub checks: Vec<Check>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct Check {
    pub name: String,
    /// A query returning one value.
    pub sql: String,
    /// `= N`, `>= N`, `<= N`, `> N`, `< N`, `non-empty`, or `~ REGEX`.
    pub expect: String,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct Alerts {
    /// Names of `Notifier` documents.
    #[serde(default)]
    pub notifiers: Vec<String>,
}
