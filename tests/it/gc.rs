//! Garbage collection: what it removes, what it must keep, and that the table stays correct.

use std::path::PathBuf;

use serde_json::{json, Value};

use crate::common::{typed, TestEnv};

fn setup() -> TestEnv {
    TestEnv::orders(20000, 1500, 9, 2500)
}

#[test]
fn gc_collects_replaced_segments_and_superseded_snapshots() {
    let env = setup();
    env.run_task("prebuild", &json!({"table": "orders", "partition": 0}));
    let before = env.valid_rows("before.jsonl");
    let segments: Vec<Value> = env.online("orders", 0);
    for segment in &segments {
        env.run_task(
            "compact",
            &json!({"table": "orders", "segment_id": segment["id"]}),
        );
    }
    env.run_task("prebuild", &json!({"table": "orders", "partition": 0}));
    let report = env.run_task("gc", &json!({"table": "orders", "grace_seconds": 0}));
    assert!(
        report["segments_collected"].as_u64().unwrap() > 0,
        "{report}"
    );
    assert_eq!(
        report["snapshots_collected"], 1,
        "snapshot 1 is superseded: {report}"
    );

    // Nothing is left but what the catalog references.
    let all: Vec<Value> = env.json(&["segment", "ls", "--table", "orders", "--json"]);
    assert!(
        all.iter().all(|s| s["state"] == "online"),
        "retired rows are gone"
    );
    let snapshots: Vec<Value> = env.json(&["snapshot", "ls", "--table", "orders", "--json"]);
    assert_eq!(snapshots.len(), 1);
    env.assert_only_referenced_objects("orders");
    // And the table is exactly as it was.
    assert_eq!(env.valid_rows("after.jsonl"), before);
    assert!(env
        .ok(&["verify", "--table", "orders"])
        .contains("partition 0: snapshot 2 matches"));
}

#[test]
fn gc_keeps_what_a_retained_snapshot_covers_and_young_orphans() {
    let env = setup();
    env.run_task("prebuild", &json!({"table": "orders", "partition": 1}));
    let segment: Vec<Value> = env.online("orders", 1);
    let first = &segment[0];
    let report = env.run_task(
        "compact",
        &json!({"table": "orders", "segment_id": first["id"]}),
    );
    assert_eq!(report["outcome"], "compacted");
    // No prebuild since: the latest snapshot still covers the replaced segment.
    let root = PathBuf::from(&env.store_url);
    let stray = root.join("tables/orders/p1/segments/stray.parquet");
    std::fs::write(&stray, b"left by a crashed upload").unwrap();
    let report = env.run_task("gc", &json!({"table": "orders", "grace_seconds": 3600}));
    assert_eq!(report["segments_collected"], 0, "{report}");
    assert_eq!(report["orphans_too_young"], 1, "{report}");
    assert!(stray.exists());

    let report = env.run_task("gc", &json!({"table": "orders", "grace_seconds": 0}));
    assert_eq!(
        report["segments_collected"], 0,
        "covered by the retained snapshot: {report}"
    );
    assert_eq!(report["orphans_deleted"], 1, "{report}");
    assert!(!stray.exists());
    assert!(
        root.join(first["object_key"].as_str().unwrap()).exists(),
        "the covered segment's object stays"
    );

    // Once a newer snapshot no longer covers it, it goes.
    env.run_task("prebuild", &json!({"table": "orders", "partition": 1}));
    let report = env.run_task("gc", &json!({"table": "orders", "grace_seconds": 0}));
    assert_eq!(report["segments_collected"], 1, "{report}");
    assert!(!root.join(first["object_key"].as_str().unwrap()).exists());
    let err = env.fails(&typed(
        "run gc",
        &json!({"table": "orders", "grace_seconds": -1}),
    ));
    assert!(err.contains("`grace_seconds` must be 0 or more"), "{err}");
}
