//! The serving-side loader: what a server does at startup for one partition (DESIGN.md section 7).
//!
//! Fast path: fetch the newest snapshot, verify the manifest and every file against their
//! checksums and every covered segment against the catalog, ingest the SST files into a local
//! RocksDB (IngestExternalFile), load the bitmaps, carry what compaction and merge replaced since
//! onto the replacements through their lineage (`snapshot::lineage`, `keys`), then bring in the
//! online segments still without bitmaps (new ones, replacements not proven) through the compare
//! path. Slow path (`use_snapshot = false`): the compare path over every segment, which is what a
//! server without snapshots does.
//!
//! The compare path applies DESIGN.md section 3 row by row against the key metadata: a row wins
//! over the stored winner if its (comparison, segment sequence, docId) is larger. Keys that a
//! snapshot left out of key metadata by `metadata_ttl` (or forgot by `deleted_keys_ttl`) count as
//! new keys here, as in Pinot: TTLs assume old keys are not updated again.

mod keys;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use rocksdb::{WriteOptions, DB};
use serde::Serialize;

use crate::catalog::{Catalog, SegmentRow, SegmentState};
use crate::snapshot::keyrun::scan_keys;
use crate::snapshot::lineage::{LineagePlan, LineageRefusal};
use crate::snapshot::manifest::Manifest;
pub use crate::snapshot::read::SegmentBitmaps;
use crate::snapshot::read::{fetch_key_files, fetch_segment, load_all_bitmaps, load_manifest};
use crate::snapshot::record::{ComparisonKind, KeyRecord};
use crate::snapshot::sst::sst_options;
use crate::storage::Store;
use crate::table::TableConfig;

#[derive(Debug, Clone)]
pub struct BootstrapOptions {
    pub use_snapshot: bool,
    /// Map the snapshot onto compaction and merge outputs through their lineage; off sends every
    /// replacement through the compare path (for comparisons and benchmarks).
    pub use_lineage: bool,
    pub sst_format_version: i32,
    /// Local directory for downloads.
    pub staging_dir: PathBuf,
}

#[derive(Debug, Clone, Serialize)]
pub struct BootstrapReport {
    pub table: String,
    pub partition: u32,
    pub snapshot_version: Option<i64>,
    /// Online segments loaded from the snapshot as they are.
    pub covered_segments: usize,
    /// Covered segments replaced since the snapshot (compaction, merge).
    pub replaced_segments: usize,
    /// Replacements loaded by mapping the snapshot through their lineage (no compare path).
    pub mapped_segments: usize,
    /// Online segments through the compare path: new ones and replacements not proven.
    pub uncovered_segments: usize,
    /// Replacements whose lineage did not prove a mapping, each with why (compare path).
    pub lineage_refused: Vec<LineageRefusal>,
    pub keys: u64,
    pub valid_docs: u64,
    pub queryable_docs: u64,
    pub seconds: f64,
}

/// A loaded partition: its key metadata in RocksDB and its bitmaps per segment id.
pub struct LoadedPartition {
    pub db: DB,
    pub bitmaps: BTreeMap<i64, SegmentBitmaps>,
    pub report: BootstrapReport,
}

#[derive(Debug, thiserror::Error)]
pub enum LoaderError {
    #[error("snapshot {version} of {table}/{partition} covers segment {segment} with checksum {in_snapshot}, but the segment now has checksum {now}; refusing that snapshot entry. Run a prebuild to make a snapshot of the current segments, or bootstrap with --no-snapshot")]
    SegmentChanged {
        table: String,
        partition: u32,
        version: i64,
        segment: String,
        in_snapshot: String,
        now: String,
    },
    #[error("bootstrap directory {0} is not empty; remove it or choose another")]
    DirectoryNotEmpty(String),
}

