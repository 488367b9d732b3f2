//! Pure: the policy repository format (SPEC §2): YAML documents in, a typed
//! `DesiredState` or every problem at once (file:line + hint) out.

pub mod annotations;
mod backup_policy;
mod document;
mod duration;
pub mod model;
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

use serde::Serialize;

/// One input file: its path as shown to the user (relative to the repository
/// root, e.g. `policies/orders.yaml`) and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyFile {
    pub path: String,
    pub text: String,
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

/// Parses and validates every document of every file. Returns the desired
/// state only when there is no diagnostic at all; otherwise every problem,
/// sorted by file, line and column.
pub fn load(files: &[PolicyFile]) -> Result<DesiredState, Vec<Diagnostic>> {
    let schema = json_schema();
    let mut diags = Vec::new();
    let mut documents = Vec::new();
    for file in files {
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
            if let Some(doc) = document::check(&file.path, &schema, node, &mut diags) {
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

/// The JSON schema of one policy document (JSON Schema 2020-12), generated
/// from the raw document types. Editors use it for completion; `load` uses
/// it to report unknown fields and wrong types.
pub fn json_schema() -> serde_json::Value {
    let schema = schemars::generate::SchemaSettings::draft2020_12()
        .into_generator()
        .into_root_schema_for::<raw::RawDocument>();
    serde_json::to_value(schema).unwrap_or_default()
}
