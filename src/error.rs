//! How an error says whether retrying can help (Neon's `docs/error-handling.md`: let each error
//! enum say whether it is permanent, next to its variants).
//!
//! Every error enum a job can meet implements [`Permanence`] where it is defined; the job layer
//! (`crate::job::classify`) asks the causes of a failure, it never decides for them. Code that
//! finds a problem no typed error names raises [`Permanent`].

/// Whether an error is worth another attempt.
pub trait Permanence {
    /// True when running again cannot help: corrupt or missing input, a bad argument, a missing
    /// table. Connection failures, timeouts and contention are not permanent.
    fn is_permanent(&self) -> bool;
}

/// A problem retrying cannot fix, raised where no typed error fits; the job is discarded and
/// nothing is published.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Permanent(pub String);

impl Permanence for Permanent {
    fn is_permanent(&self) -> bool {
        true
    }
}
