//! Which segments deserve which job, like Pinot's UpsertCompactionTask and
//! UpsertCompactMergeTask generators, from the table's `[compaction]` settings (with a plan's
//! overrides) and the valid-doc counts in each partition's newest manifest (no bitmap is read).
//!
//! Per partition, over online segments older than the buffer period, in sequence order:
//! - partitions with online segments the newest snapshot does not cover get a `prebuild` (their
//!   segments are not judged: without a snapshot nothing is known to be invalid);
//! - runs of consecutive small segments (valid rows under half the target size) with some
//!   invalid rows become `merge` groups, each bounded by the records per output segment
//!   (`target_segment_rows`), the records one task may read and the segments per task; a group
//!   with fewer than `min_segments_per_merge` is not merged. Consecutive, because a merge spanning
//!   a foreign sequence would be refused (for the same reason a group never spans a sequence an
//!   ingest in flight has reserved: it is split there);
//! - remaining segments whose invalid ratio *and* invalid count reach the thresholds get a
//!   `compact`, largest invalid count first.
//!
//! At most `max_tasks_per_table` compact and merge tasks per table and plan, and none while the
//! table's earlier compact and merge jobs are unfinished (`skip_while_unfinished`, Pinot's rule
//! that a table's previous tasks must complete first). Every candidate not turned into a task is
//! counted under its [`SkipReason`]: segments for per-segment reasons, tasks for per-task ones.

use std::collections::BTreeMap;

use chrono::Utc;
use serde::Serialize;

use super::CoveringSnapshot;
use crate::catalog::{SegmentRow, SegmentState};
use crate::job::args::{CompactArgs, MergeArgs, PrebuildArgs};
use crate::job::{JobArgs, Services};
use crate::queue::NewJob;
use crate::table::{CompactionConfig, CompactionOverrides};

#[derive(Debug, Clone, Serialize)]
pub struct SegmentCandidate {
    pub segment_id: i64,
    pub partition: u32,
    pub sequence: i64,
    pub rows: u64,
    pub valid_docs: u64,
}

impl SegmentCandidate {
    pub fn invalid(&self) -> u64 {
        self.rows - self.valid_docs
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct MergeGroup {
    pub partition: u32,
    pub segments: Vec<SegmentCandidate>,
}

/// Why a candidate was not turned into a task, counted in the plan's report and in
/// `minion_plan_skipped_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// Segments younger than the buffer period.
    WithinBufferPeriod,
    /// Segments of a partition waiting for a prebuild (not judged until a snapshot covers them).
    NotCoveredBySnapshot,
    /// Segments with no invalid row.
    NoInvalidRows,
    /// Segments under the invalid-ratio threshold.
    BelowInvalidRatio,
    /// Segments at or over the ratio but under the invalid-count threshold.
    BelowInvalidCount,
    /// Merge groups split where an ingest in flight holds a reserved sequence.
    MergeSplitByReservation,
    /// Merge groups with fewer segments than `min_segments_per_merge` (their segments are judged
    /// for compaction instead).
    MergeGroupTooSmall,
    /// Tasks over `max_tasks_per_table`.
    TableTaskCap,
    /// Tasks not submitted because the table's earlier compact or merge jobs are unfinished.
    UnfinishedTasks,
}

impl SkipReason {
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::WithinBufferPeriod => "within_buffer_period",
            SkipReason::NotCoveredBySnapshot => "not_covered_by_snapshot",
            SkipReason::NoInvalidRows => "no_invalid_rows",
            SkipReason::BelowInvalidRatio => "below_invalid_ratio",
            SkipReason::BelowInvalidCount => "below_invalid_count",
            SkipReason::MergeSplitByReservation => "merge_split_by_reservation",
            SkipReason::MergeGroupTooSmall => "merge_group_too_small",
            SkipReason::TableTaskCap => "table_task_cap",
            SkipReason::UnfinishedTasks => "unfinished_tasks",
        }
    }
}

/// Counts by reason.
pub type Skipped = BTreeMap<SkipReason, u64>;

