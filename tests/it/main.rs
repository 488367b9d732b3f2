//! The integration test binary: the real `safepoint` binary against real Git
//! repositories, real SQLite databases and real directories in temp dirs.

mod alerts;
mod api;
mod audit;
mod backup_restore;
mod common;
mod daemon;
mod deploy;
mod deploy_gate;
mod drills;
mod faults;
mod metrics;
mod openapi;
mod plan_scenarios;
mod prometheus;
mod restore_docs;
mod tidy;
