//! The `plan` job: decides a table's prebuild, merge and compact tasks from its compaction
//! settings (`crate::compaction::plan`) and enqueues them, each under its unique key, so running
//! it often never piles up duplicates. What a scheduler entry runs.

use std::sync::Arc;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{classify, parse_args, JobContext, JobError, Registry, Task};
use crate::queue::{NewJob, Submitted};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanArgs {
    table: String,
    /// Enqueue the planned jobs (default); false only reports them.
    #[serde(default = "default_submit")]
    submit: bool,
}

fn default_submit() -> bool {
    true
}

struct Plan;

pub fn task() -> Arc<dyn Task> {
    Arc::new(Plan)
}

#[async_trait]
impl Task for Plan {
    fn kind(&self) -> &'static str {
        "plan"
    }

    fn validate(&self, args: &Value) -> Result<(), String> {
        let args: PlanArgs = parse_args(args)?;
        crate::table::validate_identifier(&args.table).map_err(|why| format!("`table`: {why}"))
    }

    fn unique_key(&self, args: &Value) -> Option<String> {
        let args: PlanArgs = parse_args(args).ok()?;
        Some(format!("plan:{}", args.table))
    }

    async fn run(&self, context: &JobContext, args: Value) -> Result<Value, JobError> {
        let args: PlanArgs = parse_args(&args).map_err(JobError::permanent)?;
        let plan = crate::compaction::plan(&context.services, &args.table)
            .await
            .map_err(classify)?;
        let mut submitted = Vec::new();
        if args.submit {
            let registry = Registry::standard();
            for (kind, job_args) in plan.jobs() {
                let task = registry
                    .check(kind, &job_args)
                    .map_err(|err| JobError::Permanent(err.into()))?;
                let mut job = NewJob::new(kind, job_args);
                job.unique_key = task.unique_key(&job.args);
                let outcome = context
                    .services
                    .queue
                    .submit(&job)
                    .await
                    .map_err(|err| classify(err.into()))?;
                submitted.push(json!({
                    "kind": kind,
                    "job_id": outcome.id(),
                    "new": matches!(outcome, Submitted::New(_)),
                }));
            }
        }
        tracing::info!(table = %args.table, prebuild = plan.prebuild.len(), merge = plan.merge.len(),
            compact = plan.compact.len(), "compaction plan made");
        Ok(json!({"plan": plan, "submitted": submitted}))
    }
}
