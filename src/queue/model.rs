//! The queue's data: job states, jobs to submit, claimed jobs, rows as listed, outcomes, errors.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Available,
    Scheduled,
    Running,
    Retryable,
    Completed,
    Discarded,
    Cancelled,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Available => "available",
            JobState::Scheduled => "scheduled",
            JobState::Running => "running",
            JobState::Retryable => "retryable",
            JobState::Completed => "completed",
            JobState::Discarded => "discarded",
            JobState::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<JobState> {
        Some(match text {
            "available" => JobState::Available,
            "scheduled" => JobState::Scheduled,
            "running" => JobState::Running,
            "retryable" => JobState::Retryable,
            "completed" => JobState::Completed,
            "discarded" => JobState::Discarded,
            "cancelled" => JobState::Cancelled,
            _ => return None,
        })
    }

    pub fn is_finished(self) -> bool {
        matches!(
            self,
            JobState::Completed | JobState::Discarded | JobState::Cancelled
        )
    }

    pub const ALL: [JobState; 7] = [
        JobState::Available,
        JobState::Scheduled,
        JobState::Running,
        JobState::Retryable,
        JobState::Completed,
        JobState::Discarded,
        JobState::Cancelled,
    ];
}

/// Compares with the state's name, as `job ls --json` shows it.
impl PartialEq<&str> for JobState {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Reads a text column into an enum through `$parse: fn(&str) -> Result<Self, String>`: text
/// this minion does not know (written by a newer one) is a decode error with `$parse`'s message,
/// never a panic or a silent `None`.
macro_rules! text_column_enum {
    ($type:ty, $parse:path) => {
        impl sqlx::Type<sqlx::Postgres> for $type {
            fn type_info() -> sqlx::postgres::PgTypeInfo {
                <&str as sqlx::Type<sqlx::Postgres>>::type_info()
            }

            fn compatible(ty: &sqlx::postgres::PgTypeInfo) -> bool {
                <&str as sqlx::Type<sqlx::Postgres>>::compatible(ty)
            }
        }

        impl<'r> sqlx::Decode<'r, sqlx::Postgres> for $type {
            fn decode(
                value: sqlx::postgres::PgValueRef<'r>,
            ) -> Result<Self, sqlx::error::BoxDynError> {
                let text = <&str as sqlx::Decode<sqlx::Postgres>>::decode(value)?;
                Ok($parse(text)?)
            }
        }
    };
}
pub(crate) use text_column_enum;

impl JobState {
    /// A state as the queue's statements read it (`state::text`).
    fn from_column(text: &str) -> Result<JobState, String> {
        JobState::parse(text).ok_or_else(|| {
            let known: Vec<&str> = JobState::ALL.iter().map(|s| s.as_str()).collect();
            format!(
                "unknown job state `{text}` in the jobs table (this minion knows {}); is a newer minion writing to this catalog? Upgrade this one",
                known.join(", ")
            )
        })
    }
}

text_column_enum!(JobState, JobState::from_column);

/// A job to insert.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub kind: String,
    pub args: Value,
    pub queue: String,
    /// Higher runs first.
    pub priority: i16,
    pub max_attempts: i32,
    /// Not before this time; `None` is now.
    pub scheduled_at: Option<DateTime<Utc>>,
    /// At most one unfinished job per key.
    pub unique_key: Option<String>,
    /// How long an attempt may run before it is cancelled and counted as failed; `None` is the
    /// kind's default.
    pub timeout: Option<std::time::Duration>,
}

impl NewJob {
    pub fn new(kind: impl Into<String>, args: Value) -> NewJob {
        NewJob {
            kind: kind.into(),
            args,
            queue: "default".into(),
            priority: 0,
            max_attempts: 5,
            scheduled_at: None,
            unique_key: None,
            timeout: None,
        }
    }
}

/// What `submit` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", content = "id", rename_all = "lowercase")]
pub enum Submitted {
    New(i64),
    /// An unfinished job already held the unique key; this is its id.
    Existing(i64),
}

impl Submitted {
    pub fn id(self) -> i64 {
        match self {
            Submitted::New(id) | Submitted::Existing(id) => id,
        }
    }
}

/// A job claimed by a worker: what it needs to run it and to fence its result.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ClaimedJob {
    pub id: i64,
    pub kind: String,
    pub args: Value,
    pub queue: String,
    pub attempt: i32,
    pub max_attempts: i32,
    pub scheduled_at: DateTime<Utc>,
    pub attempted_at: Option<DateTime<Utc>>,
    /// The submission's timeout; `None` is the kind's default.
    pub timeout_seconds: Option<f64>,
}

/// A job row as shown by `job ls` / `job show`.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct JobRow {
    pub id: i64,
    pub kind: String,
    pub args: Value,
    pub queue: String,
    pub priority: i16,
    pub state: JobState,
    pub attempt: i32,
    pub max_attempts: i32,
    pub scheduled_at: DateTime<Utc>,
    pub attempted_at: Option<DateTime<Utc>>,
    pub attempted_by: Option<String>,
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub finalized_at: Option<DateTime<Utc>>,
    pub errors: Value,
    pub output: Option<Value>,
    pub unique_key: Option<String>,
    pub cancel_requested: bool,
    pub created_at: DateTime<Utc>,
    /// The submission's timeout; `None` is the kind's default.
    pub timeout_seconds: Option<f64>,
}

/// What `cancel` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CancelOutcome {
    /// The job had not started; it is cancelled.
    Cancelled,
    /// The job runs; its worker was told to stop, and it will end cancelled.
    Requested,
    /// The job had already finished, or does not exist.
    NotCancellable,
}

/// Errors from the queue that callers act on.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("job {0} does not exist (it may have been pruned)")]
    NotFound(i64),
    #[error("queue query failed: {0}")]
    Database(#[from] sqlx::Error),
}

impl crate::error::Permanence for QueueError {
    /// Queue statements fail on the database, which may recover.
    fn is_permanent(&self) -> bool {
        false
    }
}

impl QueueError {
    /// The connection failed (reset, timeout, server restarting): the statement's outcome is
    /// unknown, and asking again may answer.
    pub fn is_connection(&self) -> bool {
        match self {
            QueueError::Database(err) => is_connection_error(err),
            QueueError::NotFound(_) => false,
        }
    }
}

/// Whether `err` is a lost or refused connection rather than an answer from Postgres.
fn is_connection_error(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        // Class 08 (connection exception) and 57P0x (the server shutting down or starting).
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|code| code.starts_with("08") || code.starts_with("57P0")),
        _ => false,
    }
}
