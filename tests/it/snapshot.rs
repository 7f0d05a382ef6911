//! Prebuild, the serving-side loader, verify and scan against real Postgres and stores, checked
//! by DuckDB (winners), pyroaring (bitmaps) and sst_dump (SST files).

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{json, Value};
use upsert_minion::catalog::Catalog;
use upsert_minion::loader::{bootstrap, BootstrapOptions};

use crate::common::{python, typed, StoreKind, TestEnv};

fn ingest(env: &TestEnv, rows: &str, keys: &str, seed: &str, segment_rows: &str) {
    env.ok(&[
        "ingest",
        "--table",
        "orders",
        "--generate",
        rows,
        "--keys",
        keys,
        "--seed",
        seed,
        "--segment-rows",
        segment_rows,
    ]);
}

fn prebuild(env: &TestEnv, partition: u32) -> Value {
    env.json(&typed(
        "run prebuild",
        &json!({"table": "orders", "partition": partition}),
    ))
}

fn setup(kind: StoreKind) -> TestEnv {
    let env = TestEnv::new(kind);
    env.ok(&["migrate"]);
    env.create_example_table("orders.toml");
    env
}

/// Downloads the partition's online segments and asks DuckDB for the winners.
fn duckdb_winners(env: &TestEnv, partition: u32) -> Value {
    let segments: Vec<Value> = serde_json::from_str(&env.ok(&[
        "segment",
        "ls",
        "--table",
        "orders",
        "--partition",
        &partition.to_string(),
        "--state",
        "online",
        "--json",
    ]))
    .unwrap();
    let mut listed = Vec::new();
    for segment in &segments {
        let local = env.path(&format!("seg-{}.parquet", segment["id"]));
        env.download(segment["object_key"].as_str().unwrap(), &local);
        listed.push(json!({"id": segment["id"], "sequence": segment["sequence"], "path": local}));
    }
    let segments_json = env.path("segments.json");
    std::fs::write(&segments_json, serde_json::to_string(&listed).unwrap()).unwrap();
    let table_json = env.path("orders.json");
    std::fs::write(&table_json, env.ok(&["table", "show", "orders", "--json"])).unwrap();
    serde_json::from_str(&python(
        "duckdb_winners.py",
        &[
            table_json.to_str().unwrap(),
            segments_json.to_str().unwrap(),
        ],
    ))
    .unwrap()
}

async fn load(
    env: &TestEnv,
    partition: u32,
    use_snapshot: bool,
    dir: &Path,
) -> upsert_minion::loader::LoadedPartition {
    let catalog = Catalog::connect(&env.db.url).await.unwrap();
    let options = BootstrapOptions {
        use_snapshot,
        use_lineage: true,
        sst_format_version: 5,
        staging_dir: env.dir.path().to_path_buf(),
    };
    bootstrap(&catalog, &env.store(), "orders", partition, dir, &options)
        .await
        .unwrap()
}

fn bitmaps_as_json(loaded: &upsert_minion::loader::LoadedPartition) -> Value {
    let mut valid = BTreeMap::new();
    let mut queryable = BTreeMap::new();
    for (id, bitmaps) in &loaded.bitmaps {
        if !bitmaps.valid.is_empty() {
            valid.insert(id.to_string(), bitmaps.valid.iter().collect::<Vec<u32>>());
        }
        if !bitmaps.queryable.is_empty() {
            queryable.insert(
                id.to_string(),
                bitmaps.queryable.iter().collect::<Vec<u32>>(),
            );
        }
    }
    json!({"valid": valid, "queryable": queryable})
}

#[tokio::test(flavor = "multi_thread")]
async fn prebuild_matches_duckdb_and_foreign_readers() {
    let env = setup(StoreKind::Local);
    // Small key ranges: each partition's thousands of entries resolve in 4 ranges on 2 threads, each
    // writing its own SST file, and every file must still be readable by sst_dump.
    std::fs::write(
        env.path("minion.toml"),
        "[prebuild]\nentries_per_key_range = 1000\nmax_key_ranges = 4\nresolve_threads = 2\n",
    )
    .unwrap();
    ingest(&env, "40000", "3000", "1", "4000");
    for partition in 0..4 {
        let report = prebuild(&env, partition);
        assert_eq!(report["outcome"], "published", "{report}");
        assert_eq!(report["version"], 1);
    }
    for partition in 0..4 {
        let manifest_value = env.orders_manifest(partition);
        assert_eq!(
            manifest_value["key_files"].as_array().unwrap().len(),
            4,
            "one SST file per key range"
        );
        let manifest_path = env.path(&format!("manifest-{partition}.json"));
        std::fs::write(&manifest_path, manifest_value.to_string()).unwrap();
        let checked = python(
            "check_snapshot_files.py",
            &[&env.store_url, manifest_path.to_str().unwrap()],
        );
        assert!(checked.starts_with("ok"), "{checked}");
        let loaded = load(&env, partition, true, &env.path(&format!("db-{partition}"))).await;
        assert_eq!(
            bitmaps_as_json(&loaded),
            duckdb_winners(&env, partition),
            "partition {partition}"
        );
        assert_eq!(
            loaded.report.keys,
            manifest_value["key_count"].as_u64().unwrap()
        );
    }
    let verified = env.ok(&["verify", "--table", "orders"]);
    assert_eq!(verified.matches("matches").count(), 4, "{verified}");
}