fn skip(skipped: &mut Skipped, reason: SkipReason, count: u64) {
    if count > 0 {
        *skipped.entry(reason).or_default() += count;
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct CompactionPlan {
    pub table: String,
    /// The settings the plan used (the table's, with the plan's overrides).
    pub settings: CompactionConfig,
    pub prebuild: Vec<u32>,
    pub merge: Vec<MergeGroup>,
    pub compact: Vec<SegmentCandidate>,
    /// Reservations of ingests that were gone (lease run out), released before planning (by
    /// the `plan` job; a preview releases nothing).
    pub reservations_expired: u64,
    /// The table's unfinished compact and merge jobs, by kind, when the plan looked.
    pub unfinished: BTreeMap<String, i64>,
    pub skipped: Skipped,
    /// Partitions that could not be judged (a damaged snapshot manifest, say), each with why.
    /// The others are planned as usual, and each of these gets a prebuild, which rebuilds a
    /// damaged snapshot from the segments.
    pub failed_partitions: Vec<PartitionFailure>,
}

/// A partition the plan could not judge.
#[derive(Debug, Clone, Serialize)]
pub struct PartitionFailure {
    pub partition: u32,
    pub error: String,
}

impl CompactionPlan {
    /// The planned jobs, each with its kind's unique key, ready for the queue.
    pub fn jobs(&self) -> Vec<NewJob> {
        let table = &self.table;
        let prebuilds = self.prebuild.iter().map(|&partition| {
            PrebuildArgs {
                table: table.clone(),
                partition,
                force: false,
            }
            .to_job()
        });
        let merges = self.merge.iter().map(|group| {
            MergeArgs {
                table: table.clone(),
                partition: group.partition,
                segment_ids: group.segments.iter().map(|s| s.segment_id).collect(),
            }
            .to_job()
        });
        let compacts = self.compact.iter().map(|candidate| {
            CompactArgs {
                table: table.clone(),
                segment_id: candidate.segment_id,
            }
            .to_job()
        });
        prebuilds.chain(merges).chain(compacts).collect()
    }
}

/// The kinds the unfinished-tasks rule waits for.
const COMPACTION_KINDS: [&str; 2] = [CompactArgs::KIND, MergeArgs::KIND];

/// Plans `table_name`'s work. Reads only: the `plan` job releases dead ingests' reservations
/// first, so they do not split merge groups for nothing.
pub async fn plan(
    services: &Services,
    table_name: &str,
    overrides: &CompactionOverrides,
) -> anyhow::Result<CompactionPlan> {
    let table = services.catalog.table(table_name).await?;
    let settings = overrides
        .apply(&table.compaction)
        .map_err(|why| crate::error::Permanent(format!("plan for `{table_name}`: {why}")))?;
    let mut plan = CompactionPlan {
        table: table_name.to_string(),
        settings: settings.clone(),
        ..CompactionPlan::default()
    };
    let mut compact = Vec::new();
    for partition in 0..table.partitions {
        let online = services
            .catalog
            .segments(table_name, Some(partition), Some(SegmentState::Online))
            .await?;
        if online.is_empty() {
            continue;
        }
        let snapshot = match CoveringSnapshot::latest(services, table_name, partition).await {
            Ok(snapshot) => snapshot,
            Err(err) if crate::job::is_permanent(&err) => {
                tracing::warn!(table = %table_name, partition, "partition not planned, a prebuild is planned to rebuild its snapshot: {err:#}");
                plan.failed_partitions.push(PartitionFailure {
                    partition,
                    error: format!("{err:#}"),
                });
                plan.prebuild.push(partition);
                continue;
            }
            Err(err) => return Err(err),
        };
        let Some(snapshot) = snapshot.filter(|snapshot| {
            online.iter().all(|s| {
                snapshot
                    .entry(s.id)
                    .is_some_and(|e| e.checksum == s.checksum)
            })
        }) else {
            plan.prebuild.push(partition);
            skip(
                &mut plan.skipped,
                SkipReason::NotCoveredBySnapshot,
                online.len() as u64,
            );
            continue;
        };
        let judged: Vec<Option<SegmentCandidate>> = online
            .iter()
            .map(|segment| judge(&settings, segment, &snapshot))
            .collect();
        let too_young = judged.iter().filter(|c| c.is_none()).count();
        skip(
            &mut plan.skipped,
            SkipReason::WithinBufferPeriod,
            too_young as u64,
        );
        let reserved = services
            .catalog
            .outstanding_reservations(table_name, partition)
            .await?;
        let (groups, rest) =
            select_partition(&settings, partition, judged, &reserved, &mut plan.skipped);
        plan.merge.extend(groups);
        compact.extend(rest);
    }
    compact.sort_by_key(|c: &SegmentCandidate| std::cmp::Reverse(c.invalid()));
    plan.compact = compact;
    plan.unfinished = services
        .queue
        .unfinished_for_table(table_name, &COMPACTION_KINDS)
        .await?;
    let tasks = (plan.merge.len() + plan.compact.len()) as u64;
    if settings.skip_while_unfinished && !plan.unfinished.is_empty() {
        skip(&mut plan.skipped, SkipReason::UnfinishedTasks, tasks);
        plan.merge.clear();
        plan.compact.clear();
    } else {
        let cap = settings.max_tasks_per_table as usize;
        skip(
            &mut plan.skipped,
            SkipReason::TableTaskCap,
            tasks.saturating_sub(cap as u64),
        );
        plan.merge.truncate(cap);
        plan.compact.truncate(cap - plan.merge.len());
    }
    Ok(plan)
}

/// A segment's counts, or None if it is inside the buffer period.
fn judge(
    settings: &CompactionConfig,
    segment: &SegmentRow,
    snapshot: &CoveringSnapshot,
) -> Option<SegmentCandidate> {
    let age_ms = (Utc::now() - segment.created_at).num_milliseconds().max(0) as u64;
    if age_ms < settings.buffer_period_ms {
        return None;
    }
    let entry = snapshot.entry(segment.id)?;
    Some(SegmentCandidate {
        segment_id: segment.id,
        partition: segment.partition as u32,
        sequence: segment.sequence,
        rows: segment.row_count as u64,
        valid_docs: entry.valid_docs,
    })
}

/// Splits one partition's online segments (in sequence order; None = not eligible) into merge
/// groups and compaction candidates; no group spans a `reserved` sequence. Counts what it leaves
/// out in `skipped`.
fn select_partition(
    settings: &CompactionConfig,
    partition: u32,
    judged: Vec<Option<SegmentCandidate>>,
    reserved: &[i64],
    skipped: &mut Skipped,
) -> (Vec<MergeGroup>, Vec<SegmentCandidate>) {
    let small = |c: &SegmentCandidate| {
        c.invalid() > 0 && c.valid_docs > 0 && c.valid_docs * 2 < settings.target_segment_rows
    };
    let mut groups = Vec::new();
    let mut compact = Vec::new();
    let mut current: Vec<SegmentCandidate> = Vec::new();
    let mut close = |current: &mut Vec<SegmentCandidate>,
                     compact: &mut Vec<SegmentCandidate>,
                     skipped: &mut Skipped| {
        if current.len() >= settings.min_segments_per_merge as usize {
            groups.push(MergeGroup {
                partition,
                segments: std::mem::take(current),
            });
        } else {
            if current.len() >= 2 {
                skip(skipped, SkipReason::MergeGroupTooSmall, 1);
            }
            compact.append(current);
        }
    };
    for candidate in judged {
        let Some(candidate) = candidate else {
            close(&mut current, &mut compact, skipped);
            continue;
        };
        if !small(&candidate) {
            close(&mut current, &mut compact, skipped);
            compact.push(candidate);
            continue;
        }
        let valid: u64 = current.iter().map(|c| c.valid_docs).sum();
        let read: u64 = current.iter().map(|c| c.rows).sum();
        let spans_reservation = current.last().is_some_and(|last| {
            reserved
                .iter()
                .any(|&r| last.sequence < r && r < candidate.sequence)
        });
        if spans_reservation {
            skip(skipped, SkipReason::MergeSplitByReservation, 1);
            close(&mut current, &mut compact, skipped);
        } else if valid + candidate.valid_docs > settings.target_segment_rows
            || read + candidate.rows > settings.max_records_per_merge_task
            || current.len() >= settings.max_segments_per_merge as usize
        {
            close(&mut current, &mut compact, skipped);
        }
        current.push(candidate);
    }
    close(&mut current, &mut compact, skipped);
    let compact = compact
        .into_iter()
        .filter(|c| {
            let invalid = c.invalid();
            let reason = if invalid == 0 {
                SkipReason::NoInvalidRows
            } else if (invalid as f64) < settings.invalid_ratio_threshold * c.rows as f64 {
                SkipReason::BelowInvalidRatio
            } else if invalid < settings.invalid_count_threshold {
                SkipReason::BelowInvalidCount
            } else {
                return true;
            };
            skip(skipped, reason, 1);
            false
        })
        .collect();
    (groups, compact)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(target: u64, max_segments: u32) -> CompactionConfig {
        let mut table: crate::table::TableConfig = toml::from_str(
            r#"
name = "t"
partitions = 1
primary_key = ["k"]
comparison = "c"
[[columns]]
name = "k"
type = "int64"
[[columns]]
name = "c"
type = "int64"
"#,
        )
        .unwrap();
        table.compaction.target_segment_rows = target;
        table.compaction.max_segments_per_merge = max_segments;
        table.compaction.invalid_ratio_threshold = 0.5;
        table.compaction.invalid_count_threshold = 10;
        table.compaction
    }

    fn select(
        settings: &CompactionConfig,
        judged: Vec<Option<SegmentCandidate>>,
        reserved: &[i64],
    ) -> (Vec<MergeGroup>, Vec<SegmentCandidate>, Skipped) {
        let mut skipped = Skipped::new();
        let (groups, compact) = select_partition(settings, 0, judged, reserved, &mut skipped);
        (groups, compact, skipped)
    }

    fn candidate(id: i64, rows: u64, valid: u64) -> Option<SegmentCandidate> {
        Some(SegmentCandidate {
            segment_id: id,
            partition: 0,
            sequence: id * 10,
            rows,
            valid_docs: valid,
        })
    }

    fn ids(groups: &[MergeGroup]) -> Vec<Vec<i64>> {
        groups
            .iter()
            .map(|g| g.segments.iter().map(|s| s.segment_id).collect())
            .collect()
    }

    fn reason(skipped: &Skipped, reason: SkipReason) -> u64 {
        skipped.get(&reason).copied().unwrap_or(0)
    }

    #[test]
    fn consecutive_small_segments_merge_within_bounds() {
        let settings = settings(100, 3);
        let judged = vec![
            candidate(1, 100, 10),
            candidate(2, 100, 10),
            candidate(3, 100, 10),
            candidate(4, 100, 10), // fourth: over the per-merge cap, starts a new group
            candidate(5, 100, 46),
            candidate(6, 100, 46), // 10 + 46 + 46 > 100: new group
            None,                  // buffer period: breaks contiguity
            candidate(7, 100, 20),
        ];
        let (groups, compact, skipped) = select(&settings, judged, &[]);
        assert_eq!(reason(&skipped, SkipReason::MergeSplitByReservation), 0);
        assert_eq!(ids(&groups), vec![vec![1, 2, 3], vec![4, 5]]);
        // 6 and 7 were left alone in their runs: compacted if over the thresholds.
        let compact: Vec<i64> = compact.iter().map(|c| c.segment_id).collect();
        assert_eq!(compact, vec![6, 7]);
    }

    #[test]
    fn thresholds_gate_compaction_and_big_segments_never_merge() {
        let settings = settings(100, 10);
        let judged = vec![
            candidate(1, 1000, 900),  // big, 10% invalid: below the ratio
            candidate(2, 1000, 60),   // big (60 * 2 > 100), 94% invalid: compact
            candidate(3, 20, 15),     // small but alone: 25% invalid: below the ratio
            candidate(4, 1000, 0),    // nothing valid: compact drops it
            candidate(5, 1000, 1000), // nothing invalid
            candidate(6, 200, 190),   // big, 5% invalid
            candidate(7, 16, 8),      // 50%, but 8 invalid rows < 10: below the count
        ];
        let (groups, compact, skipped) = select(&settings, judged, &[]);
        assert!(groups.is_empty());
        let compact: Vec<i64> = compact.iter().map(|c| c.segment_id).collect();
        assert_eq!(compact, vec![2, 4]);
        assert_eq!(reason(&skipped, SkipReason::BelowInvalidRatio), 3);
        assert_eq!(reason(&skipped, SkipReason::NoInvalidRows), 1);
        assert_eq!(reason(&skipped, SkipReason::BelowInvalidCount), 1);
    }

    #[test]
    fn merge_caps_records_per_task_and_minimum_segments() {
        // Records read per task: 3 inputs of 100 rows fit in 300, a fourth does not.
        let mut settings = settings(1000, 10);
        settings.max_records_per_merge_task = 300;
        let judged = (1..=5).map(|id| candidate(id, 100, 10)).collect();
        let (groups, _, _) = select(&settings, judged, &[]);
        assert_eq!(ids(&groups), vec![vec![1, 2, 3], vec![4, 5]]);
        // At least three per group: the pair left over is not merged, and is counted.
        settings.min_segments_per_merge = 3;
        let judged = (1..=5).map(|id| candidate(id, 100, 10)).collect();
        let (groups, compact, skipped) = select(&settings, judged, &[]);
        assert_eq!(ids(&groups), vec![vec![1, 2, 3]]);
        assert_eq!(reason(&skipped, SkipReason::MergeGroupTooSmall), 1);
        let compact: Vec<i64> = compact.iter().map(|c| c.segment_id).collect();
        assert_eq!(
            compact,
            vec![4, 5],
            "90% invalid, 90 rows: compacted instead"
        );
    }

    #[test]
    fn merge_groups_never_span_a_reserved_sequence() {
        let settings = settings(1000, 10);
        // Sequences 10..=50; an ingest in flight holds 25 (between segments 2 and 3).
        let judged = (1..=5).map(|id| candidate(id, 100, 10)).collect();
        let (groups, compact, skipped) = select(&settings, judged, &[25, 60]);
        assert_eq!(ids(&groups), vec![vec![1, 2], vec![3, 4, 5]]);
        assert_eq!(reason(&skipped, SkipReason::MergeSplitByReservation), 1);
        assert!(compact.is_empty());
        // A reservation that leaves a single segment on one side: that one is not merged.
        let judged = (1..=3).map(|id| candidate(id, 100, 10)).collect();
        let (groups, compact, skipped) = select(&settings, judged, &[15]);
        assert_eq!(ids(&groups), vec![vec![2, 3]]);
        assert_eq!(reason(&skipped, SkipReason::MergeSplitByReservation), 1);
        assert_eq!(compact.len(), 1);
    }
}
