//! Which segments deserve which job, like Pinot's UpsertCompactionTask and
//! UpsertCompactMergeTask generators, from the table's `[compaction]` settings and the valid-doc
//! counts in each partition's newest manifest (no bitmap is read to plan).
//!
//! Per partition, over online segments older than the buffer period, in sequence order:
//! - partitions with online segments the newest snapshot does not cover get a `prebuild` (their
//!   segments are not judged: without a snapshot nothing is known to be invalid);
//! - runs of consecutive small segments (valid rows under half the target size) with some
//!   invalid rows become `merge` groups, each bounded by the target size and the per-merge
//!   segment cap; consecutive, because a merge spanning a foreign sequence would be refused (for
//!   the same reason a group never spans a sequence an ingest in flight has reserved: such a
//!   group is split there, counted under the skip reason `merge_split_by_reservation`);
//! - remaining segments whose invalid ratio and count both reach the thresholds get a `compact`,
//!   largest invalid count first.
//!
//! At most `max_tasks_per_table` compact and merge tasks per table and plan.

use std::collections::BTreeMap;

use chrono::Utc;
use serde::Serialize;

use super::CoveringSnapshot;
use crate::catalog::{SegmentRow, SegmentState};
use crate::job::args::{CompactArgs, MergeArgs, PrebuildArgs};
use crate::job::{JobArgs, Services};
use crate::queue::NewJob;
use crate::table::TableConfig;

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

/// Why a candidate task was not planned (or planned smaller), counted in the plan's report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// A merge group was split where an ingest in flight holds a reserved sequence.
    MergeSplitByReservation,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct CompactionPlan {
    pub table: String,
    pub prebuild: Vec<u32>,
    pub merge: Vec<MergeGroup>,
    pub compact: Vec<SegmentCandidate>,
    /// Reservations of ingests that were gone (lease run out), released by this plan.
    pub reservations_expired: u64,
    pub skipped: BTreeMap<SkipReason, u64>,
}

