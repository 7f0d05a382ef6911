//! The `prebuild` job: (table, partition) -> a new published snapshot. Unique per partition.

use std::sync::Arc;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::Value;

use super::{classify, parse_args, JobContext, JobError, Task};
use crate::snapshot::prebuild;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrebuildArgs {
    pub table: String,
    pub partition: u32,
}

pub struct Prebuild;

pub fn task() -> Arc<dyn Task> {
    Arc::new(Prebuild)
}

/// Builds one job tries while covered segments keep changing under it.
const MAX_BUILDS: u32 = 5;

/// The unique key that keeps one prebuild per partition in the queue.
pub fn unique_key(table: &str, partition: u32) -> String {
    format!("prebuild:{table}:{partition}")
}

#[async_trait]
impl Task for Prebuild {
    fn kind(&self) -> &'static str {
        "prebuild"
    }

    fn validate(&self, args: &Value) -> Result<(), String> {
        let args: PrebuildArgs = parse_args(args)?;
        crate::table::validate_identifier(&args.table).map_err(|why| format!("`table`: {why}"))
    }

    fn unique_key(&self, args: &Value) -> Option<String> {
        let args: PrebuildArgs = parse_args(args).ok()?;
        Some(unique_key(&args.table, args.partition))
    }

    async fn run(&self, context: &JobContext, args: Value) -> Result<Value, JobError> {
        let args: PrebuildArgs = parse_args(&args).map_err(JobError::permanent)?;
        let services = &context.services;
        let job_id = (context.job_id > 0).then_some(context.job_id);
        // A compaction or merge that lands while we build makes the build moot; building again
        // at once is cheap (runs of unchanged segments are reused) and burns no attempt.
        let mut builds = 0;
        let report = loop {
            builds += 1;
            let report = prebuild(
                &services.catalog,
                &services.store,
                &args.table,
                args.partition,
                job_id,
                &services.prebuild,
            )
            .await
            .map_err(classify)?;
            if report.outcome != "segment_changed" {
                break report;
            }
            if builds >= MAX_BUILDS {
                return Err(JobError::Retryable(anyhow::anyhow!(
                    "segments of {} partition {} kept changing while {builds} snapshots were built; not published, retry later",
                    args.table,
                    args.partition
                )));
            }
        };
        tracing::info!(
            table = %report.table, partition = report.partition, outcome = %report.outcome,
            version = ?report.version, keys = report.key_count, seconds = report.seconds, "prebuild finished"
        );
        Ok(serde_json::to_value(report).expect("report serializes"))
    }
}
