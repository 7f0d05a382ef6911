//! A synthetic upsert stream for any table: Zipf-skewed keys (hot keys updated often, as in YCSB),
//! an advancing event clock with a share of late (out-of-order) events, and a share of deletes.
//! Deterministic for a given seed, so tests and benchmarks can regenerate the same stream.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BinaryBuilder, BooleanBuilder, Float64Builder, Int32Array, Int32Builder, Int64Array,
    Int64Builder, RecordBatch, StringBuilder, TimestampMillisecondArray,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Zipf};

use super::IngestError;
use crate::table::{ColumnType, TableConfig};

#[derive(Debug, Clone)]
pub struct GenerateOptions {
    pub rows: u64,
    pub keys: u64,
    pub seed: u64,
    /// Zipf exponent of key popularity; 0 draws keys uniformly.
    pub zipf_exponent: f64,
    /// Share of rows whose event time lies in the past (up to `late_window_ms` behind the clock).
    pub out_of_order_ratio: f64,
    pub late_window_ms: i64,
    /// Share of rows that are delete tombstones (needs a delete column).
    pub delete_ratio: f64,
    /// Event time of the first row, and how far the clock advances per row.
    pub start_time_ms: i64,
    pub step_ms: i64,
    pub batch_rows: usize,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            rows: 100_000,
            keys: 10_000,
            seed: 42,
            zipf_exponent: 0.99,
            out_of_order_ratio: 0.05,
            late_window_ms: 60_000,
            delete_ratio: 0.02,
            start_time_ms: 1_700_000_000_000,
            step_ms: 1,
            batch_rows: 8192,
        }
    }
}

impl GenerateOptions {
    pub fn validate(&self) -> Result<(), IngestError> {
        let bad = |message: String| Err(IngestError::Options(message));
        if self.keys == 0 {
            return bad("--keys must be at least 1".into());
        }
        for (name, ratio) in [
            ("--out-of-order-ratio", self.out_of_order_ratio),
            ("--delete-ratio", self.delete_ratio),
        ] {
            if !(0.0..=1.0).contains(&ratio) {
                return bad(format!("{name} must be between 0 and 1, got {ratio}"));
            }
        }
        if !(self.zipf_exponent >= 0.0 && self.zipf_exponent.is_finite()) {
            return bad(format!(
                "--zipf must be 0 or more, got {}",
                self.zipf_exponent
            ));
        }
        if self.late_window_ms < 0 || self.step_ms < 0 {
            return bad("--late-window-ms and --step-ms must not be negative".into());
        }
        Ok(())
    }
}

pub struct Generator {
    table: Arc<TableConfig>,
    options: GenerateOptions,
    rng: StdRng,
    zipf: Option<Zipf<f64>>,
    produced: u64,
    key_indices: Vec<usize>,
    comparison_index: usize,
    delete_index: Option<usize>,
}

const STATUSES: [&str; 5] = ["new", "paid", "packed", "shipped", "cancelled"];

impl Generator {
    pub fn new(
        table: Arc<TableConfig>,
        options: GenerateOptions,
    ) -> Result<Generator, IngestError> {
        options.validate()?;
        if options.delete_ratio > 0.0 && table.delete_column.is_none() {
            tracing::info!(table = %table.name, "table has no delete column: generating no deletes");
        }
        let zipf = (options.zipf_exponent > 0.0).then(|| {
            Zipf::new(options.keys, options.zipf_exponent).expect("validated zipf parameters")
        });
        Ok(Generator {
            key_indices: table.key_indices(),
            comparison_index: table.comparison_index(),
            delete_index: table.delete_index(),
            rng: StdRng::seed_from_u64(options.seed),
            zipf,
            produced: 0,
            options,
            table,
        })
    }

    fn next_key(&mut self) -> u64 {
        match &self.zipf {
            Some(zipf) => (zipf.sample(&mut self.rng) as u64 - 1).min(self.options.keys - 1),
            None => self.rng.gen_range(0..self.options.keys),
        }
    }

    fn batch(&mut self, rows: usize) -> RecordBatch {
        let opts = self.options.clone();
        let mut keys = Vec::with_capacity(rows);
        let mut times = Vec::with_capacity(rows);
        let mut deletes = Vec::with_capacity(rows);
        for offset in 0..rows {
            keys.push(self.next_key());
            let clock = opts.start_time_ms + (self.produced + offset as u64) as i64 * opts.step_ms;
            let late = opts.late_window_ms > 0 && self.rng.gen_bool(opts.out_of_order_ratio);
            let time = if late {
                clock - self.rng.gen_range(1..=opts.late_window_ms)
            } else {
                clock
            };
            times.push(time);
            deletes.push(self.delete_index.is_some() && self.rng.gen_bool(opts.delete_ratio));
        }
        self.produced += rows as u64;
        let columns: Vec<ArrayRef> = (0..self.table.columns.len())
            .map(|index| self.column(index, &keys, &times, &deletes))
            .collect();
        RecordBatch::try_new(self.table.arrow_schema(), columns)
            .expect("generator follows the table schema")
    }

