//! Snapshots of a partition's upsert state: validDocIds and queryableDocIds bitmaps per covered
//! segment, key-metadata SST files, and the manifest that lists them (DESIGN.md sections 2, 3, 6).
//!
//! [`build::prebuild`] makes and publishes one; [`read`] reads one back, checked (the loader,
//! compaction, `verify` and `scan` all read through it).

pub mod build;
pub mod keyrun;
pub mod layers;
pub mod lineage;
pub mod manifest;
mod publish;
pub mod ranges;
pub mod read;
pub mod record;
pub mod resolve;
pub mod runs;
pub mod sst;
pub mod tail;
pub mod verify;

pub use build::{prebuild, PrebuildOptions, PrebuildOutcome, PrebuildReport};
pub use manifest::Manifest;
pub use read::{SegmentBitmaps, SnapshotError};

#[cfg(test)]
mod tests;
