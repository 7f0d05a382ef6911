//! Ingest: stands in for the serving servers that commit segments. Rows are routed to partitions by
//! a stable hash of the primary key, cut into segments of `segment_rows` rows, written as Parquet,
//! uploaded under fresh names, and registered online in one catalog transaction at the end, so a
//! failed ingest registers nothing (its uploaded objects are deleted, or left for GC on a crash).

mod columns;
pub mod generate;
mod partitioner;
pub mod sources;

use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::RecordBatch;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::catalog::{Catalog, NewSegment};
use crate::segment::{new_segment_name, SegmentWriter, WriteOptions};
use crate::storage::Store;
use crate::table::TableConfig;

pub use columns::RowBuilder;
pub use generate::{GenerateOptions, Generator};
pub use sources::{open_input, BatchSource, InputFormat};

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("{file} {}: {message}; fix the input and run the ingest again (nothing was registered)", location(*line, column.as_deref()))]
    BadRow {
        file: String,
        line: u64,
        column: Option<String>,
        message: String,
    },
    #[error("input {file}: {message}")]
    Input { file: String, message: String },
    #[error("bad ingest options: {0}")]
    Options(String),
}

fn location(line: u64, column: Option<&str>) -> String {
    let place = if line == 0 {
        String::new()
    } else {
        format!("line {line}")
    };
    match column {
        Some(column) if place.is_empty() => format!("column `{column}`"),
        Some(column) => format!("{place}, column `{column}`"),
        None => place,
    }
}

#[derive(Debug, Clone)]
pub struct IngestOptions {
    pub segment_rows: usize,
    pub write: WriteOptions,
    /// Local directory for staging segment files before upload.
    pub staging_dir: PathBuf,
    /// Segments written and uploaded at once.
    pub concurrency: usize,
    pub progress: bool,
    /// Expected total rows, for the progress bar; 0 if unknown.
    pub expected_rows: u64,
}

