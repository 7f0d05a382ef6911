//! The `compact` job: one segment -> its valid rows only, swapped in atomically.

use async_trait::async_trait;

use super::{JobContext, JobError, TypedTask};
use crate::compaction::CompactReport;
use crate::job::args::CompactArgs;

pub struct Compact;

#[async_trait]
impl TypedTask for Compact {
    type Args = CompactArgs;
    type Output = CompactReport;

    async fn run(
        &self,
        context: &JobContext,
        args: CompactArgs,
    ) -> Result<CompactReport, JobError> {
        let report = crate::compaction::compact(
            &context.services,
            &args.table,
            args.segment_id,
            context.queued_job_id(),
            &context.cancel,
        )
        .await?;
        tracing::info!(table = %report.table, segment = report.segment_id, outcome = %report.outcome,
            rows_before = report.rows_before, rows_after = report.rows_after, "compaction finished");
        if report.outcome.swapped() {
            super::record_reclaimed(
                &report.table,
                "compact",
                report.rows_before - report.rows_after,
                report.bytes_before.saturating_sub(report.bytes_after),
            );
        }
        Ok(report)
    }
}
