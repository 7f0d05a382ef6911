//! Integration tests against real Postgres and a real S3 server (moto_server), plus the local store.

mod common;

mod bad_input;
mod catalog;
mod chaos;
mod compaction;
mod console;
mod crash;
mod deploy;
mod embedded;
mod gc;
mod ingest;
mod lineage;
mod liveness;
mod lost_commit;
mod merge;
mod metadata_ttl;
mod misuse;
mod pipeline;
mod proxy;
mod queue;
mod readers;
mod scheduler;
mod service;
mod snapshot;
mod snapshot_bad_input;
mod worker;
