//! `minion scan`: the rows a query would see (queryable) or every valid row including winning
//! tombstones, from the newest snapshot plus the segments it does not cover, as JSON Lines or
//! Parquet.

use std::fs::File;
use std::path::{Path, PathBuf};

use arrow::array::BooleanArray;
use arrow::compute::filter_record_batch;
use parquet::arrow::ArrowWriter;

use crate::catalog::{Catalog, SegmentState};
use crate::loader::{bootstrap, BootstrapOptions};
use crate::segment::SegmentFile;
use crate::storage::Store;

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
}

/// Writes the selected rows to the request's output; returns the row count.
pub async fn scan(
    catalog: &Catalog,
    store: &Store,
    request: ScanRequest<'_>,
    options: &BootstrapOptions,
) -> anyhow::Result<u64> {
    let ScanRequest {
        table: table_name,
        partitions,
        rows,
        format,
        output,
    } = request;
    let table = catalog.table(table_name).await?;
    let file = File::create(output)
        .map_err(|err| anyhow::anyhow!("cannot create {}: {err}", output.display()))?;
    let mut sink = match format {
        ScanFormat::Jsonl => Sink::Jsonl(arrow::json::LineDelimitedWriter::new(
            std::io::BufWriter::new(file),
        )),
        ScanFormat::Parquet => {
            Sink::Parquet(ArrowWriter::try_new(file, table.arrow_schema(), None)?)
        }
    };
    let mut written = 0u64;
    for &partition in partitions {
        let work = tempfile::Builder::new()
            .prefix("minion-scan-")
            .tempdir_in(&options.staging_dir)?;
        let db_dir: PathBuf = work.path().join("db");
        let loaded = bootstrap(catalog, store, table_name, partition, &db_dir, options).await?;
        let online = catalog
            .segments(table_name, Some(partition), Some(SegmentState::Online))
            .await?;
        for segment in online {
            let Some(bitmaps) = loaded.bitmaps.get(&segment.id) else {
                continue;
            };
            let selected = match rows {
                ScanRows::Queryable => &bitmaps.queryable,
                ScanRows::Valid => &bitmaps.valid,
            };
            if selected.is_empty() {
                continue;
            }
            let local = work.path().join(format!("{}.parquet", segment.id));
            store.download_to(&segment.object_key, &local).await?;
            let reader = SegmentFile::open(&local, &table)?;
            let mut doc_id = 0u32;
            for batch in reader.read(None, 8192)? {
                let batch = batch?;
                let mask: BooleanArray = (0..batch.num_rows() as u32)
                    .map(|i| Some(selected.contains(doc_id + i)))
                    .collect();
                doc_id += batch.num_rows() as u32;
                let kept = filter_record_batch(&batch, &mask)?;
                written += kept.num_rows() as u64;
                match &mut sink {
                    Sink::Jsonl(writer) => writer.write(&kept)?,
                    Sink::Parquet(writer) => writer.write(&kept)?,
                }
            }
        }
    }
    match sink {
        Sink::Jsonl(mut writer) => writer.finish()?,
        Sink::Parquet(writer) => {
            writer.close()?;
        }
    }
    Ok(written)
}
