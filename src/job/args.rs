//! Typed job arguments: one struct per kind, the one place a job's shape is written down.
//!
//! Each struct is at once the JSON stored in the queue (serde), the typed flags of
//! `minion run KIND` and `minion job submit KIND` (clap), and the value a task receives. Producers
//! (the planner, compaction's follow-up prebuilds, the CLI) build these structs and turn them
//! into queue rows with [`JobArgs::to_job`]; nobody writes a job's JSON by hand.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::job::refs::CatalogRef;
use crate::queue::NewJob;
use crate::table::{validate_identifier, CompactionOverrides};

/// What every kind's arguments say about themselves.
pub trait JobArgs: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The kind name, as stored in the queue and typed on the command line.
    const KIND: &'static str;
    /// One line: what a job of this kind does.
    const ABOUT: &'static str;
    /// Whether the kind works on one table (has a `table` argument): schedules select tables
    /// for it.
    const PER_TABLE: bool = false;
    /// How long one attempt may run before it is cancelled and counted as a failure ("timed
    /// out"), unless the submission or the schedule sets its own. Generous: a timeout is for a
    /// job that hangs, not one that is slow.
    const TIMEOUT: Duration = Duration::from_secs(3600);

    /// Checks what serde cannot; the message names the field and the fix.
    fn validate(&self) -> Result<(), String> {
        Ok(())
    }

    /// The unique key a submission gets unless one is given: at most one unfinished job per key.
    fn unique_key(&self) -> Option<String> {
        None
    }

    /// What the arguments name in the catalog, checked when the job is submitted
    /// ([`crate::job::refs::check_refs`]).
    fn catalog_refs(&self) -> Vec<CatalogRef> {
        Vec::new()
    }

    /// Parses and validates stored or hand-written JSON.
    fn from_json(value: &Value) -> Result<Self, String> {
        if holds_nul(value) {
            return Err(
                "the arguments hold a NUL character (\\u0000), which the queue cannot store; remove it"
                    .into(),
            );
        }
        let args: Self = Self::deserialize(value).map_err(|err| err.to_string())?;
        args.validate()?;
        Ok(args)
    }

    fn to_json(&self) -> Value {
        serde_json::to_value(self).expect("job arguments serialize")
    }

    /// A queue row for these arguments: the kind, the JSON and the default unique key.
    fn to_job(&self) -> NewJob {
        let mut job = NewJob::new(Self::KIND, self.to_json());
        job.unique_key = self.unique_key();
        job
    }
}

/// Whether a string anywhere in `value` (key or value) holds a NUL character.
fn holds_nul(value: &Value) -> bool {
    match value {
        Value::String(text) => text.contains('\0'),
        Value::Array(items) => items.iter().any(holds_nul),
        Value::Object(fields) => fields.iter().any(|(k, v)| k.contains('\0') || holds_nul(v)),
        _ => false,
    }
}

fn check_table(table: &str) -> Result<(), String> {
    validate_identifier(table).map_err(|why| format!("`table`: {why}"))
}

/// The longest duration any setting or argument takes: a hundred years. Dates further away
/// overflow the calendar (a grace period of 99999999999d once panicked).
pub const MAX_SECONDS: f64 = 100.0 * 365.25 * 86_400.0;

/// Parses a duration as seconds: a plain number (`90`, `0.5`) or a humane one (`1h`, `30m`), at
/// most a hundred years. A negative number is returned as it is, for the argument's own check to
/// refuse by name; a negative humane form (`-5s`) is refused here.
pub fn parse_seconds(text: &str) -> Result<f64, String> {
    let trimmed = text.trim();
    let seconds = match trimmed.parse::<f64>() {
        Ok(seconds) => seconds,
        Err(_) if trimmed.starts_with('-') => {
            return Err(format!(
                "`{text}` is negative; it must be a duration of 0 or more (e.g. 0, 30s, 1h)"
            ))
        }
        Err(_) => humantime::parse_duration(trimmed)
            .map(|d| d.as_secs_f64())
            .map_err(|err| {
                format!("`{text}` is not a duration ({err}); write e.g. 90, 30s, 5m or 1h")
            })?,
    };
    if !(seconds.is_finite() && seconds <= MAX_SECONDS) {
        return Err(format!(
            "`{text}` is not a duration from 0 to a hundred years (the longest taken)"
        ));
    }
    Ok(seconds)
}

