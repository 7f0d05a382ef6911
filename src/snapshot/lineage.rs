//! Keeping a snapshot across compaction and merge (issue 14): which covered segments, replaced
//! since the snapshot was built, can be carried onto their replacements exactly, and how.
//!
//! A compaction or merge output records its lineage (`catalog::Lineage`): the snapshot whose
//! bitmaps chose its rows and, per input, the checksums of the input and of that bitmap, and the
//! input's first row in the output. When the snapshot being loaded holds the *same* bitmap of
//! every input (same checksum; the snapshot version is only informative), the output holds exactly
//! that snapshot's valid rows of its inputs, in order, so:
//! - key metadata pointing at `(input, doc)` points at `(output, offset + rank(valid, doc) - 1)`;
//! - the output's validDocIds are all its rows, its queryableDocIds the moved queryable docIds.
//!
//! What cannot be proven (no lineage, another bitmap, a checksum or count that does not match)
//! falls back for that output alone: key entries that point at its inputs are dropped and the
//! output goes through the compare path like a new segment. That is exact too: the snapshot's
//! winner `r` of such a key lay in an input; either the output kept `r`, and the compare path
//! finds it again, or the rewrite's bitmap had dropped `r` because a row `x` ranked above it,
//! which (or a row above it, compaction never dropping a key's best row) lies in a segment the
//! snapshot does not cover, also compared. Either way every covered segment's row of that key
//! ranks below a compared one, as the snapshot's bitmaps already say.
//!
//! Chains (an output of an output) do not reach a loader: an output's own replacement needs a
//! snapshot covering the output, which is newer than any snapshot covering the first inputs, and
//! the loader reads the newest. Such an output has an input the snapshot does not cover and is
//! refused (compare path), which stays exact.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;

use super::manifest::{Manifest, ManifestSegment};
use super::read::SegmentBitmaps;
use super::record::KeyRecord;
use crate::catalog::{Lineage, SegmentRow};

/// Where a covered, since replaced segment's valid rows are now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Move {
    pub output: i64,
    pub offset: u64,
}

/// Why an output was not mapped through its lineage (it goes through the compare path).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LineageRefusal {
    pub segment_id: i64,
    pub segment: String,
    pub reason: String,
}

/// What a loader does with a snapshot whose covered segments were replaced since.
#[derive(Debug, Clone, Default)]
pub struct LineagePlan {
    /// Covered segments replaced since, mapped onto an output.
    pub moves: HashMap<i64, Move>,
    /// Outputs whose inputs were all mapped (no compare path for them).
    pub mapped_outputs: Vec<i64>,
    /// Outputs left to the compare path, with why.
    pub refused: Vec<LineageRefusal>,
    /// Covered segments no longer online and not mapped: their entries and bitmaps are dropped.
    pub dropped: HashSet<i64>,
}

/// What becomes of one key-metadata entry of the snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryFate {
    Keep,
    Move(KeyRecord),
    Drop,
}

impl LineagePlan {
    /// Plans the mapping of `manifest` onto the partition's `online` segments. With
    /// `use_lineage` off every replacement is refused (the compare path), for comparisons.
    pub fn new(manifest: &Manifest, online: &[SegmentRow], use_lineage: bool) -> LineagePlan {
        let covered: HashMap<i64, &ManifestSegment> =
            manifest.segments.iter().map(|s| (s.id, s)).collect();
        let online_ids: HashSet<i64> = online.iter().map(|s| s.id).collect();
        let mut plan = LineagePlan::default();
        for segment in online.iter().filter(|s| !covered.contains_key(&s.id)) {
            let lineage = segment.lineage.as_ref().map(|l| &l.0);
            let checked = match lineage {
                // A segment from ingest: compared, as always.
                None if segment.replaces.is_empty() => continue,
                None => Err(format!(
                    "it replaced segments {:?} but records no lineage (written before lineage was recorded)",
                    segment.replaces
                )),
                Some(_) if !use_lineage => Err("lineage not used (asked not to)".into()),
                Some(lineage) => check(manifest, &covered, &online_ids, &plan, segment, lineage),
            };
            match checked {
                Ok(moves) => {
                    plan.moves.extend(moves);
                    plan.mapped_outputs.push(segment.id);
                }
                Err(reason) => plan.refused.push(LineageRefusal {
                    segment_id: segment.id,
                    segment: segment.name.clone(),
                    reason,
                }),
            }
        }
        plan.dropped = covered
            .keys()
            .filter(|id| !online_ids.contains(id) && !plan.moves.contains_key(id))
            .copied()
            .collect();
        plan
    }

