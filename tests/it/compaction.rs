//! Compaction: only valid rows survive, in order, with the input's sequence; the swap is atomic;
//! racing compactions of one segment have exactly one winner; bad input is discarded.

use serde_json::{json, Value};

use crate::common::{python, typed, StoreKind, TestEnv};

fn setup() -> TestEnv {
    TestEnv::orders(30000, 2000, 4, 3000)
}

fn prebuild(env: &TestEnv, partition: u32) -> Value {
    env.json(&typed(
        "run prebuild",
        &json!({"table": "orders", "partition": partition}),
    ))
}

fn compact(env: &TestEnv, segment_id: i64) -> Value {
    env.json(&typed(
        "run compact",
        &json!({"table": "orders", "segment_id": segment_id}),
    ))
}

/// Every valid row of partition 0, as sorted JSON lines.

#[test]
fn compaction_keeps_exactly_the_valid_rows() {
    let env = setup();
    prebuild(&env, 0);
    let before = env.valid_rows("before.jsonl");
    let segments = env.online("orders", 0);
    let rows_before: i64 = segments
        .iter()
        .map(|s| s["row_count"].as_i64().unwrap())
        .sum();
    let bytes_before: i64 = segments
        .iter()
        .map(|s| s["byte_size"].as_i64().unwrap())
        .sum();
    let mut compacted = 0;
    for segment in &segments {
        let report = compact(&env, segment["id"].as_i64().unwrap());
        let outcome = report["outcome"].as_str().unwrap();
        assert!(
            ["compacted", "dropped", "nothing_to_compact"].contains(&outcome),
            "{report}"
        );
        if outcome == "compacted" {
            compacted += 1;
            let new: Value = env
                .online("orders", 0)
                .into_iter()
                .find(|s| s["id"] == report["new_segment_id"])
                .unwrap();
            assert_eq!(
                new["sequence"], segment["sequence"],
                "the output keeps the input's sequence"
            );
            assert_eq!(new["replaces"], json!([segment["id"]]));
            assert!(new["row_count"].as_i64() < segment["row_count"].as_i64());
        }
    }
    assert!(compacted > 0);
    // The snapshot no longer covers the new segments: a prebuild was queued by each swap.
    let queued: Vec<Value> = env.json(&["job", "ls", "--kind", "prebuild", "--json"]);
    assert_eq!(
        queued.len(),
        1,
        "one prebuild per partition, deduplicated: {queued:?}"
    );
    // Until it runs, a restarting server keeps the snapshot, mapped through the lineage.
    let out = env.bootstrap_orders("stale");
    assert!(
        out.contains("(snapshot 1:") && out.contains("0 through the compare path"),
        "{out}"
    );
    assert!(
        out.contains(&format!("{} valid docs", before.len())),
        "{out}"
    );
    prebuild(&env, 0);
    let after = env.valid_rows("after.jsonl");
    assert_eq!(
        before, after,
        "exactly the same valid rows before and after compaction"
    );
    let rows_after: i64 = env
        .online("orders", 0)
        .iter()
        .map(|s| s["row_count"].as_i64().unwrap())
        .sum();
    assert_eq!(
        rows_after as usize,
        after.len(),
        "compacted segments hold only valid rows"
    );
    assert!(rows_after < rows_before);
    // What the swaps reclaimed, counted in their transactions, as `status` reports it.
    let bytes_after: i64 = env
        .online("orders", 0)
        .iter()
        .map(|s| s["byte_size"].as_i64().unwrap())
        .sum();
    let status: Value = env.json(&["status", "--json"]);
    let table = &status["tables"][0];
    assert_eq!(table["reclaimed_rows"], rows_before - rows_after, "{table}");
    assert_eq!(
        table["reclaimed_bytes"],
        bytes_before - bytes_after,
        "{table}"
    );
    let verified = env.ok(&["verify", "--table", "orders"]);
    assert!(
        verified.contains("partition 0: snapshot 2 matches"),
        "{verified}"
    );
    // DuckDB reads every compacted segment.
    let table_json = env.path("orders.json");
    std::fs::write(&table_json, env.ok(&["table", "show", "orders", "--json"])).unwrap();
    let mut files = Vec::new();
    for segment in env.online("orders", 0) {
        let local = env.path(&format!("c-{}.parquet", segment["id"]));
        env.download(segment["object_key"].as_str().unwrap(), &local);
        files.push(local.display().to_string());
    }
    let mut args = vec![table_json.display().to_string(), "-".to_string()];
    args.extend(files);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let checked = python("segment_rows.py", &args);
    assert!(checked.contains(&format!("rows={rows_after}")), "{checked}");
}

