//! Integration tests against real Postgres and a real S3 server (moto_server), plus the local store.

mod common;

mod bad_input;
mod catalog;
mod compaction;
mod crash;
mod embedded;
mod gc;
mod ingest;
mod merge;
mod pipeline;
mod queue;
mod readers;
mod snapshot;
mod snapshot_bad_input;
mod worker;
