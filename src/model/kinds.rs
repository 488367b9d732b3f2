//! Pure: the named vocabularies (see the module doc of `model`).

use serde::{Deserialize, Serialize};

/// Defines a `Copy` enum whose variants are named by fixed strings:
/// `as_str`, `parse`, `ALL`, `Display` and serde as that string.
macro_rules! named {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $v:ident => $s:literal),* $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum $name {
            $($(#[$vm])* $v),*
        }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$v),*];

            /// The name stored, shown and used as a label.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$v => $s),*
                }
            }

            /// The variant named `s`, if any.
            pub fn parse(s: &str) -> Option<$name> {
                match s {
                    $($s => Some($name::$v),)*
                    _ => None,
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                $name::parse(&s).ok_or_else(|| {
                    serde::de::Error::custom(format!(
                        "unknown {} `{s}`",
                        stringify!($name)
                    ))
                })
            }
        }
    };
}

named! {
    /// Why a backup was taken. Stored in manifests and the catalog.
    Trigger {
        Schedule => "schedule",
        Rpo => "rpo",
        Release => "release",
        PreDeploy => "pre-deploy",
        PostDeploy => "post-deploy",
        Forensic => "forensic",
        Manual => "manual",
    }
}

named! {
    /// What the last check of a stored backup found.
    Health {
        /// Artifact present and its checksum matched the manifest when last read.
        Verified => "verified",
        /// Manifest known, artifact gone from storage (drift `artifact-missing`).
        Missing => "missing",
        /// Artifact present but its checksum or size differs (drift `artifact-corrupt`).
        Corrupt => "corrupt",
    }
}

named! {
    /// The kind of an audit-log entry (column `audit.kind`).
    AuditKind {
        RevisionApplied => "revision-applied",
        RevisionRejected => "revision-rejected",
        BackupSucceeded => "backup-succeeded",
        BackupFailed => "backup-failed",
        BackupInterrupted => "backup-interrupted",
        BackupPruned => "backup-pruned",
        PruneFailed => "prune-failed",
        UntrackedArtifact => "untracked-artifact",
        ArtifactMissing => "artifact-missing",
        ArtifactCorrupt => "artifact-corrupt",
        Restore => "restore",
        DrillPassed => "drill-passed",
        DrillFailed => "drill-failed",
        DeployStart => "deploy-start",
        DeployFinish => "deploy-finish",
        Pin => "pin",
        Unpin => "unpin",
        PinRestored => "pin-restored",
        PinMarkerRewritten => "pin-marker-rewritten",
        Alert => "alert",
        AlertSent => "alert-sent",
        AlertDropped => "alert-dropped",
        CatalogRebuilt => "catalog-rebuilt",
    }
}

named! {
    /// A kind of drift `status` reports (label of `safepoint_drift{kind}`,
    /// alert reason).
    DriftKind {
        RpoMissed => "rpo-missed",
        BackupFailed => "backup-failed",
        DrillFailed => "drill-failed",
        DrillOverdue => "drill-overdue",
        ArtifactMissing => "artifact-missing",
        ArtifactCorrupt => "artifact-corrupt",
        UntrackedArtifact => "untracked-artifact",
        PolicyInvalid => "policy-invalid",
        /// A PITR policy's WAL archive misses a segment after the start of
        /// its oldest base backup: recovery cannot cross it.
        WalArchiveGap => "wal-archive-gap",
        /// A PITR policy's WAL archive last held everything the server had
        /// written longer ago than its RPO.
        ArchiveBehindRpo => "archive-behind-rpo",
    }
}

impl DriftKind {
    /// The drift kinds `status::compute` decides per policy; each policy
    /// exports a 0/1 series for each. Not among them: `untracked-artifact`
    /// (imported as soon as it is seen and recorded as an event) and
    /// `policy-invalid` (the whole repository: `safepoint_policy_revision_valid`).
    pub const MEASURED: &'static [DriftKind] = &[
        DriftKind::RpoMissed,
        DriftKind::BackupFailed,
        DriftKind::DrillFailed,
        DriftKind::DrillOverdue,
        DriftKind::ArtifactMissing,
        DriftKind::ArtifactCorrupt,
        DriftKind::WalArchiveGap,
        DriftKind::ArchiveBehindRpo,
    ];
}

named! {
    /// How a backup run ended (column `runs.outcome`).
    RunOutcome {
        Running => "running",
        Succeeded => "succeeded",
        Failed => "failed",
        Interrupted => "interrupted",
    }
}

named! {
    /// What an executed action was (`Outcome::action`).
    ActionKind {
        Backup => "backup",
        Delete => "delete",
        /// A task of the executor failed before it could report an action.
        Internal => "internal",
    }
}

/// Why a stored artifact is not healthy, as found by a storage check: the
/// health it now has (`Missing` or `Corrupt`) and what was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactProblem {
    pub health: Health,
    pub detail: String,
}

impl ArtifactProblem {
    pub fn missing(detail: String) -> ArtifactProblem {
        ArtifactProblem {
            health: Health::Missing,
            detail,
        }
    }

    pub fn corrupt(detail: String) -> ArtifactProblem {
        ArtifactProblem {
            health: Health::Corrupt,
            detail,
        }
    }

    /// The audit kind recording that a backup reached this health.
    pub fn audit_kind(&self) -> AuditKind {
        match self.health {
            Health::Missing => AuditKind::ArtifactMissing,
            _ => AuditKind::ArtifactCorrupt,
        }
    }
}

impl std::fmt::Display for ArtifactProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.detail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_unique() {
        fn check<T: Copy + PartialEq + std::fmt::Debug>(
            all: &[T],
            name: fn(T) -> &'static str,
            parse: fn(&str) -> Option<T>,
        ) {
            let mut seen = std::collections::BTreeSet::new();
            for v in all {
                assert_eq!(parse(name(*v)), Some(*v));
                assert!(seen.insert(name(*v)), "{} twice", name(*v));
            }
        }
        check(Trigger::ALL, Trigger::as_str, Trigger::parse);
        check(Health::ALL, Health::as_str, Health::parse);
        check(AuditKind::ALL, AuditKind::as_str, AuditKind::parse);
        check(DriftKind::ALL, DriftKind::as_str, DriftKind::parse);
        check(RunOutcome::ALL, RunOutcome::as_str, RunOutcome::parse);
        check(ActionKind::ALL, ActionKind::as_str, ActionKind::parse);
    }

    #[test]
    fn serde_uses_the_names() {
        assert_eq!(
            serde_json::to_string(&Trigger::PreDeploy).unwrap(),
            "\"pre-deploy\""
        );
        assert_eq!(
            serde_json::from_str::<Health>("\"corrupt\"").unwrap(),
            Health::Corrupt
        );
        assert!(serde_json::from_str::<Health>("\"gone\"").is_err());
    }
}
