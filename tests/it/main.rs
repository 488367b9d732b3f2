//! The integration test binary: the real `safepoint` binary against real Git
//! repositories, real SQLite databases and real directories in temp dirs.

mod alerts;
mod api;
mod audit;
mod backup_restore;
mod command;
mod common;
mod daemon;
mod dbs;
mod deploy;
mod deploy_gate;
mod drills;
mod encryption_docs;
mod faults;
mod gate_lanes;
mod hardening;
mod lost_connection;
mod metrics;
mod mysql;
mod openapi;
mod permissions;
mod pg_client;
mod pins;
mod plan_scenarios;
mod postgres;
mod preview;
mod prometheus;
mod restore_docs;
mod s3_backup;
mod s3_server;
mod s3_storage;
mod status_page;
mod tidy;
mod webhooks;
