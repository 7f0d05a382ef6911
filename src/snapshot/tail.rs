//! Resolving rows against key metadata, one row at a time: what a server does with the segments a
//! snapshot does not cover (the loader's compare path, `scan` of uncovered segments), and what
//! a server without a snapshot does with every segment.
//!
//! A row wins over its key's stored winner if its (comparison, segment sequence, docId) is larger
//! (DESIGN.md section 3). With `metadata_ttl` the key metadata is two sets ([`KeySet`]): the hot
//! one, and the cold one holding keys whose winner compares below the watermark. A row whose key
//! is not hot is looked up in the cold set before it counts as a new key, so a late row of a cold
//! key (newer, older or a tombstone) is resolved against that key's winner exactly as it would
//! be without the TTL (issue 25; Pinot gave up here, apache/pinot#19057).
//!
//! Which set a key ends in depends only on its final winner and the watermark: a key is hot iff
//! its winner compares at or above it. The watermark is the largest comparison value of every row
//! loaded minus the TTL, the same rule a prebuild applies to the rows it covers, so a server
//! loaded from a snapshot plus a tail holds the same hot and cold sets as one that read every
//! segment, and as the next prebuild. When the tail raises the largest value, the snapshot's hot
//! keys that fell below the new watermark are moved to the cold set first ([`Tail::rebalance`]);
//! tail rows then go straight to their set, and a cold key whose new winner is at or above the
//! watermark moves back to the hot set.

use std::collections::{BTreeMap, HashMap};

use anyhow::Context;

use super::read::SegmentBitmaps;
use super::record::{ComparisonKind, KeyRecord, KeySet};

/// A partition's key metadata, hot and cold, as rows are resolved against it. A key is in at
/// most one set.
pub trait KeyStore {
    /// The key's record and the set it is in: the hot set first, the cold one on a miss.
    fn get(&self, key: &[u8]) -> anyhow::Result<Option<(KeySet, KeyRecord)>>;
    fn put(&mut self, set: KeySet, key: &[u8], record: KeyRecord) -> anyhow::Result<()>;
    fn delete(&mut self, set: KeySet, key: &[u8]) -> anyhow::Result<()>;
    /// Moves every key of set `from` that belongs in the other set by `watermark` there (a full
    /// walk of `from`); returns how many moved.
    fn resplit(
        &mut self,
        from: KeySet,
        kind: ComparisonKind,
        watermark: Option<f64>,
    ) -> anyhow::Result<u64>;
}

/// How many keys each set holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyCounts {
    pub hot: u64,
    pub cold: u64,
}

impl KeyCounts {
    /// The count of `set`.
    pub fn of(&mut self, set: KeySet) -> &mut u64 {
        match set {
            KeySet::Hot => &mut self.hot,
            KeySet::Cold => &mut self.cold,
        }
    }
}

/// One row of a segment being resolved.
#[derive(Debug, Clone, Copy)]
pub struct TailRow {
    /// Sortable comparison value.
    pub comparison: u64,
    pub doc_id: u32,
    pub deleted: bool,
}

/// The watermark below which keys are cold: `largest - metadata_ttl`, where `largest` (f64) is
/// the largest comparison value of every row loaded.
pub fn load_watermark(metadata_ttl: Option<f64>, largest: Option<f64>) -> Option<f64> {
    metadata_ttl
        .zip(largest)
        .map(|(ttl, largest)| largest - ttl)
}

/// Resolves rows against a [`KeyStore`] and the bitmaps of the segments loaded so far.
pub struct Tail<'a> {
    kind: ComparisonKind,
    watermark: Option<f64>,
    /// Sequence of every segment a stored record may name, by segment id.
    sequences: &'a HashMap<u64, i64>,
    pub counts: KeyCounts,
}