/// [`parse_seconds`] as a `Duration`, 0 or more: the parser of every duration flag.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    match parse_seconds(text)? {
        seconds if seconds < 0.0 => Err(format!(
            "`{text}` is negative; it must be a duration of 0 or more (e.g. 0, 30s, 1h)"
        )),
        seconds => Ok(Duration::from_secs_f64(seconds)),
    }
}

fn check_seconds(name: &str, value: f64) -> Result<(), String> {
    if value.is_finite() && (0.0..=MAX_SECONDS).contains(&value) {
        Ok(())
    } else {
        Err(format!(
            "`{name}` must be 0 or more seconds, and at most a hundred years ({MAX_SECONDS} s), got {value}"
        ))
    }
}

/// Builds a partition's snapshot: validDocIds and queryableDocIds bitmaps per segment and
/// key-metadata SST files, published by compare-and-swap.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct PrebuildArgs {
    /// The table.
    #[arg(long)]
    pub table: String,
    /// The partition (0 to the table's partition count - 1).
    #[arg(long)]
    pub partition: u32,
    /// Build in full from the segments even if the newest snapshot is up to date: the repair
    /// for a snapshot whose bitmaps or key files `minion verify` reports damaged.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    #[arg(long)]
    pub force: bool,
}

impl JobArgs for PrebuildArgs {
    const KIND: &'static str = "prebuild";
    const TIMEOUT: Duration = Duration::from_secs(4 * 3600);
    const PER_TABLE: bool = true;
    const ABOUT: &'static str =
        "Build and publish a partition's snapshot (validDocIds bitmaps and key-metadata SST files)";

    fn validate(&self) -> Result<(), String> {
        check_table(&self.table)
    }

    /// One prebuild per partition in the queue.
    fn catalog_refs(&self) -> Vec<CatalogRef> {
        vec![CatalogRef::Partition {
            table: self.table.clone(),
            partition: self.partition,
        }]
    }

    fn unique_key(&self) -> Option<String> {
        Some(format!("prebuild:{}:{}", self.table, self.partition))
    }
}

/// Rewrites one segment down to the rows valid in the newest snapshot covering it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct CompactArgs {
    /// The table.
    #[arg(long)]
    pub table: String,
    /// The id of the segment to compact (see `minion segment ls`).
    #[arg(long = "segment")]
    pub segment_id: i64,
}

impl JobArgs for CompactArgs {
    const KIND: &'static str = "compact";
    const TIMEOUT: Duration = Duration::from_secs(2 * 3600);
    const PER_TABLE: bool = true;
    const ABOUT: &'static str =
        "Rewrite one segment without its superseded rows and swap it in atomically";

    fn validate(&self) -> Result<(), String> {
        check_table(&self.table)
    }

    fn catalog_refs(&self) -> Vec<CatalogRef> {
        vec![CatalogRef::Segments {
            table: self.table.clone(),
            partition: None,
            ids: vec![self.segment_id],
        }]
    }

    fn unique_key(&self) -> Option<String> {
        Some(format!("compact:{}:{}", self.table, self.segment_id))
    }
}

/// Merges consecutive segments of one partition into one holding their valid rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct MergeArgs {
    /// The table.
    #[arg(long)]
    pub table: String,
    /// The partition the segments belong to.
    #[arg(long)]
    pub partition: u32,
    /// Ids of two or more consecutive online segments, comma-separated (e.g. 3,4,5).
    #[arg(long = "segments", value_delimiter = ',', num_args = 1.., required = true)]
    pub segment_ids: Vec<i64>,
}