impl CompactionPlan {
    /// The planned jobs, each with its kind's unique key, ready for the queue.
    pub fn jobs(&self) -> Vec<NewJob> {
        let table = &self.table;
        let prebuilds = self.prebuild.iter().map(|&partition| {
            PrebuildArgs {
                table: table.clone(),
                partition,
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

pub async fn plan(services: &Services, table_name: &str) -> anyhow::Result<CompactionPlan> {
    let table = services.catalog.table(table_name).await?;
    let mut plan = CompactionPlan {
        table: table_name.to_string(),
        ..CompactionPlan::default()
    };
    // Reservations of dead ingests would split merge groups for nothing: release them first.
    plan.reservations_expired = services
        .catalog
        .expire_reservations(table_name, None)
        .await?;
    let mut compact = Vec::new();
    for partition in 0..table.partitions {
        let online = services
            .catalog
            .segments(table_name, Some(partition), Some(SegmentState::Online))
            .await?;
        if online.is_empty() {
            continue;
        }
        let snapshot = CoveringSnapshot::latest(services, table_name, partition).await?;
        let Some(snapshot) = snapshot.filter(|snapshot| {
            online.iter().all(|s| {
                snapshot
                    .entry(s.id)
                    .is_some_and(|e| e.checksum == s.checksum)
            })
        }) else {
            plan.prebuild.push(partition);
            continue;
        };
        let judged: Vec<Option<SegmentCandidate>> = online
            .iter()
            .map(|segment| judge(&table, segment, &snapshot))
            .collect();
        let reserved = services
            .catalog
            .outstanding_reservations(table_name, partition)
            .await?;
        let (groups, rest, splits) = select_partition(&table, partition, judged, &reserved);
        if splits > 0 {
            *plan
                .skipped
                .entry(SkipReason::MergeSplitByReservation)
                .or_default() += splits;
        }
        plan.merge.extend(groups);
        compact.extend(rest);
    }
    compact.sort_by_key(|c: &SegmentCandidate| std::cmp::Reverse(c.invalid()));
    let cap = table.compaction.max_tasks_per_table as usize;
    plan.merge.truncate(cap);
    compact.truncate(cap - plan.merge.len());
    plan.compact = compact;
    Ok(plan)
}

/// A segment's counts, or None if it is inside the buffer period.
fn judge(
    table: &TableConfig,
    segment: &SegmentRow,
    snapshot: &CoveringSnapshot,
) -> Option<SegmentCandidate> {
    let age_ms = (Utc::now() - segment.created_at).num_milliseconds().max(0) as u64;
    if age_ms < table.compaction.buffer_period_ms {
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
/// groups and compaction candidates; no group spans a `reserved` sequence. Also returns how many
/// groups were split at a reservation.
fn select_partition(
    table: &TableConfig,
    partition: u32,
    judged: Vec<Option<SegmentCandidate>>,
    reserved: &[i64],
) -> (Vec<MergeGroup>, Vec<SegmentCandidate>, u64) {
    let mut splits = 0;
    let settings = &table.compaction;
    let small = |c: &SegmentCandidate| {
        c.invalid() > 0 && c.valid_docs > 0 && c.valid_docs * 2 < settings.target_segment_rows
    };
    let mut groups = Vec::new();
    let mut compact = Vec::new();
    let mut current: Vec<SegmentCandidate> = Vec::new();
    let mut close = |current: &mut Vec<SegmentCandidate>, compact: &mut Vec<SegmentCandidate>| {
        if current.len() >= 2 {
            groups.push(MergeGroup {
                partition,
                segments: std::mem::take(current),
            });
        } else {
            compact.append(current);
        }
    };
    for candidate in judged {
        let Some(candidate) = candidate else {
            close(&mut current, &mut compact);
            continue;
        };
        if !small(&candidate) {
            close(&mut current, &mut compact);
            compact.push(candidate);
            continue;
        }
        let rows: u64 = current.iter().map(|c| c.valid_docs).sum();
        let spans_reservation = current.last().is_some_and(|last| {
            reserved
                .iter()
                .any(|&r| last.sequence < r && r < candidate.sequence)
        });
        if spans_reservation {
            splits += 1;
            close(&mut current, &mut compact);
        } else if rows + candidate.valid_docs > settings.target_segment_rows
            || current.len() >= settings.max_segments_per_merge as usize
        {
            close(&mut current, &mut compact);
        }
        current.push(candidate);
    }
    close(&mut current, &mut compact);
    let compact = compact
        .into_iter()
        .filter(|c| {
            let invalid = c.invalid();
            invalid > 0
                && invalid >= settings.invalid_count_threshold
                && invalid as f64 >= settings.invalid_ratio_threshold * c.rows as f64
        })
        .collect();
    (groups, compact, splits)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(target: u64, max_segments: u32) -> TableConfig {
        let mut table: TableConfig = toml::from_str(
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
        table
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

    #[test]
    fn consecutive_small_segments_merge_within_bounds() {
        let table = table(100, 3);
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
        let (groups, compact, splits) = select_partition(&table, 0, judged, &[]);
        assert_eq!(splits, 0);
        assert_eq!(ids(&groups), vec![vec![1, 2, 3], vec![4, 5]]);
        // 6 and 7 were left alone in their runs: compacted if over the thresholds.
        let compact: Vec<i64> = compact.iter().map(|c| c.segment_id).collect();
        assert_eq!(compact, vec![6, 7]);
    }

    #[test]
    fn thresholds_gate_compaction_and_big_segments_never_merge() {
        let table = table(100, 10);
        let judged = vec![
            candidate(1, 1000, 900), // big, 10% invalid: below the ratio
            candidate(2, 1000, 60),  // big (60 * 2 > 100), 94% invalid: compact
            candidate(3, 20, 15),    // small but alone: 5 invalid, below the count
            candidate(4, 1000, 0),   // nothing valid: compact drops it
            candidate(5, 1000, 1000),
        ];
        let (groups, compact, _) = select_partition(&table, 0, judged, &[]);
        assert!(groups.is_empty());
        let compact: Vec<i64> = compact.iter().map(|c| c.segment_id).collect();
        assert_eq!(compact, vec![2, 4]);
    }

    #[test]
    fn merge_groups_never_span_a_reserved_sequence() {
        let table = table(1000, 10);
        // Sequences 10..=50; an ingest in flight holds 25 (between segments 2 and 3).
        let judged = (1..=5).map(|id| candidate(id, 100, 10)).collect();
        let (groups, compact, splits) = select_partition(&table, 0, judged, &[25, 60]);
        assert_eq!(ids(&groups), vec![vec![1, 2], vec![3, 4, 5]]);
        assert_eq!(splits, 1);
        assert!(compact.is_empty());
        // A reservation that leaves a single segment on one side: that one is not merged.
        let judged = (1..=3).map(|id| candidate(id, 100, 10)).collect();
        let (groups, compact, splits) = select_partition(&table, 0, judged, &[15]);
        assert_eq!(ids(&groups), vec![vec![2, 3]]);
        assert_eq!(splits, 1);
        assert_eq!(compact.len(), 1);
    }
}
