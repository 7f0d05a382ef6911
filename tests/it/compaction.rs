//! Compaction: only valid rows survive, in order, with the input's sequence; the swap is atomic;
//! racing compactions of one segment have exactly one winner; bad input is discarded.

use serde_json::{json, Value};

use crate::common::{python, StoreKind, TestEnv};

fn setup() -> TestEnv {
    let env = TestEnv::new(StoreKind::Local);
    env.ok(&["migrate"]);
    env.create_example_table("orders.toml");
    env.ok(&[
        "ingest",
        "--table",
        "orders",
        "--generate",
        "30000",
        "--keys",
        "2000",
        "--seed",
        "4",
        "--segment-rows",
        "3000",
    ]);
    env
}

fn prebuild(env: &TestEnv, partition: u32) -> Value {
    env.json(&[
        "run",
        "prebuild",
        &json!({"table": "orders", "partition": partition}).to_string(),
    ])
}

fn compact(env: &TestEnv, segment_id: i64) -> Value {
    env.json(&[
        "run",
        "compact",
        &json!({"table": "orders", "segment_id": segment_id}).to_string(),
    ])
}

fn online(env: &TestEnv, partition: u32) -> Vec<Value> {
    env.json(&[
        "segment",
        "ls",
        "--table",
        "orders",
        "--partition",
        &partition.to_string(),
        "--state",
        "online",
        "--json",
    ])
}

/// Every valid row of partition 0, as sorted JSON lines.

#[test]
fn compaction_keeps_exactly_the_valid_rows() {
    let env = setup();
    prebuild(&env, 0);
    let before = env.valid_rows("before.jsonl");
    let segments = online(&env, 0);
    let rows_before: i64 = segments
        .iter()
        .map(|s| s["row_count"].as_i64().unwrap())
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
            let new: Value = online(&env, 0)
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
    // Until it runs, a restarting server loads correctly without the stale snapshot.
    let stale_dir = env.path("stale");
    let out = env.ok(&[
        "bootstrap",
        "--table",
        "orders",
        "--partition",
        "0",
        "--dir",
        stale_dir.to_str().unwrap(),
    ]);
    assert!(
        out.contains("no longer online") && out.contains("without snapshot"),
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
    let rows_after: i64 = online(&env, 0)
        .iter()
        .map(|s| s["row_count"].as_i64().unwrap())
        .sum();
    assert_eq!(
        rows_after as usize,
        after.len(),
        "compacted segments hold only valid rows"
    );
    assert!(rows_after < rows_before);
    let verified = env.ok(&["verify", "--table", "orders"]);
    assert!(
        verified.contains("partition 0: snapshot 2 matches"),
        "{verified}"
    );
    // DuckDB reads every compacted segment.
    let table_json = env.path("orders.json");
    std::fs::write(&table_json, env.ok(&["table", "show", "orders", "--json"])).unwrap();
    let mut files = Vec::new();
    for segment in online(&env, 0) {
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
    let segment = online(&env, 1)[0]["id"].as_i64().unwrap();
    let args = json!({"table": "orders", "segment_id": segment}).to_string();
    let racers: Vec<_> = (0..3)
        .map(|i| env.spawn(&format!("racer{i}"), &["run", "compact", &args]))
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
    let segment = online(&env, 2)[0].clone();
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
    let err = env.fails(&[
        "run",
        "compact",
        &json!({"table": "orders", "segment_id": id}).to_string(),
    ]);
    assert!(
        err.contains("has checksum") && err.contains("restore the object"),
        "{err}"
    );
    assert_eq!(online(&env, 2)[0]["id"], segment["id"], "catalog unchanged");
    let err = env.fails(&[
        "run",
        "compact",
        r#"{"table": "orders", "segment_id": 999999}"#,
    ]);
    assert!(err.contains("segment 999999 does not exist"), "{err}");
}
