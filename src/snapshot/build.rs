//! The prebuild: (table, partition) -> a new published snapshot.
//!
//! 1. Ensure every online segment has its sorted key run (reused from the store, or built from
//!    the segment's key, comparison and delete columns, checked against the catalog checksum).
//! 2. Merge the runs and resolve winners (`resolve`), writing key metadata in merge order.
//! 3. Upload bitmaps, SST files and, last, the manifest, under a fresh directory.
//! 4. Publish by compare-and-swap on the partition's latest snapshot version.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use super::keyrun::{RunFile, RunReader};
use super::layers::{self, Target};
use super::manifest::{FileEntry, KeyFile, Manifest, ManifestSegment};
use super::publish::finish;
use super::ranges::{resolve_in_ranges, RangePlan};
use super::read::load_manifest;
use super::record::{ComparisonKind, KeySet};
use super::resolve::{resolve, Resolution, Source, TtlSettings};
use super::runs::gather_runs;
use super::sst::{sst_options, KeySetFiles, SetSplitters, SstFile};
use crate::catalog::{Catalog, SegmentRow, SegmentState};
use crate::error::{Permanence, Permanent};
use crate::storage::{layout, sha256_hex, Store};
use crate::table::{PrimaryKeyHash, TableConfig};

/// Snapshot objects uploaded at once: on S3 each is a round trip, and a partition of a hundred
/// segments has two hundred bitmaps.
const UPLOADS_AT_ONCE: usize = 8;

#[derive(Debug, Clone)]
pub struct PrebuildOptions {
    pub staging_dir: PathBuf,
    /// Entries sorted in memory before spilling, when building a key run.
    pub max_run_entries: usize,
    pub sst_format_version: i32,
    /// Entries per SST file.
    pub sst_max_entries: u64,
    /// Most key ranges a partition's resolution is split into; each range writes its own SST
    /// file(s).
    pub max_key_ranges: usize,
    /// Run entries per key range (fewer ranges when there are fewer entries).
    pub entries_per_key_range: u64,
    /// Threads resolving key ranges at once, and key runs built at once.
    pub resolve_threads: usize,
    /// Most key-metadata layers a snapshot may have (`layers`); 1 never layers.
    pub max_key_layers: u32,
}

impl Default for PrebuildOptions {
    fn default() -> Self {
        PrebuildOptions {
            staging_dir: std::env::temp_dir(),
            max_run_entries: 2_000_000,
            sst_format_version: super::sst::DEFAULT_FORMAT_VERSION,
            sst_max_entries: 50_000_000,
            max_key_ranges: 8,
            entries_per_key_range: 1_000_000,
            resolve_threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            max_key_layers: layers::MAX_KEY_LAYERS,
        }
    }
}

/// What a prebuild did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PrebuildOutcome {
    /// A new snapshot is the partition's newest.
    Published,
    /// Another prebuild published first; this one's objects are garbage for gc.
    Superseded,
    /// The newest snapshot already covers exactly the online segments.
    UpToDate,
    /// The partition has no segments and no snapshot.
    NoSegments,
    /// A covered segment was replaced while building: nothing published, build again.
    SegmentChanged,
}

impl std::fmt::Display for PrebuildOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PrebuildOutcome::Published => "published",
            PrebuildOutcome::Superseded => "superseded",
            PrebuildOutcome::UpToDate => "up_to_date",
            PrebuildOutcome::NoSegments => "no_segments",
            PrebuildOutcome::SegmentChanged => "segment_changed",
        })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct PrebuildReport {
    pub table: String,
    pub partition: u32,
    pub outcome: PrebuildOutcome,
    pub version: Option<i64>,
    pub segments: usize,
    pub runs_reused: usize,
    pub runs_built: usize,
    pub rows: u64,
    pub key_count: u64,
    pub valid_docs: u64,
    pub seconds: f64,
    /// Time spent getting key runs (download, or build from the segment and upload).
    pub runs_seconds: f64,
    /// Time spent merging runs, resolving winners and writing SST files (layered: writing the
    /// new layer and copying the rest).
    pub resolve_seconds: f64,
    pub method: BuildMethod,
    /// Why a partition with a snapshot was built in full rather than layered on it.
    pub full_because: Option<String>,
    /// Key-metadata entries in the new layer of a layered build (the keys that moved).
    pub moved_keys: u64,
}