    /// Whether the snapshot can be loaded as it is.
    pub fn is_empty(&self) -> bool {
        self.moves.is_empty() && self.dropped.is_empty()
    }

    /// The fate of a key-metadata entry; `bitmaps` are the snapshot's, before [`Self::map_bitmaps`].
    pub fn entry_fate(
        &self,
        record: &KeyRecord,
        bitmaps: &BTreeMap<i64, SegmentBitmaps>,
    ) -> EntryFate {
        let id = record.segment_id as i64;
        if let Some(moved) = self.moves.get(&id) {
            let valid = &bitmaps[&id].valid;
            debug_assert!(valid.contains(record.doc_id), "a key's winner is valid");
            return EntryFate::Move(KeyRecord {
                segment_id: moved.output as u64,
                doc_id: (moved.offset + valid.rank(record.doc_id) - 1) as u32,
                ..*record
            });
        }
        if self.dropped.contains(&id) {
            return EntryFate::Drop;
        }
        EntryFate::Keep
    }

    /// Moves the bitmaps of mapped segments onto their outputs and drops those of the others
    /// that are no longer online.
    pub fn map_bitmaps(&self, bitmaps: &mut BTreeMap<i64, SegmentBitmaps>) {
        for (input, moved) in &self.moves {
            let Some(old) = bitmaps.remove(input) else {
                continue;
            };
            let out = bitmaps.entry(moved.output).or_default();
            out.valid
                .insert_range(moved.offset as u32..(moved.offset + old.valid.len()) as u32);
            // One walk of both in docId order (queryable is a subset of valid): a rank query per
            // queryable doc costs a scan of its container each, quadratic in a dense one.
            let mut queryable = old.queryable.iter().peekable();
            let moved_queryable = old.valid.iter().enumerate().filter_map(|(rank, doc)| {
                let hit = queryable.next_if_eq(&doc).is_some();
                hit.then_some((moved.offset + rank as u64) as u32)
            });
            out.queryable.extend(moved_queryable);
            debug_assert!(queryable.next().is_none(), "queryable is within valid");
        }
        for gone in &self.dropped {
            bitmaps.remove(gone);
        }
    }
}

/// The moves an output's lineage proves against the snapshot, or why it proves none.
fn check(
    manifest: &Manifest,
    covered: &HashMap<i64, &ManifestSegment>,
    online: &HashSet<i64>,
    plan: &LineagePlan,
    segment: &SegmentRow,
    lineage: &Lineage,
) -> Result<Vec<(i64, Move)>, String> {
    let version = manifest.version;
    if !lineage.is_contiguous() || lineage.rows() != segment.row_count as u64 {
        return Err(format!(
            "its lineage lays out {} rows (contiguous: {}) but the segment has {}",
            lineage.rows(),
            lineage.is_contiguous(),
            segment.row_count
        ));
    }
    let mut moves = Vec::with_capacity(lineage.inputs.len());
    for input in &lineage.inputs {
        let id = input.segment_id;
        let Some(entry) = covered.get(&id) else {
            return Err(format!(
                "it was made from segment {id} with snapshot {}'s bitmap, and snapshot {version} does not cover segment {id}",
                lineage.snapshot_version
            ));
        };
        if online.contains(&id) || plan.moves.contains_key(&id) {
            return Err(format!(
                "its input {} is still online or claimed by another output",
                entry.name
            ));
        }
        if entry.checksum != input.checksum {
            return Err(format!(
                "its input {} had checksum {} but snapshot {version} covered checksum {}",
                entry.name,
                short(&input.checksum),
                short(&entry.checksum)
            ));
        }
        if entry.valid.checksum != input.valid_checksum || entry.valid_docs != input.valid_docs {
            return Err(format!(
                "it kept the rows of snapshot {}'s validDocIds of {} ({} rows, sha256 {}), but snapshot {version} holds another bitmap ({} rows, sha256 {})",
                lineage.snapshot_version,
                entry.name,
                input.valid_docs,
                short(&input.valid_checksum),
                entry.valid_docs,
                short(&entry.valid.checksum)
            ));
        }
        moves.push((
            id,
            Move {
                output: segment.id,
                offset: input.offset,
            },
        ));
    }
    Ok(moves)
}

