//! Segments: one Parquet file each (DESIGN.md section 6). docId = row position in the file.
//!
//! The writer stages to a local file (hashing on the way, so the checksum costs no second read);
//! the reader checks the file against the table's schema and can read only chosen columns.

mod reader;
mod writer;

use arrow::array::{BooleanArray, BooleanBufferBuilder};
use roaring::RoaringBitmap;

pub use reader::{SegmentFile, SegmentInfo};
pub use writer::{SegmentWriter, WriteOptions, WrittenSegment};

/// Key-value metadata keys written into every segment's Parquet footer.
pub mod metadata_keys {
    pub const FORMAT: &str = "minion.format";
    pub const TABLE: &str = "minion.table";
    pub const PARTITION: &str = "minion.partition";
    pub const SEQUENCE: &str = "minion.sequence";
}

#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    #[error("segment {path} is corrupt or truncated ({source}); re-ingest the data or restore the object")]
    Corrupt {
        path: String,
        source: parquet::errors::ParquetError,
    },
    #[error("segment {path} does not match table `{table}`: {message}")]
    SchemaMismatch {
        path: String,
        table: String,
        message: String,
    },
    #[error("segment file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("writing segment {path}: {source}")]
    Write {
        path: String,
        source: parquet::errors::ParquetError,
    },
}

impl crate::error::Permanence for SegmentError {
    /// A segment file that is corrupt or does not match its table stays so; so does a local file
    /// that cannot be read or written (as before: a job never gets a second chance at it).
    fn is_permanent(&self) -> bool {
        true
    }
}

/// A fresh, unique segment name: table, partition, sequence, creation time and a random suffix.
/// Names are never reused, so objects are never overwritten, even by a rewrite of the same sequence.
pub fn new_segment_name(table: &str, partition: u32, sequence: i64) -> String {
    let millis = chrono::Utc::now().timestamp_millis();
    let suffix: u32 = rand::random();
    format!("{table}__{partition}__{sequence}__{millis}_{suffix:08x}")
}

/// The filter for docIds `first..first + rows`: true where `valid` holds the docId. Walks only
/// the bitmap's members in that range.
pub fn selection_mask(valid: &RoaringBitmap, first: u32, rows: usize) -> BooleanArray {
    let mut bits = BooleanBufferBuilder::new(rows);
    bits.append_n(rows, false);
    for doc in valid.range(first..first + rows as u32) {
        bits.set_bit((doc - first) as usize, true);
    }
    BooleanArray::new(bits.finish(), None)
}

#[cfg(test)]
mod tests;
