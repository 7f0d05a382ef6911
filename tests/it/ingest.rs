//! Ingest of JSON Lines, CSV, Parquet and generated streams into local and S3 stores, checked by
//! reading every segment back with our reader and with DuckDB.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use arrow::array::ArrayRef;
use serde_json::{json, Value};
use upsert_minion::keys::{encode_key_into, partition_of};
use upsert_minion::segment::SegmentFile;
use upsert_minion::table::TableConfig;

use crate::common::{python, StoreKind, TestEnv};

/// Rows for the `orders` example: several versions per key, deletes, nulls, and text that needs
/// CSV quoting.
pub fn order_rows(count: usize) -> Vec<Value> {
    (0..count)
        .map(|i| {
            json!({
                "order_id": (i % 97) as i64 * 1000 - 5000,
                "updated_at": 1_700_000_000_000i64 + ((i * 7919) % 5000) as i64,
                "deleted": i % 17 == 0,
                "customer": format!("cust, \"{i}\" é"),
                "status": if i % 5 == 0 { Value::Null } else { json!("paid") },
                "amount": i as f64 * 1.25,
                "quantity": (i % 9) as i64,
            })
        })
        .collect()
}

pub fn write_jsonl(path: &std::path::Path, rows: &[Value]) {
    let text: String = rows.iter().map(|r| format!("{r}\n")).collect();
    std::fs::write(path, text).unwrap();
}