    fn column(&mut self, index: usize, keys: &[u64], times: &[i64], deletes: &[bool]) -> ArrayRef {
        let column_type = self.table.columns[index].column_type;
        if let Some(position) = self.key_indices.iter().position(|&k| k == index) {
            let last = position + 1 == self.key_indices.len();
            // The last key column carries the key id; earlier ones a coarse group of it, so a
            // composite key stays unique and earlier columns repeat like tenants do.
            let part = |key: u64| {
                if last {
                    key
                } else {
                    key % (97 + position as u64)
                }
            };
            return match column_type {
                ColumnType::Int32 => Arc::new(Int32Array::from_iter_values(
                    keys.iter().map(|&k| part(k) as i32),
                )),
                ColumnType::Int64 => Arc::new(Int64Array::from_iter_values(
                    keys.iter().map(|&k| part(k) as i64),
                )),
                ColumnType::Timestamp => Arc::new(TimestampMillisecondArray::from_iter_values(
                    keys.iter().map(|&k| part(k) as i64),
                )),
                ColumnType::Bool => {
                    let mut builder = BooleanBuilder::with_capacity(keys.len());
                    keys.iter()
                        .for_each(|&k| builder.append_value(part(k) % 2 == 1));
                    Arc::new(builder.finish())
                }
                ColumnType::String => {
                    let mut builder = StringBuilder::with_capacity(keys.len(), keys.len() * 12);
                    let prefix = if last { "k" } else { "g" };
                    keys.iter()
                        .for_each(|&k| builder.append_value(format!("{prefix}{:010}", part(k))));
                    Arc::new(builder.finish())
                }
                ColumnType::Bytes => {
                    let mut builder = BinaryBuilder::with_capacity(keys.len(), keys.len() * 8);
                    keys.iter()
                        .for_each(|&k| builder.append_value(part(k).to_be_bytes()));
                    Arc::new(builder.finish())
                }
                ColumnType::Float64 => unreachable!("float keys are refused by table validation"),
            };
        }
        if index == self.comparison_index {
            return match column_type {
                ColumnType::Int32 => Arc::new(Int32Array::from_iter_values(
                    times
                        .iter()
                        .map(|&t| (t - self.options.start_time_ms) as i32),
                )),
                ColumnType::Int64 => Arc::new(Int64Array::from_iter_values(times.iter().copied())),
                ColumnType::Timestamp => Arc::new(TimestampMillisecondArray::from_iter_values(
                    times.iter().copied(),
                )),
                ColumnType::Float64 => Arc::new(arrow::array::Float64Array::from_iter_values(
                    times.iter().map(|&t| t as f64),
                )),
                _ => unreachable!("comparison columns are numeric"),
            };
        }
        if Some(index) == self.delete_index {
            return Arc::new(arrow::array::BooleanArray::from(deletes.to_vec()));
        }
        self.value_column(column_type, keys, times)
    }

    fn value_column(&mut self, column_type: ColumnType, keys: &[u64], times: &[i64]) -> ArrayRef {
        let rows = keys.len();
        let rng = &mut self.rng;
        match column_type {
            ColumnType::Int32 => {
                let mut builder = Int32Builder::with_capacity(rows);
                (0..rows).for_each(|_| builder.append_value(rng.gen_range(1..100)));
                Arc::new(builder.finish())
            }
            ColumnType::Int64 => {
                let mut builder = Int64Builder::with_capacity(rows);
                (0..rows).for_each(|_| builder.append_value(rng.gen_range(0..1_000_000)));
                Arc::new(builder.finish())
            }
            ColumnType::Float64 => {
                let mut builder = Float64Builder::with_capacity(rows);
                (0..rows)
                    .for_each(|_| builder.append_value((rng.gen_range(0..100_000) as f64) / 100.0));
                Arc::new(builder.finish())
            }
            ColumnType::Bool => {
                let mut builder = BooleanBuilder::with_capacity(rows);
                (0..rows).for_each(|_| builder.append_value(rng.gen_bool(0.5)));
                Arc::new(builder.finish())
            }
            ColumnType::String => {
                let mut builder = StringBuilder::with_capacity(rows, rows * 8);
                for (row, &key) in keys.iter().enumerate() {
                    if row % 2 == 0 {
                        builder.append_value(STATUSES[rng.gen_range(0..STATUSES.len())]);
                    } else {
                        builder.append_value(format!("c{}", key % 10_007));
                    }
                }
                Arc::new(builder.finish())
            }
            ColumnType::Bytes => {
                let mut builder = BinaryBuilder::with_capacity(rows, rows * 8);
                (0..rows).for_each(|_| builder.append_value(rng.gen::<u64>().to_le_bytes()));
                Arc::new(builder.finish())
            }
            ColumnType::Timestamp => Arc::new(TimestampMillisecondArray::from_iter_values(
                times.iter().copied(),
            )),
        }
    }
}

impl Iterator for Generator {
    type Item = Result<RecordBatch, IngestError>;

    fn next(&mut self) -> Option<Self::Item> {
        let remaining = self.options.rows - self.produced;
        if remaining == 0 {
            return None;
        }
        let rows = remaining.min(self.options.batch_rows.max(1) as u64) as usize;
        Some(Ok(self.batch(rows)))
    }
}
