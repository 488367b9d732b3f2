//! The integration test binary: the real `safepoint` binary against real Git
//! repositories, real SQLite databases and real directories in temp dirs.

mod alerts;
mod api;
mod audit;
mod backup_restore;
mod command;
mod common;
mod contract_cli;
mod contract_mail;
mod contract_server;
mod contract_table;
mod daemon;
mod dbs;
mod deploy;
mod deploy_gate;
mod docs_examples;
mod drills;
mod encryption_docs;
mod faults;
mod metrics;
mod mysql;
mod openapi;
mod plan_scenarios;
mod postgres;
mod prometheus;
mod restore_docs;
mod s3_backup;
mod s3_server;
mod s3_storage;
mod tidy;
