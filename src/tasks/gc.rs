//! The `gc` job: collect a table's garbage (see `crate::gc`); and `prune`, the jobs table's.

use std::time::Duration;

use async_trait::async_trait;

use super::{JobContext, JobError, TypedTask};
use crate::gc::GcReport;
use crate::job::args::GcArgs;

pub struct Gc;

#[async_trait]
impl TypedTask for Gc {
    type Args = GcArgs;
    type Output = GcReport;

    async fn run(&self, context: &JobContext, args: GcArgs) -> Result<GcReport, JobError> {
        let report = crate::gc::gc(
            &context.services.catalog,
            &context.services.store,
            &args.table,
            Duration::from_secs_f64(args.grace_seconds),
            Duration::from_secs_f64(args.reservation_ttl_seconds),
        )
        .await?;
        tracing::info!(table = %report.table, segments = report.segments_collected, snapshots = report.snapshots_collected,
            orphans = report.orphans_deleted, bytes = report.bytes_deleted, "gc finished");
        let metrics = crate::telemetry::metrics();
        metrics
            .gc_objects
            .with_label_values(&[&report.table])
            .inc_by(report.objects_deleted);
        metrics
            .gc_bytes
            .with_label_values(&[&report.table])
            .inc_by(report.bytes_deleted);
        Ok(report)
    }
}

/// The `prune` job: finished jobs older than the retention leave the jobs table.
pub struct Prune;

#[async_trait]
impl TypedTask for Prune {
    type Args = crate::job::args::PruneArgs;
    type Output = serde_json::Value;

    async fn run(
        &self,
        context: &JobContext,
        args: crate::job::args::PruneArgs,
    ) -> Result<serde_json::Value, JobError> {
        let deleted = context
            .services
            .queue
            .prune(Duration::from_secs_f64(args.older_than_seconds), args.batch)
            .await
            .map_err(anyhow::Error::from)?;
        // Processes gone for a day leave `minion status`'s table too.
        let processes = context
            .services
            .queue
            .prune_processes(Duration::from_secs(86_400))
            .await
            .map_err(anyhow::Error::from)?;
        tracing::info!(deleted, processes, "finished jobs pruned");
        Ok(serde_json::json!({ "deleted": deleted, "processes_deleted": processes }))
    }
}