impl Default for IngestOptions {
    fn default() -> Self {
        IngestOptions {
            segment_rows: 500_000,
            write: WriteOptions::default(),
            staging_dir: std::env::temp_dir(),
            concurrency: 2,
            progress: false,
            expected_rows: 0,
        }
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct IngestReport {
    pub table: String,
    pub rows: u64,
    pub bytes: u64,
    pub segment_ids: Vec<i64>,
    pub segments: Vec<NewSegment>,
}

/// A segment's worth of rows for one partition, in stream order.
struct Cut {
    partition: u32,
    batches: Vec<RecordBatch>,
}

/// Runs `source` through the partitioner, writes and uploads every segment, then registers them
/// all in one transaction. On any error, uploaded objects are deleted and nothing is registered.
pub async fn ingest(
    catalog: &Catalog,
    store: &Store,
    table: Arc<TableConfig>,
    source: BatchSource,
    options: IngestOptions,
) -> anyhow::Result<IngestReport> {
    anyhow::ensure!(
        options.segment_rows > 0,
        "--segment-rows must be at least 1"
    );
    let staging = tempfile::Builder::new()
        .prefix("minion-ingest-")
        .tempdir_in(&options.staging_dir)
        .map_err(|err| {
            anyhow::anyhow!(
                "cannot create a staging directory in {}: {err}",
                options.staging_dir.display()
            )
        })?;
    let progress = progress_bar(options.progress, options.expected_rows);

    let (cut_tx, mut cut_rx) = mpsc::channel::<Cut>(options.concurrency.max(1));
    let producer = {
        let table = table.clone();
        let segment_rows = options.segment_rows;
        let progress = progress.clone();
        tokio::task::spawn_blocking(move || {
            partitioner::run(&table, source, segment_rows, &cut_tx, &progress)
        })
    };

    let mut written: Vec<NewSegment> = Vec::new();
    let mut tasks: JoinSet<anyhow::Result<NewSegment>> = JoinSet::new();
    let mut failure: Option<anyhow::Error> = None;
    let mut reserved: Vec<(u32, i64)> = Vec::new();
    while let Some(cut) = cut_rx.recv().await {
        // Sequences are reserved in cut order, which is stream order within a partition.
        let sequence = match catalog
            .reserve_sequences(&table.name, cut.partition, 1)
            .await
        {
            Ok(sequence) => {
                reserved.push((cut.partition, sequence));
                sequence
            }
            Err(err) => {
                failure = Some(err.into());
                break;
            }
        };
        while tasks.len() >= options.concurrency.max(1) {
            match join_next(&mut tasks).await {
                Some(Ok(segment)) => written.push(segment),
                Some(Err(err)) => failure = Some(err),
                None => break,
            }
        }
        if failure.is_some() {
            break;
        }
        let (table, store, staging_dir, write) = (
            table.clone(),
            store.clone(),
            staging.path().to_path_buf(),
            options.write.clone(),
        );
        tasks.spawn(async move {
            write_and_upload(&table, &store, &staging_dir, &write, cut, sequence).await
        });
    }
    drop(cut_rx);
    while let Some(result) = join_next(&mut tasks).await {
        match result {
            Ok(segment) => written.push(segment),
            Err(err) => failure = failure.or(Some(err)),
        }
    }
    let produced = producer
        .await
        .map_err(|err| anyhow::anyhow!("ingest reader panicked: {err}"))?;
    if let Err(err) = produced {
        failure = Some(err.into());
    }
    progress.finish_and_clear();

    if let Some(err) = failure {
        give_up(catalog, store, &table.name, &written, &reserved).await;
        return Err(err);
    }
    written.sort_by_key(|s| (s.partition, s.sequence));
    let segment_ids = match catalog.register_segments(&written).await {
        Ok(ids) => ids,
        Err(err) => {
            give_up(catalog, store, &table.name, &written, &reserved).await;
            return Err(err.into());
        }
    };
    Ok(IngestReport {
        table: table.name.clone(),
        rows: written.iter().map(|s| s.row_count).sum(),
        bytes: written.iter().map(|s| s.byte_size).sum(),
        segment_ids,
        segments: written,
    })
}

/// Undoes a failed ingest: its uploads are deleted and its sequence reservations released (a
/// failure here is only logged: GC expires reservations and sweeps orphan objects anyway).
async fn give_up(
    catalog: &Catalog,
    store: &Store,
    table: &str,
    written: &[NewSegment],
    reserved: &[(u32, i64)],
) {
    discard_uploads(store, written).await;
    if let Err(err) = catalog.release_sequences(table, reserved).await {
        tracing::warn!(%table, error = %err, "could not release sequence reservations; GC will expire them");
    }
}

async fn join_next(
    tasks: &mut JoinSet<anyhow::Result<NewSegment>>,
) -> Option<anyhow::Result<NewSegment>> {
    let joined = tasks.join_next().await?;
    Some(joined.unwrap_or_else(|err| Err(anyhow::anyhow!("segment writer panicked: {err}"))))
}

async fn write_and_upload(
    table: &TableConfig,
    store: &Store,
    staging_dir: &std::path::Path,
    write: &WriteOptions,
    cut: Cut,
    sequence: i64,
) -> anyhow::Result<NewSegment> {
    let name = new_segment_name(&table.name, cut.partition, sequence);
    let local = staging_dir.join(format!("{name}.parquet"));
    let written = {
        let (table, local, write) = (table.clone(), local.clone(), write.clone());
        tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            let mut writer =
                SegmentWriter::create(&local, &table, cut.partition, sequence, &write)?;
            for batch in &cut.batches {
                writer.write(batch)?;
            }
            Ok(writer.finish()?)
        })
        .await??
    };
    let segment = NewSegment::for_written(&table.name, cut.partition, sequence, name, &written);
    store.put_file_once(&segment.object_key, &local).await?;
    let _ = tokio::fs::remove_file(&local).await;
    Ok(segment)
}

/// Best effort: objects of a failed ingest are deleted now; what a crash leaves, GC collects.
async fn discard_uploads(store: &Store, written: &[NewSegment]) {
    for segment in written {
        if let Err(err) = store.delete(&segment.object_key).await {
            tracing::warn!(object = %segment.object_key, error = %err, "could not delete the upload of a failed ingest; gc will collect it");
        }
    }
}

fn progress_bar(enabled: bool, expected_rows: u64) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    let bar = if expected_rows > 0 {
        ProgressBar::new(expected_rows)
    } else {
        ProgressBar::new_spinner()
    };
    bar.set_draw_target(ProgressDrawTarget::stderr());
    let template = if expected_rows > 0 {
        "{spinner} ingest [{elapsed_precise}] {wide_bar} {human_pos}/{human_len} rows ({per_sec}, eta {eta})"
    } else {
        "{spinner} ingest [{elapsed_precise}] {human_pos} rows ({per_sec})"
    };
    bar.set_style(ProgressStyle::with_template(template).expect("valid progress template"));
    bar
}
