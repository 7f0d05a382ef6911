//! The `merge` job: several segments of one partition -> valid rows only, swapped in atomically.

use std::sync::Arc;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::Value;

use super::{classify, parse_args, JobContext, JobError, Task};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MergeArgs {
    table: String,
    partition: u32,
    segment_ids: Vec<i64>,
}

impl MergeArgs {
    fn parse(args: &Value) -> Result<MergeArgs, String> {
        let parsed: MergeArgs = parse_args(args)?;
        crate::table::validate_identifier(&parsed.table)
            .map_err(|why| format!("`table`: {why}"))?;
        if parsed.segment_ids.len() < 2 {
            return Err(format!(
                "`segment_ids` needs two or more segments, got {:?}; use `compact` for one",
                parsed.segment_ids
            ));
        }
        Ok(parsed)
    }
}

struct Merge;

pub fn task() -> Arc<dyn Task> {
    Arc::new(Merge)
}

#[async_trait]
impl Task for Merge {
    fn kind(&self) -> &'static str {
        "merge"
    }

    fn validate(&self, args: &Value) -> Result<(), String> {
        MergeArgs::parse(args).map(|_| ())
    }

    fn unique_key(&self, args: &Value) -> Option<String> {
        let args = MergeArgs::parse(args).ok()?;
        let mut ids = args.segment_ids.clone();
        ids.sort_unstable();
        let ids: Vec<String> = ids.iter().map(i64::to_string).collect();
        Some(format!(
            "merge:{}:{}:{}",
            args.table,
            args.partition,
            ids.join(",")
        ))
    }

    async fn run(&self, context: &JobContext, args: Value) -> Result<Value, JobError> {
        let args = MergeArgs::parse(&args).map_err(JobError::permanent)?;
        let job_id = (context.job_id > 0).then_some(context.job_id);
        let report = crate::compaction::merge(
            &context.services,
            &args.table,
            args.partition,
            &args.segment_ids,
            job_id,
        )
        .await
        .map_err(classify)?;
        tracing::info!(table = %report.table, partition = report.partition, outcome = %report.outcome,
            rows_before = report.rows_before, rows_after = report.rows_after, "merge finished");
        Ok(serde_json::to_value(report).expect("report serializes"))
    }
}
