//! Pure: the `metadata.annotations` safepoint reads — acknowledgements of a
//! destructive change, written in the policy repository so that they are
//! reviewed with the change (docs/policy-reference.md, "Acknowledging a
//! destructive change"). Other annotations are free-form and ignored.

use super::raw::Metadata;
use super::suggest::closest;
use super::validate::Sink;
use super::yaml::join;

/// On a BackupPolicy: this change may delete up to N of its backups.
pub const ALLOW_DELETIONS: &str = "safepoint.io/allow-deletions";
/// On any document: this change may orphan the history of these removed
/// policies (comma-separated names).
pub const ALLOW_ORPHANS: &str = "safepoint.io/allow-orphans";

const KNOWN: [&str; 2] = [ALLOW_DELETIONS, ALLOW_ORPHANS];

/// The acknowledgements of one document.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Ack {
    pub deletions: Option<u32>,
    pub orphans: Vec<String>,
}

/// Reads the safepoint annotations of one document of `kind`, reporting a
/// misspelt `safepoint.io/` key, a count that is not a number, and
/// `allow-deletions` on a document that has no backups.
pub(crate) fn read(sink: &mut Sink<'_>, kind: &str, metadata: &Metadata) -> Ack {
    let mut ack = Ack::default();
    for (key, value) in &metadata.annotations {
        let ptr = join("/metadata/annotations", key);
        match key.as_str() {
            ALLOW_DELETIONS if kind != "BackupPolicy" => sink.err_key(
                &ptr,
                format!("`{ALLOW_DELETIONS}` only applies to a BackupPolicy"),
                "move it to the BackupPolicy whose backups the change deletes".to_string(),
            ),
            ALLOW_DELETIONS => match value.trim().parse::<u32>() {
                Ok(n) => ack.deletions = Some(n),
                Err(_) => sink.err(
                    &ptr,
                    format!("`{ALLOW_DELETIONS}` must be a number of backups, not `{value}`"),
                    "write the count the preview reports, quoted: `\"23\"`".to_string(),
                ),
            },
            ALLOW_ORPHANS => {
                ack.orphans = value
                    .split(',')
                    .map(str::trim)
                    .filter(|n| !n.is_empty())
                    .map(str::to_string)
                    .collect();
                if ack.orphans.is_empty() {
                    sink.err(
                        &ptr,
                        format!("`{ALLOW_ORPHANS}` names no policy"),
                        "list the removed policies, e.g. `\"orders-db, old-files\"`".to_string(),
                    );
                }
            }
            other if other.starts_with("safepoint.io/") => {
                let hint = match closest(other, &KNOWN) {
                    Some(c) => format!("did you mean `{c}`?"),
                    None => format!("known: `{ALLOW_DELETIONS}`, `{ALLOW_ORPHANS}`"),
                };
                sink.err_key(
                    &ptr,
                    format!("unknown safepoint annotation `{other}`"),
                    hint,
                );
            }
            _ => {}
        }
    }
    ack
}
