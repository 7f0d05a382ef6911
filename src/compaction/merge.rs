//! `merge`: several segments of one partition -> one (or a few, each up to the table's target
//! size), valid rows only, replacing all inputs in one compare-and-swap transaction.
//!
//! The output's sequence. Inputs are ordered by sequence (s_min..s_max) and each output takes the
//! largest sequence of the inputs it holds. Take a surviving row r from an input with sequence
//! s_r <= s_max and any other version x of its key in a segment Z outside the inputs. Tie-breaks
//! only matter when comparison values are equal:
//! - Z covered by the snapshot whose bitmaps drive the merge: r is valid there, so r beat x. With
//!   equal comparison values that means s_r > s_Z, and raising r to s_max > s_Z keeps it so.
//! - Z not covered (registered after the snapshot, or still being ingested): before, x beat r iff
//!   s_Z > s_r; after, iff s_Z > s_max. These differ only for s_r < s_Z < s_max.
//!
//! So the merge is safe exactly when no sequence inside (s_min, s_max) belongs to an uncovered
//! segment outside the inputs or to an ingest that has reserved it but not registered yet. The
//! catalog checks that in the replacement transaction (`SequenceGuard`, with reservations kept in
//! `sequence_reservations`), and a failed check changes nothing (outcome `sequence_gap`).
//!
//! Rows of different inputs never tie inside the output: the snapshot has one valid row per key.
//!
//! The work is the shared rewrite pipeline (`pipeline`); what is merge's own is choosing and
//! checking its inputs and the sequence guard.

use std::collections::HashSet;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::pipeline::{self, PhaseSeconds, Rewrite};
use super::{prebuild_follow_up, CompactionOutcome, CoveringSnapshot, RewriteStats};
use crate::catalog::{ReplaceOutcome, SegmentRow, SegmentState, SequenceGuard};
use crate::error::Permanent;
use crate::job::Services;
use crate::snapshot::runs::OutputRun;

#[derive(Debug, Clone, Serialize)]
pub struct MergeReport {
    pub table: String,
    pub partition: u32,
    pub outcome: CompactionOutcome,
    pub snapshot_version: Option<i64>,
    pub input_segment_ids: Vec<i64>,
    pub rows_before: u64,
    pub rows_after: u64,
    pub bytes_before: u64,
    pub bytes_after: u64,
    pub new_segment_ids: Vec<i64>,
    pub row_groups: RewriteStats,
    /// How each output's key run was made, for the follow-up prebuild.
    pub key_runs: Vec<OutputRun>,
    /// For `sequence_gap`: the foreign sequence found inside the inputs' range.
    pub gap_sequence: Option<i64>,
    /// Where the job's time went.
    pub phases: PhaseSeconds,
}

