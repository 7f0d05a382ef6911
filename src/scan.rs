//! `minion scan`: the rows a query would see (queryable) or every valid row including winning
//! tombstones, from the newest snapshot plus the segments it does not cover, as JSON Lines or
//! Parquet. With a pinned snapshot version it reads exactly what that snapshot covers, as a
//! server that loaded it would, whatever compaction, merge and GC did since (invariant 6). Every
//! segment, pinned or not, is checked (`snapshot::read`) before its bitmap is applied: against
//! the manifest's checksum when pinned, against the catalog's size and checksum otherwise.

use std::fs::File;
use std::path::{Path, PathBuf};

use arrow::compute::filter_record_batch;
use parquet::arrow::ArrowWriter;

use roaring::RoaringBitmap;

use crate::catalog::Catalog;
use crate::loader::{bootstrap, BootstrapOptions};
use crate::segment::{selection_mask, SegmentFile};
use crate::snapshot::read::{fetch_covered_segment, fetch_segment, load_bitmap, load_manifest};
use crate::storage::Store;
use crate::table::TableConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ScanFormat {
    Jsonl,
    Parquet,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanRows {
    /// Winners that are not delete tombstones: what queries see.
    Queryable,
    /// Every winner, tombstones included.
    Valid,
}

enum Sink {
    Jsonl(arrow::json::LineDelimitedWriter<std::io::BufWriter<File>>),
    Parquet(ArrowWriter<File>),
}

/// What to scan and where to write it.
pub struct ScanRequest<'a> {
    pub table: &'a str,
    pub partitions: &'a [u32],
    pub rows: ScanRows,
    pub format: ScanFormat,
    pub output: &'a Path,
    /// Read this snapshot version only (one partition).
    pub snapshot: Option<i64>,
}

/// Writes the selected rows to the request's output; returns the row count. The rows go to a
/// file beside the output, renamed over it only when every row is written: a scan that fails
/// leaves what was at the output before untouched.
pub async fn scan(
    catalog: &Catalog,
    store: &Store,
    request: ScanRequest<'_>,
    options: &BootstrapOptions,
) -> anyhow::Result<u64> {
    let output = request.output;
    let parent = match output.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let partial = tempfile::Builder::new()
        .prefix(".minion-scan-")
        .suffix(".partial")
        .tempfile_in(parent)
        .map_err(|err| anyhow::anyhow!("cannot write beside {}: {err}", output.display()))?;
    let file = partial.reopen()?;
    let written = scan_into(catalog, store, request, options, file).await?;
    partial.as_file().sync_all()?;
    partial
        .persist(output)
        .map_err(|err| anyhow::anyhow!("cannot move the rows into {}: {err}", output.display()))?;
    Ok(written)
}

async fn scan_into(
    catalog: &Catalog,
    store: &Store,
    request: ScanRequest<'_>,
    options: &BootstrapOptions,
    file: File,
) -> anyhow::Result<u64> {
    let ScanRequest {
        table: table_name,
        partitions,
        rows,
        format,
        output: _,
        snapshot,
    } = request;
    let table = catalog.table(table_name).await?;
    let mut sink = match format {
        ScanFormat::Jsonl => Sink::Jsonl(arrow::json::LineDelimitedWriter::new(
            std::io::BufWriter::new(file),
        )),
        ScanFormat::Parquet => {
            Sink::Parquet(ArrowWriter::try_new(file, table.arrow_schema(), None)?)
        }
    };
    let mut written = 0u64;
    if let Some(version) = snapshot {
        let [partition] = partitions else {
            anyhow::bail!("a pinned snapshot is one partition's; pass --partition with --snapshot");
        };
        written = scan_pinned(
            catalog, store, &table, *partition, version, rows, &mut sink, options,
        )
        .await?;
        return finish(sink, written);
    }
    for &partition in partitions {
        let work = tempfile::Builder::new()
            .prefix("minion-scan-")
            .tempdir_in(&options.staging_dir)?;
        let db_dir: PathBuf = work.path().join("db");
        let loaded = bootstrap(catalog, store, table_name, partition, &db_dir, options).await?;
        // Exactly the segments bootstrap loaded, even if one was replaced since: listing online
        // segments again could miss both sides of a swap that happened in between.
        for (&segment_id, bitmaps) in &loaded.bitmaps {
            let Some(segment) = catalog.segment(segment_id).await? else {
                anyhow::bail!("segment {segment_id} was collected while being scanned; scan again");
            };
            let selected = match rows {
                ScanRows::Queryable => &bitmaps.queryable,
                ScanRows::Valid => &bitmaps.valid,
            };
            if selected.is_empty() {
                continue;
            }
            let local = work.path().join(format!("{}.parquet", segment.id));
            fetch_segment(store, &segment, &local).await?;
            written += write_selected(&mut sink, &table, &local, selected)?;
        }
    }
    finish(sink, written)
}

/// Finishes the output and flushes it, so an error writing it is an error of the scan.
fn finish(sink: Sink, written: u64) -> anyhow::Result<u64> {
    use std::io::Write;
    match sink {
        Sink::Jsonl(mut writer) => {
            writer.finish()?;
            writer.into_inner().flush()?;
        }
        Sink::Parquet(writer) => {
            writer.into_inner()?.flush()?;
        }
    }
    Ok(written)
}

/// The rows of one snapshot version exactly as it covers them.
#[allow(clippy::too_many_arguments)]
async fn scan_pinned(
    catalog: &Catalog,
    store: &Store,
    table: &TableConfig,
    partition: u32,
    version: i64,
    rows: ScanRows,
    sink: &mut Sink,
    options: &BootstrapOptions,
) -> anyhow::Result<u64> {
    let Some(row) = catalog.snapshot(&table.name, partition, version).await? else {
        anyhow::bail!(
            "{} partition {partition} has no snapshot {version} (collected by gc, or never published); see `minion snapshot ls --table {}`",
            table.name,
            table.name
        );
    };
    let manifest = load_manifest(store, &row).await?;
    let work = tempfile::Builder::new()
        .prefix("minion-scan-")
        .tempdir_in(&options.staging_dir)?;
    let mut written = 0u64;
    for entry in &manifest.segments {
        let file = match rows {
            ScanRows::Queryable => &entry.queryable,
            ScanRows::Valid => &entry.valid,
        };
        let selected = load_bitmap(store, file, entry.rows).await?;
        if selected.is_empty() {
            continue;
        }
        let local = work.path().join(format!("{}.parquet", entry.id));
        fetch_covered_segment(store, &manifest, entry, &local).await?;
        written += write_selected(sink, table, &local, &selected)?;
    }
    Ok(written)
}

/// Appends the rows of a local segment file whose docIds are in `selected`.
fn write_selected(
    sink: &mut Sink,
    table: &TableConfig,
    local: &Path,
    selected: &RoaringBitmap,
) -> anyhow::Result<u64> {
    let reader = SegmentFile::open(local, table)?;
    let mut doc_id = 0u32;
    let mut written = 0u64;
    for batch in reader.read(None, 8192)? {
        let batch = batch?;
        let mask = selection_mask(selected, doc_id, batch.num_rows());
        doc_id += batch.num_rows() as u32;
        let kept = filter_record_batch(&batch, &mask)?;
        written += kept.num_rows() as u64;
        match sink {
            Sink::Jsonl(writer) => writer.write(&kept)?,
            Sink::Parquet(writer) => writer.write(&kept)?,
        }
    }
    Ok(written)
}
