//! Compaction and merge (DESIGN.md section 7, issue 5): rewriting segments down to the rows
//! valid in the newest snapshot that covers them, and swapping them in by compare-and-swap.
//!
//! Why this never loses or resurrects a row:
//! - the bitmap comes from a snapshot whose manifest lists the segment with the checksum the
//!   catalog records, so a bitmap is never applied to other content (Pinot PR #12346);
//! - a row invalid in some snapshot stays invalid: later segments only add competitors, and
//!   compaction keeps every winner, so validity never comes back;
//! - tombstones are kept whenever valid; prebuild forgets a tombstone only when it is the key's
//!   last row, so dropping it cannot uncover an older version (Pinot PR #13351);
//! - `compact` keeps the input's sequence number and row order, so every tie-break against other
//!   segments is decided as before; `merge` gives its output the largest input sequence, and
//!   `merge.rs` argues when that is safe and how the catalog transaction enforces it (Pinot
//!   #17337 lost data by giving a merged segment the wrong creation time);
//! - the swap is one transaction guarded by each input's state and checksum: of two racing jobs
//!   exactly one wins, and the loser's upload is garbage for GC.
//!
//! `select` decides which segments deserve which job, from the table's compaction settings.

mod compact;
mod merge;
mod pipeline;
mod rewrite;
mod select;

pub use compact::{compact, CompactReport};
pub use merge::{merge, MergeReport};
pub use pipeline::PhaseSeconds;
pub use rewrite::{rewrite, RewriteInput, RewriteStats};
pub use select::{plan, CompactionPlan, MergeGroup, SegmentCandidate, SkipReason};

use roaring::RoaringBitmap;
use serde::{Deserialize, Serialize};

use crate::catalog::{Lineage, LineageInput, SegmentRow};
use crate::error::Permanent;
use crate::job::args::PrebuildArgs;
use crate::job::{JobArgs, Services};
use crate::queue::NewJob;
use crate::snapshot::manifest::ManifestSegment;
use crate::snapshot::read::{load_bitmap, load_manifest};
use crate::snapshot::runs::OutputRunInput;
use crate::snapshot::Manifest;
use crate::storage::layout;

/// What a compact or merge job did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CompactionOutcome {
    /// `compact`: the segment was rewritten with its valid rows and swapped in.
    Compacted,
    /// `merge`: the inputs were rewritten into one segment and swapped in.
    Merged,
    /// No input row was valid: the inputs were retired without an output.
    Dropped,
    /// `compact`: every row is valid; nothing to do.
    NothingToCompact,
    /// An input is no longer online (replaced or dropped meanwhile).
    NotOnline,
    /// The newest snapshot does not cover every input; its prebuild was queued.
    NotCovered,
    /// An input changed between planning and the swap; the output is garbage for gc.
    InputChanged,
    /// `merge`: a foreign sequence lies inside the inputs' range (see `merge.rs`).
    SequenceGap,
}

impl CompactionOutcome {
    /// Whether the table changed: an output (or nothing) was swapped in for the inputs.
    pub fn swapped(self) -> bool {
        matches!(
            self,
            CompactionOutcome::Compacted | CompactionOutcome::Merged | CompactionOutcome::Dropped
        )
    }
}

impl std::fmt::Display for CompactionOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CompactionOutcome::Compacted => "compacted",
            CompactionOutcome::Merged => "merged",
            CompactionOutcome::Dropped => "dropped",
            CompactionOutcome::NothingToCompact => "nothing_to_compact",
            CompactionOutcome::NotOnline => "not_online",
            CompactionOutcome::NotCovered => "not_covered",
            CompactionOutcome::InputChanged => "input_changed",
            CompactionOutcome::SequenceGap => "sequence_gap",
        })
    }
}

/// The newest published snapshot of a partition, its manifest read and checksum-verified.
pub(crate) struct CoveringSnapshot {
    pub version: i64,
    pub manifest: Manifest,
}

impl CoveringSnapshot {
    pub async fn latest(
        services: &Services,
        table: &str,
        partition: u32,
    ) -> anyhow::Result<Option<CoveringSnapshot>> {
        let Some(snapshot) = services.catalog.latest_snapshot(table, partition).await? else {
            return Ok(None);
        };
        let manifest = load_manifest(&services.store, &snapshot).await?;
        Ok(Some(CoveringSnapshot {
            version: snapshot.version,
            manifest,
        }))
    }

    pub fn entry(&self, segment_id: i64) -> Option<&ManifestSegment> {
        self.manifest.segments.iter().find(|s| s.id == segment_id)
    }

    pub fn covers(&self, segment_id: i64) -> bool {
        self.entry(segment_id).is_some()
    }

    /// The lineage of an output written from `inputs` with this snapshot's bitmaps of them.
    pub fn lineage(&self, inputs: &[OutputRunInput<'_>]) -> Lineage {
        let inputs = inputs
            .iter()
            .map(|input| {
                let segment = input.segment;
                let entry = self
                    .entry(segment.id)
                    .expect("bitmap read from this snapshot");
                LineageInput {
                    segment_id: segment.id,
                    checksum: segment.checksum.clone(),
                    valid_checksum: entry.valid.checksum.clone(),
                    valid_docs: input.valid.len(),
                    offset: input.offset,
                }
            })
            .collect();
        Lineage {
            snapshot_version: self.version,
            inputs,
        }
    }

    /// The segment's validDocIds, refused unless the snapshot covered exactly this content.
    pub async fn valid_docs(
        &self,
        services: &Services,
        segment: &SegmentRow,
    ) -> anyhow::Result<RoaringBitmap> {
        let version = self.version;
        let Some(entry) = self.entry(segment.id) else {
            return Err(anyhow::anyhow!(
                "snapshot {version} does not cover segment {}",
                segment.name
            ));
        };
        if entry.checksum != segment.checksum {
            return Err(Permanent(format!(
                "snapshot {version} covers segment {} with checksum {}, but the catalog records {}; refusing to apply its bitmap",
                segment.name, entry.checksum, segment.checksum
            ))
            .into());
        }
        // Checksum and bounds failures are permanent (`SnapshotError`): the job is discarded.
        let valid = load_bitmap(&services.store, &entry.valid, segment.row_count as u64).await?;
        debug_assert_eq!(valid.len(), entry.valid_docs);
        Ok(valid)
    }
}

/// Deletes the uploads (segment and key run) of a job that lost its compare-and-swap. Best
/// effort: a failure is only logged, GC sweeps whatever no catalog row knows.
pub(crate) async fn discard_uploads(services: &Services, outputs: &[crate::catalog::NewSegment]) {
    for output in outputs {
        let run = layout::keyrun_key(&output.table, output.partition, &output.name);
        for key in [&output.object_key, &run] {
            if let Err(err) = services.store.delete(key).await {
                tracing::warn!(object = %key, error = %err, "could not delete a losing upload; GC will sweep it");
            }
        }
    }
}

/// The partition's prebuild, queued (unique) in the same transaction as a replacement.
pub(crate) fn prebuild_follow_up(table: &str, partition: u32) -> NewJob {
    PrebuildArgs {
        table: table.to_string(),
        partition,
        force: false,
    }
    .to_job()
}