pub async fn merge(
    services: &Services,
    table_name: &str,
    partition: u32,
    segment_ids: &[i64],
    job_id: Option<i64>,
    cancel: &CancellationToken,
) -> anyhow::Result<MergeReport> {
    let catalog = &services.catalog;
    let table = catalog.table(table_name).await?;
    let distinct: HashSet<i64> = segment_ids.iter().copied().collect();
    if distinct.len() < 2 || distinct.len() != segment_ids.len() {
        return Err(Permanent(format!(
            "merge needs two or more distinct segments, got [{}]; use `compact` for one",
            segment_ids
                .iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .into());
    }
    let mut inputs: Vec<SegmentRow> = Vec::with_capacity(segment_ids.len());
    for &id in segment_ids {
        let Some(segment) = catalog.segment(id).await? else {
            return Err(Permanent(format!("segment {id} does not exist")).into());
        };
        if segment.table != table_name || segment.partition as u32 != partition {
            return Err(Permanent(format!(
                "segment {id} belongs to {} partition {}, not {table_name} partition {partition}",
                segment.table, segment.partition
            ))
            .into());
        }
        inputs.push(segment);
    }
    inputs.sort_by_key(|segment| segment.sequence);
    let mut report = MergeReport {
        table: table_name.to_string(),
        partition,
        outcome: CompactionOutcome::NotOnline,
        snapshot_version: None,
        input_segment_ids: inputs.iter().map(|s| s.id).collect(),
        rows_before: inputs.iter().map(|s| s.row_count as u64).sum(),
        rows_after: 0,
        bytes_before: inputs.iter().map(|s| s.byte_size as u64).sum(),
        bytes_after: 0,
        new_segment_ids: Vec::new(),
        row_groups: RewriteStats::default(),
        key_runs: Vec::new(),
        gap_sequence: None,
        phases: PhaseSeconds::default(),
    };
    if inputs.iter().any(|s| s.state != SegmentState::Online) {
        report.outcome = CompactionOutcome::NotOnline;
        return Ok(report);
    }
    let follow_up = prebuild_follow_up(table_name, partition);
    let snapshot = CoveringSnapshot::latest(services, table_name, partition).await?;
    let Some(snapshot) = snapshot.filter(|snapshot| inputs.iter().all(|s| snapshot.covers(s.id)))
    else {
        services.queue.submit(&follow_up).await?;
        report.outcome = CompactionOutcome::NotCovered;
        return Ok(report);
    };
    report.snapshot_version = Some(snapshot.version);
    let guard = SequenceGuard {
        table: table_name.to_string(),
        partition,
        low: inputs.first().map(|s| s.sequence).unwrap_or_default(),
        high: inputs.last().map(|s| s.sequence).unwrap_or_default(),
        covered: snapshot.manifest.segments.iter().map(|s| s.id).collect(),
    };
    // Checked before anything is downloaded: a merge the swap would refuse does no work. The swap
    // checks again, in its own transaction.
    if let Some(sequence) = catalog
        .sequence_gap(&guard, &report.input_segment_ids)
        .await?
    {
        tracing::info!(
            sequence,
            "a foreign sequence lies inside the merge's range; nothing to do"
        );
        report.outcome = CompactionOutcome::SequenceGap;
        report.gap_sequence = Some(sequence);
        return Ok(report);
    }
    let mut valid = Vec::with_capacity(inputs.len());
    for segment in &inputs {
        valid.push(snapshot.valid_docs(services, segment).await?);
    }
    let rewritten = pipeline::run(
        services,
        Rewrite {
            kind: "merge",
            table: &table,
            partition,
            inputs: &inputs,
            valid: &valid,
            snapshot: &snapshot,
            target_rows: table.compaction.target_segment_rows,
            guard: Some(&guard),
            follow_up: &follow_up,
            cancel,
        },
    )
    .await?;
    report.row_groups = rewritten.row_groups;
    report.key_runs = rewritten.key_runs;
    report.phases = rewritten.phases;
    match rewritten.outcome {
        ReplaceOutcome::Replaced { outputs: ids } => {
            report.outcome = if ids.is_empty() {
                CompactionOutcome::Dropped
            } else {
                CompactionOutcome::Merged
            };
            report.rows_after = rewritten.outputs.iter().map(|s| s.row_count).sum();
            report.bytes_after = rewritten.outputs.iter().map(|s| s.byte_size).sum();
            report.new_segment_ids = ids;
        }
        ReplaceOutcome::InputChanged { segment_id, state } => {
            tracing::info!(
                job = ?job_id,
                segment = segment_id,
                ?state,
                "merge input changed meanwhile; nothing changed"
            );
            report.outcome = CompactionOutcome::InputChanged;
        }
        ReplaceOutcome::SequenceGap { sequence } => {
            tracing::info!(
                job = ?job_id,
                sequence,
                "a foreign sequence lies inside the merge's range; nothing changed"
            );
            report.outcome = CompactionOutcome::SequenceGap;
            report.gap_sequence = Some(sequence);
        }
    }
    Ok(report)
}
