//! Diagnostic kinds for smoke tests, health checks and the queue benchmark:
//! `noop` does nothing, `sleep` waits, `fail` fails (or panics) on purpose.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Value};

use super::{JobContext, JobError, TypedTask};
use crate::job::args::{FailArgs, NoopArgs, SleepArgs};

pub struct Noop;

#[async_trait]
impl TypedTask for Noop {
    type Args = NoopArgs;
    type Output = Value;

    async fn run(&self, context: &JobContext, _args: NoopArgs) -> Result<Value, JobError> {
        Ok(json!({ "attempt": context.attempt }))
    }
}

pub struct Sleep;

#[async_trait]
impl TypedTask for Sleep {
    type Args = SleepArgs;
    type Output = Value;

    async fn run(&self, context: &JobContext, args: SleepArgs) -> Result<Value, JobError> {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs_f64(args.seconds)) => {}
            _ = context.cancel.cancelled() => {
                return Err(JobError::Retryable(anyhow::anyhow!("interrupted")));
            }
        }
        Ok(json!({ "slept_seconds": args.seconds, "attempt": context.attempt }))
    }
}

pub struct Fail;

#[async_trait]
impl TypedTask for Fail {
    type Args = FailArgs;
    type Output = Value;

    async fn run(&self, context: &JobContext, args: FailArgs) -> Result<Value, JobError> {
        if args
            .succeed_on_attempt
            .is_some_and(|n| context.attempt >= n)
        {
            return Ok(json!({ "succeeded_on_attempt": context.attempt }));
        }
        if args.panic {
            panic!("{} (attempt {})", args.message, context.attempt);
        }
        let error = anyhow::anyhow!("{} (attempt {})", args.message, context.attempt);
        Err(if args.permanent {
            JobError::Permanent(error)
        } else {
            JobError::Retryable(error)
        })
    }
}
