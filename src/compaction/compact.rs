//! `compact`: one segment -> a new segment holding only the rows valid in the newest snapshot that
//! covers it, in their original order and with the input's sequence, swapped in by
//! compare-and-swap; the partition's prebuild is queued in the same transaction. See the module
//! above for why this never loses or resurrects a row. The work is the shared rewrite pipeline
//! (`pipeline`) with one input and no sequence guard; what is compact's own is checking that
//! there is something to do.

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::pipeline::{self, PhaseSeconds, Rewrite};
use super::{prebuild_follow_up, CompactionOutcome, CoveringSnapshot, RewriteStats};
use crate::catalog::{ReplaceOutcome, SegmentState};
use crate::error::Permanent;
use crate::job::Services;
use crate::snapshot::runs::OutputRun;

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
    /// Where the job's time went.
    pub phases: PhaseSeconds,
}

pub async fn compact(
    services: &Services,
    table_name: &str,
    segment_id: i64,
    job_id: Option<i64>,
    cancel: &CancellationToken,
) -> anyhow::Result<CompactReport> {
    let catalog = &services.catalog;
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
        phases: PhaseSeconds::default(),
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
    let rewritten = pipeline::run(
        services,
        Rewrite {
            kind: "compact",
            table: &table,
            partition,
            inputs: std::slice::from_ref(&segment),
            valid: std::slice::from_ref(&valid),
            snapshot: &snapshot,
            // One input is one output, whatever its size.
            target_rows: u64::MAX,
            guard: None,
            follow_up: &follow_up,
            cancel,
        },
    )
    .await?;
    tracing::debug!(job = ?job_id, segment = segment_id, outcome = ?rewritten.outcome, "compaction swap answered");
    report.row_groups = rewritten.row_groups;
    report.key_run = rewritten.key_runs.first().copied();
    report.phases = rewritten.phases;
    let (rows, bytes) = match rewritten.outputs.first() {
        Some(output) => (output.row_count, output.byte_size),
        None => (0, 0),
    };
    let done = match rewritten.outputs.is_empty() {
        // No valid row: the segment is dropped without a rewrite.
        true => CompactionOutcome::Dropped,
        false => CompactionOutcome::Compacted,
    };
    finish(rewritten.outcome, report, done, rows, bytes)
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
