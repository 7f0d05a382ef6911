//! Writing one segment to a local staging file.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{
    DataType, Float64Type, Int32Type, Int64Type, SchemaRef, TimestampMillisecondType,
};
use parquet::arrow::arrow_writer::{compute_leaves, get_column_writers, ArrowColumnWriter};
use parquet::arrow::{add_encoded_arrow_schema_to_metadata, ArrowSchemaConverter};
use parquet::basic::{Compression, ZstdLevel};
use parquet::column::writer::ColumnCloseResult;
use parquet::file::metadata::ParquetMetaData;
use parquet::file::properties::{EnabledStatistics, WriterProperties, WriterPropertiesPtr};
use parquet::file::statistics::Statistics;
use parquet::file::writer::SerializedFileWriter;
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

/// Streams record batches of the table's schema into a Parquet file, in row groups of
/// `row_group_rows`; whole row groups of another segment of the same table can be spliced in
/// without decoding (`copy_row_group`), which is what makes compaction of mostly-valid segments
/// cheap.
pub struct SegmentWriter {
    path: PathBuf,
    writer: SerializedFileWriter<HashingWriter<BufWriter<File>>>,
    arrow_schema: SchemaRef,
    properties: WriterPropertiesPtr,
    row_group_rows: usize,
    /// The row group being encoded (column writers hold encoded pages), and its rows so far,
    /// fewer than `row_group_rows` between calls.
    open_group: Option<Vec<ArrowColumnWriter>>,
    open_rows: usize,
    comparison_index: usize,
    rows: u64,
    min_comparison: Option<f64>,
    max_comparison: Option<f64>,
    copied_row_groups: u64,
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
        let write_error = |source| SegmentError::Write {
            path: shown.clone(),
            source,
        };
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
        let mut builder = WriterProperties::builder()
            .set_compression(Compression::ZSTD(level))
            .set_max_row_group_size(options.row_group_rows.max(1))
            .set_statistics_enabled(EnabledStatistics::Chunk)
            .set_key_value_metadata(Some(metadata))
            .set_created_by(format!("upsert-minion {}", env!("CARGO_PKG_VERSION")));
        // Keys, comparison values and floats are nearly unique per row: a dictionary only costs
        // hashing every value before Parquet falls back to plain encoding. zstd does the work.
        for column in &table.columns {
            let unique_ish = table.primary_key.contains(&column.name)
                || column.name == table.comparison
                || column.column_type == crate::table::ColumnType::Float64;
            if unique_ish {
                builder = builder.set_column_dictionary_enabled(column.name.as_str().into(), false);
            }
        }
        let mut properties = builder.build();
        let arrow_schema = table.arrow_schema();
        // What ArrowWriter does: the Arrow schema rides along so readers get exact types back.
        add_encoded_arrow_schema_to_metadata(&arrow_schema, &mut properties);
        let parquet_schema = ArrowSchemaConverter::new()
            .convert(&arrow_schema)
            .map_err(write_error)?;
        let properties = Arc::new(properties);
        let sink = HashingWriter::new(BufWriter::with_capacity(1 << 20, file));
        let writer = SerializedFileWriter::new(
            sink,
            parquet_schema.root_schema_ptr(),
            Arc::clone(&properties),
        )
        .map_err(write_error)?;
        Ok(SegmentWriter {
            path: path.to_path_buf(),
            writer,
            arrow_schema,
            properties,
            row_group_rows: options.row_group_rows.max(1),
            open_group: None,
            open_rows: 0,
            comparison_index: table.comparison_index(),
            rows: 0,
            min_comparison: None,
            max_comparison: None,
            copied_row_groups: 0,
        })
    }

    pub fn write(&mut self, batch: &RecordBatch) -> Result<(), SegmentError> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        if let Some((min, max)) = comparison_range(batch.column(self.comparison_index).as_ref()) {
            self.note_comparison_range(min, max);
        }
        self.rows += batch.num_rows() as u64;
        let mut offset = 0;
        while offset < batch.num_rows() {
            let room = self.row_group_rows - self.open_rows;
            let take = room.min(batch.num_rows() - offset);
            let part = batch.slice(offset, take);
            self.encode_into_open_group(&part)?;
            offset += take;
            if self.open_rows == self.row_group_rows {
                self.close_open_group()?;
            }
        }
        Ok(())
    }

    /// Whether row groups of `source` can be spliced into this file: the same Parquet schema.
    pub fn can_copy_from(&self, source: &ParquetMetaData) -> bool {
        source.file_metadata().schema_descr().root_schema()
            == self.writer.schema_descr().root_schema()
    }

    /// Appends row group `index` of `source` (whose footer is `metadata`) byte for byte, after
    /// the rows written so far. The caller checks `can_copy_from` first.
    pub fn copy_row_group(
        &mut self,
        source: &File,
        metadata: &ParquetMetaData,
        index: usize,
    ) -> Result<(), SegmentError> {
        debug_assert!(self.can_copy_from(metadata));
        self.close_open_group()?;
        let group = metadata.row_group(index);
        let comparison = group.column(self.comparison_index);
        match comparison.statistics().and_then(statistics_range) {
            Some((min, max)) => self.note_comparison_range(min, max),
            None => {
                return Err(self.write_error(parquet::errors::ParquetError::General(format!(
                    "row group {index} of the source has no statistics on the comparison column; it cannot be copied"
                ))))
            }
        }
        let rows = group.num_rows() as u64;
        let error = write_error(&self.path);
        let mut target = self.writer.next_row_group().map_err(&error)?;
        for column in group.columns() {
            let close = ColumnCloseResult {
                bytes_written: column.compressed_size() as u64,
                rows_written: rows,
                metadata: column.clone(),
                bloom_filter: None,
                column_index: None,
                offset_index: None,
            };
            target.append_column(source, close).map_err(&error)?;
        }
        target.close().map_err(&error)?;
        self.rows += rows;
        self.copied_row_groups += 1;
        Ok(())
    }

    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Row groups spliced in by `copy_row_group` so far.
    pub fn copied_row_groups(&self) -> u64 {
        self.copied_row_groups
    }

    /// Closes the file, flushing it to disk, and returns its size and checksum.
    pub fn finish(mut self) -> Result<WrittenSegment, SegmentError> {
        self.close_open_group()?;
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

    fn note_comparison_range(&mut self, min: f64, max: f64) {
        self.min_comparison = Some(self.min_comparison.map_or(min, |m| m.min(min)));
        self.max_comparison = Some(self.max_comparison.map_or(max, |m| m.max(max)));
    }

    /// Encodes `batch` into the open row group, opening one if needed.
    fn encode_into_open_group(&mut self, batch: &RecordBatch) -> Result<(), SegmentError> {
        let error = write_error(&self.path);
        if self.open_group.is_none() {
            let writers = get_column_writers(
                self.writer.schema_descr(),
                &self.properties,
                &self.arrow_schema,
            )
            .map_err(&error)?;
            self.open_group = Some(writers);
        }
        let writers = self.open_group.as_mut().expect("opened above");
        let mut leaf_writers = writers.iter_mut();
        for (field, array) in self.arrow_schema.fields().iter().zip(batch.columns()) {
            for leaf in compute_leaves(field, array).map_err(&error)? {
                let writer = leaf_writers
                    .next()
                    .expect("one column writer per leaf of the table schema");
                writer.write(&leaf).map_err(&error)?;
            }
        }
        self.open_rows += batch.num_rows();
        Ok(())
    }

    /// Closes the open row group, if any, and appends it to the file.
    fn close_open_group(&mut self) -> Result<(), SegmentError> {
        let Some(writers) = self.open_group.take() else {
            return Ok(());
        };
        self.open_rows = 0;
        let error = write_error(&self.path);
        let mut target = self.writer.next_row_group().map_err(&error)?;
        for writer in writers {
            let chunk = writer.close().map_err(&error)?;
            chunk.append_to_row_group(&mut target).map_err(&error)?;
        }
        target.close().map_err(&error)?;
        Ok(())
    }

    fn write_error(&self, source: parquet::errors::ParquetError) -> SegmentError {
        write_error(&self.path)(source)
    }
}

/// The error for a failed write to `path`, as a function to pass to `map_err`.
fn write_error(path: &Path) -> impl Fn(parquet::errors::ParquetError) -> SegmentError {
    let path = path.display().to_string();
    move |source| SegmentError::Write {
        path: path.clone(),
        source,
    }
}

/// Min and max from Parquet column-chunk statistics, as f64.
fn statistics_range(statistics: &Statistics) -> Option<(f64, f64)> {
    match statistics {
        Statistics::Int32(s) => Some((*s.min_opt()? as f64, *s.max_opt()? as f64)),
        Statistics::Int64(s) => Some((*s.min_opt()? as f64, *s.max_opt()? as f64)),
        Statistics::Double(s) => Some((*s.min_opt()?, *s.max_opt()?)),
        _ => None,
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
