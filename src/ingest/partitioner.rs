//! Routes rows to partitions and cuts each partition's rows into segments, on a blocking thread.

use arrow::array::{ArrayRef, RecordBatch, UInt32Array};
use arrow::compute::take_record_batch;
use indicatif::ProgressBar;
use tokio::sync::mpsc;

use super::{BatchSource, Cut, IngestError};
use crate::keys::partitions_of_rows;
use crate::table::TableConfig;

struct Pending {
    batches: Vec<RecordBatch>,
    rows: usize,
}

/// Reads `source` to the end, sending a [`Cut`] whenever a partition has `segment_rows` rows and
/// the remainders at the end. Stops early when the receiver is gone (the ingest failed).
pub(super) fn run(
    table: &TableConfig,
    source: BatchSource,
    segment_rows: usize,
    cuts: &mpsc::Sender<Cut>,
    progress: &ProgressBar,
) -> Result<(), IngestError> {
    let partitions = table.partitions;
    let key_indices = table.key_indices();
    let mut pending: Vec<Pending> = (0..partitions)
        .map(|_| Pending {
            batches: Vec::new(),
            rows: 0,
        })
        .collect();
    let mut rows_before = 0u64;
    for batch in source {
        let batch = comparable(table, batch?, rows_before)?;
        rows_before += batch.num_rows() as u64;
        progress.inc(batch.num_rows() as u64);
        let key_columns: Vec<ArrayRef> = key_indices
            .iter()
            .map(|&i| batch.column(i).clone())
            .collect();
        let routes = partitions_of_rows(&key_columns, batch.num_rows(), partitions);
        let mut rows_of: Vec<Vec<u32>> = vec![Vec::new(); partitions as usize];
        for (row, &partition) in routes.iter().enumerate() {
            rows_of[partition as usize].push(row as u32);
        }
        for (partition, rows) in rows_of.into_iter().enumerate() {
            if rows.is_empty() {
                continue;
            }
            let taken = take_record_batch(&batch, &UInt32Array::from(rows))
                .expect("row indices are in range");
            let slot = &mut pending[partition];
            slot.rows += taken.num_rows();
            slot.batches.push(taken);
            while slot.rows >= segment_rows {
                let batches = split_off_front(slot, segment_rows);
                if cuts
                    .blocking_send(Cut {
                        partition: partition as u32,
                        batches,
                    })
                    .is_err()
                {
                    return Ok(());
                }
            }
        }
    }
    for (partition, slot) in pending.into_iter().enumerate() {
        if slot.rows > 0
            && cuts
                .blocking_send(Cut {
                    partition: partition as u32,
                    batches: slot.batches,
                })
                .is_err()
        {
            return Ok(());
        }
    }
    Ok(())
}

/// Removes exactly `rows` rows from the front of `slot`, slicing the batch that straddles the cut.
fn split_off_front(slot: &mut Pending, rows: usize) -> Vec<RecordBatch> {
    let mut taken = Vec::new();
    let mut needed = rows;
    while needed > 0 {
        let first = slot.batches.remove(0);
        if first.num_rows() <= needed {
            needed -= first.num_rows();
            taken.push(first);
        } else {
            taken.push(first.slice(0, needed));
            slot.batches
                .insert(0, first.slice(needed, first.num_rows() - needed));
            needed = 0;
        }
    }
    slot.rows -= rows;
    taken
}

/// A float comparison column must order like numbers: NaN and the infinities are refused (a NaN
/// would beat every later update of its key for ever), and -0.0 becomes 0.0 (they are equal
/// numbers, so their tie must go to the later row, not to the sign bit).
fn comparable(
    table: &TableConfig,
    batch: RecordBatch,
    rows_before: u64,
) -> Result<RecordBatch, IngestError> {
    use arrow::array::{Array, AsArray, Float64Array};
    use arrow::datatypes::{DataType, Float64Type};
    let index = table.comparison_index();
    let column = batch.column(index);
    if column.data_type() != &DataType::Float64 {
        return Ok(batch);
    }
    let values = column.as_primitive::<Float64Type>();
    if let Some(row) =
        (0..values.len()).find(|&i| values.is_valid(i) && !values.value(i).is_finite())
    {
        return Err(IngestError::BadRow {
            file: "the input".into(),
            line: rows_before + row as u64 + 1,
            column: Some(table.comparison.clone()),
            message: format!(
                "{} in the comparison column; comparison values must be finite numbers",
                values.value(row)
            ),
        });
    }
    if !values
        .values()
        .iter()
        .any(|v| *v == 0.0 && v.is_sign_negative())
    {
        return Ok(batch);
    }
    let positive: Float64Array = values.unary(|v| if v == 0.0 { 0.0 } else { v });
    let mut columns = batch.columns().to_vec();
    columns[index] = std::sync::Arc::new(positive);
    Ok(RecordBatch::try_new(batch.schema(), columns).expect("same schema"))
}
