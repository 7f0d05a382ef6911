//! `compact` (DESIGN.md section 7, issue 5): one segment -> a new segment holding only the rows
//! valid in the newest snapshot that covers it, in their original order, swapped in by
//! compare-and-swap; then the partition's prebuild is queued in the same transaction.
//!
//! Why this never loses or resurrects a row:
//! - the bitmap comes from a snapshot whose manifest lists this segment with this checksum, so a
//!   bitmap can never be applied to other content (Pinot PR #12346);
//! - a row invalid in some snapshot stays invalid: later segments only add competitors, and
//!   compaction keeps every winner, so validity never comes back;
//! - tombstones are kept whenever valid; prebuild forgets a tombstone only when it is the key's
//!   last row, so dropping it cannot uncover an older version (Pinot PR #13351);
//! - the output keeps the input's sequence number and row order, so every tie-break against
//!   other segments is decided exactly as before;
//! - the swap is one transaction guarded by the input's state and checksum: of two racing
//!   compactions exactly one wins, and the loser's upload is garbage for GC.

use std::path::Path;

use anyhow::Context;
use arrow::array::BooleanArray;
use arrow::compute::filter_record_batch;
use roaring::RoaringBitmap;
use serde::Serialize;
use serde_json::json;

use crate::catalog::{NewSegment, ReplaceOutcome, SegmentState};
use crate::loader::parse_bitmap;
use crate::queue::NewJob;
use crate::segment::{new_segment_name, SegmentFile, SegmentWriter, WriteOptions};
use crate::snapshot::build::{fetch_segment, PermanentError};
use crate::snapshot::Manifest;
use crate::storage::{layout, sha256_hex};
use crate::tasks::{prebuild, Services};

#[derive(Debug, Clone, Serialize)]
pub struct CompactReport {
    pub table: String,
    pub segment_id: i64,
    /// compacted, dropped, nothing_to_compact, not_online, not_covered, input_changed
    pub outcome: String,
    pub snapshot_version: Option<i64>,
    pub rows_before: u64,
    pub rows_after: u64,
    pub bytes_before: u64,
    pub bytes_after: u64,
    pub new_segment_id: Option<i64>,
}

