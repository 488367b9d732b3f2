//! The integration test binary: the real `safepoint` binary against real Git
//! repositories, real SQLite databases and real directories in temp dirs.

mod backup_restore;
mod common;
mod daemon;
mod encryption_docs;
mod faults;
mod restore_docs;
mod s3_backup;
mod s3_server;
mod s3_storage;
mod tidy;
