//! Winner resolution (DESIGN.md section 3), streaming over the merged key runs of a partition.
//!
//! Runs are merged in key order, so every version of a key arrives together and only the current
//! best is held: memory does not grow with the number of keys. For each key the winner is the
//! largest (comparison, segment sequence, docId). Then:
//! - a winning tombstone stays in validDocIds but not in queryableDocIds;
//! - with `deleted_keys_ttl`, a winning tombstone older than (largest comparison - TTL) is
//!   forgotten (out of validDocIds and key metadata) only if it is the key's only row left in the
//!   covered segments: dropping it while an older version survives would resurrect that version;
//! - with `metadata_ttl`, keys whose winner is older than (largest comparison - TTL) leave the
//!   hot key metadata for the cold set ([`KeySet`]); their rows stay valid, and a later row of
//!   such a key is still resolved against its winner (`snapshot::tail`).
//!
//! The key-metadata entries are produced in merge order, which is the SST order (of each set).

use roaring::RoaringBitmap;

use super::keyrun::{MergedRuns, RunReader};
use super::record::{ComparisonKind, KeyRecord, KeySet};

/// A covered segment, in the same order as the runs given to [`resolve`].
#[derive(Debug, Clone, Copy)]
pub struct Source {
    pub segment_id: u64,
    pub sequence: i64,
    pub rows: u64,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct TtlSettings {
    pub deleted_keys_ttl: Option<f64>,
    pub metadata_ttl: Option<f64>,
}

impl TtlSettings {
    /// The TTLs a table declares.
    pub fn of(table: &crate::table::TableConfig) -> TtlSettings {
        TtlSettings {
            deleted_keys_ttl: table.ttl.deleted_keys_ttl,
            metadata_ttl: table.ttl.metadata_ttl,
        }
    }
}

/// Per-segment bitmaps and counts of one resolution.
#[derive(Debug, Clone, Default)]
pub struct Resolution {
    pub valid: Vec<RoaringBitmap>,
    pub queryable: Vec<RoaringBitmap>,
    /// Keys written to the hot key metadata.
    pub metadata_keys: u64,
    /// Keys written to the cold key set (winner below the `metadata_ttl` watermark).
    pub cold_keys: u64,
    /// Keys whose winner is valid: hot plus cold.
    pub live_keys: u64,
    /// Deleted keys forgotten by `deleted_keys_ttl`.
    pub forgotten_keys: u64,
    /// Deleted keys past `deleted_keys_ttl` kept because older rows of the key remain: dropping
    /// those rows (compaction) makes them forgettable.
    pub expired_tombstones_kept: u64,
    /// Largest sortable comparison value over all covered rows.
    pub largest_comparison: Option<u64>,
    /// Keys whose winner compares below this (as f64) went to the cold set (`metadata_ttl`).
    pub metadata_watermark: Option<f64>,
}

/// A row competing to be its key's winner.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Candidate {
    /// Index into the sources (and runs).
    pub source: usize,
    pub comparison: u64,
    pub doc_id: u32,
    pub deleted: bool,
}

impl Candidate {
    pub fn new(source: usize, comparison: u64, doc_id: u32, deleted: bool) -> Candidate {
        Candidate {
            source,
            comparison,
            doc_id,
            deleted,
        }
    }

    /// Whether `self` wins over `other`: larger (comparison, segment sequence, docId).
    pub fn beats(&self, other: &Candidate, sources: &[Source]) -> bool {
        (self.comparison, sources[self.source].sequence, self.doc_id)
            > (
                other.comparison,
                sources[other.source].sequence,
                other.doc_id,
            )
    }
}

/// The rows of one key gathered so far, in merge order: its best row and how many rows it has.
/// Both merges (sequential here, per key range in `ranges`) gather keys with it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct KeyGroup {
    pub best: Candidate,
    pub rows: u64,
}

impl KeyGroup {
    pub fn new(first: Candidate) -> KeyGroup {
        KeyGroup {
            best: first,
            rows: 1,
        }
    }

    /// Another row of the same key.
    pub fn add(&mut self, candidate: Candidate, sources: &[Source]) {
        self.rows += 1;
        if candidate.beats(&self.best, sources) {
            self.best = candidate;
        }
    }
}

/// What happens to each key once its winner is known: bitmaps, TTLs and counts. Shared by the
/// sequential merge and by each key range of the parallel one.
pub(crate) struct Resolver<'a> {
    sources: &'a [Source],
    kind: ComparisonKind,
    deleted_cutoff: Option<f64>,
    metadata_cutoff: Option<f64>,
    valid: BitmapBuilder,
    queryable: BitmapBuilder,
    counts: Resolution,
}

