//! `compact`: one segment -> a new segment holding only the rows valid in the newest snapshot that
//! covers it, in their original order and with the input's sequence, swapped in by
//! compare-and-swap; the partition's prebuild is queued in the same transaction. See the module
//! above for why this never loses or resurrects a row.

use serde::Serialize;

use super::{
    discard_uploads, prebuild_follow_up, rewrite, CompactionOutcome, CoveringSnapshot,
    RewriteInput, RewriteStats,
};
use crate::catalog::{NewSegment, ReplaceOutcome, SegmentState};
use crate::error::Permanent;
use crate::faults::pause_point;
use crate::job::Services;
use crate::segment::new_segment_name;
use crate::snapshot::read::fetch_segment;
use crate::snapshot::runs::{write_output_run, OutputRun, OutputRunInput};

#[derive(Debug, Clone, Serialize)]
pub struct CompactReport {
    pub table: String,
    pub segment_id: i64,
    pub outcome: CompactionOutcome,
    pub snapshot_version: Option<i64>,
    pub rows_before: u64,
    pub rows_after: u64,
    pub bytes_before: u64,
    pub bytes_after: u64,
    pub new_segment_id: Option<i64>,
    /// How the rewrite treated the input's row groups (copied through, decoded, skipped).
    pub row_groups: RewriteStats,
    /// How the output's key run was made, for the follow-up prebuild.
    pub key_run: Option<OutputRun>,
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
        return Err(Permanent(format!("segment {segment_id} does not exist")).into());
    };
    if segment.table != table_name {
        return Err(Permanent(format!(
            "segment {segment_id} belongs to table {}, not {table_name}",
            segment.table
        ))
        .into());
    }
    let partition = segment.partition as u32;
    let mut report = CompactReport {
        table: table_name.to_string(),
        segment_id,
        outcome: CompactionOutcome::NotOnline,
        snapshot_version: None,
        rows_before: segment.row_count as u64,
        rows_after: segment.row_count as u64,
        bytes_before: segment.byte_size as u64,
        bytes_after: segment.byte_size as u64,
        new_segment_id: None,
        row_groups: RewriteStats::default(),
        key_run: None,
    };
    if segment.state != SegmentState::Online {
        report.outcome = CompactionOutcome::NotOnline;
        return Ok(report);
    }
    let follow_up = prebuild_follow_up(table_name, partition);

    // The newest snapshot must cover this very segment content.
    let snapshot = CoveringSnapshot::latest(services, table_name, partition).await?;
    let Some(snapshot) = snapshot.filter(|snapshot| snapshot.covers(segment_id)) else {
        services.queue.submit(&follow_up).await?;
        report.outcome = CompactionOutcome::NotCovered;
        return Ok(report);
    };
    report.snapshot_version = Some(snapshot.version);
    let valid = snapshot.valid_docs(services, &segment).await?;
    if valid.len() == segment.row_count as u64 {
        report.outcome = CompactionOutcome::NothingToCompact;
        return Ok(report);
    }
    let inputs = [(segment.id, segment.checksum.clone())];
    if valid.is_empty() {
        // No valid row: drop without rewriting.
        return finish(
            catalog
                .replace_segments(&inputs, &[], None, Some(&follow_up))
                .await?,
            report,
            CompactionOutcome::Dropped,
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
    let (written, row_groups) = {
        let table = table.clone();
        let inputs = vec![RewriteInput {
            path: local_input,
            valid: valid.clone(),
        }];
        let (output, sequence) = (local_output.clone(), segment.sequence);
        tokio::task::spawn_blocking(move || {
            rewrite(&table, partition, sequence, &inputs, &output, true)
        })
        .await??
    };
    report.row_groups = row_groups;
    let mut output =
        NewSegment::for_written(table_name, partition, segment.sequence, name, &written);
    let run_inputs = [OutputRunInput {
        segment: &segment,
        valid: &valid,
        offset: 0,
    }];
    output.lineage = Some(snapshot.lineage(&run_inputs));
    report.key_run = Some(
        write_output_run(
            store,
            &table,
            &run_inputs,
            &output,
            &local_output,
            work.path(),
            services.prebuild.max_run_entries,
        )
        .await?,
    );
    pause_point("compact:before_upload").await;
    store
        .put_file_once(&output.object_key, &local_output)
        .await?;
    pause_point("compact:after_upload").await;
    tracing::debug!(job = ?job_id, segment = segment_id, rows = written.rows, "compacted segment written; swapping");
    let outcome = catalog
        .replace_segments(
            &inputs,
            &[(output.clone(), vec![segment.id])],
            None,
            Some(&follow_up),
        )
        .await?;
    pause_point("compact:after_swap").await;
    if !matches!(outcome, ReplaceOutcome::Replaced { .. }) {
        discard_uploads(services, std::slice::from_ref(&output)).await;
    }
    finish(
        outcome,
        report,
        CompactionOutcome::Compacted,
        written.rows,
        written.bytes,
    )
}

fn finish(
    outcome: ReplaceOutcome,
    mut report: CompactReport,
    done: CompactionOutcome,
    rows: u64,
    bytes: u64,
) -> anyhow::Result<CompactReport> {
    match outcome {
        ReplaceOutcome::Replaced { outputs } => {
            report.outcome = done;
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
            report.outcome = CompactionOutcome::InputChanged;
        }
        ReplaceOutcome::SequenceGap { sequence } => {
            debug_assert!(false, "compact keeps its sequence and sets no guard");
            tracing::warn!(
                segment = report.segment_id,
                sequence,
                "unexpected sequence gap"
            );
            report.outcome = CompactionOutcome::SequenceGap;
        }
    }
    Ok(report)
}
