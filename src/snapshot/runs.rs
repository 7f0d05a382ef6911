//! A partition's key runs on local disk for a prebuild: each segment's run is downloaded from
//! the store when an earlier prebuild left one (checked whole, and against the segment's
//! checksum), or built from the segment and uploaded for the next prebuild.

use std::path::{Path, PathBuf};

use futures::StreamExt;

use super::build::PrebuildOptions;
use super::keyrun::{build_run, RunFile};
use super::read::{fetch_segment, SnapshotError};
use crate::catalog::SegmentRow;
use crate::storage::{layout, StorageError, Store};
use crate::table::TableConfig;

/// Every segment's key run on local disk, in segment order, and how many were reused.
pub(super) async fn gather_runs(
    store: &Store,
    table: &TableConfig,
    segments: &[SegmentRow],
    workdir: &Path,
    options: &PrebuildOptions,
) -> anyhow::Result<(Vec<PathBuf>, usize)> {
    // One run per core at a time: building one is CPU-bound (decode, hash, sort) on one core.
    // By index: a stream of borrowed rows trips the compiler's higher-ranked lifetime check
    // inside the task's `Send` future.
    let ensured: Vec<anyhow::Result<(PathBuf, bool)>> = futures::stream::iter(0..segments.len())
        .map(|index| ensure_run(store, table, &segments[index], workdir, options))
        .buffered(options.resolve_threads.max(1))
        .collect()
        .await;
    let mut run_paths = Vec::with_capacity(segments.len());
    let mut runs_reused = 0;
    for result in ensured {
        let (path, reused) = result?;
        runs_reused += usize::from(reused);
        run_paths.push(path);
    }
    Ok((run_paths, runs_reused))
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
                return Err(SnapshotError::RunMismatch {
                    key: run_key,
                    segment: segment.name.clone(),
                    checksum: segment.checksum.clone(),
                }
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
    // A segment that cannot be read is permanent (`RunError::Segment` says so).
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
    .await??;
    let _ = tokio::fs::remove_file(&local_segment).await;
    match store.put_file_once(&run_key, &local_run).await {
        // Another prebuild built the same run first; runs are deterministic, ours is as good.
        Ok(()) | Err(StorageError::AlreadyExists { .. }) => Ok((local_run, false)),
        Err(err) => Err(err.into()),
    }
}
