//! The serving-side loader: what a server does at startup for one partition (DESIGN.md section 7).
//!
//! Fast path: fetch the newest snapshot, verify the manifest and every file against their
//! checksums and every covered segment against the catalog, ingest the SST files into a local
//! RocksDB (IngestExternalFile), load the bitmaps, then bring in the online segments the snapshot
//! does not cover through the normal compare path. Slow path (`use_snapshot = false`): the compare
//! path over every segment, which is what a server without snapshots does.
//!
//! The compare path applies DESIGN.md section 3 row by row against the key metadata: a row wins
//! over the stored winner if its (comparison, segment sequence, docId) is larger. Keys that a
//! snapshot left out of key metadata by `metadata_ttl` (or forgot by `deleted_keys_ttl`) count as
//! new keys here, as in Pinot: TTLs assume old keys are not updated again.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use futures::{StreamExt, TryStreamExt};
use roaring::RoaringBitmap;
use rocksdb::{IngestExternalFileOptions, WriteOptions, DB};
use serde::Serialize;

use crate::catalog::{Catalog, SegmentRow, SegmentState};
use crate::snapshot::keyrun::scan_keys;
use crate::snapshot::manifest::{FileEntry, Manifest};
use crate::snapshot::record::{ComparisonKind, KeyRecord};
use crate::snapshot::sst::sst_options;
use crate::storage::{sha256_hex, Store};
use crate::table::TableConfig;

/// Snapshot files fetched at once.
const DOWNLOADS_AT_ONCE: usize = 8;

#[derive(Debug, Clone)]
pub struct BootstrapOptions {
    pub use_snapshot: bool,
    pub sst_format_version: i32,
    /// Local directory for downloads.
    pub staging_dir: PathBuf,
}

/// The validDocIds and queryableDocIds of one segment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SegmentBitmaps {
    pub valid: RoaringBitmap,
    pub queryable: RoaringBitmap,
}

#[derive(Debug, Clone, Serialize)]
pub struct BootstrapReport {
    pub table: String,
    pub partition: u32,
    pub snapshot_version: Option<i64>,
    pub covered_segments: usize,
    pub uncovered_segments: usize,
    pub keys: u64,
    pub valid_docs: u64,
    pub queryable_docs: u64,
    pub seconds: f64,
    /// Why the newest snapshot was not used, when it was skipped for the slow path.
    pub snapshot_skipped: Option<String>,
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
    #[error("snapshot {version} of {table}/{partition} covers segment {segment}, which is no longer online (replaced or dropped); run a prebuild, or bootstrap with --no-snapshot")]
    SegmentGone {
        table: String,
        partition: u32,
        version: i64,
        segment: String,
    },
    #[error("{what} {key} does not match its checksum (expected {expected}, got {actual}); the object is damaged: rebuild the snapshot with a prebuild")]
    ChecksumMismatch {
        what: &'static str,
        key: String,
        expected: String,
        actual: String,
    },
    #[error(
        "bitmap {key} is corrupt or truncated: {message}; rebuild the snapshot with a prebuild"
    )]
    BadBitmap { key: String, message: String },
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
    let mut bitmaps: BTreeMap<i64, SegmentBitmaps> = BTreeMap::new();
    let mut report = BootstrapReport {
        table: table_name.to_string(),
        partition,
        snapshot_version: None,
        covered_segments: 0,
        uncovered_segments: 0,
        keys: 0,
        valid_docs: 0,
        queryable_docs: 0,
        seconds: 0.0,
        snapshot_skipped: None,
    };
    let mut snapshot = if options.use_snapshot {
        catalog.latest_snapshot(table_name, partition).await?
    } else {
        None
    };
    // A snapshot that covers a segment since replaced by compaction or merge is stale, not
    // wrong: the queued prebuild will replace it. Until then the slow path is the correct one.
    if let Some(stale) = snapshot.as_ref().and_then(|s| {
        s.segment_ids
            .iter()
            .find(|id| !online.iter().any(|o| o.id == **id))
    }) {
        let reason = format!(
            "snapshot {} covers segment {stale}, which is no longer online (compacted or merged since); loading without it until a prebuild publishes a newer one",
            snapshot.as_ref().map_or(0, |s| s.version)
        );
        tracing::warn!("{reason}");
        report.snapshot_skipped = Some(reason);
        snapshot = None;
    }
    if let Some(snapshot) = snapshot {
        let manifest = load_manifest(store, &snapshot).await?;
        for covered in &manifest.segments {
            let Some(now) = online.iter().find(|s| s.id == covered.id) else {
                return Err(LoaderError::SegmentGone {
                    table: table_name.to_string(),
                    partition,
                    version: manifest.version,
                    segment: covered.name.clone(),
                }
                .into());
            };
            if now.checksum != covered.checksum {
                return Err(LoaderError::SegmentChanged {
                    table: table_name.to_string(),
                    partition,
                    version: manifest.version,
                    segment: covered.name.clone(),
                    in_snapshot: covered.checksum.clone(),
                    now: now.checksum.clone(),
                }
                .into());
            }
        }
        // Bitmaps and SST files are fetched several at a time: on S3 each is a round trip.
        let loaded: Vec<(i64, SegmentBitmaps)> = futures::stream::iter(&manifest.segments)
            .map(|covered| async move {
                let valid = load_bitmap(store, &covered.valid, covered.rows).await?;
                let queryable = load_bitmap(store, &covered.queryable, covered.rows).await?;
                anyhow::Ok((covered.id, SegmentBitmaps { valid, queryable }))
            })
            .buffered(DOWNLOADS_AT_ONCE)
            .try_collect()
            .await?;
        bitmaps.extend(loaded);
        let staging_dir = staging.path();
        let sst_paths: Vec<PathBuf> = futures::stream::iter(manifest.key_files.iter().enumerate())
            .map(|(index, file)| async move {
                let local = staging_dir.join(format!("{index}.sst"));
                store
                    .download_verified(&file.file.key, &local, &file.file.checksum)
                    .await
                    .context("a key-metadata file of the snapshot")?;
                anyhow::Ok(local)
            })
            .buffered(DOWNLOADS_AT_ONCE)
            .try_collect()
            .await?;
        if !sst_paths.is_empty() {
            let mut ingest = IngestExternalFileOptions::default();
            ingest.set_move_files(true);
            db.ingest_external_file_opts(&ingest, sst_paths)
                .with_context(|| {
                    format!(
                        "RocksDB refused the key-metadata files of snapshot {}",
                        manifest.version
                    )
                })?;
        }
        report.snapshot_version = Some(manifest.version);
        report.covered_segments = manifest.segments.len();
        report.keys = manifest.key_count;
    }

    let uncovered: Vec<SegmentRow> = online
        .iter()
        .filter(|s| !bitmaps.contains_key(&s.id))
        .cloned()
        .collect();
    report.uncovered_segments = uncovered.len();
    let mut downloaded = Vec::with_capacity(uncovered.len());
    for segment in uncovered {
        let local = staging.path().join(format!("{}.parquet", segment.id));
        store
            .download_verified(&segment.object_key, &local, &segment.checksum)
            .await
            .with_context(|| format!("segment {}", segment.name))?;
        downloaded.push((segment, local));
    }
    let sequences: HashMap<u64, i64> = online.iter().map(|s| (s.id as u64, s.sequence)).collect();
    // Online segments come in sequence order; the compare path takes them in that order.
    let (db, bitmaps, new_keys) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let mut new_keys = 0;
        for (segment, local) in &downloaded {
            new_keys += compare_path(&db, &table, segment, local, &sequences, &mut bitmaps)?;
        }
        Ok((db, bitmaps, new_keys))
    })
    .await??;
    report.keys += new_keys;
    drop(staging);
    Ok(finish(db, bitmaps, report, started))
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
    let mut failure: Option<anyhow::Error> = None;
    scan_keys(local, table, |key, comparison, doc_id, deleted| {
        let existing = match db.get(key) {
            Ok(existing) => existing,
            Err(err) => {
                failure = Some(err.into());
                return Ok(());
            }
        };
        if let Some(bytes) = existing {
            let Some(old) = KeyRecord::decode(&bytes) else {
                failure = Some(anyhow::anyhow!(
                    "key metadata holds a malformed record for a key of segment {}",
                    segment.name
                ));
                return Ok(());
            };
            let Some(&old_sequence) = sequences.get(&old.segment_id) else {
                failure = Some(anyhow::anyhow!(
                    "key metadata points at segment id {} which is not online; the snapshot is stale, run a prebuild",
                    old.segment_id
                ));
                return Ok(());
            };
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
        if let Err(err) = db.put_opt(key, record.encode(), &write) {
            failure = Some(err.into());
        }
        Ok(())
    })?;
    if let Some(err) = failure {
        return Err(err);
    }
    Ok(new_keys)
}