/// How a prebuild made the key metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BuildMethod {
    /// Every key resolved from the segments' key runs.
    Full,
    /// The previous snapshot's files kept, the keys that moved through lineage added as a layer
    /// (`layers`).
    Layered,
}

/// What a prebuild starts from: the table, the newest snapshot and the online segments.
pub(super) struct Inputs {
    pub table: TableConfig,
    pub previous: Option<crate::catalog::SnapshotRow>,
    pub segments: Vec<SegmentRow>,
}

/// Builds and publishes the partition's snapshot. Without `force`, a partition whose newest
/// snapshot covers exactly its online segments is left as it is (`up_to_date`) unless that
/// snapshot's manifest is damaged, and a follow-up after compaction may be layered on it; with
/// `force` the snapshot is built in full from the segments' key runs (each verified, a damaged
/// one rebuilt from its segment) whatever the newest snapshot holds: the repair for a damaged
/// bitmap or key file that `verify` reports.
pub async fn prebuild(
    catalog: &Catalog,
    store: &Store,
    table_name: &str,
    partition: u32,
    job_id: Option<i64>,
    force: bool,
    options: &PrebuildOptions,
) -> anyhow::Result<PrebuildReport> {
    let started = Instant::now();
    let inputs = read_inputs(catalog, table_name, partition).await?;
    let Inputs {
        table,
        previous,
        segments,
    } = &inputs;
    let expected = previous.as_ref().map(|s| s.version);
    let mut report = PrebuildReport {
        table: table_name.to_string(),
        partition,
        outcome: PrebuildOutcome::UpToDate,
        version: expected,
        segments: segments.len(),
        runs_reused: 0,
        runs_built: 0,
        rows: segments.iter().map(|s| s.row_count as u64).sum(),
        key_count: previous.as_ref().map_or(0, |s| s.key_count as u64),
        valid_docs: previous.as_ref().map_or(0, |s| s.valid_docs as u64),
        seconds: 0.0,
        runs_seconds: 0.0,
        resolve_seconds: 0.0,
        method: BuildMethod::Full,
        full_because: None,
        moved_keys: 0,
    };
    let ids: Vec<i64> = segments.iter().map(|s| s.id).collect();
    if force {
        report.full_because = Some("forced (--force)".into());
    } else if let Some(covering) = previous.as_ref().filter(|p| p.segment_ids == ids) {
        match load_manifest(store, covering).await {
            Ok(manifest) if manifest.lacks_cold_keys() => {
                report.full_because = manifest.missing_cold_keys();
            }
            Ok(_) => return Ok(report),
            Err(err) if err.is_permanent() => {
                tracing::warn!(
                    version = covering.version,
                    "the newest snapshot is damaged; building it again from the segments: {err}"
                );
                report.full_because =
                    Some(format!("snapshot {} is damaged: {err}", covering.version));
            }
            Err(err) => return Err(err.into()),
        }
    }
    if segments.is_empty() && previous.is_none() {
        report.outcome = PrebuildOutcome::NoSegments;
        return Ok(report);
    }

    let workdir = tempfile::Builder::new()
        .prefix("minion-prebuild-")
        .tempdir_in(&options.staging_dir)
        .with_context(|| {
            format!(
                "cannot create a work directory in {}",
                options.staging_dir.display()
            )
        })?;
    let version = expected.unwrap_or(0) + 1;
    // A fresh directory per build (its name has a random part): every object of this snapshot,
    // the manifest last, goes under this one prefix, which gc collects as a whole.
    let prefix = layout::snapshot_prefix(table_name, partition, version);
    if let Some(previous) = previous.as_ref().filter(|_| report.full_because.is_none()) {
        let target = Target {
            prefix: &prefix,
            version,
            job_id,
            workdir: workdir.path(),
        };
        match layers::follow_up(store, table, previous, segments, target, options).await? {
            Ok(layered) => {
                report.method = BuildMethod::Layered;
                report.moved_keys = layered.moved_keys;
                report.runs_seconds = layered.runs_seconds;
                report.resolve_seconds = layered.layer_seconds;
                return finish(
                    catalog,
                    store,
                    report,
                    &layered.manifest,
                    &prefix,
                    inputs,
                    started,
                )
                .await;
            }
            Err(reason) => {
                tracing::info!("building in full, not layered on the previous snapshot: {reason}");
                report.full_because = Some(reason);
            }
        }
    }
    let phase = Instant::now();
    let (run_paths, reused) = gather_runs(store, table, segments, workdir.path(), options).await?;
    report.runs_reused = reused;
    report.runs_built = segments.len() - reused;
    report.runs_seconds = phase.elapsed().as_secs_f64();
    let phase = Instant::now();
    let (resolution, key_files) =
        resolve_partition(table, segments, run_paths, workdir.path(), options).await?;
    report.resolve_seconds = phase.elapsed().as_secs_f64();
    let manifest = upload_snapshot(
        store,
        &inputs,
        &prefix,
        (partition, version),
        job_id,
        &resolution,
        key_files,
        options,
    )
    .await?;
    finish(catalog, store, report, &manifest, &prefix, inputs, started).await
}