pub async fn bootstrap(
    catalog: &Catalog,
    store: &Store,
    table_name: &str,
    partition: u32,
    dir: &Path,
    options: &BootstrapOptions,
) -> anyhow::Result<LoadedPartition> {
    let started = Instant::now();
    let table = catalog.table(table_name).await?;
    anyhow::ensure!(
        partition < table.partitions,
        "table {table_name} has partitions 0 to {}, not {partition}",
        table.partitions - 1
    );
    if dir.exists() && std::fs::read_dir(dir)?.next().is_some() {
        return Err(LoaderError::DirectoryNotEmpty(dir.display().to_string()).into());
    }
    let online = catalog
        .segments(table_name, Some(partition), Some(SegmentState::Online))
        .await?;
    let staging = tempfile::Builder::new()
        .prefix("minion-bootstrap-")
        .tempdir_in(&options.staging_dir)?;
    let db = open_db(dir, options.sst_format_version)?;
    let mut report = BootstrapReport {
        table: table_name.to_string(),
        partition,
        snapshot_version: None,
        covered_segments: 0,
        replaced_segments: 0,
        mapped_segments: 0,
        uncovered_segments: 0,
        lineage_refused: Vec::new(),
        keys: 0,
        valid_docs: 0,
        queryable_docs: 0,
        seconds: 0.0,
    };
    let mut bitmaps = BTreeMap::new();
    let snapshot = match options.use_snapshot {
        true => catalog.latest_snapshot(table_name, partition).await?,
        false => None,
    };
    let mut dropped_keys = 0;
    if let Some(snapshot) = snapshot {
        let manifest = load_manifest(store, &snapshot).await?;
        check_covered_segments(&manifest, &online)?;
        bitmaps.extend(load_all_bitmaps(store, &manifest).await?);
        let ssts = fetch_key_files(store, &manifest, staging.path(), "")
            .await
            .context("a key-metadata file of the snapshot")?;
        ssts.ingest_into(&db, true).with_context(|| {
            format!(
                "RocksDB refused the key-metadata files of snapshot {}",
                manifest.version
            )
        })?;
        let plan = LineagePlan::new(&manifest, &online, options.use_lineage);
        for refusal in &plan.refused {
            tracing::warn!(
                segment = %refusal.segment,
                "snapshot {} not mapped onto this segment, which goes through the compare path: {}",
                manifest.version,
                refusal.reason
            );
        }
        if !plan.is_empty() {
            dropped_keys = keys::map_keys(
                store,
                &db,
                &plan,
                &manifest,
                &online,
                &bitmaps,
                staging.path(),
                options.sst_format_version,
            )
            .await?;
            plan.map_bitmaps(&mut bitmaps);
        }
        report.snapshot_version = Some(manifest.version);
        report.replaced_segments = plan.moves.len() + plan.dropped.len();
        report.covered_segments = manifest.segments.len() - report.replaced_segments;
        report.mapped_segments = plan.mapped_outputs.len();
        report.lineage_refused = plan.refused;
        report.keys = manifest.key_count - dropped_keys;
    }
    let (db, bitmaps, new_keys) = load_uncovered(
        store,
        db,
        &table,
        &online,
        staging.path(),
        bitmaps,
        &mut report,
    )
    .await?;
    report.keys += new_keys;
    drop(staging);
    Ok(finish(db, bitmaps, report, started))
}

/// Every covered segment still online must have the content the snapshot was built from (those
/// replaced since are the lineage's business).
fn check_covered_segments(manifest: &Manifest, online: &[SegmentRow]) -> Result<(), LoaderError> {
    for covered in &manifest.segments {
        let Some(now) = online.iter().find(|s| s.id == covered.id) else {
            continue;
        };
        if now.checksum != covered.checksum {
            return Err(LoaderError::SegmentChanged {
                table: manifest.table.clone(),
                partition: manifest.partition,
                version: manifest.version,
                segment: covered.name.clone(),
                in_snapshot: covered.checksum.clone(),
                now: now.checksum.clone(),
            });
        }
    }
    Ok(())
}