impl JobArgs for MergeArgs {
    const KIND: &'static str = "merge";
    const TIMEOUT: Duration = Duration::from_secs(2 * 3600);
    const PER_TABLE: bool = true;
    const ABOUT: &'static str =
        "Merge consecutive small segments of a partition into one holding only their valid rows";

    fn validate(&self) -> Result<(), String> {
        check_table(&self.table)?;
        let mut distinct = self.segment_ids.clone();
        distinct.sort_unstable();
        distinct.dedup();
        if distinct.len() != self.segment_ids.len() {
            return Err(format!(
                "`segment_ids` names a segment twice: [{}]; give each segment once",
                self.segment_ids
                    .iter()
                    .map(i64::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        if self.segment_ids.len() < 2 {
            return Err(format!(
                "`segment_ids` needs two or more segments, got [{}]; use `compact` for one",
                self.segment_ids
                    .iter()
                    .map(i64::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        Ok(())
    }

    /// One merge per set of inputs, in any order.
    fn catalog_refs(&self) -> Vec<CatalogRef> {
        vec![CatalogRef::Segments {
            table: self.table.clone(),
            partition: Some(self.partition),
            ids: self.segment_ids.clone(),
        }]
    }

    fn unique_key(&self) -> Option<String> {
        let mut ids = self.segment_ids.clone();
        ids.sort_unstable();
        let ids: Vec<String> = ids.iter().map(i64::to_string).collect();
        Some(format!(
            "merge:{}:{}:{}",
            self.table,
            self.partition,
            ids.join(",")
        ))
    }
}

/// Decides a table's prebuild, merge and compact jobs from its `[compaction]` settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct PlanArgs {
    /// The table.
    #[arg(long)]
    pub table: String,
    /// Enqueue the planned jobs (the default); `--dry-run` only reports them.
    #[serde(default = "yes")]
    #[arg(long = "dry-run", action = clap::ArgAction::SetFalse)]
    pub submit: bool,
    /// Attempts each submitted job gets before it is discarded (default: the queue's, 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[arg(long)]
    pub job_attempts: Option<i32>,
    /// Overrides of the table's `[compaction]` settings for this plan.
    #[serde(default, skip_serializing_if = "CompactionOverrides::is_empty")]
    #[command(flatten)]
    pub compaction: CompactionOverrides,
}

fn yes() -> bool {
    true
}

impl JobArgs for PlanArgs {
    const KIND: &'static str = "plan";
    const TIMEOUT: Duration = Duration::from_secs(600);
    const PER_TABLE: bool = true;
    const ABOUT: &'static str =
        "Decide a table's prebuild, merge and compact jobs from its compaction settings and enqueue them";

    fn validate(&self) -> Result<(), String> {
        check_table(&self.table)?;
        if let Some(attempts) = self.job_attempts.filter(|&a| a < 1) {
            return Err(format!("`job_attempts` must be at least 1, got {attempts}"));
        }
        // Checked against the defaults for what does not depend on the table (ranges); the
        // rest is checked against the table's own settings when the plan runs.
        let c = &self.compaction;
        if let Some(ratio) = c
            .invalid_ratio_threshold
            .filter(|r| !(0.0..=1.0).contains(r))
        {
            return Err(format!(
                "`compaction.invalid_ratio_threshold` must be between 0 and 1, got {ratio}"
            ));
        }
        for (field, value) in [
            ("target_segment_rows", c.target_segment_rows.map(|v| v < 1)),
            (
                "max_records_per_merge_task",
                c.max_records_per_merge_task.map(|v| v < 1),
            ),
            (
                "max_segments_per_merge",
                c.max_segments_per_merge.map(|v| v < 2),
            ),
            (
                "min_segments_per_merge",
                c.min_segments_per_merge.map(|v| v < 2),
            ),
        ] {
            if value == Some(true) {
                return Err(format!(
                    "`compaction.{field}` is too small (see `minion job submit plan --help`)"
                ));
            }
        }
        Ok(())
    }

    fn unique_key(&self) -> Option<String> {
        Some(format!("plan:{}", self.table))
    }

    fn catalog_refs(&self) -> Vec<CatalogRef> {
        vec![CatalogRef::Table(self.table.clone())]
    }
}

/// Default grace period of `gc`: longer than any job's lease and retries.
pub const DEFAULT_GRACE_SECONDS: f64 = 3600.0;
/// Default lifetime of an unregistered ingest's sequence reservation: longer than any ingest.
pub const DEFAULT_RESERVATION_TTL_SECONDS: f64 = 86400.0;

/// Collects a table's garbage: retired segments, superseded snapshots, orphaned objects.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct GcArgs {
    /// The table.
    #[arg(long)]
    pub table: String,
    /// Keep retired objects at least this long, so readers that started before they were
    /// retired can finish (e.g. 1h, 30m, 0).
    #[serde(default = "default_grace")]
    #[arg(long = "grace", value_parser = parse_seconds, allow_hyphen_values = true, default_value = "1h")]
    pub grace_seconds: f64,
    /// Release sequence reservations of ingests that have not registered for this long.
    #[serde(default = "default_reservation_ttl")]
    #[arg(long = "reservation-ttl", value_parser = parse_seconds, allow_hyphen_values = true, default_value = "1d")]
    pub reservation_ttl_seconds: f64,
}

fn default_grace() -> f64 {
    DEFAULT_GRACE_SECONDS
}

fn default_reservation_ttl() -> f64 {
    DEFAULT_RESERVATION_TTL_SECONDS
}

impl JobArgs for GcArgs {
    const KIND: &'static str = "gc";
    const TIMEOUT: Duration = Duration::from_secs(3600);
    const PER_TABLE: bool = true;
    const ABOUT: &'static str =
        "Delete a table's retired segments, superseded snapshots and orphaned objects after a grace period";

    fn validate(&self) -> Result<(), String> {
        check_table(&self.table)?;
        check_seconds("grace_seconds", self.grace_seconds)?;
        check_seconds("reservation_ttl_seconds", self.reservation_ttl_seconds)
    }

    fn catalog_refs(&self) -> Vec<CatalogRef> {
        vec![CatalogRef::Table(self.table.clone())]
    }

    fn unique_key(&self) -> Option<String> {
        Some(format!("gc:{}", self.table))
    }
}

/// Deletes finished jobs older than a retention, in batches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct PruneArgs {
    /// Delete jobs finished longer ago than this (e.g. 7d, 12h).
    #[serde(default = "default_retention")]
    #[arg(long = "older-than", value_parser = parse_seconds, allow_hyphen_values = true, default_value = "7d")]
    pub older_than_seconds: f64,
    /// Jobs deleted per statement.
    #[serde(default = "default_batch")]
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,
}

fn default_retention() -> f64 {
    7.0 * 86400.0
}

fn default_batch() -> usize {
    1000
}

impl JobArgs for PruneArgs {
    const KIND: &'static str = "prune";
    const TIMEOUT: Duration = Duration::from_secs(600);
    const ABOUT: &'static str =
        "Delete finished jobs older than a retention (keeps the jobs table small)";

    fn validate(&self) -> Result<(), String> {
        check_seconds("older_than_seconds", self.older_than_seconds)?;
        if self.batch == 0 {
            return Err("`batch` must be at least 1".into());
        }
        Ok(())
    }

    fn unique_key(&self) -> Option<String> {
        Some("prune".into())
    }
}

/// Does nothing (diagnostic: smoke tests and the queue benchmark).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct NoopArgs {
    /// A free-form note, kept with the job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[arg(long)]
    pub note: Option<String>,
}

impl JobArgs for NoopArgs {
    const KIND: &'static str = "noop";
    const TIMEOUT: Duration = Duration::from_secs(60);
    const ABOUT: &'static str = "Do nothing (diagnostic: smoke tests and the queue benchmark)";
}

/// Waits, then succeeds (diagnostic: leases, cancellation, shutdown).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct SleepArgs {
    /// How long to wait, in seconds or as a duration (e.g. 1.5, 30s).
    #[arg(long, value_parser = parse_seconds, allow_hyphen_values = true)]
    pub seconds: f64,
}

impl JobArgs for SleepArgs {
    const KIND: &'static str = "sleep";
    const ABOUT: &'static str =
        "Wait, then succeed (diagnostic: leases, cancellation and shutdown)";

    fn validate(&self) -> Result<(), String> {
        if !(self.seconds.is_finite() && self.seconds >= 0.0) {
            return Err(format!(
                "`seconds` must be a duration of 0 or more, got {}",
                self.seconds
            ));
        }
        if self.seconds > 86_400.0 {
            return Err("`seconds` must be at most one day".into());
        }
        Ok(())
    }
}

/// Fails on purpose (diagnostic: retries, discards and panics).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct FailArgs {
    /// The error message.
    #[serde(default = "default_message")]
    #[arg(long, default_value = "failed on purpose")]
    pub message: String,
    /// Fail permanently: the job is discarded at once instead of retried.
    #[serde(default)]
    #[arg(long)]
    pub permanent: bool,
    /// Panic instead of returning an error.
    #[serde(default)]
    #[arg(long)]
    pub panic: bool,
    /// Succeed from this attempt on (to watch retries end well).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[arg(long)]
    pub succeed_on_attempt: Option<i32>,
}

fn default_message() -> String {
    "failed on purpose".into()
}

impl JobArgs for FailArgs {
    const KIND: &'static str = "fail";
    const ABOUT: &'static str = "Fail on purpose (diagnostic: retries, discards and panics)";
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn stored_json_and_structs_round_trip() {
        let merge = MergeArgs {
            table: "orders".into(),
            partition: 1,
            segment_ids: vec![5, 3, 4],
        };
        assert_eq!(MergeArgs::from_json(&merge.to_json()).unwrap(), merge);
        assert_eq!(merge.unique_key().unwrap(), "merge:orders:1:3,4,5");
        let job = merge.to_job();
        assert_eq!(job.kind, "merge");
        assert_eq!(job.unique_key.as_deref(), Some("merge:orders:1:3,4,5"));
    }

    #[test]
    fn defaults_and_validation_speak_of_fields() {
        let gc = GcArgs::from_json(&json!({"table": "orders"})).unwrap();
        assert_eq!(gc.grace_seconds, DEFAULT_GRACE_SECONDS);
        let err = GcArgs::from_json(&json!({"table": "orders", "grace_seconds": -1})).unwrap_err();
        assert!(err.contains("grace_seconds"), "{err}");
        let err = MergeArgs::from_json(&json!({"table": "t", "partition": 0, "segment_ids": [1]}))
            .unwrap_err();
        assert!(err.contains("two or more"), "{err}");
        let err = PrebuildArgs::from_json(&json!({"table": "t"})).unwrap_err();
        assert!(err.contains("partition"), "{err}");
        assert!(PlanArgs::from_json(&json!({"table": "t"})).unwrap().submit);
    }

    #[test]
    fn durations_are_seconds_or_humane() {
        assert_eq!(parse_seconds("90").unwrap(), 90.0);
        assert_eq!(parse_seconds("1h").unwrap(), 3600.0);
        assert_eq!(parse_seconds("1.5").unwrap(), 1.5);
        assert!(parse_seconds("soon")
            .unwrap_err()
            .contains("not a duration"));
        assert!(parse_seconds("-5s").unwrap_err().contains("negative"));
        assert!(parse_duration("-1").unwrap_err().contains("negative"));
        assert_eq!(parse_seconds("-1").unwrap(), -1.0);
        assert!(parse_seconds("99999999999d")
            .unwrap_err()
            .contains("hundred years"));
        assert!(parse_seconds("inf").unwrap_err().contains("hundred years"));
        assert!(parse_seconds("NaN").unwrap_err().contains("hundred years"));
        let err = GcArgs::from_json(&json!({"table": "t", "grace_seconds": 1e300})).unwrap_err();
        assert!(err.contains("grace_seconds"), "{err}");
    }
}

/// Whatever JSON reaches a kind (a hand-written `--args`, a row edited in the queue), parsing and
/// validating it never panics, and arguments that validate are safe for what the tasks do with
/// them (durations, dates). A `99999999999d` grace once panicked five times in a worker.
#[cfg(test)]
mod no_panic {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{json, Value};

    const FIELDS: &[&str] = &[
        "table",
        "partition",
        "segment_id",
        "segment_ids",
        "grace_seconds",
        "reservation_ttl_seconds",
        "older_than_seconds",
        "batch",
        "seconds",
        "message",
        "permanent",
        "panic",
        "succeed_on_attempt",
        "submit",
        "job_attempts",
        "force",
        "note",
        "invalid_ratio_threshold",
        "invalid_count_threshold",
        "buffer_period_ms",
        "target_segment_rows",
        "max_records_per_merge_task",
        "max_segments_per_merge",
        "min_segments_per_merge",
        "max_tasks_per_table",
        "skip_while_unfinished",
    ];

    fn value() -> impl Strategy<Value = Value> {
        let number = prop_oneof![
            Just(json!(0)),
            Just(json!(-1)),
            Just(json!(i64::MAX)),
            Just(json!(i64::MIN)),
            Just(json!(u64::MAX)),
            Just(json!(1e300)),
            Just(json!(-1e300)),
            Just(json!(8.64e15)),
            Just(json!(0.5)),
            any::<i64>().prop_map(|v| json!(v)),
            any::<f64>()
                .prop_filter("JSON has no NaN", |v| v.is_finite())
                .prop_map(|v| json!(v)),
        ];
        let text = prop_oneof![
            Just(json!("orders")),
            Just(json!("")),
            Just(json!("a/../b")),
            Just(json!("t\n\u{1b}[31m\0")),
            "\\PC{0,12}".prop_map(|s| json!(s)),
        ];
        prop_oneof![
            number.clone(),
            text,
            any::<bool>().prop_map(|b| json!(b)),
            Just(Value::Null),
            prop::collection::vec(number, 0..4).prop_map(Value::Array),
        ]
    }

    fn object() -> impl Strategy<Value = Value> {
        prop::collection::btree_map(prop::sample::select(FIELDS), value(), 0..6).prop_map(
            |fields| {
                Value::Object(
                    fields
                        .into_iter()
                        .map(|(k, v)| (k.to_string(), v))
                        .collect(),
                )
            },
        )
    }

    /// Everything a task does with validated arguments that could panic.
    fn use_args<A: JobArgs>(value: &Value, check: impl Fn(&A)) {
        if let Ok(args) = A::from_json(value) {
            let _ = args.unique_key();
            let _ = args.catalog_refs();
            let again = A::from_json(&args.to_json());
            assert!(again.is_ok(), "{value} validated, but not its own JSON");
            check(&args);
        }
    }

    fn before_now(seconds: f64) {
        let duration = Duration::from_secs_f64(seconds);
        let _ = chrono::Utc::now() - chrono::Duration::from_std(duration).unwrap();
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, .. ProptestConfig::default() })]

        #[test]
        fn no_arguments_panic(value in object()) {
            use_args::<PrebuildArgs>(&value, |_| {});
            use_args::<CompactArgs>(&value, |_| {});
            use_args::<MergeArgs>(&value, |_| {});
            use_args::<PlanArgs>(&value, |_| {});
            use_args::<GcArgs>(&value, |args| {
                before_now(args.grace_seconds);
                before_now(args.reservation_ttl_seconds);
            });
            use_args::<PruneArgs>(&value, |args| before_now(args.older_than_seconds));
            use_args::<NoopArgs>(&value, |_| {});
            use_args::<SleepArgs>(&value, |args| {
                let _ = Duration::from_secs_f64(args.seconds);
            });
            use_args::<FailArgs>(&value, |_| {});
        }

        #[test]
        fn no_duration_text_panics(text in "\\PC{0,16}") {
            if let Ok(duration) = parse_duration(&text) {
                before_now(duration.as_secs_f64());
            }
        }
    }
}