async fn read_inputs(
    catalog: &Catalog,
    table_name: &str,
    partition: u32,
) -> anyhow::Result<Inputs> {
    let table = catalog.table(table_name).await?;
    if partition >= table.partitions {
        return Err(Permanent(format!(
            "table {table_name} has partitions 0 to {}, not {partition}",
            table.partitions - 1
        ))
        .into());
    }
    let previous = catalog.latest_snapshot(table_name, partition).await?;
    let segments = catalog
        .segments(table_name, Some(partition), Some(SegmentState::Online))
        .await?;
    Ok(Inputs {
        table,
        previous,
        segments,
    })
}

/// Merges the runs and resolves winners on a blocking thread, writing SST files to `workdir`.
async fn resolve_partition(
    table: &TableConfig,
    segments: &[SegmentRow],
    run_paths: Vec<PathBuf>,
    workdir: &Path,
    options: &PrebuildOptions,
) -> anyhow::Result<(Resolution, KeySetFiles)> {
    let sources: Vec<Source> = segments
        .iter()
        .map(|s| Source {
            segment_id: s.id as u64,
            sequence: s.sequence,
            rows: s.row_count as u64,
        })
        .collect();
    let kind = ComparisonKind::of_table(table);
    let ttl = TtlSettings::of(table);
    let (dir, format_version, options) = (
        workdir.to_path_buf(),
        options.sst_format_version,
        options.clone(),
    );
    tokio::task::spawn_blocking(move || {
        resolve_to_files(
            &run_paths,
            &sources,
            kind,
            ttl,
            &dir,
            format_version,
            &options,
        )
    })
    .await?
}

/// Uploads the bitmaps and SST files under `prefix`; returns the manifest listing them (not yet
/// uploaded).
#[allow(clippy::too_many_arguments)]
async fn upload_snapshot(
    store: &Store,
    inputs: &Inputs,
    prefix: &str,
    (partition, version): (u32, i64),
    job_id: Option<i64>,
    resolution: &Resolution,
    files: KeySetFiles,
    options: &PrebuildOptions,
) -> anyhow::Result<Manifest> {
    let Inputs {
        table, segments, ..
    } = inputs;
    let manifest_segments: Vec<ManifestSegment> = futures::stream::iter(0..segments.len())
        .map(|index| async move {
            let segment = &segments[index];
            let (valid, queryable) = (&resolution.valid[index], &resolution.queryable[index]);
            anyhow::Ok(ManifestSegment {
                id: segment.id,
                name: segment.name.clone(),
                sequence: segment.sequence,
                checksum: segment.checksum.clone(),
                rows: segment.row_count as u64,
                valid: upload_bitmap(
                    store,
                    &format!("{prefix}valid/{}.roaring", segment.id),
                    valid,
                )
                .await?,
                queryable: upload_bitmap(
                    store,
                    &format!("{prefix}queryable/{}.roaring", segment.id),
                    queryable,
                )
                .await?,
                valid_docs: valid.len(),
                queryable_docs: queryable.len(),
            })
        })
        .buffered(UPLOADS_AT_ONCE)
        .try_collect()
        .await?;
    let key_files = upload_key_files(store, prefix, KeySet::Hot, files.hot, (0, 0)).await?;
    let cold_key_files = upload_key_files(store, prefix, KeySet::Cold, files.cold, (0, 0)).await?;
    let kind = ComparisonKind::of_table(table);
    Ok(Manifest {
        format: Manifest::format_for(&key_files, &cold_key_files),
        table: table.name.clone(),
        partition,
        version,
        created_at: chrono::Utc::now(),
        job_id,
        primary_key_hash: table.primary_key_hash,
        comparison_kind: kind,
        sst_format_version: options.sst_format_version,
        segments: manifest_segments,
        key_files,
        cold_key_files,
        key_count: resolution.metadata_keys,
        live_keys: resolution.live_keys,
        forgotten_deleted_keys: resolution.forgotten_keys,
        expired_tombstones_kept: Some(resolution.expired_tombstones_kept),
        valid_docs: resolution.valid.iter().map(|b| b.len()).sum(),
        queryable_docs: resolution.queryable.iter().map(|b| b.len()).sum(),
        largest_comparison: resolution
            .largest_comparison
            .map(|l| kind.natural_from_sortable(l)),
        largest_comparison_f64: resolution.largest_comparison.map(|l| kind.to_f64(l)),
        deleted_keys_ttl: table.ttl.deleted_keys_ttl,
        metadata_ttl: table.ttl.metadata_ttl,
        metadata_watermark: resolution.metadata_watermark,
    })
}

