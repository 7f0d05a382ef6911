//! The one rewrite pipeline `compact` and `merge` share: from inputs that the newest snapshot
//! covers and their valid rows, to outputs swapped in by compare-and-swap (or nothing changed).
//!
//! Consecutive inputs are grouped into outputs of at most `target_rows` valid rows each (at least
//! one input each); an input without a valid row is in no group and is not downloaded. Each
//! output gets the largest sequence of its inputs (for one input: its own, which is all `compact`
//! ever needs), its rows in input order then docId order, its lineage, and its key run written
//! before the swap. Then one catalog transaction replaces every input, guarded by each input's
//! state and checksum, and for a merge by the sequence guard (`merge.rs` argues why); a swap that
//! is refused leaves the uploads to be deleted here (nothing references them).
//!
//! `compact` is a merge of one input that keeps its sequence and sets no guard.

use std::time::Instant;

use roaring::RoaringBitmap;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::rewrite::Cancelled;
use super::{discard_uploads, rewrite, CoveringSnapshot, RewriteInput, RewriteStats};
use crate::catalog::{NewSegment, ReplaceOutcome, SegmentRow, SequenceGuard};
use crate::faults::pause_point;
use crate::job::Services;
use crate::queue::NewJob;
use crate::segment::new_segment_name;
use crate::snapshot::read::fetch_segment;
use crate::snapshot::runs::{write_output_run, OutputRun, OutputRunInput};
use crate::table::TableConfig;

/// Seconds each phase of a rewrite took (the report's breakdown of where a job's time goes).
#[derive(Debug, Clone, Default, Serialize)]
pub struct PhaseSeconds {
    /// Downloading and verifying the inputs.
    pub download: f64,
    /// Writing the outputs (decode, filter, encode, or splice).
    pub rewrite: f64,
    /// Writing and uploading the outputs' key runs.
    pub key_run: f64,
    /// Uploading the outputs.
    pub upload: f64,
    /// The catalog transaction that swaps them in.
    pub swap: f64,
}

/// What to rewrite.
pub(super) struct Rewrite<'a> {
    /// `compact` or `merge`: names the pause points and the work directory.
    pub kind: &'static str,
    pub table: &'a TableConfig,
    pub partition: u32,
    /// The inputs in sequence order, all covered by `snapshot`.
    pub inputs: &'a [SegmentRow],
    /// Each input's rows to keep (its validDocIds in `snapshot`).
    pub valid: &'a [RoaringBitmap],
    pub snapshot: &'a CoveringSnapshot,
    /// Most valid rows per output.
    pub target_rows: u64,
    pub guard: Option<&'a SequenceGuard>,
    /// The partition's prebuild, queued in the swap's transaction.
    pub follow_up: &'a NewJob,
    /// The job's token: the rewrite checks it between batches, and nothing is uploaded or swapped
    /// once it is cancelled.
    pub cancel: &'a CancellationToken,
}

/// What the pipeline did.
pub(super) struct Rewritten {
    pub outcome: ReplaceOutcome,
    /// The outputs written and uploaded (swapped in only if `outcome` says so).
    pub outputs: Vec<NewSegment>,
    pub row_groups: RewriteStats,
    pub key_runs: Vec<OutputRun>,
    pub phases: PhaseSeconds,
}