fn open_db(dir: &Path, format_version: i32) -> anyhow::Result<DB> {
    let mut options = sst_options(format_version);
    options.create_if_missing(true);
    DB::open(&options, dir).with_context(|| format!("cannot open a RocksDB at {}", dir.display()))
}

/// Fetches a snapshot's manifest and checks it against the catalog's checksum.
pub async fn load_manifest(
    store: &Store,
    snapshot: &crate::catalog::SnapshotRow,
) -> anyhow::Result<Manifest> {
    let bytes = store.get(&snapshot.manifest_key).await?;
    check_sum(
        "manifest",
        &snapshot.manifest_key,
        &snapshot.manifest_checksum,
        &bytes,
    )?;
    Ok(Manifest::parse(&snapshot.manifest_key, &bytes)?)
}

/// Fetches a bitmap listed in a manifest, checks its checksum and that it fits `rows` rows.
pub async fn load_bitmap(
    store: &Store,
    file: &FileEntry,
    rows: u64,
) -> anyhow::Result<RoaringBitmap> {
    let bytes = store.get(&file.key).await?;
    check_sum("bitmap", &file.key, &file.checksum, &bytes)?;
    parse_bitmap(&file.key, &bytes, rows)
}

/// Deserializes a portable Roaring bitmap and checks it fits a segment of `rows` rows.
pub fn parse_bitmap(key: &str, bytes: &[u8], rows: u64) -> anyhow::Result<RoaringBitmap> {
    let bitmap = RoaringBitmap::deserialize_from(bytes).map_err(|err| LoaderError::BadBitmap {
        key: key.to_string(),
        message: err.to_string(),
    })?;
    if let Some(max) = bitmap.max() {
        if max as u64 >= rows {
            bail!(LoaderError::BadBitmap {
                key: key.to_string(),
                message: format!("it marks docId {max} but the segment has only {rows} rows"),
            });
        }
    }
    Ok(bitmap)
}

fn check_sum(
    what: &'static str,
    key: &str,
    expected: &str,
    bytes: &[u8],
) -> Result<(), LoaderError> {
    let actual = sha256_hex(bytes);
    if actual != expected {
        return Err(LoaderError::ChecksumMismatch {
            what,
            key: key.to_string(),
            expected: expected.to_string(),
            actual,
        });
    }
    Ok(())
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