fn short(checksum: &str) -> &str {
    &checksum[..checksum.len().min(12)]
}

#[cfg(test)]
mod tests {
    use roaring::RoaringBitmap;
    use sqlx::types::Json;

    use super::*;
    use crate::catalog::{LineageInput, SegmentState};
    use crate::snapshot::manifest::{FileEntry, FORMAT};
    use crate::snapshot::record::ComparisonKind;
    use crate::table::PrimaryKeyHash;

    fn file(checksum: &str) -> FileEntry {
        FileEntry {
            key: String::new(),
            size: 0,
            checksum: checksum.into(),
        }
    }

    fn covered(id: i64, valid_docs: u64) -> ManifestSegment {
        ManifestSegment {
            id,
            name: format!("s{id}"),
            sequence: id,
            checksum: format!("seg{id}"),
            rows: 10,
            valid: file(&format!("valid{id}")),
            queryable: file(&format!("queryable{id}")),
            valid_docs,
            queryable_docs: valid_docs,
        }
    }

    fn manifest(segments: Vec<ManifestSegment>) -> Manifest {
        Manifest {
            format: FORMAT,
            table: "t".into(),
            partition: 0,
            version: 7,
            created_at: chrono::Utc::now(),
            job_id: None,
            primary_key_hash: PrimaryKeyHash::Xxh3_128,
            comparison_kind: ComparisonKind::Integer,
            sst_format_version: 5,
            segments,
            key_files: Vec::new(),
            cold_key_files: Vec::new(),
            key_count: 0,
            live_keys: 0,
            forgotten_deleted_keys: 0,
            expired_tombstones_kept: None,
            valid_docs: 0,
            queryable_docs: 0,
            largest_comparison: None,
            largest_comparison_f64: None,
            deleted_keys_ttl: None,
            metadata_ttl: None,
            metadata_watermark: None,
        }
    }

    fn online(id: i64, rows: i64, replaces: Vec<i64>, lineage: Option<Lineage>) -> SegmentRow {
        SegmentRow {
            id,
            table: "t".into(),
            partition: 0,
            sequence: id,
            name: format!("s{id}"),
            object_key: String::new(),
            row_count: rows,
            byte_size: 0,
            checksum: format!("seg{id}"),
            min_comparison: None,
            max_comparison: None,
            state: SegmentState::Online,
            replaces,
            replaced_by: None,
            lineage: lineage.map(Json),
            created_at: chrono::Utc::now(),
        }
    }

    /// An input record as a rewrite of snapshot 7's bitmap of `id` would write it.
    fn input(id: i64, valid_docs: u64, offset: u64) -> LineageInput {
        LineageInput {
            segment_id: id,
            checksum: format!("seg{id}"),
            valid_checksum: format!("valid{id}"),
            valid_docs,
            offset,
        }
    }

    fn bitmaps(id: i64, valid: &[u32], queryable: &[u32]) -> (i64, SegmentBitmaps) {
        let valid: RoaringBitmap = valid.iter().copied().collect();
        let queryable: RoaringBitmap = queryable.iter().copied().collect();
        (id, SegmentBitmaps { valid, queryable })
    }

