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
use serde::Serialize;

use super::keyrun::{build_run, RunFile, RunReader};
use super::manifest::{FileEntry, KeyFile, Manifest, ManifestSegment, FORMAT};
use super::ranges::{resolve_in_ranges, RangePlan};
use super::record::ComparisonKind;
use super::resolve::{resolve, Resolution, Source, TtlSettings};
use super::sst::{sst_options, SstFile, SstSplitter};
use crate::catalog::{Catalog, NewSnapshot, PublishOutcome, SegmentRow, SegmentState};
use crate::storage::{layout, sha256_hex, StorageError, Store};
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
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct PrebuildReport {
    pub table: String,
    pub partition: u32,
    /// published, superseded, up_to_date, no_segments, segment_changed (a covered segment was
    /// replaced meanwhile: nothing published, build again)
    pub outcome: String,
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
    /// Time spent merging runs, resolving winners and writing SST files.
    pub resolve_seconds: f64,
}

/// A problem retrying cannot fix; the job is discarded and nothing is published.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PermanentError(pub String);

pub async fn prebuild(
    catalog: &Catalog,
    store: &Store,
    table_name: &str,
    partition: u32,
    job_id: Option<i64>,
    options: &PrebuildOptions,
) -> anyhow::Result<PrebuildReport> {
    let started = Instant::now();
    let table = catalog.table(table_name).await?;
    if partition >= table.partitions {
        return Err(PermanentError(format!(
            "table {table_name} has partitions 0 to {}, not {partition}",
            table.partitions - 1
        ))
        .into());
    }
    let previous = catalog.latest_snapshot(table_name, partition).await?;
    let expected = previous.as_ref().map(|s| s.version);
    let segments = catalog
        .segments(table_name, Some(partition), Some(SegmentState::Online))
        .await?;
    let mut report = PrebuildReport {
        table: table_name.to_string(),
        partition,
        outcome: String::new(),
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
    };
    let ids: Vec<i64> = segments.iter().map(|s| s.id).collect();
    if previous.as_ref().is_some_and(|p| p.segment_ids == ids) {
        report.outcome = "up_to_date".into();
        return Ok(report);
    }
    if segments.is_empty() && previous.is_none() {
        report.outcome = "no_segments".into();
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
    let phase = Instant::now();
    // One run per core at a time: building one is CPU-bound (decode, hash, sort) on one core.
    let (table_ref, work_path) = (&table, workdir.path());
    let ensured: Vec<anyhow::Result<(PathBuf, bool)>> =
        futures::stream::iter(segments.clone())
            .map(|segment| async move {
                ensure_run(store, table_ref, &segment, work_path, options).await
            })
            .buffered(options.resolve_threads.max(1))
            .collect()
            .await;
    let mut run_paths = Vec::with_capacity(segments.len());
    for result in ensured {
        let (path, reused) = result?;
        if reused {
            report.runs_reused += 1;
        } else {
            report.runs_built += 1;
        }
        run_paths.push(path);
    }
    report.runs_seconds = phase.elapsed().as_secs_f64();
    let phase = Instant::now();

    let sources: Vec<Source> = segments
        .iter()
        .map(|s| Source {
            segment_id: s.id as u64,
            sequence: s.sequence,
            rows: s.row_count as u64,
        })
        .collect();
    let kind = ComparisonKind::of_table(&table);
    let ttl = TtlSettings::of(&table);
    let (resolution, sst_files) = {
        let (dir, format_version, options) = (
            workdir.path().to_path_buf(),
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
        .await??
    };
    report.resolve_seconds = phase.elapsed().as_secs_f64();

    let version = expected.unwrap_or(0) + 1;
    let prefix = layout::snapshot_prefix(table_name, partition, version);
    let (segments_ref, resolution_ref, prefix_ref) = (&segments, &resolution, &prefix);
    let manifest_segments: Vec<ManifestSegment> = futures::stream::iter(0..segments.len())
        .map(|index| async move {
            let segment = &segments_ref[index];
            let valid = upload_bitmap(
                store,
                &format!("{prefix_ref}valid/{}.roaring", segment.id),
                &resolution_ref.valid[index],
            )
            .await?;
            let queryable = upload_bitmap(
                store,
                &format!("{prefix_ref}queryable/{}.roaring", segment.id),
                &resolution_ref.queryable[index],
            )
            .await?;
            anyhow::Ok(ManifestSegment {
                id: segment.id,
                name: segment.name.clone(),
                sequence: segment.sequence,
                checksum: segment.checksum.clone(),
                rows: segment.row_count as u64,
                valid,
                queryable,
                valid_docs: resolution_ref.valid[index].len(),
                queryable_docs: resolution_ref.queryable[index].len(),
            })
        })
        .buffered(UPLOADS_AT_ONCE)
        .try_collect()
        .await?;
    let key_files: Vec<KeyFile> = futures::stream::iter(sst_files.into_iter().enumerate())
        .map(|(index, sst)| async move {
            let key = format!("{prefix_ref}keys/{index}.sst");
            store.put_file_once(&key, &sst.path).await?;
            anyhow::Ok(KeyFile {
                file: FileEntry {
                    key,
                    size: sst.size,
                    checksum: sst.checksum,
                },
                entries: sst.entries,
            })
        })
        .buffered(UPLOADS_AT_ONCE)
        .try_collect()
        .await?;
    let valid_docs: u64 = resolution.valid.iter().map(|b| b.len()).sum();
    let queryable_docs: u64 = resolution.queryable.iter().map(|b| b.len()).sum();
    let manifest = Manifest {
        format: FORMAT,
        table: table_name.to_string(),
        partition,
        version,
        created_at: chrono::Utc::now(),
        job_id,
        primary_key_hash: table.primary_key_hash,
        comparison_kind: kind,
        sst_format_version: options.sst_format_version,
        segments: manifest_segments,
        key_files,
        key_count: resolution.metadata_keys,
        live_keys: resolution.live_keys,
        forgotten_deleted_keys: resolution.forgotten_keys,
        valid_docs,
        queryable_docs,
        largest_comparison: resolution
            .largest_comparison
            .map(|l| kind.natural_from_sortable(l)),
        largest_comparison_f64: resolution.largest_comparison.map(|l| kind.to_f64(l)),
        deleted_keys_ttl: table.ttl.deleted_keys_ttl,
        metadata_ttl: table.ttl.metadata_ttl,
        metadata_watermark: resolution.metadata_watermark,
    };
    let manifest_bytes = serde_json::to_vec_pretty(&manifest)?;
    let manifest_key = format!("{prefix}manifest.json");
    store
        .put_once(&manifest_key, Bytes::from(manifest_bytes.clone()))
        .await?;

    let new = NewSnapshot {
        table: table_name.to_string(),
        partition,
        version,
        manifest_key,
        manifest_checksum: sha256_hex(&manifest_bytes),
        segments: segments
            .iter()
            .map(|s| (s.id, s.checksum.clone()))
            .collect(),
        key_count: resolution.metadata_keys as i64,
        valid_docs: valid_docs as i64,
        queryable_docs: queryable_docs as i64,
        largest_comparison: manifest.largest_comparison_f64,
        job_id,
    };
    crate::faults::pause_point("prebuild:before_publish").await;
    let outcome = catalog.publish_snapshot(&new, expected).await?;
    report.outcome = match outcome {
        PublishOutcome::Published => {
            report.version = Some(version);
            report.key_count = resolution.metadata_keys;
            report.valid_docs = valid_docs;
            "published".into()
        }
        PublishOutcome::Superseded { current } => {
            tracing::info!(?current, "a newer snapshot was published meanwhile; this one is dropped (its objects are garbage)");
            "superseded".into()
        }
        PublishOutcome::SegmentChanged { segment_id } => {
            // The partition moved on (compaction, merge): a new build starts from the new set.
            tracing::info!(
                segment_id,
                "a covered segment changed while the snapshot was built; not published"
            );
            "segment_changed".into()
        }
    };
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Downloads the segment's key run, or builds and uploads it. Returns (local path, reused).
async fn ensure_run(
    store: &Store,
    table: &TableConfig,
    segment: &SegmentRow,
    workdir: &Path,
    options: &PrebuildOptions,
) -> anyhow::Result<(PathBuf, bool)> {
    let partition = segment.partition as u32;
    let run_key = layout::keyrun_key(&table.name, partition, &segment.name);
    let local_run = workdir.join(format!("{}.run", segment.id));
    match store.download_to(&run_key, &local_run).await {
        Ok(_) => {
            // Verified whole here: the resolution reads it in slices and cannot.
            let header = {
                let path = local_run.clone();
                tokio::task::spawn_blocking(move || RunFile::open(&path, true))
                    .await??
                    .header
            };
            if header.segment_checksum != segment.checksum {
                return Err(PermanentError(format!(
                    "key run {run_key} was built from other content than segment {} (checksum {}); delete the run object and prebuild again",
                    segment.name, segment.checksum
                ))
                .into());
            }
            return Ok((local_run, true));
        }
        Err(StorageError::NotFound { .. }) => {}
        Err(err) => return Err(err.into()),
    }
    let local_segment = workdir.join(format!("{}.parquet", segment.id));
    fetch_segment(store, segment, &local_segment).await?;
    let (table_owned, segment_checksum, run_path, work, limit) = (
        table.clone(),
        segment.checksum.clone(),
        local_run.clone(),
        workdir.to_path_buf(),
        options.max_run_entries,
    );
    let segment_path = local_segment.clone();
    tokio::task::spawn_blocking(move || {
        build_run(
            &segment_path,
            &segment_checksum,
            &table_owned,
            &run_path,
            &work,
            limit,
        )
    })
    .await?
    .map_err(|err| match err {
        super::keyrun::RunError::Segment(inner) => {
            anyhow::Error::new(PermanentError(inner.to_string()))
        }
        other => other.into(),
    })?;
    let _ = tokio::fs::remove_file(&local_segment).await;
    match store.put_file_once(&run_key, &local_run).await {
        // Another prebuild built the same run first; runs are deterministic, ours is as good.
        Ok(()) | Err(StorageError::AlreadyExists { .. }) => Ok((local_run, false)),
        Err(err) => Err(err.into()),
    }
}

/// Downloads a segment to `local` and checks it against the catalog's checksum. A missing or
/// changed object is a permanent error: running again cannot bring the content back.
pub(crate) async fn fetch_segment(
    store: &Store,
    segment: &SegmentRow,
    local: &Path,
) -> anyhow::Result<()> {
    match store
        .download_verified(&segment.object_key, local, &segment.checksum)
        .await
    {
        Ok(()) => Ok(()),
        Err(err @ StorageError::NotFound { .. }) => {
            Err(PermanentError(format!("segment {}: {err}", segment.name)).into())
        }
        Err(err) => Err(anyhow::Error::new(err).context(format!("segment {}", segment.name))),
    }
}

/// Resolves the runs at `run_paths` (already verified, or written by this process) and writes
/// the key metadata as SST files into `dir`; returns the resolution and the files in key order.
pub(crate) fn resolve_to_files(
    run_paths: &[PathBuf],
    sources: &[Source],
    kind: ComparisonKind,
    ttl: TtlSettings,
    dir: &Path,
    format_version: i32,
    options: &PrebuildOptions,
) -> anyhow::Result<(Resolution, Vec<SstFile>)> {
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
            Ok(SstSplitter::new(&sst, dir, &name, options.sst_max_entries))
        })?;
        return Ok((resolution, files.into_iter().flatten().collect()));
    }
    drop(runs);
    let readers = run_paths
        .iter()
        .map(|p| RunReader::open(p))
        .collect::<Result<Vec<_>, _>>()?;
    let mut splitter = SstSplitter::new(&sst, dir, "keys", options.sst_max_entries);
    let resolution = resolve(readers, sources, kind, ttl, |key, record| {
        splitter.put(key, &record.encode())
    })?;
    let files = splitter.finish()?;
    Ok((resolution, files))
}

async fn upload_bitmap(
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
