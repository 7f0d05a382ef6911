//! The `gc` job: collect a table's garbage (see `crate::gc`).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::Value;

use super::{classify, parse_args, JobContext, JobError, Task};

/// Default grace period: longer than any job's lease and retries.
pub const DEFAULT_GRACE_SECONDS: f64 = 3600.0;
/// Default lifetime of an unregistered ingest's sequence reservation: longer than any ingest.
pub const DEFAULT_RESERVATION_TTL_SECONDS: f64 = 86400.0;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GcArgs {
    table: String,
    #[serde(default = "default_grace")]
    grace_seconds: f64,
    #[serde(default = "default_reservation_ttl")]
    reservation_ttl_seconds: f64,
}

fn default_grace() -> f64 {
    DEFAULT_GRACE_SECONDS
}

fn default_reservation_ttl() -> f64 {
    DEFAULT_RESERVATION_TTL_SECONDS
}

impl GcArgs {
    fn parse(args: &Value) -> Result<GcArgs, String> {
        let parsed: GcArgs = parse_args(args)?;
        crate::table::validate_identifier(&parsed.table)
            .map_err(|why| format!("`table`: {why}"))?;
        for (name, value) in [
            ("grace_seconds", parsed.grace_seconds),
            ("reservation_ttl_seconds", parsed.reservation_ttl_seconds),
        ] {
            if !(value.is_finite() && value >= 0.0) {
                return Err(format!("`{name}` must be 0 or more, got {value}"));
            }
        }
        Ok(parsed)
    }
}

struct Gc;

pub fn task() -> Arc<dyn Task> {
    Arc::new(Gc)
}

#[async_trait]
impl Task for Gc {
    fn kind(&self) -> &'static str {
        "gc"
    }

    fn validate(&self, args: &Value) -> Result<(), String> {
        GcArgs::parse(args).map(|_| ())
    }

    fn unique_key(&self, args: &Value) -> Option<String> {
        GcArgs::parse(args)
            .ok()
            .map(|args| format!("gc:{}", args.table))
    }

    async fn run(&self, context: &JobContext, args: Value) -> Result<Value, JobError> {
        let args = GcArgs::parse(&args).map_err(JobError::permanent)?;
        let grace = Duration::from_secs_f64(args.grace_seconds);
        let reservation_ttl = Duration::from_secs_f64(args.reservation_ttl_seconds);
        let report = crate::gc::gc(&context.services, &args.table, grace, reservation_ttl)
            .await
            .map_err(classify)?;
        tracing::info!(table = %report.table, segments = report.segments_collected, snapshots = report.snapshots_collected,
            orphans = report.orphans_deleted, "gc finished");
        Ok(serde_json::to_value(report).expect("report serializes"))
    }
}
