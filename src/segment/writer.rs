//! Writing one segment to a local staging file.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float64Type, Int32Type, Int64Type, TimestampMillisecondType};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::format::KeyValue;
use sha2::{Digest, Sha256};

use super::{metadata_keys, SegmentError};
use crate::table::TableConfig;

#[derive(Debug, Clone)]
pub struct WriteOptions {
    /// Rows per Parquet row group. Smaller groups let compaction copy more of a segment through
    /// untouched; larger ones compress a little better.
    pub row_group_rows: usize,
    pub zstd_level: i32,
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions {
            row_group_rows: 128 * 1024,
            zstd_level: 3,
        }
    }
}

/// What was written: everything the catalog records about a segment file.
#[derive(Debug, Clone)]
pub struct WrittenSegment {
    pub path: PathBuf,
    pub rows: u64,
    pub bytes: u64,
    /// SHA-256 of the file, hex.
    pub checksum: String,
    pub min_comparison: Option<f64>,
    pub max_comparison: Option<f64>,
}

/// Streams record batches of the table's schema into a Parquet file.
pub struct SegmentWriter {
    path: PathBuf,
    writer: ArrowWriter<HashingWriter<BufWriter<File>>>,
    comparison_index: usize,
    rows: u64,
    min_comparison: Option<f64>,
    max_comparison: Option<f64>,
}

impl SegmentWriter {
    pub fn create(
        path: &Path,
        table: &TableConfig,
        partition: u32,
        sequence: i64,
        options: &WriteOptions,
    ) -> Result<SegmentWriter, SegmentError> {
        let shown = path.display().to_string();
        let file = File::create(path).map_err(|source| SegmentError::Io {
            path: shown.clone(),
            source,
        })?;
        let metadata = vec![
            KeyValue::new(metadata_keys::FORMAT.to_string(), "1".to_string()),
            KeyValue::new(metadata_keys::TABLE.to_string(), table.name.clone()),
            KeyValue::new(metadata_keys::PARTITION.to_string(), partition.to_string()),
            KeyValue::new(metadata_keys::SEQUENCE.to_string(), sequence.to_string()),
        ];
        let level = ZstdLevel::try_new(options.zstd_level).unwrap_or_default();
        let properties = WriterProperties::builder()
            .set_compression(Compression::ZSTD(level))
            .set_max_row_group_size(options.row_group_rows.max(1))
            .set_statistics_enabled(EnabledStatistics::Chunk)
            .set_key_value_metadata(Some(metadata))
            .set_created_by(format!("upsert-minion {}", env!("CARGO_PKG_VERSION")))
            .build();
        let sink = HashingWriter::new(BufWriter::with_capacity(1 << 20, file));
        let writer = ArrowWriter::try_new(sink, table.arrow_schema(), Some(properties)).map_err(
            |source| SegmentError::Write {
                path: shown,
                source,
            },
        )?;
        Ok(SegmentWriter {
            path: path.to_path_buf(),
            writer,
            comparison_index: table.comparison_index(),
            rows: 0,
            min_comparison: None,
            max_comparison: None,
        })
    }

    pub fn write(&mut self, batch: &RecordBatch) -> Result<(), SegmentError> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        if let Some((min, max)) = comparison_range(batch.column(self.comparison_index).as_ref()) {
            self.min_comparison = Some(self.min_comparison.map_or(min, |m| m.min(min)));
            self.max_comparison = Some(self.max_comparison.map_or(max, |m| m.max(max)));
        }
        self.rows += batch.num_rows() as u64;
        self.writer
            .write(batch)
            .map_err(|source| SegmentError::Write {
                path: self.path.display().to_string(),
                source,
            })
    }

    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Closes the file, flushing it to disk, and returns its size and checksum.
    pub fn finish(self) -> Result<WrittenSegment, SegmentError> {
        let shown = self.path.display().to_string();
        let sink = self
            .writer
            .into_inner()
            .map_err(|source| SegmentError::Write {
                path: shown.clone(),
                source,
            })?;
        let (buffered, hasher, bytes) = sink.into_parts();
        let file = buffered.into_inner().map_err(|err| SegmentError::Io {
            path: shown.clone(),
            source: err.into_error(),
        })?;
        file.sync_all().map_err(|source| SegmentError::Io {
            path: shown,
            source,
        })?;
        Ok(WrittenSegment {
            path: self.path,
            rows: self.rows,
            bytes,
            checksum: hex::encode(hasher.finalize()),
            min_comparison: self.min_comparison,
            max_comparison: self.max_comparison,
        })
    }
}

/// Min and max of a comparison column as f64 (the catalog's representation).
fn comparison_range(column: &dyn Array) -> Option<(f64, f64)> {
    use arrow::compute::{max, min};
    match column.data_type() {
        DataType::Int32 => {
            let values = column.as_primitive::<Int32Type>();
            Some((min(values)? as f64, max(values)? as f64))
        }
        DataType::Int64 => {
            let values = column.as_primitive::<Int64Type>();
            Some((min(values)? as f64, max(values)? as f64))
        }
        DataType::Timestamp(_, _) => {
            let values = column.as_primitive::<TimestampMillisecondType>();
            Some((min(values)? as f64, max(values)? as f64))
        }
        DataType::Float64 => {
            let values = column.as_primitive::<Float64Type>();
            Some((min(values)?, max(values)?))
        }
        _ => None,
    }
}

/// A `Write` that hashes and counts every byte on its way to the inner writer.
struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W> HashingWriter<W> {
    fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    fn into_parts(self) -> (W, Sha256, u64) {
        (self.inner, self.hasher, self.bytes)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let written = self.inner.write(buf)?;
        self.hasher.update(&buf[..written]);
        self.bytes += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
