//! The job contract, at the bottom of the house: what a job can reach ([`Services`],
//! [`JobContext`]), the typed arguments of every kind ([`args`]), and how a failure is
//! classified ([`JobError`], [`classify`]).
//!
//! The domain modules (compaction, gc), the task layer, the planner and the CLI all build on
//! this module; it imports nothing above `snapshot`.

pub mod args;
mod context;
mod error;
pub mod refs;

pub use args::JobArgs;
pub use context::{JobContext, Services};
pub use error::{classify, is_permanent, JobError};
