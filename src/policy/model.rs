//! Pure: the typed, validated policy model. Values of these types
//! only exist after `policy::load` accepted a revision, so code downstream never
//! re-checks them ("parse, don't validate").

use std::collections::BTreeMap;
use std::path::PathBuf;

use chrono::TimeDelta;
use serde::{Deserialize, Serialize};

/// Everything one policy revision asks for, keyed by `metadata.name`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DesiredState {
    pub storages: BTreeMap<String, StorageSpec>,
    pub notifiers: BTreeMap<String, NotifierSpec>,
    pub policies: BTreeMap<String, BackupPolicy>,
    /// Destructive consequences this revision acknowledges (annotations).
    pub acknowledged: Acknowledged,
}

/// What a revision acknowledges in its own documents, so that a reviewed
/// line, not a flag, lets a destructive change through the deletion guard
/// (`plan::preview::guard`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Acknowledged {
    /// Policy -> how many of its backups the change may delete
    /// (`safepoint.io/allow-deletions` on the BackupPolicy).
    pub deletions: BTreeMap<String, u32>,
    /// Removed policies whose history may become orphaned
    /// (`safepoint.io/allow-orphans` on any document).
    pub orphans: std::collections::BTreeSet<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StorageSpec {
    pub name: String,
    pub kind: StorageKind,
    /// age recipients (public keys); empty = no encryption.
    pub age_recipients: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum StorageKind {
    Local {
        path: PathBuf,
    },
    S3 {
        bucket: String,
        /// Normalised: no leading/trailing `/`; empty = the bucket root.
        prefix: String,
        region: String,
        /// `None` = AWS.
        endpoint: Option<String>,
        path_style: bool,
        /// Plain `http://` endpoint (loopback, or `allowHttp: true`).
        allow_http: bool,
        /// `None` = the standard AWS credential chain (env, web identity, instance).
        credentials: Option<S3Credentials>,
    },
}

/// An S3 access key, by reference only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct S3Credentials {
    pub access_key_id_from: SecretRef,
    pub secret_access_key_from: SecretRef,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NotifierSpec {
    pub name: String,
    pub email: Option<EmailNotifier>,
    pub webhook: Option<WebhookNotifier>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EmailNotifier {
    pub to: Vec<String>,
    pub from: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WebhookNotifier {
    pub url: String,
    pub secret_from: Option<SecretRef>,
    pub format: WebhookFormat,
}

pub use crate::model::{SecretRef, WebhookFormat};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BackupPolicy {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub source: Source,
    /// Name of a `Storage` (validated to exist).
    pub storage: String,
    pub schedule: Option<Schedule>,
    /// Newest good backup older than this = drift `rpo-missed`.
    #[serde(with = "opt_delta_secs")]
    pub rpo: Option<TimeDelta>,
    /// `releases.tagPattern`, a glob such as `v*`.
    pub release_tag_pattern: Option<String>,
    pub deploy: DeploySpec,
    pub retention: Retention,
    pub drill: Option<DrillSpec>,
    /// Notifier names (validated to exist).
    pub alerts: Vec<String>,
    pub suspend: bool,
    /// Upper bound for one backup run.
    #[serde(with = "delta_secs")]
    pub timeout: TimeDelta,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Source {
    Postgres {
        url: String,
        password_from: Option<SecretRef>,
        /// Directory of the `pg_dump` to run (`source.binDir`).
        #[serde(skip_serializing_if = "Option::is_none")]
        bin_dir: Option<PathBuf>,
        /// Continuous archiving (`source.pitr`): base backups + WAL.
        #[serde(skip_serializing_if = "Option::is_none")]
        pitr: Option<Pitr>,
    },
    Mysql {
        url: String,
        password_from: Option<SecretRef>,
    },
    Sqlite {
        path: PathBuf,
    },
    Directory {
        path: PathBuf,
        exclude: Vec<String>,
    },
    Command {
        /// Run through `sh -c`; its stdout is the backup.
        backup: String,
        /// Run through `sh -c`; the backup is its stdin.
        restore: Option<String>,
    },
}

impl Source {
    pub fn kind(&self) -> &'static str {
        match self {
            Source::Postgres { .. } => "postgres",
            Source::Mysql { .. } => "mysql",
            Source::Sqlite { .. } => "sqlite",
            Source::Directory { .. } => "directory",
            Source::Command { .. } => "command",
        }
    }
}

/// Point-in-time recovery of a PostgreSQL source (`source.pitr`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Pitr {
    /// The WAL segment being written reaches the storage at least this often.
    #[serde(with = "delta_secs")]
    pub wal_flush_interval: TimeDelta,
    /// Physical replication slot (`[a-z0-9_]`, at most 63 characters).
    pub slot: String,
}

impl Source {
    /// The PITR settings of a `postgres` source in continuous-archiving mode.
    pub fn pitr(&self) -> Option<&Pitr> {
        match self {
            Source::Postgres { pitr, .. } => pitr.as_ref(),
            _ => None,
        }
    }
}

/// A validated cron expression (5 or 6 fields, croner syntax) in a time zone.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Schedule {
    pub cron: String,
    #[serde(serialize_with = "ser_tz")]
    pub timezone: chrono_tz::Tz,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Retention {
    pub keep_last: u32,
    pub keep_hourly: u32,
    pub keep_daily: u32,
    pub keep_weekly: u32,
    pub keep_monthly: u32,
    pub keep_yearly: u32,
    /// Release baselines (trigger `release`/`post-deploy`) and their
    /// pre-deploy snapshots, counted per release tag.
    pub keep_releases: u32,
}

impl Retention {
    /// True when no rule keeps anything (rejected by validation).
    pub fn keeps_nothing(&self) -> bool {
        self.keep_last == 0
            && self.keep_hourly == 0
            && self.keep_daily == 0
            && self.keep_weekly == 0
            && self.keep_monthly == 0
            && self.keep_yearly == 0
            && self.keep_releases == 0
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DeploySpec {
    /// `before: snapshot` => `deploy start` takes a pre-deploy snapshot.
    pub snapshot_before: bool,
    /// `onSuccess: baseline` => `deploy finish --status success` takes a baseline.
    pub baseline_on_success: bool,
    pub on_failure: Vec<OnFailure>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnFailure {
    PinPreDeploy,
    ForensicSnapshot,
    Alert,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DrillSpec {
    pub schedule: Option<Schedule>,
    pub target: DrillTarget,
    pub completeness: Completeness,
    pub checks: Vec<DrillCheck>,
    #[serde(with = "opt_delta_secs")]
    pub max_duration: Option<TimeDelta>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum DrillTarget {
    Postgres {
        url: String,
        password_from: Option<SecretRef>,
    },
    Mysql {
        url: String,
        password_from: Option<SecretRef>,
    },
    /// Scratch directory root for `sqlite` and `directory` sources.
    Directory { path: PathBuf },
    /// A PITR policy's drill: a scratch cluster under the daemon's data
    /// directory, started on a free loopback port.
    #[serde(rename = "pitr-cluster")]
    PitrCluster,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Completeness {
    Exact,
    Estimate,
    Off,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DrillCheck {
    pub name: String,
    pub sql: String,
    /// `= N`, `!= N`, `>= N`, `<= N`, `> N`, `< N`, `non-empty`, or `~ REGEX`,
    /// parsed by the one grammar drills evaluate with.
    pub expect: crate::model::Expectation,
}

fn ser_tz<S: serde::Serializer>(tz: &chrono_tz::Tz, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(tz.name())
}

mod delta_secs {
    pub fn serialize<S: serde::Serializer>(d: &chrono::TimeDelta, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i64(d.num_seconds())
    }
}

mod opt_delta_secs {
    pub fn serialize<S: serde::Serializer>(
        d: &Option<chrono::TimeDelta>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&d.num_seconds()),
            None => s.serialize_none(),
        }
    }
}
