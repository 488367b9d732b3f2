//! Pure: the policy repository format (SPEC §2): YAML documents in, a typed
//! `DesiredState` or every problem at once (file:line + hint) out.

pub mod model;

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
/// state only when there is no diagnostic at all.
pub fn load(files: &[PolicyFile]) -> Result<DesiredState, Vec<Diagnostic>> {
    let _ = files;
    unimplemented!("policy helper")
}
