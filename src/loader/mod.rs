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
//! The compare path applies DESIGN.md section 3 row by row against the key metadata
//! (`snapshot::tail`): a row wins over the stored winner if its (comparison, segment sequence,
//! docId) is larger. With `metadata_ttl` the key metadata is a hot set and a cold one (`db`), and
//! a row whose key is not hot is resolved against the cold set before it counts as new, so late
//! rows of expired keys are exact on every path. Both paths split the keys by the same watermark:
//! the largest comparison value of the partition's online segments (the catalog's per-segment
//! maximum) minus the TTL, so they end with the same hot and cold sets. Keys forgotten by
//! `deleted_keys_ttl` count as new keys here, as in Pinot: that TTL assumes deleted keys are not
//! written again, and the slow path, which forgets nothing, differs from a snapshot there.

mod db;
mod keys;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use rocksdb::DB;
use serde::Serialize;

use crate::catalog::{Catalog, SegmentRow, SegmentState};
use crate::snapshot::keyrun::scan_keys;
use crate::snapshot::lineage::{LineagePlan, LineageRefusal};
use crate::snapshot::manifest::Manifest;
pub use crate::snapshot::read::SegmentBitmaps;
use crate::snapshot::read::{fetch_key_files, fetch_segment, load_all_bitmaps, load_manifest};
use crate::snapshot::record::{ComparisonKind, KeyRecord, KeySet};
use crate::snapshot::tail::{load_watermark, KeyCounts, KeyStore, Tail, TailRow};
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
    /// Why the newest snapshot was not used (the slow path ran instead), if it was not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot_unused: Option<String>,
    /// Keys in the hot key metadata.
    pub keys: u64,
    /// Keys in the cold key set (`metadata_ttl`).
    pub cold_keys: u64,
    /// Keys below which winners are cold (largest comparison of the online segments minus
    /// `metadata_ttl`).
    pub metadata_watermark: Option<f64>,
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

/// Loads `table_name`/`partition` into a RocksDB at `dir`, which must be empty or absent. A load
/// that fails leaves `dir` as it found it (removed, or empty), so a retry starts clean.
pub async fn bootstrap(
    catalog: &Catalog,
    store: &Store,
    table_name: &str,
    partition: u32,
    dir: &Path,
    options: &BootstrapOptions,
) -> anyhow::Result<LoadedPartition> {
    let existed = dir.exists();
    if existed && std::fs::read_dir(dir)?.next().is_some() {
        return Err(LoaderError::DirectoryNotEmpty(dir.display().to_string()).into());
    }
    let loaded = load(catalog, store, table_name, partition, dir, options).await;
    if loaded.is_err() && dir.exists() {
        let _ = std::fs::remove_dir_all(dir);
        if existed {
            let _ = std::fs::create_dir_all(dir);
        }
    }
    loaded
}

