//! The `prebuild` job: (table, partition) -> a new published snapshot. Unique per partition.

use async_trait::async_trait;

use super::{JobContext, JobError, TypedTask};
use crate::job::args::PrebuildArgs;
use crate::snapshot::{prebuild, PrebuildOutcome, PrebuildReport};

pub struct Prebuild;

/// Builds one job tries while covered segments keep changing under it.
const MAX_BUILDS: u32 = 5;

#[async_trait]
impl TypedTask for Prebuild {
    type Args = PrebuildArgs;
    type Output = PrebuildReport;

    async fn run(
        &self,
        context: &JobContext,
        args: PrebuildArgs,
    ) -> Result<PrebuildReport, JobError> {
        let services = &context.services;
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
                context.queued_job_id(),
                args.force,
                &services.prebuild,
            )
            .await?;
            if report.outcome != PrebuildOutcome::SegmentChanged {
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
            version = report.version, keys = report.key_count, method = ?report.method,
            moved_keys = report.moved_keys, seconds = report.seconds, "prebuild finished"
        );
        Ok(report)
    }
}
