//! The use cases: each a function over the runtime context (`context::Context`)
//! returning a typed result. They compose the pure core with the IO modules;
//! the CLI, the daemon's jobs and the HTTP API call them and only print or map
//! their results.

pub mod context;
pub mod ids;
pub mod import;
pub mod pitr;
pub mod restore;
