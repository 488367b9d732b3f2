//! Pure leaf types shared by every layer: the closed vocabularies that travel
//! between modules (audit kinds, drift kinds, run outcomes, action kinds,
//! backup health and triggers) and the drill `expect` grammar. Each vocabulary
//! is an enum whose serialized name is the string stored in the catalog, shown
//! in JSON and used as a metric label, so renaming a kind is a compile error
//! everywhere it is produced or counted instead of a silent zero. Nothing
//! here imports another module of the crate.

pub mod expectation;
mod kinds;
mod records;

pub use expectation::Expectation;
pub use kinds::{ActionKind, ArtifactProblem, AuditKind, DriftKind, Health, RunOutcome, Trigger};
pub use records::{
    ActiveAlert, CheckResult, DeployRestorePoint, DrillOutcome, Outcome, PitrArchive, Recipient,
    RevisionRecord, SecretRef, WebhookFormat, WebhookTarget,
};
