//! upsert-minion: the background worker pool that keeps real-time upsert tables cheap and
//! restartable. See DESIGN.md (shared with the planning side) and README.md.

pub mod binding;
pub mod catalog;
pub mod cli;
pub mod compaction;
pub mod config;
pub mod devdb;
pub mod error;
pub mod faults;
pub mod gc;
pub mod ingest;
pub mod job;
pub mod keys;
pub mod loader;
pub mod logging;
pub mod queue;
pub mod scan;
pub mod schedule;
pub mod segment;
pub mod service;
pub mod snapshot;
pub mod staging;
pub mod status;
pub mod storage;
pub mod table;
pub mod tasks;
pub mod telemetry;
pub mod worker;
