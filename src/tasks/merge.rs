//! The `merge` job: several segments of one partition -> valid rows only, swapped in atomically.

use async_trait::async_trait;

use super::{JobContext, JobError, TypedTask};
use crate::compaction::MergeReport;
use crate::job::args::MergeArgs;

pub struct Merge;

#[async_trait]
impl TypedTask for Merge {
    type Args = MergeArgs;
    type Output = MergeReport;

    async fn run(&self, context: &JobContext, args: MergeArgs) -> Result<MergeReport, JobError> {
        let report = crate::compaction::merge(
            &context.services,
            &args.table,
            args.partition,
            &args.segment_ids,
            context.queued_job_id(),
            &context.cancel,
        )
        .await?;
        tracing::info!(table = %report.table, partition = report.partition, outcome = %report.outcome,
            rows_before = report.rows_before, rows_after = report.rows_after, "merge finished");
        if report.outcome.swapped() {
            super::record_reclaimed(
                &report.table,
                "merge",
                report.rows_before - report.rows_after,
                report.bytes_before.saturating_sub(report.bytes_after),
            );
        }
        Ok(report)
    }
}