#[tokio::test(flavor = "multi_thread")]
async fn incremental_prebuild_equals_a_recomputation_and_reuses_runs() {
    let env = setup(StoreKind::Local);
    // Several key ranges (and SST files) on both sides of the comparison.
    std::fs::write(
        env.path("minion.toml"),
        "[prebuild]\nentries_per_key_range = 1500\nmax_key_ranges = 3\n",
    )
    .unwrap();
    ingest(&env, "20000", "2000", "1", "2000");
    let first = prebuild(&env, 1);
    let first_segments = first["segments"].as_u64().unwrap();
    assert_eq!(first["runs_built"].as_u64(), Some(first_segments));
    // New segments update old keys, delete some and add new ones.
    env.ok(&[
        "ingest",
        "--table",
        "orders",
        "--generate",
        "8000",
        "--keys",
        "3000",
        "--seed",
        "2",
        "--segment-rows",
        "1000",
        "--start-time-ms",
        "1700000005000",
    ]);
    let second = prebuild(&env, 1);
    assert_eq!(second["version"], 2);
    assert_eq!(
        second["runs_reused"].as_u64(),
        Some(first_segments),
        "old segments are not re-read: {second}"
    );
    assert!(second["runs_built"].as_u64().unwrap() > 0);
    let verified = env.ok(&["verify", "--table", "orders"]);
    assert!(
        verified.contains("partition 1: snapshot 2 matches"),
        "{verified}"
    );
    let loaded = load(&env, 1, true, &env.path("db")).await;
    assert_eq!(bitmaps_as_json(&loaded), duckdb_winners(&env, 1));
    let snapshots: Vec<Value> = serde_json::from_str(&env.ok(&[
        "snapshot",
        "ls",
        "--table",
        "orders",
        "--partition",
        "1",
        "--json",
    ]))
    .unwrap();
    assert_eq!(
        snapshots
            .iter()
            .map(|s| s["version"].as_i64().unwrap())
            .collect::<Vec<_>>(),
        vec![2, 1]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bootstrap_with_and_without_snapshot_reach_the_same_state() {
    let env = setup(StoreKind::S3);
    ingest(&env, "30000", "4000", "5", "3000");
    prebuild(&env, 2);
    // Segments the snapshot does not cover go through the compare path.
    env.ok(&[
        "ingest",
        "--table",
        "orders",
        "--generate",
        "6000",
        "--keys",
        "5000",
        "--seed",
        "6",
        "--segment-rows",
        "1000",
    ]);
    let fast = load(&env, 2, true, &env.path("fast")).await;
    let slow = load(&env, 2, false, &env.path("slow")).await;
    assert!(
        fast.report.covered_segments > 0 && fast.report.uncovered_segments > 0,
        "{:?}",
        fast.report
    );
    assert_eq!(slow.report.covered_segments, 0);
    assert_eq!(fast.bitmaps, slow.bitmaps);
    assert_eq!(fast.dump_keys().unwrap(), slow.dump_keys().unwrap());
    assert_eq!(fast.report.keys, slow.report.keys);
    assert_eq!(bitmaps_as_json(&fast), duckdb_winners(&env, 2));

    let out = env.ok(&[
        "bootstrap",
        "--table",
        "orders",
        "--partition",
        "2",
        "--dir",
        env.path("cli").to_str().unwrap(),
    ]);
    assert!(
        out.contains("from snapshot") && out.contains("keys"),
        "{out}"
    );
    let out = env.ok(&[
        "bootstrap",
        "--table",
        "orders",
        "--partition",
        "2",
        "--dir",
        env.path("cli-slow").to_str().unwrap(),
        "--no-snapshot",
    ]);
    assert!(out.contains("without snapshot"), "{out}");
    let err = env.fails(&[
        "bootstrap",
        "--table",
        "orders",
        "--partition",
        "2",
        "--dir",
        env.path("cli").to_str().unwrap(),
    ]);
    assert!(err.contains("is not empty"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn scan_writes_the_winners() {
    let env = setup(StoreKind::Local);
    ingest(&env, "12000", "1500", "3", "2000");
    for partition in 0..4 {
        prebuild(&env, partition);
    }
    let queryable = env.path("q.parquet");
    let out = env.ok(&[
        "scan",
        "--table",
        "orders",
        "--format",
        "parquet",
        "--output",
        queryable.to_str().unwrap(),
    ]);
    let valid = env.path("v.jsonl");
    env.ok(&[
        "scan",
        "--table",
        "orders",
        "--valid-only",
        "--format",
        "jsonl",
        "--output",
        valid.to_str().unwrap(),
    ]);
    let expected_queryable: usize = (0..4)
        .map(|p| {
            duckdb_winners(&env, p)["queryable"]
                .as_object()
                .unwrap()
                .values()
                .map(|d| d.as_array().unwrap().len())
                .sum::<usize>()
        })
        .sum();
    assert!(
        out.contains(&format!("wrote {expected_queryable} rows")),
        "{out}"
    );
    let valid_rows: Vec<Value> = std::fs::read_to_string(&valid)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut keys: Vec<i64> = valid_rows
        .iter()
        .map(|r| r["order_id"].as_i64().unwrap())
        .collect();
    let total = keys.len();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), total, "no key twice");
    assert!(
        valid_rows.iter().any(|r| r["deleted"] == true),
        "valid rows include winning tombstones"
    );
    assert!(total > expected_queryable);
}

#[tokio::test(flavor = "multi_thread")]
async fn spilling_keeps_memory_bounded_and_results_exact() {
    // Runs of at most 20,000 entries in memory, over millions of keys: every segment spills
    // dozens of sorted chunks to disk and merges them, and the winners still match DuckDB's.
    let env = setup(StoreKind::Local);
    std::fs::write(
        env.path("minion.toml"),
        "[prebuild]\nmax_run_entries = 20000\n",
    )
    .unwrap();
    env.ok(&[
        "ingest",
        "--table",
        "orders",
        "--generate",
        "3000000",
        "--keys",
        "2500000",
        "--zipf",
        "0",
        "--seed",
        "8",
        "--segment-rows",
        "400000",
    ]);
    let mut keys = 0;
    for partition in 0..4 {
        let report = prebuild(&env, partition);
        assert_eq!(report["outcome"], "published", "{report}");
        keys += report["key_count"].as_u64().unwrap();
        let loaded = load(&env, partition, true, &env.path(&format!("db-{partition}"))).await;
        assert_eq!(
            bitmaps_as_json(&loaded),
            duckdb_winners(&env, partition),
            "partition {partition}"
        );
    }
    assert!(keys > 1_500_000, "millions of keys: {keys}");
}

#[tokio::test(flavor = "multi_thread")]
async fn prebuild_jobs_run_in_the_queue_and_are_unique_per_partition() {
    let env = setup(StoreKind::Local);
    ingest(&env, "5000", "500", "1", "1000");
    let args = [
        "job",
        "submit",
        "prebuild",
        "--table",
        "orders",
        "--partition",
        "0",
        "--json",
    ];
    let first: Value = env.json(&args);
    let second: Value = env.json(&args);
    assert_eq!(
        second,
        json!({"outcome": "existing", "id": first["id"]}),
        "one prebuild per partition"
    );
    let mut worker = env.spawn("worker", &["worker", "--poll-interval", "200ms"]);
    let id = first["id"].as_i64().unwrap().to_string();
    let job = env.wait_job_state(&id, "completed");
    assert_eq!(job["output"]["outcome"], "published");
    let err = env.fails(&[
        "job",
        "submit",
        "prebuild",
        "--args",
        r#"{"table": "orders"}"#,
    ]);
    assert!(err.contains("missing field `partition`"), "{err}");
    unsafe { libc::kill(worker.id() as i32, libc::SIGTERM) };
    worker.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn racing_prebuilds_publish_once() {
    let env = setup(StoreKind::Local);
    ingest(&env, "20000", "2000", "1", "2000");
    let args = ["run", "prebuild", "--table", "orders", "--partition", "0"];
    let children: Vec<_> = (0..3)
        .map(|i| env.spawn(&format!("racer{i}"), &args))
        .collect();
    for mut child in children {
        assert!(child.wait().unwrap().success());
    }
    let snapshots: Vec<Value> = serde_json::from_str(&env.ok(&[
        "snapshot",
        "ls",
        "--table",
        "orders",
        "--partition",
        "0",
        "--json",
    ]))
    .unwrap();
    assert_eq!(
        snapshots.len(),
        1,
        "exactly one of the racers published: {snapshots:?}"
    );
    assert!(env
        .ok(&["verify", "--table", "orders"])
        .contains("snapshot 1 matches"));
}
