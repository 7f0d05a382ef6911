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

use std::collections::HashSet;

use serde::Serialize;

use super::{
    discard_uploads, prebuild_follow_up, rewrite, CompactionOutcome, CoveringSnapshot,
    RewriteInput, RewriteStats,
};
use crate::catalog::{NewSegment, ReplaceOutcome, SegmentRow, SegmentState, SequenceGuard};
use crate::error::Permanent;
use crate::faults::pause_point;
use crate::job::Services;
use crate::segment::new_segment_name;
use crate::snapshot::read::fetch_segment;
use crate::snapshot::runs::{write_output_run, OutputRun, OutputRunInput};

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
}

pub async fn merge(
    services: &Services,
    table_name: &str,
    partition: u32,
    segment_ids: &[i64],
    job_id: Option<i64>,
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
    let mut bitmaps = Vec::with_capacity(inputs.len());
    for segment in &inputs {
        bitmaps.push(snapshot.valid_docs(services, segment).await?);
    }
    let expected: Vec<(i64, String)> = inputs.iter().map(|s| (s.id, s.checksum.clone())).collect();

    // Outputs: consecutive inputs, each output up to the target size (at least one input each).
    let target = table.compaction.target_segment_rows;
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut group_rows = 0u64;
    for (index, bitmap) in bitmaps.iter().enumerate() {
        if bitmap.is_empty() {
            continue;
        }
        let starts_new = groups.is_empty() || group_rows + bitmap.len() > target;
        if starts_new {
            groups.push(Vec::new());
            group_rows = 0;
        }
        groups.last_mut().expect("pushed above").push(index);
        group_rows += bitmap.len();
    }

    let work = tempfile::Builder::new()
        .prefix("minion-merge-")
        .tempdir_in(&services.prebuild.staging_dir)?;
    let mut locals = Vec::with_capacity(inputs.len());
    for (index, segment) in inputs.iter().enumerate() {
        let local = work.path().join(format!("input-{index}.parquet"));
        if !bitmaps[index].is_empty() {
            fetch_segment(&services.store, segment, &local).await?;
        }
        locals.push(local);
    }
    let mut outputs = Vec::with_capacity(groups.len());
    for (number, group) in groups.iter().enumerate() {
        let sequence = group
            .iter()
            .map(|&index| inputs[index].sequence)
            .max()
            .expect("groups are never empty");
        // Inputs one after the other, in sequence order: each one's rows start where the
        // previous one's end (`catalog::Lineage`).
        let mut run_inputs: Vec<OutputRunInput<'_>> = Vec::with_capacity(group.len());
        let mut next = 0u64;
        for &index in group {
            run_inputs.push(OutputRunInput {
                segment: &inputs[index],
                valid: &bitmaps[index],
                offset: next,
            });
            next += bitmaps[index].len();
        }
        let rewrite_inputs: Vec<RewriteInput> = group
            .iter()
            .map(|&index| RewriteInput {
                path: locals[index].clone(),
                valid: bitmaps[index].clone(),
            })
            .collect();
        let local_output = work.path().join(format!("output-{number}.parquet"));
        let (written, stats) = {
            let (table, output) = (table.clone(), local_output.clone());
            tokio::task::spawn_blocking(move || {
                rewrite(&table, partition, sequence, &rewrite_inputs, &output, true)
            })
            .await??
        };
        report.row_groups.add(&stats);
        let name = new_segment_name(table_name, partition, sequence);
        let mut output = NewSegment::for_written(table_name, partition, sequence, name, &written);
        output.lineage = Some(snapshot.lineage(&run_inputs));
        report.key_runs.push(
            write_output_run(
                &services.store,
                &table,
                &run_inputs,
                &output,
                &local_output,
                work.path(),
                services.prebuild.max_run_entries,
            )
            .await?,
        );
        pause_point("merge:before_upload").await;
        services
            .store
            .put_file_once(&output.object_key, &local_output)
            .await?;
        let sources: Vec<i64> = group.iter().map(|&index| inputs[index].id).collect();
        outputs.push((output, sources));
    }
    pause_point("merge:after_upload").await;
    tracing::debug!(job = ?job_id, inputs = ?report.input_segment_ids, outputs = outputs.len(), "merged segments written; swapping");
    let outcome = catalog
        .replace_segments(&expected, &outputs, Some(&guard), Some(&follow_up))
        .await?;
    pause_point("merge:after_swap").await;
    match outcome {
        ReplaceOutcome::Replaced { outputs: ids } => {
            report.outcome = if ids.is_empty() {
                CompactionOutcome::Dropped
            } else {
                CompactionOutcome::Merged
            };
            report.rows_after = outputs.iter().map(|(s, _)| s.row_count).sum();
            report.bytes_after = outputs.iter().map(|(s, _)| s.byte_size).sum();
            report.new_segment_ids = ids;
        }
        ReplaceOutcome::InputChanged { segment_id, state } => {
            tracing::info!(
                segment = segment_id,
                ?state,
                "merge input changed meanwhile; nothing changed"
            );
            discard_uploads(services, &uploaded(&outputs)).await;
            report.outcome = CompactionOutcome::InputChanged;
        }
        ReplaceOutcome::SequenceGap { sequence } => {
            tracing::info!(
                sequence,
                "a foreign sequence lies inside the merge's range; nothing changed"
            );
            discard_uploads(services, &uploaded(&outputs)).await;
            report.outcome = CompactionOutcome::SequenceGap;
            report.gap_sequence = Some(sequence);
        }
    }
    Ok(report)
}

fn uploaded(outputs: &[(NewSegment, Vec<i64>)]) -> Vec<NewSegment> {
    outputs.iter().map(|(output, _)| output.clone()).collect()
}