pub(super) async fn run(services: &Services, job: Rewrite<'_>) -> anyhow::Result<Rewritten> {
    let Rewrite {
        kind,
        table,
        partition,
        inputs,
        valid,
        snapshot,
        target_rows,
        guard,
        follow_up,
        cancel,
    } = job;
    let groups = group_inputs(valid, target_rows);
    let mut phases = PhaseSeconds::default();
    let work = tempfile::Builder::new()
        .prefix(&format!("minion-{kind}-"))
        .tempdir_in(&services.prebuild.staging_dir)?;
    let started = Instant::now();
    let mut locals = Vec::with_capacity(inputs.len());
    for (index, segment) in inputs.iter().enumerate() {
        let local = work.path().join(format!("input-{index}.parquet"));
        if !valid[index].is_empty() {
            fetch_segment(&services.store, segment, &local).await?;
        }
        locals.push(local);
    }
    phases.download = started.elapsed().as_secs_f64();

    let mut outputs = Vec::with_capacity(groups.len());
    let mut row_groups = RewriteStats::default();
    let mut key_runs = Vec::with_capacity(groups.len());
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
                valid: &valid[index],
                offset: next,
            });
            next += valid[index].len();
        }
        let rewrite_inputs: Vec<RewriteInput> = group
            .iter()
            .map(|&index| RewriteInput {
                path: locals[index].clone(),
                valid: valid[index].clone(),
            })
            .collect();
        let local_output = work.path().join(format!("output-{number}.parquet"));
        let started = Instant::now();
        let (written, stats) = {
            let (table, output, cancel) = (table.clone(), local_output.clone(), cancel.clone());
            tokio::task::spawn_blocking(move || {
                rewrite(
                    &table,
                    partition,
                    sequence,
                    &rewrite_inputs,
                    &output,
                    true,
                    &cancel,
                )
            })
            .await??
        };
        phases.rewrite += started.elapsed().as_secs_f64();
        row_groups.add(&stats);
        let name = new_segment_name(&table.name, partition, sequence);
        let mut output = NewSegment::for_written(&table.name, partition, sequence, name, &written);
        output.lineage = Some(snapshot.lineage(&run_inputs));
        let started = Instant::now();
        key_runs.push(
            write_output_run(
                &services.store,
                table,
                &run_inputs,
                &output,
                &local_output,
                work.path(),
                services.prebuild.max_run_entries,
            )
            .await?,
        );
        phases.key_run += started.elapsed().as_secs_f64();
        pause_point(&format!("{kind}:before_upload")).await;
        if cancel.is_cancelled() {
            discard_uploads(services, &uploaded(&outputs)).await;
            return Err(Cancelled.into());
        }
        let started = Instant::now();
        services
            .store
            .put_file_once(&output.object_key, &local_output)
            .await?;
        phases.upload += started.elapsed().as_secs_f64();
        let sources: Vec<i64> = group.iter().map(|&index| inputs[index].id).collect();
        outputs.push((output, sources));
    }
    pause_point(&format!("{kind}:after_upload")).await;
    tracing::debug!(
        inputs = ?inputs.iter().map(|s| s.id).collect::<Vec<_>>(),
        outputs = outputs.len(),
        "{kind}: outputs written; swapping"
    );
    if cancel.is_cancelled() {
        discard_uploads(services, &uploaded(&outputs)).await;
        return Err(Cancelled.into());
    }
    let expected: Vec<(i64, String)> = inputs.iter().map(|s| (s.id, s.checksum.clone())).collect();
    let started = Instant::now();
    let outcome = services
        .catalog
        .replace_segments(&expected, &outputs, guard, Some(follow_up))
        .await?;
    phases.swap = started.elapsed().as_secs_f64();
    pause_point(&format!("{kind}:after_swap")).await;
    let outputs: Vec<NewSegment> = outputs.into_iter().map(|(output, _)| output).collect();
    if !matches!(outcome, ReplaceOutcome::Replaced { .. }) {
        discard_uploads(services, &outputs).await;
    }
    Ok(Rewritten {
        outcome,
        outputs,
        row_groups,
        key_runs,
        phases,
    })
}

fn uploaded(outputs: &[(NewSegment, Vec<i64>)]) -> Vec<NewSegment> {
    outputs.iter().map(|(output, _)| output.clone()).collect()
}

/// Consecutive inputs with valid rows, grouped into outputs of at most `target_rows` rows (at
/// least one input each); inputs without a valid row are in no group.
fn group_inputs(valid: &[RoaringBitmap], target_rows: u64) -> Vec<Vec<usize>> {
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut group_rows = 0u64;
    for (index, bitmap) in valid.iter().enumerate() {
        if bitmap.is_empty() {
            continue;
        }
        if groups.is_empty() || group_rows + bitmap.len() > target_rows {
            groups.push(Vec::new());
            group_rows = 0;
        }
        groups.last_mut().expect("pushed above").push(index);
        group_rows += bitmap.len();
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(n: u32) -> RoaringBitmap {
        (0..n).collect()
    }

    #[test]
    fn outputs_take_consecutive_inputs_up_to_the_target() {
        let valid = [rows(3), rows(0), rows(4), rows(2), rows(9)];
        assert_eq!(group_inputs(&valid, 7), vec![vec![0, 2], vec![3], vec![4]]);
        assert_eq!(group_inputs(&valid, u64::MAX), vec![vec![0, 2, 3, 4]]);
        assert!(group_inputs(&[rows(0), rows(0)], 7).is_empty());
        // One input is one output, whatever its size.
        assert_eq!(group_inputs(&[rows(9)], 1), vec![vec![0]]);
    }
}
