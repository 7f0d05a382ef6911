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
use tokio_util::sync::CancellationToken;

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
/// `cancel` is checked before every row group and batch: a cancelled or timed-out job's rewrite
/// stops within one batch, however large the segment.
pub fn rewrite(
    table: &TableConfig,
    partition: u32,
    sequence: i64,
    inputs: &[RewriteInput],
    output: &Path,
    copy_through: bool,
    cancel: &CancellationToken,
) -> anyhow::Result<(WrittenSegment, RewriteStats)> {
    let mut writer =
        SegmentWriter::create(output, table, partition, sequence, &WriteOptions::default())?;
    let mut stats = RewriteStats::default();
    for input in inputs {
        let input_stats = append_valid_rows(&mut writer, table, input, copy_through, cancel)?;
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
    cancel: &CancellationToken,
) -> anyhow::Result<RewriteStats> {
    let segment = SegmentFile::open(&input.path, table)?;
    let metadata = segment.metadata().clone();
    let copy_through = copy_through && writer.can_copy_from(&metadata);
    let source =
        File::open(&input.path).with_context(|| format!("opening {}", input.path.display()))?;
    let mut stats = RewriteStats::default();
    let mut first_doc: u64 = 0;
    for index in 0..metadata.num_row_groups() {
        stop_if_cancelled(cancel)?;
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
                stop_if_cancelled(cancel)?;
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

/// The error a cancelled rewrite stops with.
#[derive(Debug, thiserror::Error)]
#[error("the rewrite was cancelled (the job was cancelled or timed out); nothing was published")]
pub struct Cancelled;

fn stop_if_cancelled(cancel: &CancellationToken) -> Result<(), Cancelled> {
    match cancel.is_cancelled() {
        true => Err(Cancelled),
        false => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, BooleanArray, Int64Array, RecordBatch};

    use super::*;

    const TABLE: &str = "name = \"t\"\npartitions = 1\nprimary_key = [\"id\"]\ncomparison = \"ts\"\n\
        delete_column = \"del\"\n[[columns]]\nname = \"id\"\ntype = \"int64\"\n\
        [[columns]]\nname = \"ts\"\ntype = \"int64\"\n[[columns]]\nname = \"del\"\ntype = \"bool\"\n";

    /// A segment of `groups` row groups of 8192 rows.
    fn segment(table: &TableConfig, path: &Path, groups: usize) -> u64 {
        let options = WriteOptions {
            row_group_rows: 8192,
            ..WriteOptions::default()
        };
        let mut writer = SegmentWriter::create(path, table, 0, 1, &options).unwrap();
        for group in 0..groups as i64 {
            let ids: Vec<i64> = (0..8192).map(|i| group * 8192 + i).collect();
            let columns: Vec<ArrayRef> = vec![
                Arc::new(Int64Array::from(ids.clone())),
                Arc::new(Int64Array::from(ids)),
                Arc::new(BooleanArray::from(vec![false; 8192])),
            ];
            writer
                .write(&RecordBatch::try_new(table.arrow_schema(), columns).unwrap())
                .unwrap();
        }
        writer.finish().unwrap().rows
    }

    #[test]
    fn a_cancelled_rewrite_stops_within_a_batch() {
        let table = TableConfig::from_toml(TABLE, "t").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("input.parquet");
        let rows = segment(&table, &input, 400);
        // Every other row valid: every row group is decoded and filtered (the slow kind).
        let valid: RoaringBitmap = (0..rows as u32).step_by(2).collect();
        let inputs = vec![RewriteInput { path: input, valid }];
        let output = dir.path().join("output.parquet");
        let cancel = CancellationToken::new();
        let worker = {
            let (table, output, cancel) = (table.clone(), output.clone(), cancel.clone());
            std::thread::spawn(move || rewrite(&table, 0, 1, &inputs, &output, true, &cancel))
        };
        // Cancel once the rewrite has written its first row groups.
        while std::fs::metadata(&output).map_or(0, |m| m.len()) == 0 && !worker.is_finished() {
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
        cancel.cancel();
        let result = worker.join().unwrap();
        let err = result.expect_err("a rewrite of 400 row groups outlives its first output group");
        assert!(err.downcast_ref::<Cancelled>().is_some(), "{err:#}");
        let written = std::fs::metadata(&output).map_or(0, |m| m.len());
        // Uncancelled, the same rewrite writes every valid row.
        let (done, _) = rewrite(
            &table,
            0,
            1,
            &[RewriteInput {
                path: dir.path().join("input.parquet"),
                valid: (0..rows as u32).step_by(2).collect(),
            }],
            &dir.path().join("full.parquet"),
            true,
            &CancellationToken::new(),
        )
        .unwrap();
        assert_eq!(done.rows, rows / 2);
        // It stopped within a batch of the cancellation, far from the end.
        assert!(
            written < done.bytes / 2,
            "kept writing after the cancellation: {written} of {} bytes",
            done.bytes
        );
    }
}
