//! Writing the valid rows of one or more local segment files into a new segment, in input order
//! then docId order. Row groups decide their own fate from the bitmap alone: all rows valid ->
//! spliced in byte for byte (no decode, no re-encode); none valid -> skipped unread; otherwise
//! decoded and filtered.

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::Context;
use arrow::compute::filter_record_batch;
use roaring::RoaringBitmap;
use serde::Serialize;

use crate::segment::{selection_mask, SegmentFile, SegmentWriter, WriteOptions, WrittenSegment};
use crate::table::TableConfig;

/// One input: a local copy of a segment and its rows to keep.
pub struct RewriteInput {
    pub path: PathBuf,
    pub valid: RoaringBitmap,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct RewriteStats {
    /// Row groups spliced without decoding (every row valid).
    pub copied_row_groups: u64,
    /// Row groups decoded and filtered (some rows valid).
    pub decoded_row_groups: u64,
    /// Row groups left out unread (no row valid).
    pub skipped_row_groups: u64,
}

impl RewriteStats {
    pub fn add(&mut self, other: &RewriteStats) {
        self.copied_row_groups += other.copied_row_groups;
        self.decoded_row_groups += other.decoded_row_groups;
        self.skipped_row_groups += other.skipped_row_groups;
    }
}

/// Writes the valid rows of `inputs` to `output` as one segment with `sequence`. With
/// `copy_through` off every kept row group is decoded (for benchmarks and for cross-checking).
pub fn rewrite(
    table: &TableConfig,
    partition: u32,
    sequence: i64,
    inputs: &[RewriteInput],
    output: &Path,
    copy_through: bool,
) -> anyhow::Result<(WrittenSegment, RewriteStats)> {
    let mut writer =
        SegmentWriter::create(output, table, partition, sequence, &WriteOptions::default())?;
    let mut stats = RewriteStats::default();
    for input in inputs {
        let input_stats = append_valid_rows(&mut writer, table, input, copy_through)?;
        stats.add(&input_stats);
    }
    let expected: u64 = inputs.iter().map(|input| input.valid.len()).sum();
    let written = writer.finish()?;
    anyhow::ensure!(
        written.rows == expected,
        "rewrite wrote {} rows but the bitmaps hold {expected}",
        written.rows
    );
    Ok((written, stats))
}

fn append_valid_rows(
    writer: &mut SegmentWriter,
    table: &TableConfig,
    input: &RewriteInput,
    copy_through: bool,
) -> anyhow::Result<RewriteStats> {
    let segment = SegmentFile::open(&input.path, table)?;
    let metadata = segment.metadata().clone();
    let copy_through = copy_through && writer.can_copy_from(&metadata);
    let source =
        File::open(&input.path).with_context(|| format!("opening {}", input.path.display()))?;
    let mut stats = RewriteStats::default();
    let mut first_doc: u64 = 0;
    for index in 0..metadata.num_row_groups() {
        let rows = metadata.row_group(index).num_rows() as u64;
        let docs = first_doc..first_doc + rows;
        let kept = input
            .valid
            .range_cardinality(docs.start as u32..docs.end as u32);
        if kept == 0 {
            stats.skipped_row_groups += 1;
        } else if kept == rows && copy_through {
            writer.copy_row_group(&source, &metadata, index)?;
            stats.copied_row_groups += 1;
        } else {
            let mut doc_id = first_doc as u32;
            for batch in segment.read_row_group(index, 65_536)? {
                let batch = batch?;
                let mask = selection_mask(&input.valid, doc_id, batch.num_rows());
                doc_id += batch.num_rows() as u32;
                let kept = filter_record_batch(&batch, &mask).context("filtering rows")?;
                writer.write(&kept)?;
            }
            debug_assert_eq!(u64::from(doc_id), docs.end);
            stats.decoded_row_groups += 1;
        }
        first_doc = docs.end;
    }
    Ok(stats)
}
