//! Readers beside compaction, merge and gc (invariant 6): a reader that pins a snapshot, and one
//! that reads the current state, never see a key twice or miss a live one; a compaction racing a
//! newer snapshot stays correct.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use serde_json::{json, Value};

use crate::common::TestEnv;

fn setup() -> TestEnv {
    let env = TestEnv::orders(20000, 2000, 21, 600);
    env.run_task("prebuild", &json!({"table": "orders", "partition": 0}));
    env
}

fn sorted_lines(path: &std::path::Path) -> Vec<String> {
    let mut rows: Vec<String> = std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    rows.sort();
    rows
}

fn pinned_rows(env: &TestEnv, version: i64, name: &str) -> Vec<String> {
    let path = env.path(name);
    env.ok(&[
        "scan",
        "--table",
        "orders",
        "--partition",
        "0",
        "--snapshot",
        &version.to_string(),
        "--valid-only",
        "--output",
        path.to_str().unwrap(),
    ]);
    sorted_lines(&path)
}

fn latest_version(env: &TestEnv) -> i64 {
    let snapshots: Vec<Value> = env.json(&[
        "snapshot",
        "ls",
        "--table",
        "orders",
        "--partition",
        "0",
        "--json",
    ]);
    snapshots
        .iter()
        .map(|s| s["version"].as_i64().unwrap())
        .max()
        .unwrap()
}

/// Runs the compaction plan's jobs for `orders` in this process, one by one.
fn compact_and_merge(env: &TestEnv) -> usize {
    let planned = env.run_task("plan", &json!({"table": "orders", "submit": false}));
    let mut jobs = 0;
    for group in planned["plan"]["merge"].as_array().unwrap() {
        let ids: Vec<Value> = group["segments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["segment_id"].clone())
            .collect();
        env.run_task(
            "merge",
            &json!({"table": "orders", "partition": group["partition"], "segment_ids": ids}),
        );
        jobs += 1;
    }
    for candidate in planned["plan"]["compact"].as_array().unwrap() {
        env.run_task(
            "compact",
            &json!({"table": "orders", "segment_id": candidate["segment_id"]}),
        );
        jobs += 1;
    }
    jobs
}

#[test]
fn readers_beside_compaction_merge_and_gc_see_every_key_once() {
    let env = setup();
    let expected = env.valid_rows("expected.jsonl");
    let first_version = latest_version(&env);
    let stop = AtomicBool::new(false);
    let (pinned_reads, current_reads) = (AtomicUsize::new(0), AtomicUsize::new(0));
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let mut round = 0;
            while !stop.load(Ordering::SeqCst) {
                round += 1;
                let version = latest_version(&env);
                let rows = pinned_rows(&env, version, &format!("pinned-{round}.jsonl"));
                assert_eq!(rows, expected, "pinned snapshot {version} (round {round})");
                pinned_reads.fetch_add(1, Ordering::SeqCst);
                let rows = env.valid_rows(&format!("current-{round}.jsonl"));
                assert_eq!(rows, expected, "current state (round {round})");
                current_reads.fetch_add(1, Ordering::SeqCst);
            }
        });
        let mut jobs = 0;
        for _ in 0..2 {
            jobs += compact_and_merge(&env);
            env.run_task("prebuild", &json!({"table": "orders", "partition": 0}));
            // A grace period longer than this test: pinned snapshots stay readable.
            env.run_task("gc", &json!({"table": "orders", "grace_seconds": 300}));
        }
        assert!(jobs > 0, "the plan found work");
        // Let the readers see the final state at least once.
        let seen = pinned_reads.load(Ordering::SeqCst);
        while pinned_reads.load(Ordering::SeqCst) < seen + 2 {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        stop.store(true, Ordering::SeqCst);
    });
    assert!(current_reads.load(Ordering::SeqCst) >= 2);
    // The first snapshot, pinned all along, still reads the same rows from its own segments...
    assert_eq!(pinned_rows(&env, first_version, "first.jsonl"), expected);
    // ...until gc collects it past its grace period: then the error says what happened.
    env.run_task("gc", &json!({"table": "orders", "grace_seconds": 0}));
    let err = env.fails(&[
        "scan",
        "--table",
        "orders",
        "--partition",
        "0",
        "--snapshot",
        &first_version.to_string(),
        "--output",
        env.path("gone.jsonl").to_str().unwrap(),
    ]);
    assert!(
        err.contains(&format!("no snapshot {first_version}")),
        "{err}"
    );
}

#[test]
fn a_compaction_racing_a_newer_snapshot_stays_correct() {
    let env = setup();
    let segments: Vec<Value> = env.online("orders", 0);
    let target = &segments[0];
    // The compaction has its bitmap from snapshot 1 and its output uploaded when newer versions
    // of the same keys arrive and a newer snapshot is published.
    let expected = env.compact_racing_a_newer_snapshot(target, || env.valid_rows("expected.jsonl"));
    let now: Vec<Value> = env.online("orders", 0);
    assert!(
        !now.iter().any(|s| s["id"] == target["id"]),
        "the compaction swapped in"
    );
    // Rows valid in snapshot 1 but beaten since are still in the output; they stay invalid.
    assert_eq!(env.valid_rows("between.jsonl"), expected);
    env.run_task("prebuild", &json!({"table": "orders", "partition": 0}));
    assert_eq!(env.valid_rows("after.jsonl"), expected);
    assert!(env.ok(&["verify", "--table", "orders"]).contains("matches"));
}