/// Brings in the online segments without bitmaps yet through the compare path, in sequence
/// order (the order `online` comes in). Returns the database, the bitmaps and the new keys.
async fn load_uncovered(
    store: &Store,
    db: DB,
    table: &TableConfig,
    online: &[SegmentRow],
    staging: &Path,
    mut bitmaps: BTreeMap<i64, SegmentBitmaps>,
    report: &mut BootstrapReport,
) -> anyhow::Result<(DB, BTreeMap<i64, SegmentBitmaps>, u64)> {
    let uncovered: Vec<&SegmentRow> = online
        .iter()
        .filter(|s| !bitmaps.contains_key(&s.id))
        .collect();
    report.uncovered_segments = uncovered.len();
    let mut downloaded = Vec::with_capacity(uncovered.len());
    for segment in uncovered {
        let local = staging.join(format!("{}.parquet", segment.id));
        fetch_segment(store, segment, &local).await?;
        downloaded.push((segment.clone(), local));
    }
    let sequences: HashMap<u64, i64> = online.iter().map(|s| (s.id as u64, s.sequence)).collect();
    let table = table.clone();
    tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let mut new_keys = 0;
        for (segment, local) in &downloaded {
            new_keys += compare_path(&db, &table, segment, local, &sequences, &mut bitmaps)?;
        }
        Ok((db, bitmaps, new_keys))
    })
    .await?
}

fn finish(
    db: DB,
    bitmaps: BTreeMap<i64, SegmentBitmaps>,
    mut report: BootstrapReport,
    started: Instant,
) -> LoadedPartition {
    report.valid_docs = bitmaps.values().map(|b| b.valid.len()).sum();
    report.queryable_docs = bitmaps.values().map(|b| b.queryable.len()).sum();
    report.seconds = started.elapsed().as_secs_f64();
    LoadedPartition {
        db,
        bitmaps,
        report,
    }
}

/// Applies one segment's rows to the key metadata and bitmaps. Returns how many keys were new.
fn compare_path(
    db: &DB,
    table: &TableConfig,
    segment: &SegmentRow,
    local: &Path,
    sequences: &HashMap<u64, i64>,
    bitmaps: &mut BTreeMap<i64, SegmentBitmaps>,
) -> anyhow::Result<u64> {
    let kind = ComparisonKind::of_table(table);
    let mut write = WriteOptions::default();
    // The local key metadata is rebuilt from snapshot and segments after a crash: no WAL needed.
    write.disable_wal(true);
    let mut new_keys = 0u64;
    let segment_id = segment.id as u64;
    bitmaps.entry(segment.id).or_default();
    scan_keys(
        local,
        table,
        |key, comparison, doc_id, deleted| -> anyhow::Result<()> {
            if let Some(bytes) = db.get(key)? {
                let old = KeyRecord::decode(&bytes).with_context(|| {
                    format!(
                        "key metadata holds a malformed record for a key of segment {}",
                        segment.name
                    )
                })?;
                let old_sequence = *sequences.get(&old.segment_id).with_context(|| {
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
                if (comparison, segment.sequence, doc_id) <= old_rank {
                    return Ok(());
                }
                let previous = bitmaps.entry(old.segment_id as i64).or_default();
                previous.valid.remove(old.doc_id);
                previous.queryable.remove(old.doc_id);
            } else {
                new_keys += 1;
            }
            let current = bitmaps.get_mut(&segment.id).expect("inserted above");
            current.valid.insert(doc_id);
            if deleted {
                current.queryable.remove(doc_id);
            } else {
                current.queryable.insert(doc_id);
            }
            let record = KeyRecord {
                segment_id,
                doc_id,
                comparison: kind.natural_from_sortable(comparison),
                deleted,
            };
            db.put_opt(key, record.encode(), &write)?;
            Ok(())
        },
    )?;
    Ok(new_keys)
}

fn open_db(dir: &Path, format_version: i32) -> anyhow::Result<DB> {
    let mut options = sst_options(format_version);
    options.create_if_missing(true);
    DB::open(&options, dir).with_context(|| format!("cannot open a RocksDB at {}", dir.display()))
}

impl LoadedPartition {
    /// Every key-metadata entry, in key order (for comparisons and tests).
    pub fn dump_keys(&self) -> anyhow::Result<Vec<(Vec<u8>, KeyRecord)>> {
        let mut out = Vec::new();
        for item in self.db.iterator(rocksdb::IteratorMode::Start) {
            let (key, value) = item?;
            let record = KeyRecord::decode(&value).context("malformed key-metadata record")?;
            out.push((key.to_vec(), record));
        }
        Ok(out)
    }
}
