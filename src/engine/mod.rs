//! The use cases: each a function over the runtime context (`context::Context`)
//! returning a typed result. They compose the pure core with the IO modules;
//! the CLI, the daemon's jobs and the HTTP API call them and only print or map
//! their results.
//!
//! One cycle (`cycle`) is `releases` → `observe` → `plan::plan` → `execute`
//! (per action: `backup` or `prune`) → drills; `refresh` applies a new policy
//! revision before it. Nothing else executes actions.

pub mod backup;
pub mod context;
pub mod cycle;
pub mod execute;
pub mod ids;
pub mod import;
pub mod observe;
pub mod pitr;
pub mod pitr_prune;
pub mod pitr_restore;
pub mod pitr_start;
pub mod pitr_window;
pub mod prune;
pub mod refresh;
pub mod releases;
pub mod restore;
