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
            for doc in &old.queryable {
                out.queryable
                    .insert((moved.offset + old.valid.rank(doc) - 1) as u32);
            }
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