impl<'a> Resolver<'a> {
    /// `largest` is the largest sortable comparison over every covered row (TTLs count back
    /// from it), whichever part of the key space this resolver sees.
    pub fn new(
        sources: &'a [Source],
        kind: ComparisonKind,
        ttl: TtlSettings,
        largest: Option<u64>,
    ) -> Resolver<'a> {
        let largest_f64 = largest.map(|l| kind.to_f64(l));
        let metadata_cutoff = ttl.metadata_ttl.zip(largest_f64).map(|(t, l)| l - t);
        Resolver {
            sources,
            kind,
            deleted_cutoff: ttl.deleted_keys_ttl.zip(largest_f64).map(|(t, l)| l - t),
            metadata_cutoff,
            valid: BitmapBuilder::new(sources.len()),
            queryable: BitmapBuilder::new(sources.len()),
            counts: Resolution {
                largest_comparison: largest,
                metadata_watermark: metadata_cutoff,
                ..Resolution::default()
            },
        }
    }

    /// Settles a key once all its rows are gathered; returns the record to write and the key
    /// set it goes to, unless the key is forgotten.
    pub fn settle(&mut self, group: &KeyGroup) -> Option<(KeySet, KeyRecord)> {
        let (best, rows_of_key) = (&group.best, group.rows);
        let value = self.kind.to_f64(best.comparison);
        let expired = |cutoff: Option<f64>| cutoff.is_some_and(|cutoff| value < cutoff);
        if best.deleted && expired(self.deleted_cutoff) {
            if rows_of_key == 1 {
                self.counts.forgotten_keys += 1;
                return None;
            }
            self.counts.expired_tombstones_kept += 1;
        }
        self.valid.insert(best.source, best.doc_id);
        if !best.deleted {
            self.queryable.insert(best.source, best.doc_id);
        }
        self.counts.live_keys += 1;
        let set = KeySet::for_value(value, self.metadata_cutoff);
        match set {
            KeySet::Hot => self.counts.metadata_keys += 1,
            KeySet::Cold => self.counts.cold_keys += 1,
        }
        let record = KeyRecord {
            segment_id: self.sources[best.source].segment_id,
            doc_id: best.doc_id,
            comparison: self.kind.natural_from_sortable(best.comparison),
            deleted: best.deleted,
        };
        Some((set, record))
    }

    pub fn finish(self) -> Resolution {
        Resolution {
            valid: self.valid.finish(),
            queryable: self.queryable.finish(),
            ..self.counts
        }
    }
}

impl Resolution {
    /// Adds the resolution of another, disjoint, part of the key space over the same sources.
    pub fn absorb(&mut self, other: Resolution) {
        debug_assert_eq!(self.largest_comparison, other.largest_comparison);
        debug_assert_eq!(self.valid.len(), other.valid.len(), "same sources");
        for (mine, theirs) in self.valid.iter_mut().zip(other.valid) {
            *mine |= theirs;
        }
        for (mine, theirs) in self.queryable.iter_mut().zip(other.queryable) {
            *mine |= theirs;
        }
        self.metadata_keys += other.metadata_keys;
        self.cold_keys += other.cold_keys;
        self.live_keys += other.live_keys;
        self.forgotten_keys += other.forgotten_keys;
        self.expired_tombstones_kept += other.expired_tombstones_kept;
    }
}

/// Resolves winners over `runs` (run i belongs to `sources[i]`), calling `emit` with each key
/// that goes into key metadata (hot or cold), in key order. Sequential; works for every key kind.
pub fn resolve(
    runs: Vec<RunReader>,
    sources: &[Source],
    kind: ComparisonKind,
    ttl: TtlSettings,
    mut emit: impl FnMut(KeySet, &[u8], KeyRecord) -> anyhow::Result<()>,
) -> anyhow::Result<Resolution> {
    debug_assert_eq!(runs.len(), sources.len());
    let largest = runs.iter().filter_map(|r| r.header.max_comparison).max();
    let mut resolver = Resolver::new(sources, kind, ttl, largest);
    let mut merged = MergedRuns::new(runs)?;
    while let Some((source, first)) = merged.next_entry()? {
        let (comparison, doc_id, deleted) = (first.comparison, first.doc_id, first.deleted);
        let mut group = KeyGroup::new(Candidate::new(source, comparison, doc_id, deleted));
        while merged.peek().is_some_and(|next| next.same_key(&first)) {
            let (source, next) = merged.next_entry()?.expect("peeked");
            let candidate = Candidate::new(source, next.comparison, next.doc_id, next.deleted);
            group.add(candidate, sources);
        }
        if let Some((set, record)) = resolver.settle(&group) {
            first.with_key(|key| emit(set, key, record))?;
        }
    }
    Ok(resolver.finish())
}

/// Builds one bitmap per source from docIds arriving in key order (random docId order). Single
/// random inserts into a Roaring bitmap are slow; buffering docIds, sorting them and merging the
/// sorted batch as a bitmap of its own is several times faster. Buffers are bounded.
struct BitmapBuilder {
    bitmaps: Vec<RoaringBitmap>,
    buffers: Vec<Vec<u32>>,
}

impl BitmapBuilder {
    /// DocIds held per source before they are merged into its bitmap (256 KiB each).
    const BUFFER: usize = 64 * 1024;

    fn new(sources: usize) -> BitmapBuilder {
        BitmapBuilder {
            bitmaps: vec![RoaringBitmap::new(); sources],
            buffers: vec![Vec::new(); sources],
        }
    }

    fn insert(&mut self, source: usize, doc_id: u32) {
        let buffer = &mut self.buffers[source];
        buffer.push(doc_id);
        if buffer.len() >= Self::BUFFER {
            Self::flush(&mut self.bitmaps[source], buffer);
        }
    }

    fn flush(bitmap: &mut RoaringBitmap, buffer: &mut Vec<u32>) {
        buffer.sort_unstable();
        let batch = RoaringBitmap::from_sorted_iter(buffer.drain(..))
            .expect("a sorted buffer of distinct docIds");
        *bitmap |= batch;
    }

    fn finish(mut self) -> Vec<RoaringBitmap> {
        for (bitmap, buffer) in self.bitmaps.iter_mut().zip(self.buffers.iter_mut()) {
            Self::flush(bitmap, buffer);
        }
        self.bitmaps
    }
}