/// Resolves the runs at `run_paths` (already verified, or written by this process) and writes
/// the key metadata as SST files into `dir`; returns the resolution and each key set's files in
/// key order.
pub(crate) fn resolve_to_files(
    run_paths: &[PathBuf],
    sources: &[Source],
    kind: ComparisonKind,
    ttl: TtlSettings,
    dir: &Path,
    format_version: i32,
    options: &PrebuildOptions,
) -> anyhow::Result<(Resolution, KeySetFiles)> {
    let sst = sst_options(format_version);
    let runs = run_paths
        .iter()
        .map(|p| RunFile::open(p, false))
        .collect::<Result<Vec<_>, _>>()?;
    if runs
        .iter()
        .all(|run| run.header.primary_key_hash == PrimaryKeyHash::Xxh3_128)
    {
        let entries = runs.iter().map(|run| run.header.entries).sum();
        let plan = RangePlan::for_entries(
            entries,
            options.entries_per_key_range,
            options.max_key_ranges,
            options.resolve_threads,
        );
        let (resolution, files) = resolve_in_ranges(&runs, sources, kind, ttl, plan, |range| {
            let name = format!("keys-{range}");
            Ok(SetSplitters::new(&sst, dir, &name, options.sst_max_entries))
        })?;
        let mut all = KeySetFiles::default();
        files.into_iter().for_each(|range| all.extend(range));
        return Ok((resolution, all));
    }
    drop(runs);
    let readers = run_paths
        .iter()
        .map(|p| RunReader::open(p))
        .collect::<Result<Vec<_>, _>>()?;
    let mut splitter = SetSplitters::new(&sst, dir, "keys", options.sst_max_entries);
    let resolution = resolve(readers, sources, kind, ttl, |set, key, record| {
        splitter.put(set, key, &record)
    })?;
    let files = splitter.finish()?;
    Ok((resolution, files))
}

/// Uploads `files` of key set `set` as `{prefix}keys/{first + n}.sst` (hot) or
/// `{prefix}cold/{first + n}.sst` (cold), in `layer`; returns their manifest entries.
pub(super) async fn upload_key_files(
    store: &Store,
    prefix: &str,
    set: KeySet,
    files: Vec<SstFile>,
    (first, layer): (usize, u32),
) -> anyhow::Result<Vec<KeyFile>> {
    futures::stream::iter(files.into_iter().enumerate())
        .map(|(index, sst)| async move {
            let key = format!("{prefix}{}/{}.sst", key_folder(set), first + index);
            store.put_file_once(&key, &sst.path).await?;
            anyhow::Ok(KeyFile {
                file: FileEntry {
                    key,
                    size: sst.size,
                    checksum: sst.checksum,
                },
                entries: sst.entries,
                layer,
            })
        })
        .buffered(UPLOADS_AT_ONCE)
        .try_collect()
        .await
}

/// The folder of a snapshot's prefix that holds a key set's SST files.
pub(super) fn key_folder(set: KeySet) -> &'static str {
    match set {
        KeySet::Hot => "keys",
        KeySet::Cold => "cold",
    }
}

pub(super) async fn upload_bitmap(
    store: &Store,
    key: &str,
    bitmap: &roaring::RoaringBitmap,
) -> anyhow::Result<FileEntry> {
    let mut bytes = Vec::with_capacity(bitmap.serialized_size());
    bitmap.serialize_into(&mut bytes)?;
    let entry = FileEntry {
        key: key.to_string(),
        size: bytes.len() as u64,
        checksum: sha256_hex(&bytes),
    };
    store.put_once(key, Bytes::from(bytes)).await?;
    Ok(entry)
}
