//! Task kinds the worker runs, dispatched through one [`Registry`]. Each kind validates its
//! arguments at submit time, so a bad job never enters the queue, and says whether its failures
//! are worth retrying.

pub mod compact;
mod diagnostic;
pub mod gc;
pub mod merge;
pub mod plan;
pub mod prebuild;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::catalog::Catalog;
use crate::queue::Queue;
use crate::snapshot::PrebuildOptions;
use crate::storage::Store;

/// How a job failed.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// Worth another attempt (network, contention, a crashed dependency).
    #[error("{0:#}")]
    Retryable(anyhow::Error),
    /// Retrying cannot help (bad arguments, corrupt input): the job is discarded at once.
    #[error("{0:#}")]
    Permanent(anyhow::Error),
}

impl JobError {
    pub fn permanent(message: impl std::fmt::Display) -> JobError {
        JobError::Permanent(anyhow::anyhow!("{message}"))
    }

    pub fn is_permanent(&self) -> bool {
        matches!(self, JobError::Permanent(_))
    }
}

impl From<anyhow::Error> for JobError {
    fn from(err: anyhow::Error) -> Self {
        JobError::Retryable(err)
    }
}

/// What a running job can reach.
pub struct Services {
    pub catalog: Catalog,
    pub queue: Queue,
    pub store: Store,
    pub prebuild: PrebuildOptions,
}

/// Sorts an error into retryable or permanent: corrupt or missing input, a schema mismatch, a
/// missing table or an unreadable manifest cannot be fixed by running again.
pub fn classify(err: anyhow::Error) -> JobError {
    use crate::catalog::CatalogError;
    use crate::snapshot::keyrun::RunError;
    use crate::storage::StorageError;
    let permanent = err.chain().any(|cause| {
        cause.is::<crate::snapshot::build::PermanentError>()
            || cause.is::<crate::segment::SegmentError>()
            || cause.is::<crate::snapshot::manifest::ManifestError>()
            || matches!(
                cause.downcast_ref::<crate::loader::LoaderError>(),
                Some(
                    crate::loader::LoaderError::BadBitmap { .. }
                        | crate::loader::LoaderError::ChecksumMismatch { .. }
                )
            )
            || matches!(
                cause.downcast_ref::<RunError>(),
                Some(RunError::Corrupt { .. })
            )
            || matches!(
                cause.downcast_ref::<CatalogError>(),
                Some(CatalogError::TableNotFound(_))
            )
            || matches!(
                cause.downcast_ref::<StorageError>(),
                Some(
                    StorageError::NotFound { .. }
                        | StorageError::ChecksumMismatch { .. }
                        | StorageError::AlreadyExists { .. }
                        | StorageError::BadUrl { .. }
                )
            )
    });
    if permanent {
        JobError::Permanent(err)
    } else {
        JobError::Retryable(err)
    }
}

/// One execution of one job.
#[derive(Clone)]
pub struct JobContext {
    /// The job id, 0 when run outside the queue (`minion run`).
    pub job_id: i64,
    pub attempt: i32,
    /// Cancelled when the job is cancelled, its lease is lost, or the worker shuts down.
    pub cancel: CancellationToken,
    pub services: Arc<Services>,
}

#[async_trait]
pub trait Task: Send + Sync {
    fn kind(&self) -> &'static str;

    /// Checks the arguments; the message says what is wrong and how to fix it.
    fn validate(&self, args: &Value) -> Result<(), String>;

    /// The unique key a submission of these arguments gets unless one is given.
    fn unique_key(&self, _args: &Value) -> Option<String> {
        None
    }

    /// Runs the job. Returns a JSON summary stored as the job's output.
    async fn run(&self, context: &JobContext, args: Value) -> Result<Value, JobError>;
}

/// Errors from looking up or validating a job.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("unknown job kind `{kind}`; known kinds: {known}")]
    UnknownKind { kind: String, known: String },
    #[error("invalid arguments for `{kind}`: {message}")]
    InvalidArgs { kind: String, message: String },
}

/// Every task kind by name.
pub struct Registry {
    tasks: BTreeMap<&'static str, Arc<dyn Task>>,
}

impl Registry {
    /// The registry of every kind this binary knows.
    pub fn standard() -> Registry {
        let mut registry = Registry {
            tasks: BTreeMap::new(),
        };
        for task in diagnostic::tasks() {
            registry.register(task);
        }
        registry.register(prebuild::task());
        registry.register(compact::task());
        registry.register(merge::task());
        registry.register(gc::task());
        registry.register(plan::task());
        registry
    }

    pub fn register(&mut self, task: Arc<dyn Task>) {
        let previous = self.tasks.insert(task.kind(), task);
        debug_assert!(previous.is_none(), "task kinds are unique");
    }

    pub fn kinds(&self) -> Vec<&'static str> {
        self.tasks.keys().copied().collect()
    }

    pub fn get(&self, kind: &str) -> Result<&Arc<dyn Task>, RegistryError> {
        self.tasks
            .get(kind)
            .ok_or_else(|| RegistryError::UnknownKind {
                kind: kind.to_string(),
                known: self.kinds().join(", "),
            })
    }

    /// Looks up `kind` and validates `args` for it.
    pub fn check(&self, kind: &str, args: &Value) -> Result<&Arc<dyn Task>, RegistryError> {
        let task = self.get(kind)?;
        task.validate(args)
            .map_err(|message| RegistryError::InvalidArgs {
                kind: kind.to_string(),
                message,
            })?;
        Ok(task)
    }
}

/// Parses typed arguments, turning serde's message into the validation error.
pub fn parse_args<T: serde::de::DeserializeOwned>(args: &Value) -> Result<T, String> {
    serde_json::from_value(args.clone()).map_err(|err| err.to_string())
}