impl<'a> Tail<'a> {
    /// Starts from key metadata holding `counts` keys, split by some watermark (call
    /// [`Self::rebalance`] with it before the first row).
    pub fn new(
        kind: ComparisonKind,
        watermark: Option<f64>,
        sequences: &'a HashMap<u64, i64>,
        counts: KeyCounts,
    ) -> Tail<'a> {
        Tail {
            kind,
            watermark,
            sequences,
            counts,
        }
    }

    /// Re-splits key metadata that was split by watermark `split_by` (a snapshot's) by this
    /// tail's: walks the hot set when the watermark rose, the cold set when it fell, neither when
    /// it stayed. Returns how many keys changed set.
    pub fn rebalance(
        &mut self,
        store: &mut impl KeyStore,
        split_by: Option<f64>,
    ) -> anyhow::Result<u64> {
        let level = |w: Option<f64>| w.unwrap_or(f64::NEG_INFINITY);
        let (now, before) = (level(self.watermark), level(split_by));
        let (from, to) = if now > before {
            (KeySet::Hot, KeySet::Cold)
        } else if now < before {
            (KeySet::Cold, KeySet::Hot)
        } else {
            return Ok(0);
        };
        let moved = store.resplit(from, self.kind, self.watermark)?;
        *self.counts.of(from) -= moved;
        *self.counts.of(to) += moved;
        Ok(moved)
    }

    /// Resolves one row of segment `segment_id` (sequence `sequence`) with metadata key `key`.
    /// Returns whether it became its key's winner.
    pub fn apply(
        &mut self,
        store: &mut impl KeyStore,
        bitmaps: &mut BTreeMap<i64, SegmentBitmaps>,
        (segment_id, sequence): (u64, i64),
        key: &[u8],
        row: TailRow,
    ) -> anyhow::Result<bool> {
        let kind = self.kind;
        let set = KeySet::for_value(kind.to_f64(row.comparison), self.watermark);
        match store.get(key)? {
            Some((old_set, old)) => {
                let old_sequence = *self.sequences.get(&old.segment_id).with_context(|| {
                    format!(
                        "key metadata points at segment id {} which is not online; the snapshot is stale, run a prebuild",
                        old.segment_id
                    )
                })?;
                let old_rank = (
                    kind.sortable_from_natural(old.comparison),
                    old_sequence,
                    old.doc_id,
                );
                if (row.comparison, sequence, row.doc_id) <= old_rank {
                    return Ok(false);
                }
                let previous = bitmaps.entry(old.segment_id as i64).or_default();
                previous.valid.remove(old.doc_id);
                previous.queryable.remove(old.doc_id);
                if old_set != set {
                    store.delete(old_set, key)?;
                    *self.counts.of(old_set) -= 1;
                    *self.counts.of(set) += 1;
                }
            }
            None => *self.counts.of(set) += 1,
        }
        let current = bitmaps.entry(segment_id as i64).or_default();
        current.valid.insert(row.doc_id);
        if row.deleted {
            current.queryable.remove(row.doc_id);
        } else {
            current.queryable.insert(row.doc_id);
        }
        let record = KeyRecord {
            segment_id,
            doc_id: row.doc_id,
            comparison: kind.natural_from_sortable(row.comparison),
            deleted: row.deleted,
        };
        store.put(set, key, record)?;
        Ok(true)
    }
}

/// Key metadata in memory: for tests, and as the reference the RocksDB store is held to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryKeys {
    pub hot: BTreeMap<Vec<u8>, KeyRecord>,
    pub cold: BTreeMap<Vec<u8>, KeyRecord>,
}

impl MemoryKeys {
    fn set_mut(&mut self, set: KeySet) -> &mut BTreeMap<Vec<u8>, KeyRecord> {
        match set {
            KeySet::Hot => &mut self.hot,
            KeySet::Cold => &mut self.cold,
        }
    }
}

impl KeyStore for MemoryKeys {
    fn get(&self, key: &[u8]) -> anyhow::Result<Option<(KeySet, KeyRecord)>> {
        Ok((self.hot.get(key).map(|r| (KeySet::Hot, *r)))
            .or_else(|| self.cold.get(key).map(|r| (KeySet::Cold, *r))))
    }

    fn put(&mut self, set: KeySet, key: &[u8], record: KeyRecord) -> anyhow::Result<()> {
        self.set_mut(set).insert(key.to_vec(), record);
        Ok(())
    }

    fn delete(&mut self, set: KeySet, key: &[u8]) -> anyhow::Result<()> {
        self.set_mut(set).remove(key);
        Ok(())
    }

    fn resplit(
        &mut self,
        from: KeySet,
        kind: ComparisonKind,
        watermark: Option<f64>,
    ) -> anyhow::Result<u64> {
        let leaving: Vec<(Vec<u8>, KeyRecord)> = (self.set_mut(from).iter())
            .filter(|(_, r)| KeySet::of_record(r, kind, watermark) != from)
            .map(|(k, r)| (k.clone(), *r))
            .collect();
        for (key, record) in &leaving {
            self.set_mut(from).remove(key);
            let to = KeySet::of_record(record, kind, watermark);
            self.set_mut(to).insert(key.clone(), *record);
        }
        Ok(leaving.len() as u64)
    }
}
