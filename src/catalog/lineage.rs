//! How a compacted or merged segment was made (issue 14), recorded on its catalog row in the
//! swap's own transaction: the snapshot whose bitmaps the rewrite used and, per input, the
//! checksums that prove which rows went in, and where they landed.
//!
//! A rewrite keeps exactly the rows of each input's validDocIds bitmap, in docId order, inputs one
//! after the other (`compaction::rewrite`). So the row `doc` of input `i` is the row
//! `offset(i) + rank(valid(i), doc) - 1` of the output, and a loader holding the same bitmap
//! (same checksum) can move key metadata and bitmaps onto the output without reading it.

use serde::{Deserialize, Serialize};

/// The lineage of one output segment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lineage {
    /// The snapshot whose validDocIds bitmaps selected the rows.
    pub snapshot_version: i64,
    /// The inputs in the order their rows were written.
    pub inputs: Vec<LineageInput>,
}

/// One input of a rewrite.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineageInput {
    pub segment_id: i64,
    /// SHA-256 of the input segment.
    pub checksum: String,
    /// SHA-256 of the serialized validDocIds bitmap used (the manifest's file checksum).
    pub valid_checksum: String,
    /// Rows the bitmap kept: the input's rows in the output.
    pub valid_docs: u64,
    /// Where the input's first kept row sits in the output.
    pub offset: u64,
}

impl Lineage {
    /// Rows of the output, by the lineage: the sum of what each input kept.
    pub fn rows(&self) -> u64 {
        self.inputs.iter().map(|input| input.valid_docs).sum()
    }

    /// Whether the offsets lay the inputs out one after the other from row 0, as a rewrite does.
    pub fn is_contiguous(&self) -> bool {
        let mut next = 0;
        for input in &self.inputs {
            if input.offset != next {
                return false;
            }
            next += input.valid_docs;
        }
        true
    }
}
