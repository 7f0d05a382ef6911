//! Snapshots of a partition's upsert state: validDocIds and queryableDocIds bitmaps per covered
//! segment, key-metadata SST files, and the manifest that lists them (DESIGN.md sections 2, 3, 6).
//!
//! [`build::prebuild`] makes and publishes one; [`crate::loader`] is what a server does with it.

pub mod build;
pub mod keyrun;
pub mod manifest;
pub mod ranges;
pub mod record;
pub mod resolve;
pub mod sst;
pub mod verify;

pub use build::{prebuild, PrebuildOptions, PrebuildReport};
pub use manifest::Manifest;

#[cfg(test)]
mod tests;
