//! Typed column builders that turn text and JSON values into Arrow arrays of the table's schema,
//! with errors that name the column and what was wrong.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BinaryBuilder, BooleanBuilder, Float64Builder, Int32Builder, Int64Builder,
    RecordBatch, StringBuilder, TimestampMillisecondBuilder,
};
use base64::Engine;
use serde_json::Value;

use crate::table::{ColumnType, TableConfig};

/// Largest integer magnitude a float64 holds exactly.
const F64_EXACT: u64 = 1 << 53;

enum Builder {
    Int32(Int32Builder),
    Int64(Int64Builder),
    Float64(Float64Builder),
    Bool(BooleanBuilder),
    String(StringBuilder),
    Bytes(BinaryBuilder),
    Timestamp(TimestampMillisecondBuilder),
}

/// One typed value, parsed.
enum Parsed {
    Int(i64),
    Float(f64),
    Bool(bool),
    Text(String),
    Bytes(Vec<u8>),
}

/// Builds record batches of a table's schema row by row.
pub struct RowBuilder {
    table: Arc<TableConfig>,
    builders: Vec<Builder>,
    nullable: Vec<bool>,
    rows: usize,
}

impl RowBuilder {
    pub fn new(table: Arc<TableConfig>) -> RowBuilder {
        let builders = table
            .columns
            .iter()
            .map(|column| match column.column_type {
                ColumnType::Int32 => Builder::Int32(Int32Builder::new()),
                ColumnType::Int64 => Builder::Int64(Int64Builder::new()),
                ColumnType::Float64 => Builder::Float64(Float64Builder::new()),
                ColumnType::Bool => Builder::Bool(BooleanBuilder::new()),
                ColumnType::String => Builder::String(StringBuilder::new()),
                ColumnType::Bytes => Builder::Bytes(BinaryBuilder::new()),
                ColumnType::Timestamp => Builder::Timestamp(TimestampMillisecondBuilder::new()),
            })
            .collect();
        let nullable = table.columns.iter().map(|c| table.is_nullable(c)).collect();
        RowBuilder {
            table,
            builders,
            nullable,
            rows: 0,
        }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Appends one JSON object. Errors are (column, message).
    pub fn append_json(
        &mut self,
        object: &serde_json::Map<String, Value>,
    ) -> Result<(), (String, String)> {
        for key in object.keys() {
            if self.table.column(key).is_none() {
                return Err((
                    key.clone(),
                    "unknown column; the table declares no such column".into(),
                ));
            }
        }
        for index in 0..self.builders.len() {
            let column = &self.table.columns[index];
            let value = match object.get(&column.name) {
                None | Some(Value::Null) => None,
                Some(value) => Some(
                    parse_json(value, column.column_type)
                        .map_err(|message| (column.name.clone(), message))?,
                ),
            };
            self.push(index, value)?;
        }
        self.rows += 1;
        Ok(())
    }

    /// Appends one row of text fields, `fields[i]` for column `mapping[i]`; empty text is null.
    pub fn append_text(&mut self, fields: &[Option<&str>]) -> Result<(), (String, String)> {
        debug_assert_eq!(fields.len(), self.builders.len());
        for (index, field) in fields.iter().enumerate() {
            let column = &self.table.columns[index];
            let value = match field {
                None | Some("") => None,
                Some(text) => Some(
                    parse_text(text, column.column_type)
                        .map_err(|message| (column.name.clone(), message))?,
                ),
            };
            self.push(index, value)?;
        }
        self.rows += 1;
        Ok(())
    }

    fn push(&mut self, index: usize, value: Option<Parsed>) -> Result<(), (String, String)> {
        let Some(value) = value else {
            if !self.nullable[index] {
                return Err((
                    self.table.columns[index].name.clone(),
                    "missing value; key, comparison and delete columns need a value in every row"
                        .into(),
                ));
            }
            match &mut self.builders[index] {
                Builder::Int32(b) => b.append_null(),
                Builder::Int64(b) => b.append_null(),
                Builder::Float64(b) => b.append_null(),
                Builder::Bool(b) => b.append_null(),
                Builder::String(b) => b.append_null(),
                Builder::Bytes(b) => b.append_null(),
                Builder::Timestamp(b) => b.append_null(),
            }
            return Ok(());
        };
        match (&mut self.builders[index], value) {
            (Builder::Int32(b), Parsed::Int(v)) => b.append_value(v as i32),
            (Builder::Int64(b), Parsed::Int(v)) => b.append_value(v),
            (Builder::Timestamp(b), Parsed::Int(v)) => b.append_value(v),
            (Builder::Float64(b), Parsed::Float(v)) => b.append_value(v),
            (Builder::Bool(b), Parsed::Bool(v)) => b.append_value(v),
            (Builder::String(b), Parsed::Text(v)) => b.append_value(v),
            (Builder::Bytes(b), Parsed::Bytes(v)) => b.append_value(v),
            _ => unreachable!("parse_* returns the variant of the column type"),
        }
        Ok(())
    }

    /// Takes the rows built so far as a batch and starts over.
    pub fn finish(&mut self) -> RecordBatch {
        let arrays: Vec<ArrayRef> = self
            .builders
            .iter_mut()
            .map(|builder| match builder {
                Builder::Int32(b) => Arc::new(b.finish()) as ArrayRef,
                Builder::Int64(b) => Arc::new(b.finish()),
                Builder::Float64(b) => Arc::new(b.finish()),
                Builder::Bool(b) => Arc::new(b.finish()),
                Builder::String(b) => Arc::new(b.finish()),
                Builder::Bytes(b) => Arc::new(b.finish()),
                Builder::Timestamp(b) => Arc::new(b.finish()),
            })
            .collect();
        self.rows = 0;
        RecordBatch::try_new(self.table.arrow_schema(), arrays)
            .expect("builders follow the table schema")
    }
}

fn parse_json(value: &Value, column_type: ColumnType) -> Result<Parsed, String> {
    match (column_type, value) {
        (ColumnType::Int32, Value::Number(n)) => {
            let v = n
                .as_i64()
                .ok_or_else(|| format!("expected an int32, got {n}"))?;
            i32::try_from(v).map_err(|_| format!("{v} does not fit in int32"))?;
            Ok(Parsed::Int(v))
        }
        (ColumnType::Int64, Value::Number(n)) => n
            .as_i64()
            .map(Parsed::Int)
            .ok_or_else(|| format!("expected an int64, got {n}")),
        (ColumnType::Timestamp, Value::Number(n)) => n
            .as_i64()
            .map(Parsed::Int)
            .ok_or_else(|| format!("expected milliseconds since the epoch, got {n}")),
        (ColumnType::Timestamp, Value::String(text)) => parse_timestamp(text).map(Parsed::Int),
        (ColumnType::Float64, Value::Number(n)) => {
            // An integer beyond 2^53 has no float64 of its own: it would be rounded.
            let magnitude = n.as_i64().map(|v| v.unsigned_abs()).or(n.as_u64());
            if magnitude.is_some_and(|v| v > F64_EXACT) {
                return Err(format!(
                    "{n} cannot be held exactly by a float64 (beyond 2^53)"
                ));
            }
            n.as_f64()
                .map(Parsed::Float)
                .ok_or_else(|| format!("expected a float64, got {n}"))
        }
        (ColumnType::Bool, Value::Bool(b)) => Ok(Parsed::Bool(*b)),
        (ColumnType::String, Value::String(s)) => Ok(Parsed::Text(s.clone())),
        (ColumnType::Bytes, Value::String(s)) => decode_base64(s),
        (expected, other) => Err(format!(
            "expected {}, got {}",
            describe(expected),
            json_kind(other)
        )),
    }
}

fn parse_text(text: &str, column_type: ColumnType) -> Result<Parsed, String> {
    let trimmed = text.trim();
    match column_type {
        ColumnType::Int32 => trimmed
            .parse::<i32>()
            .map(|v| Parsed::Int(v as i64))
            .map_err(|_| format!("`{text}` is not an int32")),
        ColumnType::Int64 => trimmed
            .parse::<i64>()
            .map(Parsed::Int)
            .map_err(|_| format!("`{text}` is not an int64")),
        ColumnType::Timestamp => match trimmed.parse::<i64>() {
            Ok(millis) => Ok(Parsed::Int(millis)),
            Err(_) => parse_timestamp(trimmed).map(Parsed::Int),
        },
        ColumnType::Float64 => {
            let value = trimmed
                .parse::<f64>()
                .map_err(|_| format!("`{text}` is not a float64"))?;
            let spelled_infinite = trimmed
                .trim_start_matches(['+', '-'])
                .to_ascii_lowercase()
                .starts_with("inf");
            if value.is_infinite() && !spelled_infinite {
                return Err(format!("`{text}` is beyond the range of a float64"));
            }
            if trimmed
                .parse::<i128>()
                .is_ok_and(|v| v.unsigned_abs() > F64_EXACT as u128)
            {
                return Err(format!(
                    "`{text}` cannot be held exactly by a float64 (beyond 2^53)"
                ));
            }
            Ok(Parsed::Float(value))
        }
        // Words only: a number is not a bool (the same rule as JSON Lines and Parquet).
        ColumnType::Bool => match trimmed.to_ascii_lowercase().as_str() {
            "true" | "t" => Ok(Parsed::Bool(true)),
            "false" | "f" => Ok(Parsed::Bool(false)),
            _ => Err(format!("`{text}` is not a bool (true/false)")),
        },
        ColumnType::String => Ok(Parsed::Text(text.to_string())),
        ColumnType::Bytes => decode_base64(trimmed),
    }
}

/// RFC 3339 (`2024-05-01T12:00:00Z`) or a naive `2024-05-01 12:00:00[.fff]` taken as UTC, to
/// the millisecond: finer digits would be cut, so they are refused.
fn parse_timestamp(text: &str) -> Result<i64, String> {
    let whole_millis = |naive: chrono::NaiveDateTime| -> Result<i64, String> {
        if naive.and_utc().timestamp_subsec_nanos() % 1_000_000 != 0 {
            return Err(format!(
                "`{text}` has digits below the millisecond, which a timestamp (ms) cannot hold"
            ));
        }
        Ok(naive.and_utc().timestamp_millis())
    };
    if let Ok(parsed) = chrono::DateTime::parse_from_rfc3339(text) {
        return whole_millis(parsed.naive_utc());
    }
    for format in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"] {
        if let Ok(naive) = chrono::NaiveDateTime::parse_from_str(text, format) {
            return whole_millis(naive);
        }
    }
    Err(format!(
        "`{text}` is not a timestamp; use milliseconds since the epoch or RFC 3339 like 2024-05-01T12:00:00Z"
    ))
}

fn decode_base64(text: &str) -> Result<Parsed, String> {
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map(Parsed::Bytes)
        .map_err(|err| format!("bytes must be base64: {err}"))
}

fn describe(column_type: ColumnType) -> &'static str {
    match column_type {
        ColumnType::Int32 => "an int32 number",
        ColumnType::Int64 => "an int64 number",
        ColumnType::Float64 => "a number",
        ColumnType::Bool => "true or false",
        ColumnType::String => "a string",
        ColumnType::Bytes => "a base64 string",
        ColumnType::Timestamp => "milliseconds or an RFC 3339 string",
    }
}

fn json_kind(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("the bool {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => format!("the string {s:?}"),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    }
}
