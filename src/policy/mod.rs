//! Pure: the policy repository format: YAML documents in, a typed
//! `DesiredState` or every problem at once (file:line + hint) out.

pub mod annotations;
mod backup_policy;
mod document;
mod duration;
pub mod model;
pub mod permissions;
mod pitr;
mod raw;
mod schema;
mod source;
mod storage;
mod suggest;
#[cfg(test)]
mod tests;
mod url;
mod validate;
mod yaml;

pub use duration::parse_duration;

pub use model::*;
pub use permissions::Permissions;

use serde::Serialize;

/// One input file: its path as shown to the user (relative to the repository
/// root, e.g. `policies/orders.yaml`) and its text. A file that is not UTF-8
/// keeps its readable prefix as `text` and where decoding stopped in
/// `not_utf8`; `load` reports it as a problem of that file alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyFile {
    pub path: String,
    pub text: String,
    pub not_utf8: Option<NotUtf8>,
}

/// Where a policy file stops being UTF-8: 1-based line and column of the
/// first invalid byte, and that byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotUtf8 {
    pub line: usize,
    pub column: usize,
    pub byte: u8,
}

impl PolicyFile {
    pub fn new(path: impl Into<String>, text: impl Into<String>) -> PolicyFile {
        PolicyFile {
            path: path.into(),
            text: text.into(),
            not_utf8: None,
        }
    }

    /// A file as read from disk or Git: UTF-8 text, or the position of the
    /// first byte that is not.
    pub fn from_bytes(path: impl Into<String>, bytes: Vec<u8>) -> PolicyFile {
        match String::from_utf8(bytes) {
            Ok(text) => PolicyFile::new(path, text),
            Err(e) => {
                let valid = e.utf8_error().valid_up_to();
                let bytes = e.into_bytes();
                let prefix = String::from_utf8_lossy(&bytes[..valid]).into_owned();
                let line = prefix.matches('\n').count() + 1;
                let column = prefix.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
                PolicyFile {
                    path: path.into(),
                    not_utf8: Some(NotUtf8 {
                        line,
                        column,
                        byte: bytes.get(valid).copied().unwrap_or_default(),
                    }),
                    text: prefix,
                }
            }
        }
    }
}

/// One validation problem, located in the source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub file: String,
    /// 1-based; 0 when the problem is about the file as a whole.
    pub line: usize,
    /// 1-based; 0 when unknown.
    pub column: usize,
    pub message: String,
    pub hint: Option<String>,
}

impl std::fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file, self.line)?;
        if self.column > 0 {
            write!(f, ":{}", self.column)?;
        }
        write!(f, ": {}", self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, " (hint: {hint})")?;
        }
        Ok(())
    }
}

/// `load_permitted` with every source type, path, host and secret allowed:
/// for trusted input only (tests, planner scenarios, benchmarks). The
/// daemon and the CLI always pass the operator's permissions.
pub fn load(files: &[PolicyFile]) -> Result<DesiredState, Vec<Diagnostic>> {
    load_permitted(files, &Permissions::unrestricted())
}

/// Parses and validates every document of every file, including what the
/// operator's `permissions` allow policies to use. Returns the desired
/// state only when there is no diagnostic at all; otherwise every problem,
/// sorted by file, line and column.
pub fn load_permitted(
    files: &[PolicyFile],
    permissions: &Permissions,
) -> Result<DesiredState, Vec<Diagnostic>> {
    let schema = json_schema();
    let mut diags = Vec::new();
    let mut documents = Vec::new();
    for file in files {
        if let Some(bad) = file.not_utf8 {
            diags.push(not_utf8(&file.path, bad));
            continue;
        }
        let parsed = yaml::parse(&file.text);
        for p in parsed.problems {
            diags.push(Diagnostic {
                file: file.path.clone(),
                line: p.pos.line,
                column: p.pos.col,
                message: p.message,
                hint: p.hint,
            });
        }
        for node in &parsed.documents {
            if let Some(doc) = document::check(&file.path, &schema, node, permissions, &mut diags) {
                documents.push(doc);
            }
        }
    }
    let state = document::assemble(documents, &mut diags);
    if diags.is_empty() {
        Ok(state)
    } else {
        diags.sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
        diags.dedup();
        Err(diags)
    }
}

fn not_utf8(path: &str, bad: NotUtf8) -> Diagnostic {
    Diagnostic {
        file: path.to_string(),
        line: bad.line,
        column: bad.column,
        message: format!(
            "the file is not UTF-8 text (byte 0x{:02x}); none of its documents were read",
            bad.byte
        ),
        hint: Some(
            "save it as UTF-8 (e.g. `iconv -f latin1 -t utf-8 FILE`); YAML policy files must be UTF-8"
                .into(),
        ),
    }
}

/// The JSON schema of one policy document (JSON Schema 2020-12), generated
/// from the raw document types. Editors use it for completion; `load` uses
/// it to report unknown fields and wrong types.
pub fn json_schema() -> serde_json::Value {
    let schema = schemars::generate::SchemaSettings::draft2020_12()
        .into_generator()
        .into_root_schema_for::<raw::RawDocument>();
    serde_json::to_value(schema).unwrap_or_default()
}
