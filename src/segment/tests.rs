use std::sync::Arc;

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::Int64Type;

use roaring::RoaringBitmap;

use super::*;
use crate::ingest::{GenerateOptions, Generator};
use crate::table::TableConfig;

fn orders() -> Arc<TableConfig> {
    Arc::new(
        TableConfig::from_toml(
            include_str!("../../examples/tables/orders.toml"),
            "orders.toml",
        )
        .unwrap(),
    )
}

fn generated(table: &Arc<TableConfig>, rows: u64) -> Vec<RecordBatch> {
    let options = GenerateOptions {
        rows,
        keys: 500,
        batch_rows: 1000,
        ..GenerateOptions::default()
    };
    Generator::new(table.clone(), options)
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

#[test]
fn round_trip_keeps_rows_metadata_and_order() {
    let table = orders();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.parquet");
    let batches = generated(&table, 5000);
    let options = WriteOptions {
        row_group_rows: 1024,
        ..WriteOptions::default()
    };
    let mut writer = SegmentWriter::create(&path, &table, 3, 17, &options).unwrap();
    for batch in &batches {
        writer.write(batch).unwrap();
    }
    let written = writer.finish().unwrap();
    assert_eq!(written.rows, 5000);
    assert_eq!(written.bytes, std::fs::metadata(&path).unwrap().len());
    assert_eq!(
        written.checksum,
        crate::storage::sha256_hex(&std::fs::read(&path).unwrap())
    );
    assert!(written.min_comparison.unwrap() <= written.max_comparison.unwrap());

    let file = SegmentFile::open(&path, &table).unwrap();
    let info = file.info();
    assert_eq!(info.table.as_deref(), Some("orders"));
    assert_eq!(info.partition, Some(3));
    assert_eq!(info.sequence, Some(17));
    assert_eq!(info.rows, 5000);
    assert_eq!(info.row_groups, 5);

    let keys_in: Vec<i64> = batches
        .iter()
        .flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec())
        .collect();
    let mut keys_out = Vec::new();
    for batch in file.read(Some(&["order_id", "deleted"]), 777).unwrap() {
        let batch = batch.unwrap();
        assert_eq!(batch.num_columns(), 2);
        keys_out.extend_from_slice(batch.column(0).as_primitive::<Int64Type>().values());
    }
    assert_eq!(
        keys_in, keys_out,
        "docIds are row positions: order must be kept"
    );
}

#[test]
fn truncated_and_foreign_files_are_refused_clearly() {
    let table = orders();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.parquet");
    let mut writer = SegmentWriter::create(&path, &table, 0, 0, &WriteOptions::default()).unwrap();
    for batch in generated(&table, 100) {
        writer.write(&batch).unwrap();
    }
    writer.finish().unwrap();
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 20]).unwrap();
    let err = SegmentFile::open(&path, &table).err().unwrap();
    assert!(matches!(err, SegmentError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("corrupt or truncated"), "{err}");

    let sessions = TableConfig::from_toml(
        include_str!("../../examples/tables/sessions.toml"),
        "sessions.toml",
    )
    .unwrap();
    std::fs::write(&path, &bytes).unwrap();
    let err = SegmentFile::open(&path, &sessions).err().unwrap();
    assert!(matches!(err, SegmentError::SchemaMismatch { .. }), "{err}");
}

#[test]
fn spliced_row_groups_read_back_in_place_with_their_comparison_range() {
    let table = orders();
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source.parquet");
    let options = WriteOptions {
        row_group_rows: 1000,
        ..WriteOptions::default()
    };
    let batches = generated(&table, 3000);
    let mut writer = SegmentWriter::create(&source, &table, 0, 1, &options).unwrap();
    for batch in &batches {
        writer.write(batch).unwrap();
    }
    let written_source = writer.finish().unwrap();
    let source_file = SegmentFile::open(&source, &table).unwrap();
    let metadata = source_file.metadata().clone();
    assert_eq!(metadata.num_row_groups(), 3);

    // Output: 500 encoded rows, then source group 2 spliced, then 700 more encoded rows.
    let output = dir.path().join("output.parquet");
    let mut writer = SegmentWriter::create(&output, &table, 0, 1, &options).unwrap();
    assert!(writer.can_copy_from(&metadata));
    writer.write(&batches[0].slice(0, 500)).unwrap();
    let handle = std::fs::File::open(&source).unwrap();
    writer.copy_row_group(&handle, &metadata, 2).unwrap();
    writer.write(&batches[1].slice(0, 700)).unwrap();
    assert_eq!(writer.copied_row_groups(), 1);
    let written = writer.finish().unwrap();
    assert_eq!(written.rows, 2200);

    let read: Vec<RecordBatch> = SegmentFile::open(&output, &table)
        .unwrap()
        .read(None, 10_000)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let read = arrow::compute::concat_batches(&table.arrow_schema(), &read).unwrap();
    let all = arrow::compute::concat_batches(&table.arrow_schema(), &batches).unwrap();
    assert_eq!(read.slice(0, 500), all.slice(0, 500));
    assert_eq!(
        read.slice(500, 1000),
        all.slice(2000, 1000),
        "the spliced group, intact"
    );
    assert_eq!(read.slice(1500, 700), batches[1].slice(0, 700));
    // The range covers the spliced group too (taken from its statistics).
    assert!(written.min_comparison.unwrap() >= written_source.min_comparison.unwrap());
    assert!(written.max_comparison.unwrap() <= written_source.max_comparison.unwrap());
    let ids = read.column(table.comparison_index());
    let (min, max) = match ids.data_type() {
        arrow::datatypes::DataType::Timestamp(_, _) => {
            let values = ids.as_primitive::<arrow::datatypes::TimestampMillisecondType>();
            (
                arrow::compute::min(values).unwrap() as f64,
                arrow::compute::max(values).unwrap() as f64,
            )
        }
        other => panic!("orders compares a timestamp, not {other}"),
    };
    assert_eq!(written.min_comparison, Some(min));
    assert_eq!(written.max_comparison, Some(max));
}

#[test]
fn the_mask_marks_exactly_the_members_in_range() {
    let valid: RoaringBitmap = [0u32, 5, 9, 10, 11, 70_000].into_iter().collect();
    let mask = selection_mask(&valid, 5, 6);
    let marked: Vec<bool> = mask.iter().map(Option::unwrap).collect();
    assert_eq!(marked, vec![true, false, false, false, true, true]);
    assert_eq!(selection_mask(&valid, 100, 3).true_count(), 0);
}
