//! Carrying the snapshot's key metadata onto compaction and merge outputs (issue 14), after its
//! SST files are ingested and before the compare path.
//!
//! The entries that change are exactly the winners that lay in replaced inputs. A mapped output's
//! key run lists its rows (all valid) with their output docIds, so its entries, minus those below
//! the snapshot's `metadata_ttl` watermark (never in key metadata), are the new records: they go
//! into one SST file ingested over the snapshot's (a newer sequence number wins). Entries of a
//! dropped input (its output not proven) are deleted: its run's entries of valid rows name them.
//! The cost is that of the keys that moved, not of the partition. Without those runs (an older
//! output, a run collected) the whole key metadata is scanned and rewritten through the plan.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use rocksdb::{IngestExternalFileOptions, SstFileWriter, WriteBatch, WriteOptions, DB};

use crate::catalog::SegmentRow;
use crate::snapshot::keyrun::RunEntry;
use crate::snapshot::layers::{below_watermark, for_each_moved};
use crate::snapshot::lineage::{EntryFate, LineagePlan};
use crate::snapshot::manifest::Manifest;
use crate::snapshot::read::SegmentBitmaps;
use crate::snapshot::record::{ComparisonKind, KeyRecord};
use crate::snapshot::runs::StoredRun;
use crate::snapshot::sst::sst_options;
use crate::storage::Store;

/// Rewrites the key metadata in `db` through `plan`; returns how many keys left it. `bitmaps`
/// are the snapshot's, before they are mapped.
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
) -> anyhow::Result<u64> {
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
    let below_watermark =
        |entry: &RunEntry| below_watermark(kind, manifest.metadata_watermark, entry);
    let moved = write_moved(
        &outputs,
        staging,
        sst_format_version,
        kind,
        manifest.metadata_watermark,
    )?;
    if let Some(sst) = moved {
        let mut ingest = IngestExternalFileOptions::default();
        ingest.set_move_files(true);
        db.ingest_external_file_opts(&ingest, vec![sst])
            .context("RocksDB refused the moved key-metadata entries")?;
    }
    delete_dropped(db, &dropped, bitmaps, &below_watermark)
}

/// Writes the records of the mapped outputs' rows, in key order, to one SST file (none if empty).
fn write_moved(
    outputs: &[StoredRun],
    staging: &Path,
    sst_format_version: i32,
    kind: ComparisonKind,
    watermark: Option<f64>,
) -> anyhow::Result<Option<PathBuf>> {
    let options = sst_options(sst_format_version);
    let path = staging.join("lineage-moved.sst");
    let mut writer: Option<SstFileWriter<'_>> = None;
    for_each_moved(outputs, kind, watermark, |key, record| {
        if writer.is_none() {
            let opened = SstFileWriter::create(&options);
            opened.open(&path)?;
            writer = Some(opened);
        }
        let writer = writer.as_mut().expect("opened above");
        Ok(writer.put(key, record.encode())?)
    })?;
    match writer {
        Some(mut writer) => {
            writer.finish()?;
            Ok(Some(path))
        }
        None => Ok(None),
    }
}

/// Deletes the keys whose winner lay in a dropped input; returns how many were in key metadata.
fn delete_dropped(
    db: &DB,
    dropped: &[StoredRun],
    bitmaps: &BTreeMap<i64, SegmentBitmaps>,
    below_watermark: &dyn Fn(&RunEntry) -> bool,
) -> anyhow::Result<u64> {
    let mut write = WriteOptions::default();
    write.disable_wal(true);
    let mut deleted = 0;
    for run in dropped {
        let valid = &bitmaps[&run.segment_id].valid;
        let mut reader = run.open()?;
        let mut batch = WriteBatch::default();
        while let Some(entry) = reader.next_entry()? {
            if valid.contains(entry.doc_id) && !below_watermark(&entry) {
                entry.with_key(|key| batch.delete(key));
                deleted += 1;
            }
        }
        db.write_opt(batch, &write)?;
    }
    Ok(deleted)
}

/// The fallback: every entry of the key metadata through the plan.
fn scan_and_map(
    db: &DB,
    plan: &LineagePlan,
    bitmaps: &BTreeMap<i64, SegmentBitmaps>,
) -> anyhow::Result<u64> {
    let mut write = WriteOptions::default();
    write.disable_wal(true);
    let mut batch = WriteBatch::default();
    let mut dropped = 0;
    for item in db.iterator(rocksdb::IteratorMode::Start) {
        let (key, value) = item?;
        let record = KeyRecord::decode(&value).context("malformed key-metadata record")?;
        match plan.entry_fate(&record, bitmaps) {
            EntryFate::Keep => continue,
            EntryFate::Move(moved) => batch.put(&key, moved.encode()),
            EntryFate::Drop => {
                batch.delete(&key);
                dropped += 1;
            }
        }
        if batch.len() >= 65_536 {
            db.write_opt(std::mem::take(&mut batch), &write)?;
        }
    }
    db.write_opt(batch, &write)?;
    Ok(dropped)
}
