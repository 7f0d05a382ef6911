//! Diagnostic kinds for smoke tests, health checks and the queue benchmark:
//! `noop` does nothing, `sleep` waits, `fail` fails (or panics) on purpose.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{parse_args, JobContext, JobError, Task};

pub fn tasks() -> Vec<Arc<dyn Task>> {
    vec![Arc::new(Noop), Arc::new(Sleep), Arc::new(Fail)]
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NoopArgs {
    #[serde(default)]
    #[allow(dead_code)]
    note: Option<String>,
}

struct Noop;

#[async_trait]
impl Task for Noop {
    fn kind(&self) -> &'static str {
        "noop"
    }

    fn validate(&self, args: &Value) -> Result<(), String> {
        parse_args::<NoopArgs>(args).map(|_| ())
    }

    async fn run(&self, context: &JobContext, _args: Value) -> Result<Value, JobError> {
        Ok(json!({ "attempt": context.attempt }))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SleepArgs {
    seconds: f64,
}

impl SleepArgs {
    fn parse(args: &Value) -> Result<SleepArgs, String> {
        let parsed: SleepArgs = parse_args(args)?;
        if !(parsed.seconds.is_finite() && parsed.seconds >= 0.0) {
            return Err(format!(
                "`seconds` must be a duration of 0 or more, got {}",
                parsed.seconds
            ));
        }
        if parsed.seconds > 86_400.0 {
            return Err("`seconds` must be at most one day".into());
        }
        Ok(parsed)
    }
}

struct Sleep;

#[async_trait]
impl Task for Sleep {
    fn kind(&self) -> &'static str {
        "sleep"
    }

    fn validate(&self, args: &Value) -> Result<(), String> {
        SleepArgs::parse(args).map(|_| ())
    }

    async fn run(&self, context: &JobContext, args: Value) -> Result<Value, JobError> {
        let args = SleepArgs::parse(&args).map_err(JobError::permanent)?;
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs_f64(args.seconds)) => {}
            _ = context.cancel.cancelled() => {
                return Err(JobError::Retryable(anyhow::anyhow!("interrupted")));
            }
        }
        Ok(json!({ "slept_seconds": args.seconds, "attempt": context.attempt }))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FailArgs {
    #[serde(default = "default_message")]
    message: String,
    /// Discard at once instead of retrying.
    #[serde(default)]
    permanent: bool,
    /// Panic instead of returning an error.
    #[serde(default)]
    panic: bool,
    /// Succeed from this attempt on (to watch retries end well).
    #[serde(default)]
    succeed_on_attempt: Option<i32>,
}

fn default_message() -> String {
    "failed on purpose".into()
}

struct Fail;

#[async_trait]
impl Task for Fail {
    fn kind(&self) -> &'static str {
        "fail"
    }

    fn validate(&self, args: &Value) -> Result<(), String> {
        parse_args::<FailArgs>(args).map(|_| ())
    }

    async fn run(&self, context: &JobContext, args: Value) -> Result<Value, JobError> {
        let args: FailArgs = parse_args(&args).map_err(JobError::permanent)?;
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
