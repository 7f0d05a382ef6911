//! Reading segments back, checked against the table they claim to belong to.

use std::fs::File;
use std::path::{Path, PathBuf};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use parquet::arrow::ProjectionMask;
use parquet::file::metadata::ParquetMetaData;

use super::{metadata_keys, SegmentError};
use crate::table::TableConfig;

/// What a segment's footer says about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentInfo {
    pub table: Option<String>,
    pub partition: Option<u32>,
    pub sequence: Option<i64>,
    pub rows: u64,
    pub row_groups: usize,
}

/// An opened, schema-checked segment file.
pub struct SegmentFile {
    path: PathBuf,
    builder_metadata: std::sync::Arc<ParquetMetaData>,
    arrow_schema: SchemaRef,
}

impl SegmentFile {
    /// Opens `path` and checks that every table column is present with the table's type.
    pub fn open(path: &Path, table: &TableConfig) -> Result<SegmentFile, SegmentError> {
        let shown = path.display().to_string();
        let builder = Self::builder(path)?;
        let file_schema = builder.schema().clone();
        for column in &table.columns {
            let Ok(field) = file_schema.field_with_name(&column.name) else {
                return Err(SegmentError::SchemaMismatch {
                    path: shown,
                    table: table.name.clone(),
                    message: format!("column `{}` is missing", column.name),
                });
            };
            let expected = column.column_type.arrow_type();
            if field.data_type() != &expected {
                return Err(SegmentError::SchemaMismatch {
                    path: shown,
                    table: table.name.clone(),
                    message: format!(
                        "column `{}` is {} in the file but {} ({}) in the table",
                        column.name,
                        field.data_type(),
                        column.column_type,
                        expected
                    ),
                });
            }
        }
        Ok(SegmentFile {
            path: path.to_path_buf(),
            builder_metadata: builder.metadata().clone(),
            arrow_schema: file_schema,
        })
    }

    fn builder(path: &Path) -> Result<ParquetRecordBatchReaderBuilder<File>, SegmentError> {
        let shown = path.display().to_string();
        let file = File::open(path).map_err(|source| SegmentError::Io {
            path: shown.clone(),
            source,
        })?;
        ParquetRecordBatchReaderBuilder::try_new(file).map_err(|source| SegmentError::Corrupt {
            path: shown,
            source,
        })
    }

    pub fn info(&self) -> SegmentInfo {
        let file = self.builder_metadata.file_metadata();
        let lookup = |key: &str| -> Option<String> {
            file.key_value_metadata()?
                .iter()
                .find(|kv| kv.key == key)
                .and_then(|kv| kv.value.clone())
        };
        SegmentInfo {
            table: lookup(metadata_keys::TABLE),
            partition: lookup(metadata_keys::PARTITION).and_then(|v| v.parse().ok()),
            sequence: lookup(metadata_keys::SEQUENCE).and_then(|v| v.parse().ok()),
            rows: file.num_rows() as u64,
            row_groups: self.builder_metadata.num_row_groups(),
        }
    }

    pub fn metadata(&self) -> &ParquetMetaData {
        &self.builder_metadata
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// All columns of row group `index` only, in batches.
    pub fn read_row_group(
        &self,
        index: usize,
        batch_rows: usize,
    ) -> Result<BatchIter, SegmentError> {
        let builder = Self::builder(&self.path)?.with_row_groups(vec![index]);
        self.batches(builder, batch_rows)
    }

    /// Batches of only the named columns (in file order), or of all columns when `columns` is None.
    pub fn read(
        &self,
        columns: Option<&[&str]>,
        batch_rows: usize,
    ) -> Result<BatchIter, SegmentError> {
        let builder = Self::builder(&self.path)?;
        let mask = match columns {
            None => ProjectionMask::all(),
            Some(names) => {
                let mut indices = Vec::with_capacity(names.len());
                for name in names {
                    let index = self.arrow_schema.index_of(name).map_err(|_| {
                        SegmentError::SchemaMismatch {
                            path: self.path.display().to_string(),
                            table: String::new(),
                            message: format!("column `{name}` is missing"),
                        }
                    })?;
                    indices.push(index);
                }
                ProjectionMask::roots(builder.parquet_schema(), indices)
            }
        };
        self.batches(builder.with_projection(mask), batch_rows)
    }

    fn batches(
        &self,
        builder: ParquetRecordBatchReaderBuilder<File>,
        batch_rows: usize,
    ) -> Result<BatchIter, SegmentError> {
        let path = self.path.display().to_string();
        let reader = builder
            .with_batch_size(batch_rows.max(1))
            .build()
            .map_err(|source| SegmentError::Corrupt {
                path: path.clone(),
                source,
            })?;
        Ok(BatchIter { path, reader })
    }
}

/// Record batches of a segment; decoding errors name the file.
pub struct BatchIter {
    path: String,
    reader: ParquetRecordBatchReader,
}

impl Iterator for BatchIter {
    type Item = Result<RecordBatch, SegmentError>;

    fn next(&mut self) -> Option<Self::Item> {
        let item = self.reader.next()?;
        Some(item.map_err(|err| SegmentError::Corrupt {
            path: self.path.clone(),
            source: parquet::errors::ParquetError::ArrowError(err.to_string()),
        }))
    }
}