async fn load(
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
    let online = catalog
        .segments(table_name, Some(partition), Some(SegmentState::Online))
        .await?;
    let staging = tempfile::Builder::new()
        .prefix("minion-bootstrap-")
        .tempdir_in(&options.staging_dir)?;
    let db = db::open_db(dir, options.sst_format_version)?;
    let largest = online
        .iter()
        .filter_map(|s| s.max_comparison)
        .reduce(f64::max);
    let mut report = BootstrapReport {
        table: table_name.to_string(),
        partition,
        snapshot_version: None,
        covered_segments: 0,
        replaced_segments: 0,
        mapped_segments: 0,
        uncovered_segments: 0,
        lineage_refused: Vec::new(),
        snapshot_unused: None,
        keys: 0,
        cold_keys: 0,
        metadata_watermark: load_watermark(table.ttl.metadata_ttl, largest),
        valid_docs: 0,
        queryable_docs: 0,
        seconds: 0.0,
    };
    let mut bitmaps = BTreeMap::new();
    let mut manifest = match options.use_snapshot {
        true => match catalog.latest_snapshot(table_name, partition).await? {
            Some(snapshot) => Some(
                load_manifest(store, &snapshot)
                    .await
                    .with_context(|| damaged(table_name, partition, snapshot.version))?,
            ),
            None => None,
        },
        false => None,
    };
    if let Some(old) = manifest.take_if(|m| m.lacks_cold_keys()) {
        let why = format!(
            "{}, so late rows of those keys could not be resolved; loading every segment instead (the next prebuild writes a snapshot with a cold key set)",
            old.missing_cold_keys().unwrap_or_default()
        );
        tracing::warn!("{why}");
        report.snapshot_unused = Some(why);
    }
    // Key metadata as the snapshot (or nothing) leaves it, split by the snapshot's watermark.
    let (mut counts, mut split_by) = (KeyCounts::default(), None);
    if let Some(manifest) = manifest {
        check_covered_segments(&manifest, &online)?;
        let unusable = || damaged(table_name, partition, manifest.version);
        bitmaps.extend(
            load_all_bitmaps(store, &manifest)
                .await
                .with_context(unusable)?,
        );
        let ssts = fetch_key_files(store, &manifest, staging.path(), "")
            .await
            .context("a key-metadata file of the snapshot")
            .with_context(unusable)?;
        for (set, layers) in [(KeySet::Hot, ssts.hot), (KeySet::Cold, ssts.cold)] {
            layers
                .ingest_into(&db, db::family(&db, set), true)
                .with_context(|| {
                    format!(
                        "RocksDB refused the key-metadata files of snapshot {}",
                        manifest.version
                    )
                })?;
        }
        let plan = LineagePlan::new(&manifest, &online, options.use_lineage);
        for refusal in &plan.refused {
            tracing::warn!(
                segment = %refusal.segment,
                "snapshot {} not mapped onto this segment, which goes through the compare path: {}",
                manifest.version,
                refusal.reason
            );
        }
        counts = KeyCounts {
            hot: manifest.key_count,
            cold: manifest.cold_key_count(),
        };
        if !plan.is_empty() {
            let dropped = keys::map_keys(
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
            counts.hot -= dropped.hot;
            counts.cold -= dropped.cold;
            plan.map_bitmaps(&mut bitmaps);
        }
        split_by = manifest.metadata_watermark;
        report.snapshot_version = Some(manifest.version);
        report.replaced_segments = plan.moves.len() + plan.dropped.len();
        report.covered_segments = manifest.segments.len() - report.replaced_segments;
        report.mapped_segments = plan.mapped_outputs.len();
        report.lineage_refused = plan.refused;
    }
    let (db, bitmaps, counts) = load_uncovered(
        store,
        db,
        &table,
        &online,
        staging.path(),
        bitmaps,
        (counts, split_by),
        &mut report,
    )
    .await?;
    report.keys = counts.hot;
    report.cold_keys = counts.cold;
    drop(staging);
    Ok(finish(db, bitmaps, report, started))
}

/// What to do about a snapshot whose objects are damaged or gone.
fn damaged(table: &str, partition: u32, version: i64) -> String {
    format!(
        "snapshot {version} of {table}/{partition} cannot be used; rebuild it from the segments with `minion run prebuild --table {table} --partition {partition} --force`, or bootstrap with --no-snapshot"
    )
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

/// Re-splits the key metadata (`counts` keys, split by watermark `split_by`) by the load's
/// watermark, then brings in the online segments without bitmaps yet through the compare path,
/// in sequence order (the order `online` comes in). Returns the database, the bitmaps and the
/// key counts.
#[allow(clippy::too_many_arguments)]
async fn load_uncovered(
    store: &Store,
    db: DB,
    table: &TableConfig,
    online: &[SegmentRow],
    staging: &Path,
    mut bitmaps: BTreeMap<i64, SegmentBitmaps>,
    (counts, split_by): (KeyCounts, Option<f64>),
    report: &mut BootstrapReport,
) -> anyhow::Result<(DB, BTreeMap<i64, SegmentBitmaps>, KeyCounts)> {
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
    let (table, watermark) = (table.clone(), report.metadata_watermark);
    tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let kind = ComparisonKind::of_table(&table);
        let mut tail = Tail::new(kind, watermark, &sequences, counts);
        let mut keys = db::RocksKeys::new(&db);
        tail.rebalance(&mut keys, split_by)?;
        for (segment, local) in &downloaded {
            compare_path(&mut tail, &mut keys, &table, segment, local, &mut bitmaps)?;
        }
        let counts = tail.counts;
        drop(keys);
        Ok((db, bitmaps, counts))
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

/// Resolves one segment's rows against the key metadata and bitmaps.
fn compare_path(
    tail: &mut Tail<'_>,
    keys: &mut impl KeyStore,
    table: &TableConfig,
    segment: &SegmentRow,
    local: &Path,
    bitmaps: &mut BTreeMap<i64, SegmentBitmaps>,
) -> anyhow::Result<()> {
    let place = (segment.id as u64, segment.sequence);
    bitmaps.entry(segment.id).or_default();
    scan_keys(
        local,
        table,
        |key, comparison, doc_id, deleted| -> anyhow::Result<()> {
            let row = TailRow {
                comparison,
                doc_id,
                deleted,
            };
            tail.apply(keys, bitmaps, place, key, row)
                .with_context(|| format!("a row of segment {}", segment.name))?;
            Ok(())
        },
    )?;
    Ok(())
}

impl LoadedPartition {
    /// Every hot key-metadata entry, in key order (for comparisons and tests).
    pub fn dump_keys(&self) -> anyhow::Result<Vec<(Vec<u8>, KeyRecord)>> {
        self.dump(KeySet::Hot)
    }

    /// Every cold key-set entry, in key order (for comparisons and tests).
    pub fn dump_cold_keys(&self) -> anyhow::Result<Vec<(Vec<u8>, KeyRecord)>> {
        self.dump(KeySet::Cold)
    }

    fn dump(&self, set: KeySet) -> anyhow::Result<Vec<(Vec<u8>, KeyRecord)>> {
        db::entries(&self.db, set)
            .map(|entry| entry.map(|(key, record)| (key.to_vec(), record)))
            .collect()
    }

    /// A key's winner and the set it is in: the hot set first, the cold one on a miss.
    pub fn lookup(&self, key: &[u8]) -> anyhow::Result<Option<(KeySet, KeyRecord)>> {
        db::RocksKeys::new(&self.db).get(key)
    }
}