#[test]
fn racing_compactions_of_one_segment_have_one_winner() {
    let env = setup();
    prebuild(&env, 1);
    let segment = env.online("orders", 1)[0]["id"].as_i64().unwrap();
    let args = typed(
        "run compact",
        &json!({"table": "orders", "segment_id": segment}),
    );
    let racers: Vec<_> = (0..3)
        .map(|i| env.spawn(&format!("racer{i}"), &args))
        .collect();
    for mut racer in racers {
        assert!(racer.wait().unwrap().success());
    }
    let all: Vec<Value> = env.json(&[
        "segment",
        "ls",
        "--table",
        "orders",
        "--partition",
        "1",
        "--json",
    ]);
    let successors: Vec<&Value> = all
        .iter()
        .filter(|s| s["replaces"] == json!([segment]))
        .collect();
    assert_eq!(successors.len(), 1, "exactly one compaction won: {all:?}");
    let original = all.iter().find(|s| s["id"] == segment).unwrap();
    assert_eq!(original["state"], "replaced");
    assert_eq!(original["replaced_by"], successors[0]["id"]);
    // Compacting it again is a no-op: it is no longer online.
    assert_eq!(compact(&env, segment)["outcome"], "not_online");
}

#[test]
fn compaction_needs_a_covering_snapshot_and_refuses_bad_input() {
    let env = setup();
    let segment = env.online("orders", 2)[0].clone();
    let id = segment["id"].as_i64().unwrap();
    let report = compact(&env, id);
    assert_eq!(
        report["outcome"], "not_covered",
        "no snapshot yet: {report}"
    );
    let queued: Vec<Value> = env.json(&["job", "ls", "--kind", "prebuild", "--json"]);
    assert_eq!(queued.len(), 1, "a prebuild was queued for it");

    prebuild(&env, 2);
    // A corrupt segment: the compaction fails permanently and changes nothing.
    let path =
        std::path::PathBuf::from(&env.store_url).join(segment["object_key"].as_str().unwrap());
    let mut bytes = std::fs::read(&path).unwrap();
    let length = bytes.len();
    bytes.truncate(length - 50);
    std::fs::write(&path, bytes).unwrap();
    let err = env.fails(&typed(
        "run compact",
        &json!({"table": "orders", "segment_id": id}),
    ));
    assert!(
        err.contains("has checksum") && err.contains("restore the object"),
        "{err}"
    );
    assert_eq!(
        env.online("orders", 2)[0]["id"],
        segment["id"],
        "catalog unchanged"
    );
    let err = env.fails(&typed(
        "run compact",
        &json!({"table": "orders", "segment_id": 999999}),
    ));
    assert!(err.contains("segment 999999 does not exist"), "{err}");
    // A missing object: the same, and the message says which and what to do.
    std::fs::remove_file(&path).unwrap();
    let err = env.fails(&typed(
        "run compact",
        &json!({"table": "orders", "segment_id": id}),
    ));
    assert!(
        err.contains("missing") && err.contains(segment["object_key"].as_str().unwrap()),
        "{err}"
    );
    assert_eq!(
        env.online("orders", 2)[0]["id"],
        segment["id"],
        "catalog unchanged"
    );
}

#[test]
fn a_bitmap_marking_more_rows_than_the_segment_has_discards_the_job() {
    use sha2::{Digest, Sha256};
    let env = setup();
    prebuild(&env, 3);
    let segments = env.online("orders", 3);
    let segment = &segments[0];
    let rows = segment["row_count"].as_u64().unwrap() as u32;
    // Forge a snapshot whose checksums all match but whose bitmap names docIds past the end, as
    // a buggy writer could: only the cardinality check stands between it and the rewrite.
    let snapshots: Vec<Value> = env.json(&[
        "snapshot",
        "ls",
        "--table",
        "orders",
        "--partition",
        "3",
        "--json",
    ]);
    let manifest_key = snapshots[0]["manifest_key"].as_str().unwrap().to_string();
    let root = std::path::PathBuf::from(&env.store_url);
    let mut manifest: Value =
        serde_json::from_slice(&std::fs::read(root.join(&manifest_key)).unwrap()).unwrap();
    let entry = manifest["segments"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|s| s["id"] == segment["id"])
        .unwrap();
    let bitmap: roaring::RoaringBitmap = (0..rows + 10).collect();
    let mut bytes = Vec::new();
    bitmap.serialize_into(&mut bytes).unwrap();
    std::fs::write(root.join(entry["valid"]["key"].as_str().unwrap()), &bytes).unwrap();
    entry["valid"]["checksum"] = json!(hex::encode(Sha256::digest(&bytes)));
    entry["valid"]["size"] = json!(bytes.len());
    let manifest_bytes = serde_json::to_vec_pretty(&manifest).unwrap();
    std::fs::write(root.join(&manifest_key), &manifest_bytes).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let pool = sqlx::PgPool::connect(&env.db.url).await.unwrap();
        sqlx::query("UPDATE snapshots SET manifest_checksum = $1 WHERE manifest_key = $2")
            .bind(hex::encode(Sha256::digest(&manifest_bytes)))
            .bind(&manifest_key)
            .execute(&pool)
            .await
            .unwrap();
    });
    // Through the queue: the job is discarded at once, with the reason, and nothing changed.
    let segment = segment["id"].to_string();
    let submitted: Value = env.json(&[
        "job",
        "submit",
        "compact",
        "--table",
        "orders",
        "--segment",
        &segment,
        "--json",
    ]);
    let id = submitted["id"].to_string();
    let mut worker = env.spawn("worker", &["worker", "--poll-interval", "200ms"]);
    let job = env.wait_job_state(&id, "discarded");
    worker.kill().unwrap();
    worker.wait().unwrap();
    let errors = job["errors"].to_string();
    assert!(
        errors.contains(&format!(
            "marks docId {} but the segment has only {rows} rows",
            rows + 9
        )),
        "{job}"
    );
    assert_eq!(job["attempt"], 1, "permanent: not retried");
    assert_eq!(env.online("orders", 3), segments, "catalog unchanged");
}

