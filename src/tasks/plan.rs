//! The `plan` job: decides a table's prebuild, merge and compact jobs from its compaction
//! settings (`crate::compaction::plan`) and enqueues them, each under its unique key, so running
//! it often never piles up duplicates. What a scheduler entry runs.

use async_trait::async_trait;
use serde::Serialize;

use super::{JobContext, JobError, TypedTask};
use crate::compaction::CompactionPlan;
use crate::job::args::PlanArgs;
use crate::queue::Submitted;

pub struct Plan;

/// One planned job as submitted.
#[derive(Debug, Clone, Serialize)]
pub struct SubmittedJob {
    pub kind: String,
    pub job_id: i64,
    /// False when a job with the same unique key was already waiting.
    pub new: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct PlanReport {
    pub plan: CompactionPlan,
    pub submitted: Vec<SubmittedJob>,
}

#[async_trait]
impl TypedTask for Plan {
    type Args = PlanArgs;
    type Output = PlanReport;

    async fn run(&self, context: &JobContext, args: PlanArgs) -> Result<PlanReport, JobError> {
        let catalog = &context.services.catalog;
        let expired = catalog
            .expire_reservations(&args.table, None)
            .await
            .map_err(anyhow::Error::from)?;
        let mut plan =
            crate::compaction::plan(&context.services, &args.table, &args.compaction).await?;
        plan.reservations_expired = expired;
        let skipped = &crate::telemetry::metrics().plan_skipped;
        for (reason, count) in &plan.skipped {
            skipped
                .with_label_values(&[&args.table, reason.as_str()])
                .inc_by(*count);
        }
        let mut submitted = Vec::new();
        if args.submit {
            for mut job in plan.jobs() {
                if let Some(attempts) = args.job_attempts {
                    job.max_attempts = attempts;
                }
                let outcome = context
                    .services
                    .queue
                    .submit(&job)
                    .await
                    .map_err(anyhow::Error::from)?;
                submitted.push(SubmittedJob {
                    kind: job.kind,
                    job_id: outcome.id(),
                    new: matches!(outcome, Submitted::New(_)),
                });
            }
        }
        let skipped: u64 = plan.skipped.values().sum();
        tracing::info!(table = %args.table, prebuild = plan.prebuild.len(), merge = plan.merge.len(),
            compact = plan.compact.len(), skipped, "compaction plan made");
        Ok(PlanReport { plan, submitted })
    }
}