fn write_csv(path: &std::path::Path, rows: &[Value], columns: &[&str]) {
    let mut writer = csv::Writer::from_path(path).unwrap();
    writer.write_record(columns).unwrap();
    for row in rows {
        let fields: Vec<String> = columns
            .iter()
            .map(|c| match &row[*c] {
                Value::Null => String::new(),
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect();
        writer.write_record(&fields).unwrap();
    }
    writer.flush().unwrap();
}

/// Downloads every online segment of `table` and checks that each row's key belongs to the
/// segment's partition and that the footer says the right table, partition and sequence.
/// Returns the local files, and for every key the partitions it was found in.
pub fn fetch_and_check_segments(
    env: &TestEnv,
    table: &str,
) -> (Vec<PathBuf>, BTreeMap<Vec<u8>, BTreeSet<u32>>) {
    let config: TableConfig =
        serde_json::from_str(&env.ok(&["table", "show", table, "--json"])).unwrap();
    let segments: Vec<Value> =
        serde_json::from_str(&env.ok(&["segment", "ls", "--table", table, "--json"])).unwrap();
    let store = env.store();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let download_dir = env.path("downloaded");
    std::fs::create_dir_all(&download_dir).unwrap();
    let mut files = Vec::new();
    let mut partitions_of_key: BTreeMap<Vec<u8>, BTreeSet<u32>> = BTreeMap::new();
    let mut last_sequence: BTreeMap<u32, i64> = BTreeMap::new();
    for segment in &segments {
        let partition = segment["partition"].as_u64().unwrap() as u32;
        let sequence = segment["sequence"].as_i64().unwrap();
        // Listing is in sequence order per partition, and sequences only grow.
        if let Some(previous) = last_sequence.insert(partition, sequence) {
            assert!(
                sequence > previous,
                "sequences must increase within partition {partition}"
            );
        }
        let local = download_dir.join(format!("{}.parquet", segment["name"].as_str().unwrap()));
        let checksum = runtime
            .block_on(store.download_to(segment["object_key"].as_str().unwrap(), &local))
            .unwrap();
        assert_eq!(
            checksum,
            segment["checksum"].as_str().unwrap(),
            "catalog checksum matches the object"
        );
        let file = SegmentFile::open(&local, &config).unwrap();
        let info = file.info();
        assert_eq!(info.table.as_deref(), Some(table));
        assert_eq!(info.partition, Some(partition));
        assert_eq!(info.sequence, Some(sequence));
        assert_eq!(info.rows as i64, segment["row_count"].as_i64().unwrap());
        let key_names: Vec<&str> = config.primary_key.iter().map(String::as_str).collect();
        let mut encoded = Vec::new();
        for batch in file.read(Some(&key_names), 4096).unwrap() {
            let batch = batch.unwrap();
            let columns: Vec<ArrayRef> = batch.columns().to_vec();
            for row in 0..batch.num_rows() {
                encode_key_into(&columns, row, &mut encoded);
                assert_eq!(
                    partition_of(&encoded, config.partitions),
                    partition,
                    "key routed to its partition"
                );
                partitions_of_key
                    .entry(encoded.clone())
                    .or_default()
                    .insert(partition);
            }
        }
        files.push(local);
    }
    (files, partitions_of_key)
}

fn duckdb_check(
    env: &TestEnv,
    table: &str,
    expected: Option<&std::path::Path>,
    files: &[PathBuf],
) -> String {
    let table_json = env.path(&format!("{table}.json"));
    std::fs::write(&table_json, env.ok(&["table", "show", table, "--json"])).unwrap();
    let mut args = vec![
        table_json.display().to_string(),
        expected.map_or("-".to_string(), |p| p.display().to_string()),
    ];
    args.extend(files.iter().map(|f| f.display().to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    python("segment_rows.py", &args)
}

fn ingest_file_and_verify(kind: StoreKind, format: &str) {
    let env = TestEnv::new(kind);
    env.ok(&["migrate"]);
    env.create_example_table("orders.toml");
    let rows = order_rows(2500);
    let expected = env.path("expected.jsonl");
    write_jsonl(&expected, &rows);
    let input = match format {
        "jsonl" => expected.clone(),
        "csv" => {
            let path = env.path("input.csv");
            let columns = [
                "order_id",
                "updated_at",
                "deleted",
                "customer",
                "status",
                "amount",
                "quantity",
            ];
            write_csv(&path, &rows, &columns);
            path
        }
        "parquet" => {
            let path = env.path("input.parquet");
            python(
                "jsonl_to_parquet.py",
                &[expected.to_str().unwrap(), path.to_str().unwrap()],
            );
            path
        }
        other => panic!("unknown format {other}"),
    };
    let out = env.ok(&[
        "ingest",
        "--table",
        "orders",
        "--input",
        input.to_str().unwrap(),
        "--segment-rows",
        "200",
        "--json",
    ]);
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["rows"], 2500);
    let (files, partitions_of_key) = fetch_and_check_segments(&env, "orders");
    assert_eq!(partitions_of_key.len(), 97);
    assert!(partitions_of_key.values().all(|p| p.len() == 1));
    // 2500 rows over 4 partitions in segments of at most 200 rows.
    assert!(files.len() >= 13, "{} segments", files.len());
    let checked = duckdb_check(&env, "orders", Some(&expected), &files);
    assert!(
        checked.contains("rows=2500") && checked.contains("match"),
        "{checked}"
    );
}

#[test]
fn jsonl_into_local_store() {
    ingest_file_and_verify(StoreKind::Local, "jsonl");
}

#[test]
fn csv_into_local_store() {
    ingest_file_and_verify(StoreKind::Local, "csv");
}

#[test]
fn parquet_into_local_store() {
    ingest_file_and_verify(StoreKind::Local, "parquet");
}

#[test]
fn jsonl_into_s3() {
    ingest_file_and_verify(StoreKind::S3, "jsonl");
}

fn generated_stream(kind: StoreKind) {
    let env = TestEnv::new(kind);
    env.ok(&["migrate"]);
    env.create_example_table("orders.toml");
    let out = env.ok(&[
        "ingest",
        "--table",
        "orders",
        "--generate",
        "60000",
        "--keys",
        "5000",
        "--seed",
        "3",
        "--segment-rows",
        "4000",
        "--row-group-rows",
        "1000",
        "--json",
    ]);
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["rows"], 60000);
    let ids = report["segment_ids"].as_array().unwrap().len();
    let listed: Vec<Value> =
        serde_json::from_str(&env.ok(&["segment", "ls", "--table", "orders", "--json"])).unwrap();
    assert_eq!(listed.len(), ids);
    assert!(listed.iter().all(|s| s["state"] == "online"));
    let total: i64 = listed
        .iter()
        .map(|s| s["row_count"].as_i64().unwrap())
        .sum();
    assert_eq!(total, 60000);
    let (files, partitions_of_key) = fetch_and_check_segments(&env, "orders");
    assert!(
        partitions_of_key.values().all(|p| p.len() == 1),
        "every key in exactly one partition"
    );
    assert!(
        partitions_of_key.len() > 1000,
        "zipf still touches many keys"
    );
    let checked = duckdb_check(&env, "orders", None, &files);
    assert!(checked.contains("rows=60000"), "{checked}");

    // A second run of the same stream appends new segments with later sequences.
    env.ok(&[
        "ingest",
        "--table",
        "orders",
        "--generate",
        "1000",
        "--keys",
        "100",
        "--segment-rows",
        "4000",
    ]);
    let again: Vec<Value> =
        serde_json::from_str(&env.ok(&["segment", "ls", "--table", "orders", "--json"])).unwrap();
    assert_eq!(again.len(), listed.len() + 4);
    let (_, _) = fetch_and_check_segments(&env, "orders");
}

#[test]
fn generated_stream_into_local_store() {
    generated_stream(StoreKind::Local);
}

#[test]
fn generated_stream_into_s3() {
    generated_stream(StoreKind::S3);
}

#[test]
fn composite_string_keys() {
    let env = TestEnv::new(StoreKind::Local);
    env.ok(&["migrate"]);
    env.create_example_table("sessions.toml");
    let rows: Vec<Value> = (0..600)
        .map(|i| {
            json!({
                "tenant": format!("t{}", i % 3),
                "session_id": format!("s{}", i % 50),
                "seq": i,
                "user_agent": if i % 4 == 0 { Value::Null } else { json!("curl/8") },
                "payload": base64_of(&[i as u8, 0, 255]),
                "active": i % 2 == 0,
            })
        })
        .collect();
    let input = env.path("sessions.jsonl");
    write_jsonl(&input, &rows);
    env.ok(&[
        "ingest",
        "--table",
        "sessions",
        "--input",
        input.to_str().unwrap(),
        "--segment-rows",
        "100",
    ]);
    let (files, partitions_of_key) = fetch_and_check_segments(&env, "sessions");
    assert_eq!(partitions_of_key.len(), 150, "(tenant, session) pairs");
    let checked = duckdb_check(&env, "sessions", Some(&input), &files);
    assert!(checked.contains("match"), "{checked}");
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
