//! Carrying the snapshot's key metadata onto compaction and merge outputs (issue 14), after its
//! SST files are ingested and before the compare path.
//!
//! The entries that change are exactly the winners that lay in replaced inputs. A mapped output's
//! key run lists its rows (all valid) with their output docIds, so its entries are the new
//! records, each in the key set the snapshot's `metadata_ttl` watermark puts it in: they go into
//! one SST file per key set (hot, cold), ingested over the snapshot's (a newer sequence number wins). Entries of a
//! dropped input (its output not proven) are deleted: its run's entries of valid rows name them.
//! The cost is that of the keys that moved, not of the partition. Without those runs (an older
//! output, a run collected) the whole key metadata is scanned and rewritten through the plan.

use std::collections::BTreeMap;
use std::path::Path;

use rocksdb::{WriteBatch, DB};

use super::db::{batch_delete, batch_put, entries, family, RocksKeys};
use crate::catalog::SegmentRow;
use crate::snapshot::layers::{for_each_moved, key_set};
use crate::snapshot::lineage::{EntryFate, LineagePlan};
use crate::snapshot::manifest::Manifest;
use crate::snapshot::read::SegmentBitmaps;
use crate::snapshot::record::{ComparisonKind, KeySet};
use crate::snapshot::runs::StoredRun;
use crate::snapshot::sst::{sst_options, KeySetFiles, SetSplitters};
use crate::snapshot::tail::KeyCounts;
use crate::storage::Store;

/// Rewrites the key metadata in `db` through `plan`; returns how many keys left each set.
/// `bitmaps` are the snapshot's, before they are mapped.
#[allow(clippy::too_many_arguments)]
pub(super) async fn map_keys(
    store: &Store,
    db: &DB,
    plan: &LineagePlan,
    manifest: &Manifest,
    online: &[SegmentRow],
    bitmaps: &BTreeMap<i64, SegmentBitmaps>,
    staging: &Path,
    sst_format_version: i32,
) -> anyhow::Result<KeyCounts> {
    let outputs = online
        .iter()
        .filter(|s| plan.mapped_outputs.contains(&s.id))
        .map(|s| (s.id, s.name.clone(), s.checksum.clone()));
    let dropped = manifest
        .segments
        .iter()
        .filter(|s| plan.dropped.contains(&s.id))
        .map(|s| (s.id, s.name.clone(), s.checksum.clone()));
    let table = (manifest.table.as_str(), manifest.partition);
    let (Ok(outputs), Ok(dropped)) = (
        StoredRun::fetch_all(store, table, outputs, staging).await?,
        StoredRun::fetch_all(store, table, dropped, staging).await?,
    ) else {
        tracing::info!("a replaced or replacing segment has no key run; rewriting the key metadata by scanning it");
        return scan_and_map(db, plan, bitmaps);
    };
    let kind = manifest.comparison_kind;
    let moved = write_moved(
        &outputs,
        staging,
        sst_format_version,
        kind,
        manifest.metadata_watermark,
    )?;
    let mut ingest = rocksdb::IngestExternalFileOptions::default();
    ingest.set_move_files(true);
    for (set, files) in [(KeySet::Hot, moved.hot), (KeySet::Cold, moved.cold)] {
        let files: Vec<_> = files.into_iter().map(|sst| sst.path).collect();
        if files.is_empty() {
            continue;
        }
        match family(db, set) {
            Some(cf) => db.ingest_external_file_cf_opts(cf, &ingest, files),
            None => db.ingest_external_file_opts(&ingest, files),
        }
        .map_err(|err| anyhow::anyhow!("RocksDB refused the moved key-metadata entries: {err}"))?;
    }
    delete_dropped(db, &dropped, bitmaps, kind, manifest.metadata_watermark)
}

/// Writes the records of the mapped outputs' rows, in key order, to one SST file per key set
/// (none for a set without entries).
fn write_moved(
    outputs: &[StoredRun],
    staging: &Path,
    sst_format_version: i32,
    kind: ComparisonKind,
    watermark: Option<f64>,
) -> anyhow::Result<KeySetFiles> {
    let options = sst_options(sst_format_version);
    let mut writers = SetSplitters::new(&options, staging, "lineage-moved", u64::MAX);
    for_each_moved(outputs, kind, watermark, |set, key, record| {
        writers.put(set, key, &record)
    })?;
    writers.finish()
}

/// Deletes the keys whose winner lay in a dropped input, from the set each is in; returns how
/// many left each set.
fn delete_dropped(
    db: &DB,
    dropped: &[StoredRun],
    bitmaps: &BTreeMap<i64, SegmentBitmaps>,
    kind: ComparisonKind,
    watermark: Option<f64>,
) -> anyhow::Result<KeyCounts> {
    let keys = RocksKeys::new(db);
    let mut deleted = KeyCounts::default();
    for run in dropped {
        let valid = &bitmaps[&run.segment_id].valid;
        let mut reader = run.open()?;
        let mut batch = WriteBatch::default();
        while let Some(entry) = reader.next_entry()? {
            if valid.contains(entry.doc_id) {
                let set = key_set(kind, watermark, &entry);
                entry.with_key(|key| batch_delete(db, &mut batch, set, key));
                *deleted.of(set) += 1;
            }
        }
        keys.write(batch)?;
    }
    Ok(deleted)
}

/// The fallback: every entry of both key sets through the plan.
fn scan_and_map(
    db: &DB,
    plan: &LineagePlan,
    bitmaps: &BTreeMap<i64, SegmentBitmaps>,
) -> anyhow::Result<KeyCounts> {
    let keys = RocksKeys::new(db);
    let mut dropped = KeyCounts::default();
    for set in [KeySet::Hot, KeySet::Cold] {
        let mut batch = WriteBatch::default();
        for entry in entries(db, set) {
            let (key, record) = entry?;
            match plan.entry_fate(&record, bitmaps) {
                EntryFate::Keep => continue,
                EntryFate::Move(moved) => batch_put(db, &mut batch, set, &key, &moved),
                EntryFate::Drop => {
                    batch_delete(db, &mut batch, set, &key);
                    *dropped.of(set) += 1;
                }
            }
            if batch.len() >= 65_536 {
                keys.write(std::mem::take(&mut batch))?;
            }
        }
        keys.write(batch)?;
    }
    Ok(dropped)
}
