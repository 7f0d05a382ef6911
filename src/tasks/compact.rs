//! The `compact` job: one segment -> its valid rows only, swapped in atomically.

use std::sync::Arc;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::Value;

use super::{classify, parse_args, JobContext, JobError, Task};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CompactArgs {
    table: String,
    segment_id: i64,
}

struct Compact;

pub fn task() -> Arc<dyn Task> {
    Arc::new(Compact)
}

#[async_trait]
impl Task for Compact {
    fn kind(&self) -> &'static str {
        "compact"
    }

    fn validate(&self, args: &Value) -> Result<(), String> {
        let args: CompactArgs = parse_args(args)?;
        crate::table::validate_identifier(&args.table).map_err(|why| format!("`table`: {why}"))
    }

    fn unique_key(&self, args: &Value) -> Option<String> {
        let args: CompactArgs = parse_args(args).ok()?;
        Some(format!("compact:{}:{}", args.table, args.segment_id))
    }

    async fn run(&self, context: &JobContext, args: Value) -> Result<Value, JobError> {
        let args: CompactArgs = parse_args(&args).map_err(JobError::permanent)?;
        let job_id = (context.job_id > 0).then_some(context.job_id);
        let report =
            crate::compaction::compact(&context.services, &args.table, args.segment_id, job_id)
                .await
                .map_err(classify)?;
        tracing::info!(table = %report.table, segment = report.segment_id, outcome = %report.outcome,
            rows_before = report.rows_before, rows_after = report.rows_after, "compaction finished");
        Ok(serde_json::to_value(report).expect("report serializes"))
    }
}
