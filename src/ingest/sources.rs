//! Input files as record batches of the table's schema: JSON Lines, CSV (with a header) and
//! Parquet. A bad row stops the read with the file, line (or row) and column at fault.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{new_null_array, Array, RecordBatch};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::columns::RowBuilder;
use super::IngestError;
use crate::table::TableConfig;

/// Rows per batch handed to the partitioner.
pub const BATCH_ROWS: usize = 8192;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum InputFormat {
    Jsonl,
    Csv,
    Parquet,
}

impl InputFormat {
    /// Guesses the format from the file name; `None` when the extension says nothing.
    pub fn from_path(path: &Path) -> Option<InputFormat> {
        let extension = path.extension()?.to_str()?.to_ascii_lowercase();
        match extension.as_str() {
            "jsonl" | "ndjson" | "json" => Some(InputFormat::Jsonl),
            "csv" => Some(InputFormat::Csv),
            "parquet" | "pq" => Some(InputFormat::Parquet),
            _ => None,
        }
    }
}

pub type BatchSource = Box<dyn Iterator<Item = Result<RecordBatch, IngestError>> + Send>;

pub fn open_input(
    path: &Path,
    format: InputFormat,
    table: Arc<TableConfig>,
) -> Result<BatchSource, IngestError> {
    let file = File::open(path).map_err(|err| IngestError::Input {
        file: path.display().to_string(),
        message: format!("cannot open: {err}"),
    })?;
    Ok(match format {
        InputFormat::Jsonl => Box::new(JsonLines {
            path: path.to_path_buf(),
            lines: BufReader::with_capacity(1 << 20, file),
            line_number: 0,
            builder: RowBuilder::new(table),
            line: String::new(),
            done: false,
        }),
        InputFormat::Csv => Box::new(CsvRows::new(path, file, table)?),
        InputFormat::Parquet => Box::new(ParquetRows::new(path, file, table)?),
    })
}

struct JsonLines {
    path: PathBuf,
    lines: BufReader<File>,
    line_number: u64,
    builder: RowBuilder,
    line: String,
    done: bool,
}

impl Iterator for JsonLines {
    type Item = Result<RecordBatch, IngestError>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.done && self.builder.rows() < BATCH_ROWS {
            self.line.clear();
            match self.lines.read_line(&mut self.line) {
                Ok(0) => self.done = true,
                Ok(_) => {
                    self.line_number += 1;
                    let text = self.line.trim();
                    if text.is_empty() {
                        continue;
                    }
                    if let Err(err) = self.parse_line() {
                        self.done = true;
                        return Some(Err(err));
                    }
                }
                Err(err) => {
                    self.done = true;
                    return Some(Err(IngestError::Input {
                        file: self.path.display().to_string(),
                        message: format!("read failed after line {}: {err}", self.line_number),
                    }));
                }
            }
        }
        (self.builder.rows() > 0).then(|| Ok(self.builder.finish()))
    }
}

impl JsonLines {
    fn parse_line(&mut self) -> Result<(), IngestError> {
        let bad = |column: Option<String>, message: String| IngestError::BadRow {
            file: self.path.display().to_string(),
            line: self.line_number,
            column,
            message,
        };
        let value: serde_json::Value = serde_json::from_str(self.line.trim())
            .map_err(|err| bad(None, format!("not valid JSON: {err}")))?;
        let serde_json::Value::Object(object) = value else {
            return Err(bad(None, "each line must be a JSON object".into()));
        };
        self.builder
            .append_json(&object)
            .map_err(|(column, message)| bad(Some(column), message))
    }
}

struct CsvRows {
    path: PathBuf,
    reader: csv::Reader<File>,
    /// For each table column, the CSV field index holding it (None: absent, all null).
    field_of_column: Vec<Option<usize>>,
    builder: RowBuilder,
    record: csv::StringRecord,
    done: bool,
}

impl CsvRows {
    fn new(path: &Path, file: File, table: Arc<TableConfig>) -> Result<CsvRows, IngestError> {
        let shown = path.display().to_string();
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(true)
            .from_reader(file);
        let headers = reader
            .headers()
            .map_err(|err| IngestError::Input {
                file: shown.clone(),
                message: format!("cannot read the CSV header line: {err}"),
            })?
            .clone();
        for header in headers.iter() {
            if table.column(header).is_none() {
                return Err(IngestError::BadRow {
                    file: shown,
                    line: 1,
                    column: Some(header.to_string()),
                    message: "header names a column the table does not declare".into(),
                });
            }
        }
        let field_of_column = table
            .columns
            .iter()
            .map(|column| headers.iter().position(|h| h == column.name))
            .collect();
        Ok(CsvRows {
            path: path.to_path_buf(),
            reader,
            field_of_column,
            builder: RowBuilder::new(table),
            record: csv::StringRecord::new(),
            done: false,
        })
    }
}

