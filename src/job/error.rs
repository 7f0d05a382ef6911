//! How a job failed, and the one place a failure is sorted into retryable or permanent.

use crate::error::{Permanence, Permanent};

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
        JobError::Permanent(anyhow::Error::new(Permanent(message.to_string())))
    }

    pub fn is_permanent(&self) -> bool {
        matches!(self, JobError::Permanent(_))
    }
}

impl From<anyhow::Error> for JobError {
    fn from(err: anyhow::Error) -> Self {
        classify(err)
    }
}

/// Sorts an error into retryable or permanent by asking each cause in its chain: permanent if
/// any cause says so (a checksum mismatch stays permanent under any amount of context).
pub fn classify(err: anyhow::Error) -> JobError {
    if is_permanent(&err) {
        JobError::Permanent(err)
    } else {
        JobError::Retryable(err)
    }
}

/// Whether retrying cannot help `err`: a cause in its chain says it is permanent.
pub fn is_permanent(err: &anyhow::Error) -> bool {
    err.chain().any(cause_is_permanent)
}

/// Asks one cause. Every error type of the crate that implements [`Permanence`] is named here
/// once; which of its variants are permanent is decided next to them, not here.
fn cause_is_permanent(cause: &(dyn std::error::Error + 'static)) -> bool {
    fn ask<E: Permanence + std::error::Error + 'static>(
        cause: &(dyn std::error::Error + 'static),
    ) -> Option<bool> {
        cause.downcast_ref::<E>().map(E::is_permanent)
    }
    ask::<Permanent>(cause)
        .or_else(|| ask::<crate::storage::StorageError>(cause))
        .or_else(|| ask::<crate::catalog::CatalogError>(cause))
        .or_else(|| ask::<crate::queue::QueueError>(cause))
        .or_else(|| ask::<crate::segment::SegmentError>(cause))
        .or_else(|| ask::<crate::snapshot::SnapshotError>(cause))
        .or_else(|| ask::<crate::snapshot::keyrun::RunError>(cause))
        .or_else(|| ask::<crate::snapshot::manifest::ManifestError>(cause))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::StorageError;

    #[test]
    fn a_permanent_cause_stays_permanent_under_context() {
        let err = anyhow::Error::new(StorageError::ChecksumMismatch {
            key: "k".into(),
            store: "memory://".into(),
            expected: "a".into(),
            actual: "b".into(),
            size: String::new(),
        })
        .context("segment s1");
        assert!(classify(err).is_permanent());
        let err = anyhow::Error::new(Permanent("bad".into())).context("outer");
        assert!(classify(err).is_permanent());
        assert!(!classify(anyhow::anyhow!("connection reset")).is_permanent());
    }
}