/// Rows a query sees (winners that are not tombstones), by key.
fn queryable_ids(env: &TestEnv, name: &str) -> Vec<i64> {
    let path = env.path(name);
    env.ok(&["scan", "--table", "ttl", "--output", path.to_str().unwrap()]);
    let mut ids: Vec<i64> = std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|line| {
            serde_json::from_str::<Value>(line).unwrap()["id"]
                .as_i64()
                .unwrap()
        })
        .collect();
    ids.sort();
    ids
}

#[test]
fn deleted_keys_never_come_back_through_compaction() {
    let env = TestEnv::new(StoreKind::Local);
    env.ok(&["migrate"]);
    let table = env.path("ttl.toml");
    std::fs::write(
        &table,
        r#"
name = "ttl"
partitions = 1
primary_key = ["id"]
comparison = "ts"
delete_column = "deleted"
[[columns]]
name = "id"
type = "int64"
[[columns]]
name = "ts"
type = "int64"
[[columns]]
name = "deleted"
type = "bool"
[ttl]
deleted_keys_ttl = 100
"#,
    )
    .unwrap();
    env.ok(&["table", "create", "--file", table.to_str().unwrap()]);
    let ingest = |name: &str, rows: &[(i64, i64, bool)]| {
        let path = env.path(name);
        let lines: Vec<String> = rows
            .iter()
            .map(|(id, ts, deleted)| json!({"id": id, "ts": ts, "deleted": deleted}).to_string())
            .collect();
        std::fs::write(&path, lines.join("\n")).unwrap();
        env.ok(&[
            "ingest",
            "--table",
            "ttl",
            "--input",
            path.to_str().unwrap(),
        ]);
    };
    // Key 1 is inserted (segment A), deleted (B), and the newest event (C) puts the tombstone
    // past the TTL. Dropping the tombstone while A still holds key 1's insert would bring it back.
    ingest("a.jsonl", &[(1, 10, false), (2, 10, false)]);
    ingest("b.jsonl", &[(1, 20, true)]);
    ingest("c.jsonl", &[(3, 1000, false)]);
    let segments: Vec<Value> = env.json(&["segment", "ls", "--table", "ttl", "--json"]);
    let (a, b) = (segments[0]["id"].clone(), segments[1]["id"].clone());
    let prebuild = || {
        env.json::<Value>(&typed(
            "run prebuild",
            &json!({"table": "ttl", "partition": 0}),
        ))
    };
    let compact = |id: &Value| {
        env.json::<Value>(&typed(
            "run compact",
            &json!({"table": "ttl", "segment_id": id}),
        ))
    };
    prebuild();
    assert_eq!(queryable_ids(&env, "1.jsonl"), vec![2, 3]);
    // The tombstone is still valid (A holds an older version): compaction keeps it.
    assert_eq!(compact(&b)["outcome"], "nothing_to_compact");
    assert_eq!(queryable_ids(&env, "2.jsonl"), vec![2, 3]);
    // A loses its superseded insert of key 1; only then may the tombstone be forgotten...
    assert_eq!(compact(&a)["outcome"], "compacted");
    assert_eq!(queryable_ids(&env, "3.jsonl"), vec![2, 3]);
    let snapshot = prebuild();
    assert_eq!(snapshot["key_count"], 2, "key 1 forgotten: {snapshot}");
    // ...and B, left with no valid row, is dropped without a rewrite.
    assert_eq!(compact(&b)["outcome"], "dropped");
    prebuild();
    env.json::<Value>(&typed(
        "run gc",
        &json!({"table": "ttl", "grace_seconds": 0}),
    ));
    assert_eq!(
        queryable_ids(&env, "4.jsonl"),
        vec![2, 3],
        "key 1 never came back"
    );
    assert!(env.ok(&["verify", "--table", "ttl"]).contains("matches"));
}