impl Iterator for CsvRows {
    type Item = Result<RecordBatch, IngestError>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.done && self.builder.rows() < BATCH_ROWS {
            match self.reader.read_record(&mut self.record) {
                Ok(false) => self.done = true,
                Ok(true) => {
                    let line = self.record.position().map_or(0, |p| p.line());
                    let fields: Vec<Option<&str>> = self
                        .field_of_column
                        .iter()
                        .map(|field| field.and_then(|i| self.record.get(i)))
                        .collect();
                    if let Err((column, message)) = self.builder.append_text(&fields) {
                        self.done = true;
                        return Some(Err(IngestError::BadRow {
                            file: self.path.display().to_string(),
                            line,
                            column: Some(column),
                            message,
                        }));
                    }
                }
                Err(err) => {
                    self.done = true;
                    let line = err.position().map_or(0, |p| p.line());
                    return Some(Err(IngestError::BadRow {
                        file: self.path.display().to_string(),
                        line,
                        column: None,
                        message: format!("malformed CSV: {err}"),
                    }));
                }
            }
        }
        (self.builder.rows() > 0).then(|| Ok(self.builder.finish()))
    }
}

struct ParquetRows {
    path: PathBuf,
    table: Arc<TableConfig>,
    reader: parquet::arrow::arrow_reader::ParquetRecordBatchReader,
    rows_before: u64,
}

impl ParquetRows {
    fn new(path: &Path, file: File, table: Arc<TableConfig>) -> Result<ParquetRows, IngestError> {
        let shown = path.display().to_string();
        let input_error = |message: String| IngestError::Input {
            file: shown.clone(),
            message,
        };
        let builder = ParquetRecordBatchReaderBuilder::try_new(file)
            .map_err(|err| input_error(format!("not a readable Parquet file: {err}")))?;
        for field in builder.schema().fields() {
            if table.column(field.name()).is_none() {
                return Err(IngestError::BadRow {
                    file: shown,
                    line: 0,
                    column: Some(field.name().clone()),
                    message: "the file has a column the table does not declare".into(),
                });
            }
        }
        let reader = builder
            .with_batch_size(BATCH_ROWS)
            .build()
            .map_err(|err| input_error(format!("cannot read: {err}")))?;
        Ok(ParquetRows {
            path: path.to_path_buf(),
            table,
            reader,
            rows_before: 0,
        })
    }

    /// Converts the file's batch to the table schema, losslessly (`convert`), checking nulls where
    /// the table forbids them.
    fn conform(&self, batch: RecordBatch) -> Result<RecordBatch, IngestError> {
        let schema = self.table.arrow_schema();
        let mut arrays = Vec::with_capacity(schema.fields().len());
        for field in schema.fields() {
            let bad = |row: Option<u64>, message: String| IngestError::BadRow {
                file: self.path.display().to_string(),
                line: row.unwrap_or(0),
                column: Some(field.name().clone()),
                message,
            };
            let array = match batch.column_by_name(field.name()) {
                None => new_null_array(field.data_type(), batch.num_rows()),
                Some(source) => {
                    super::convert::conform(source, field.data_type()).map_err(|refusal| {
                        let row = refusal.row.map(|r| self.rows_before + r as u64 + 1);
                        bad(row, refusal.message)
                    })?
                }
            };
            if !field.is_nullable() && array.null_count() > 0 {
                let first_null = (0..array.len()).find(|&i| array.is_null(i)).unwrap_or(0);
                return Err(bad(
                    Some(self.rows_before + first_null as u64 + 1),
                    "missing value; key, comparison and delete columns need a value in every row"
                        .into(),
                ));
            }
            arrays.push(array);
        }
        Ok(RecordBatch::try_new(schema, arrays).expect("arrays cast to the table schema"))
    }
}

impl Iterator for ParquetRows {
    type Item = Result<RecordBatch, IngestError>;

    fn next(&mut self) -> Option<Self::Item> {
        let batch = match self.reader.next()? {
            Ok(batch) => batch,
            Err(err) => {
                return Some(Err(IngestError::Input {
                    file: self.path.display().to_string(),
                    message: format!("corrupt Parquet data after row {}: {err}", self.rows_before),
                }))
            }
        };
        let result = self.conform(batch);
        if let Ok(batch) = &result {
            self.rows_before += batch.num_rows() as u64;
        }
        Some(result)
    }
}
