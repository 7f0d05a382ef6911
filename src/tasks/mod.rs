//! Task kinds the worker runs, dispatched through one [`Registry`].
//!
//! Each kind is a [`TypedTask`]: its arguments are a struct of `crate::job::args`, parsed and
//! validated once by the [`Adapter`] that the registry holds, so a task never sees JSON. The
//! same parse runs at submit time ([`Registry::prepare`]), so a bad job never enters the queue.

mod compact;
mod diagnostic;
mod gc;
mod merge;
mod plan;
mod prebuild;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use serde::Serialize;
use serde_json::Value;

use crate::job::JobArgs;
pub use crate::job::{classify, JobContext, JobError, Services};
use crate::queue::NewJob;

/// A task of one kind: typed arguments in, a serializable report out.
#[async_trait]
pub trait TypedTask: Send + Sync + 'static {
    type Args: JobArgs;
    type Output: Serialize + Send;

    async fn run(&self, context: &JobContext, args: Self::Args) -> Result<Self::Output, JobError>;
}

/// What the registry holds: any kind, its arguments as the queue stores them (JSON).
#[async_trait]
pub trait Task: Send + Sync {
    fn kind(&self) -> &'static str;

    /// One line: what a job of this kind does.
    fn about(&self) -> &'static str;

    /// Whether the kind works on one table (see `JobArgs::PER_TABLE`).
    fn per_table(&self) -> bool;

    /// How long an attempt may run unless its submission says otherwise (`JobArgs::TIMEOUT`).
    fn timeout(&self) -> std::time::Duration;

    /// Parses and validates `args` into a queue row with the kind's default unique key; the
    /// message says what is wrong and how to fix it.
    fn prepare(&self, args: Value) -> Result<NewJob, String>;

    /// Parses the arguments once and runs the job; returns its report as the job's output.
    async fn run(&self, context: &JobContext, args: Value) -> Result<Value, JobError>;
}

/// Puts a [`TypedTask`] behind the [`Task`] face.
pub struct Adapter<T>(pub T);

#[async_trait]
impl<T: TypedTask> Task for Adapter<T> {
    fn kind(&self) -> &'static str {
        T::Args::KIND
    }

    fn about(&self) -> &'static str {
        T::Args::ABOUT
    }

    fn per_table(&self) -> bool {
        T::Args::PER_TABLE
    }

    fn timeout(&self) -> std::time::Duration {
        T::Args::TIMEOUT
    }

    fn prepare(&self, args: Value) -> Result<NewJob, String> {
        let typed = T::Args::from_json(&args)?;
        let mut job = NewJob::new(T::Args::KIND, args);
        job.unique_key = typed.unique_key();
        Ok(job)
    }

    async fn run(&self, context: &JobContext, args: Value) -> Result<Value, JobError> {
        let args = T::Args::from_json(&args).map_err(|message| {
            JobError::permanent(format!(
                "invalid arguments for `{}`: {message}",
                T::Args::KIND
            ))
        })?;
        let output = self.0.run(context, args).await?;
        Ok(serde_json::to_value(output).expect("reports serialize"))
    }
}

/// Errors from looking up or validating a job.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("unknown job kind `{kind}`; known kinds: {known} (see `minion job kinds`)")]
    UnknownKind { kind: String, known: String },
    #[error("invalid arguments for `{kind}`: {message}")]
    InvalidArgs { kind: String, message: String },
}

impl crate::error::Permanence for RegistryError {
    fn is_permanent(&self) -> bool {
        true
    }
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
        registry.register(Adapter(prebuild::Prebuild));
        registry.register(Adapter(compact::Compact));
        registry.register(Adapter(merge::Merge));
        registry.register(Adapter(plan::Plan));
        registry.register(Adapter(gc::Gc));
        registry.register(Adapter(gc::Prune));
        registry.register(Adapter(diagnostic::Noop));
        registry.register(Adapter(diagnostic::Sleep));
        registry.register(Adapter(diagnostic::Fail));
        registry
    }

    pub fn register(&mut self, task: impl Task + 'static) {
        let previous = self.tasks.insert(task.kind(), Arc::new(task));
        debug_assert!(previous.is_none(), "task kinds are unique");
    }

    pub fn kinds(&self) -> Vec<&'static str> {
        self.tasks.keys().copied().collect()
    }

    /// Every task, by kind name.
    pub fn tasks(&self) -> impl Iterator<Item = &Arc<dyn Task>> {
        self.tasks.values()
    }

    pub fn get(&self, kind: &str) -> Result<&Arc<dyn Task>, RegistryError> {
        self.tasks
            .get(kind)
            .ok_or_else(|| RegistryError::UnknownKind {
                kind: kind.to_string(),
                known: self.kinds().join(", "),
            })
    }

    /// Looks up `kind` and parses `args` for it into a queue row.
    pub fn prepare(&self, kind: &str, args: Value) -> Result<NewJob, RegistryError> {
        self.get(kind)?
            .prepare(args)
            .map_err(|message| RegistryError::InvalidArgs {
                kind: kind.to_string(),
                message,
            })
    }
}

/// Counts what a swapped-in compaction or merge removed from the table.
fn record_reclaimed(table: &str, kind: &str, rows: u64, bytes: u64) {
    let metrics = crate::telemetry::metrics();
    metrics
        .reclaimed_rows
        .with_label_values(&[table, kind])
        .inc_by(rows);
    metrics
        .reclaimed_bytes
        .with_label_values(&[table, kind])
        .inc_by(bytes);
}
