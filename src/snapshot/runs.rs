//! A partition's key runs on local disk for a prebuild: each segment's run is downloaded from
//! the store when an earlier prebuild left one (checked whole, and against the segment's
//! checksum), or built from the segment and uploaded for the next prebuild.

use std::path::{Path, PathBuf};

use futures::StreamExt;
use roaring::RoaringBitmap;
use serde::Serialize;

use super::build::PrebuildOptions;
use super::keyrun::{build_run, derive_run, DeriveInput, RunFile, RunHeader, RunReader};
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
            let path = local_run.clone();
            let checked = match tokio::task::spawn_blocking(move || RunFile::open(&path, true))
                .await?
            {
                Ok(run) => check_source(&run.header, &run_key, &segment.name, &segment.checksum)
                    .map_err(anyhow::Error::from),
                Err(err) => Err(anyhow::Error::from(err)),
            };
            match checked {
                Ok(()) => return Ok((local_run, true)),
                Err(err) => {
                    // A run is a cache of its segment: a damaged one is rebuilt from the
                    // segment (checked against the catalog) and stored again.
                    tracing::warn!(run = %run_key, segment = %segment.name, "key run object is damaged; rebuilding it from the segment: {err:#}");
                    store.delete(&run_key).await?;
                }
            }
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

/// One input of a rewritten segment, for [`write_output_run`].
pub struct OutputRunInput<'a> {
    pub segment: &'a SegmentRow,
    pub valid: &'a RoaringBitmap,
    pub offset: u64,
}

/// How the key run of a rewritten segment came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputRun {
    /// From the inputs' runs and bitmaps (issue 14): no Parquet read.
    Derived,
    /// An input had no run in the store: built from the local output file.
    Built,
}

/// A segment's key run as stored beside it, downloaded to local disk.
pub struct StoredRun {
    pub segment_id: i64,
    pub segment: String,
    /// The segment's checksum, which the run's header must name.
    pub checksum: String,
    pub key: String,
    pub path: PathBuf,
}

impl StoredRun {
    /// Downloads the stored run of segment (`segment_id`, `name`, `checksum`) of `table` into
    /// `dir`; `None` when the store has none.
    pub async fn fetch(
        store: &Store,
        (table, partition): (&str, u32),
        (segment_id, name, checksum): (i64, &str, &str),
        dir: &Path,
    ) -> anyhow::Result<Option<StoredRun>> {
        let key = layout::keyrun_key(table, partition, name);
        let path = dir.join(format!("stored-{segment_id}.run"));
        match store.download_to(&key, &path).await {
            Ok(_) => Ok(Some(StoredRun {
                segment_id,
                segment: name.to_string(),
                checksum: checksum.to_string(),
                key,
                path,
            })),
            Err(StorageError::NotFound { .. }) => Ok(None),
            Err(err) => Err(err.into()),
        }
    }

    /// Downloads the stored runs of `segments` (id, name, checksum) into `dir`, in order;
    /// `Ok(Err(name))` names the first segment the store has no run of.
    pub async fn fetch_all(
        store: &Store,
        place: (&str, u32),
        segments: impl Iterator<Item = (i64, String, String)>,
        dir: &Path,
    ) -> anyhow::Result<Result<Vec<StoredRun>, String>> {
        let mut runs = Vec::new();
        for (segment_id, name, checksum) in segments {
            match StoredRun::fetch(store, place, (segment_id, &name, &checksum), dir).await? {
                Some(run) => runs.push(run),
                None => return Ok(Err(name)),
            }
        }
        Ok(Ok(runs))
    }

    /// Opens the run for reading, refusing one built from other content than its segment.
    pub fn open(&self) -> anyhow::Result<RunReader> {
        let reader = RunReader::open(&self.path)?;
        check_source(&reader.header, &self.key, &self.segment, &self.checksum)?;
        Ok(reader)
    }
}

/// A run's header must name the checksum of the segment it stands for.
fn check_source(
    header: &RunHeader,
    key: &str,
    segment: &str,
    checksum: &str,
) -> Result<(), SnapshotError> {
    if header.segment_checksum == checksum {
        return Ok(());
    }
    Err(SnapshotError::RunMismatch {
        key: key.to_string(),
        segment: segment.to_string(),
        checksum: checksum.to_string(),
    })
}

/// Writes and uploads the key run of a compaction or merge output before its swap, so the
/// follow-up prebuild reads runs only. Derived from the inputs' stored runs when every input has
/// one (each checked against its segment's checksum); otherwise built from `local_output`, the
/// output file the rewrite just wrote.
pub async fn write_output_run(
    store: &Store,
    table: &TableConfig,
    inputs: &[OutputRunInput<'_>],
    output: &crate::catalog::NewSegment,
    local_output: &Path,
    workdir: &Path,
    max_run_entries: usize,
) -> anyhow::Result<OutputRun> {
    let mut runs = Vec::with_capacity(inputs.len());
    for input in inputs {
        let segment = input.segment;
        let place = (table.name.as_str(), segment.partition as u32);
        let identity = (segment.id, segment.name.as_str(), segment.checksum.as_str());
        match StoredRun::fetch(store, place, identity, workdir).await? {
            Some(run) => runs.push((run, input.valid.clone(), input.offset)),
            None => break,
        }
    }
    let out = workdir.join(format!("{}.run", output.name));
    let how = if runs.len() == inputs.len() {
        let (checksum, path) = (output.checksum.clone(), out.clone());
        tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            for (run, ..) in &runs {
                run.open()?;
            }
            let inputs: Vec<DeriveInput<'_>> = runs
                .iter()
                .map(|(run, valid, offset)| DeriveInput {
                    run: run.path.clone(),
                    valid,
                    offset: *offset,
                })
                .collect();
            derive_run(&inputs, &checksum, &path)?;
            Ok(())
        })
        .await??;
        OutputRun::Derived
    } else {
        let (table, checksum, segment, path, work) = (
            table.clone(),
            output.checksum.clone(),
            local_output.to_path_buf(),
            out.clone(),
            workdir.to_path_buf(),
        );
        tokio::task::spawn_blocking(move || {
            build_run(&segment, &checksum, &table, &path, &work, max_run_entries)
        })
        .await??;
        OutputRun::Built
    };
    let key = layout::keyrun_key(&table.name, output.partition, &output.name);
    match store.put_file_once(&key, &out).await {
        // A rerun of the same job wrote the same output name: runs are deterministic.
        Ok(()) | Err(StorageError::AlreadyExists { .. }) => Ok(how),
        Err(err) => Err(err.into()),
    }
}
