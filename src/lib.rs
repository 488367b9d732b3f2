//! safepoint: backups as a step of the delivery pipeline.
//!
//! Pure modules decide (`policy`, `observed`, `plan`, `status`); IO modules act
//! (`git`, `catalog`, `storage`, `executor`); the use cases in `engine` are where
//! they meet (one cycle: `engine::cycle`). See docs/ARCHITECTURE.md.

pub mod audit;
pub mod catalog;
pub mod cli;
pub mod daemon;
pub mod deploy;
pub mod drill;
pub mod engine;
pub mod executor;
pub mod git;
pub mod http;
pub mod jobs;
pub mod lease;
pub mod lock;
pub mod metrics;
pub mod model;
pub mod monitor;
pub mod notify;
pub mod observed;
pub mod pins;
pub mod pitr_status;
pub mod plan;
pub mod policy;
pub mod preview;
pub mod replica;
pub mod report;
pub mod settings;
pub mod status;
pub mod storage;