    #[test]
    fn a_merge_output_is_mapped_by_rank_and_offset() {
        // Snapshot 7 covers 1 (valid 2, 5, 7), 2 (valid 0, 9) and 3; 1 and 2 were merged into 10.
        let snapshot = manifest(vec![covered(1, 3), covered(2, 2), covered(3, 10)]);
        let lineage = Lineage {
            snapshot_version: 7,
            inputs: vec![input(1, 3, 0), input(2, 2, 3)],
        };
        let segments = [
            online(3, 10, vec![], None),
            online(10, 5, vec![1, 2], Some(lineage)),
            online(11, 4, vec![], None),
        ];
        let plan = LineagePlan::new(&snapshot, &segments, true);
        assert_eq!(plan.mapped_outputs, vec![10]);
        assert!(plan.refused.is_empty() && plan.dropped.is_empty());
        let mut loaded: BTreeMap<i64, SegmentBitmaps> = [
            bitmaps(1, &[2, 5, 7], &[2, 7]),
            bitmaps(2, &[0, 9], &[9]),
            bitmaps(3, &[4], &[4]),
        ]
        .into_iter()
        .collect();
        let record = |segment_id: u64, doc_id: u32| KeyRecord {
            segment_id,
            doc_id,
            comparison: 1,
            deleted: false,
        };
        assert_eq!(
            plan.entry_fate(&record(1, 7), &loaded),
            EntryFate::Move(record(10, 2))
        );
        assert_eq!(
            plan.entry_fate(&record(2, 9), &loaded),
            EntryFate::Move(record(10, 4))
        );
        assert_eq!(plan.entry_fate(&record(3, 4), &loaded), EntryFate::Keep);
        plan.map_bitmaps(&mut loaded);
        assert_eq!(loaded.keys().copied().collect::<Vec<_>>(), vec![3, 10]);
        assert_eq!(
            loaded[&10].valid.iter().collect::<Vec<_>>(),
            vec![0, 1, 2, 3, 4]
        );
        assert_eq!(
            loaded[&10].queryable.iter().collect::<Vec<_>>(),
            vec![0, 2, 4]
        );
    }

    #[test]
    fn what_the_lineage_does_not_prove_is_refused_and_its_inputs_dropped() {
        let snapshot = manifest(vec![covered(1, 3), covered(2, 2), covered(3, 4)]);
        let mut other_bitmap = input(1, 3, 0);
        other_bitmap.valid_checksum = "valid-of-snapshot-6".into();
        let segments = [
            // Made from another bitmap of 1.
            online(
                10,
                3,
                vec![1],
                Some(Lineage {
                    snapshot_version: 6,
                    inputs: vec![other_bitmap],
                }),
            ),
            // Replaced 2 without recording how.
            online(11, 2, vec![2], None),
            // An output of an output (input 9 is not covered): a chain is refused.
            online(
                12,
                4,
                vec![9],
                Some(Lineage {
                    snapshot_version: 8,
                    inputs: vec![input(9, 4, 0)],
                }),
            ),
            // Rows that do not add up.
            online(
                13,
                5,
                vec![3],
                Some(Lineage {
                    snapshot_version: 7,
                    inputs: vec![input(3, 4, 0)],
                }),
            ),
        ];
        let plan = LineagePlan::new(&snapshot, &segments, true);
        assert!(plan.mapped_outputs.is_empty() && plan.moves.is_empty());
        let reasons: Vec<&str> = plan.refused.iter().map(|r| r.reason.as_str()).collect();
        assert!(
            reasons[0].contains("snapshot 6's validDocIds of s1"),
            "{reasons:?}"
        );
        assert!(reasons[1].contains("records no lineage"), "{reasons:?}");
        assert!(
            reasons[2].contains("does not cover segment 9"),
            "{reasons:?}"
        );
        assert!(reasons[3].contains("lays out 4 rows"), "{reasons:?}");
        let mut dropped: Vec<i64> = plan.dropped.iter().copied().collect();
        dropped.sort();
        assert_eq!(dropped, vec![1, 2, 3]);
        let record = KeyRecord {
            segment_id: 2,
            doc_id: 0,
            comparison: 0,
            deleted: true,
        };
        assert_eq!(plan.entry_fate(&record, &BTreeMap::new()), EntryFate::Drop);
        // Asked not to use lineage, even a sound one is refused.
        let sound = [online(
            10,
            3,
            vec![1],
            Some(Lineage {
                snapshot_version: 7,
                inputs: vec![input(1, 3, 0)],
            }),
        )];
        assert_eq!(LineagePlan::new(&snapshot, &sound, false).refused.len(), 1);
        assert_eq!(
            LineagePlan::new(&snapshot, &sound, true).mapped_outputs,
            vec![10]
        );
    }
}
