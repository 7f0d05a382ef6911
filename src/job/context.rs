//! What a running job can reach, and one execution of one job.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::catalog::Catalog;
use crate::queue::Queue;
use crate::snapshot::PrebuildOptions;
use crate::storage::Store;

/// What a running job can reach: the catalog, the queue, the object store and the settings the
/// domain modules need. Built once per process; domain functions take it explicitly.
pub struct Services {
    pub catalog: Catalog,
    pub queue: Queue,
    pub store: Store,
    /// Staging directory and the prebuild's sizes and threads (also used by compaction).
    pub prebuild: PrebuildOptions,
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

impl JobContext {
    /// The job id when run from the queue, for reports and manifests.
    pub fn queued_job_id(&self) -> Option<i64> {
        (self.job_id > 0).then_some(self.job_id)
    }
}