pub async fn compact(
    services: &Services,
    table_name: &str,
    segment_id: i64,
    job_id: Option<i64>,
) -> anyhow::Result<CompactReport> {
    let catalog = &services.catalog;
    let store = &services.store;
    let table = catalog.table(table_name).await?;
    let Some(segment) = catalog.segment(segment_id).await? else {
        return Err(PermanentError(format!("segment {segment_id} does not exist")).into());
    };
    if segment.table != table_name {
        return Err(PermanentError(format!(
            "segment {segment_id} belongs to table {}, not {table_name}",
            segment.table
        ))
        .into());
    }
    let partition = segment.partition as u32;
    let mut report = CompactReport {
        table: table_name.to_string(),
        segment_id,
        outcome: String::new(),
        snapshot_version: None,
        rows_before: segment.row_count as u64,
        rows_after: segment.row_count as u64,
        bytes_before: segment.byte_size as u64,
        bytes_after: segment.byte_size as u64,
        new_segment_id: None,
    };
    if segment.state.0 != SegmentState::Online {
        report.outcome = "not_online".into();
        return Ok(report);
    }
    let mut follow_up = NewJob::new(
        "prebuild",
        json!({"table": table_name, "partition": partition}),
    );
    follow_up.unique_key = Some(prebuild::unique_key(table_name, partition));

    // The newest snapshot must cover this very segment content.
    let snapshot = catalog.latest_snapshot(table_name, partition).await?;
    let covered = match &snapshot {
        Some(snapshot) if snapshot.segment_ids.contains(&segment_id) => {
            let bytes = store.get(&snapshot.manifest_key).await?;
            if sha256_hex(&bytes) != snapshot.manifest_checksum {
                return Err(PermanentError(format!(
                    "manifest {} does not match its checksum",
                    snapshot.manifest_key
                ))
                .into());
            }
            let manifest = Manifest::parse(&snapshot.manifest_key, &bytes)?;
            manifest
                .segments
                .into_iter()
                .find(|s| s.id == segment_id)
                .map(|entry| (snapshot.version, entry))
        }
        _ => None,
    };
    let Some((version, entry)) = covered else {
        services.queue.submit(&follow_up).await?;
        report.outcome = "not_covered".into();
        return Ok(report);
    };
    report.snapshot_version = Some(version);
    if entry.checksum != segment.checksum {
        return Err(PermanentError(format!(
            "snapshot {version} covers segment {} with checksum {}, but the catalog records {}; refusing to apply its bitmap",
            segment.name, entry.checksum, segment.checksum
        ))
        .into());
    }
    let bitmap_bytes = store.get(&entry.valid.key).await?;
    if sha256_hex(&bitmap_bytes) != entry.valid.checksum {
        return Err(PermanentError(format!(
            "bitmap {} does not match its checksum",
            entry.valid.key
        ))
        .into());
    }
    let valid = parse_bitmap(&entry.valid.key, &bitmap_bytes, segment.row_count as u64)
        .map_err(|err| PermanentError(format!("{err:#}")))?;
    if valid.len() == segment.row_count as u64 {
        report.outcome = "nothing_to_compact".into();
        return Ok(report);
    }
    let inputs = [(segment.id, segment.checksum.clone())];
    if valid.is_empty() {
        // No valid row: drop without rewriting.
        return finish(
            catalog
                .replace_segments(&inputs, &[], Some(&follow_up))
                .await?,
            report,
            "dropped",
            0,
            0,
        );
    }

    let work = tempfile::Builder::new()
        .prefix("minion-compact-")
        .tempdir_in(&services.prebuild.staging_dir)?;
    let local_input = work.path().join("input.parquet");
    fetch_segment(store, &segment, &local_input).await?;
    let name = new_segment_name(table_name, partition, segment.sequence);
    let local_output = work.path().join("output.parquet");
    let written = {
        let (table, input, output, sequence) = (
            table.clone(),
            local_input.clone(),
            local_output.clone(),
            segment.sequence,
        );
        tokio::task::spawn_blocking(move || {
            rewrite(&table, partition, sequence, &input, &output, &valid)
        })
        .await??
    };
    let object_key = layout::segment_key(table_name, partition, &name);
    store.put_file_once(&object_key, &local_output).await?;
    let output = NewSegment {
        table: table_name.to_string(),
        partition,
        sequence: segment.sequence,
        name,
        object_key,
        row_count: written.rows,
        byte_size: written.bytes,
        checksum: written.checksum.clone(),
        min_comparison: written.min_comparison,
        max_comparison: written.max_comparison,
    };
    tracing::debug!(job = ?job_id, segment = segment_id, rows = written.rows, "compacted segment written; swapping");
    let outcome = catalog
        .replace_segments(&inputs, &[output], Some(&follow_up))
        .await?;
    finish(outcome, report, "compacted", written.rows, written.bytes)
}

fn finish(
    outcome: ReplaceOutcome,
    mut report: CompactReport,
    done: &str,
    rows: u64,
    bytes: u64,
) -> anyhow::Result<CompactReport> {
    match outcome {
        ReplaceOutcome::Replaced { outputs } => {
            report.outcome = done.into();
            report.rows_after = rows;
            report.bytes_after = bytes;
            report.new_segment_id = outputs.first().copied();
        }
        ReplaceOutcome::InputChanged { state, .. } => {
            tracing::info!(
                segment = report.segment_id,
                ?state,
                "segment changed meanwhile; this compaction's output is garbage"
            );
            report.outcome = "input_changed".into();
        }
    }
    Ok(report)
}

/// Writes the rows of `input` whose docIds are in `valid`, in order, as a segment with `sequence`.
fn rewrite(
    table: &crate::table::TableConfig,
    partition: u32,
    sequence: i64,
    input: &Path,
    output: &Path,
    valid: &RoaringBitmap,
) -> anyhow::Result<crate::segment::WrittenSegment> {
    let reader = SegmentFile::open(input, table)?;
    let options = WriteOptions::default();
    let mut writer = SegmentWriter::create(output, table, partition, sequence, &options)?;
    let mut doc_id = 0u32;
    for batch in reader.read(None, 8192)? {
        let batch = batch?;
        let mask: BooleanArray = (0..batch.num_rows() as u32)
            .map(|i| Some(valid.contains(doc_id + i)))
            .collect();
        doc_id += batch.num_rows() as u32;
        let kept = filter_record_batch(&batch, &mask).context("filtering rows")?;
        writer.write(&kept)?;
    }
    Ok(writer.finish()?)
}
