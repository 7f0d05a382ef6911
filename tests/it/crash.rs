//! Crashes: a process SIGKILLed at each step of compact, merge and gc leaves the table correct,
//! running the job again finishes the work, and gc collects whatever the crash left behind.

use serde_json::{json, Value};

use crate::common::{typed, TestEnv};

fn setup() -> TestEnv {
    let env = TestEnv::orders(24000, 3000, 12, 500);
    env.run_task("prebuild", &json!({"table": "orders", "partition": 0}));
    env
}

fn online_ids(env: &TestEnv) -> Vec<i64> {
    let segments: Vec<Value> = env.online("orders", 0);
    segments.iter().map(|s| s["id"].as_i64().unwrap()).collect()
}

/// Kills `kind args` at `point`, then checks the table, reruns the job, lands and collects.
fn crash_at(env: &TestEnv, kind: &str, args: &Value, point: &str) {
    let before = env.valid_rows(&format!("{point}-before.jsonl"));
    let mut child = env.spawn_paused(point, &typed(&format!("run {kind}"), args), point);
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert_eq!(
        env.valid_rows(&format!("{point}-crashed.jsonl")),
        before,
        "killed at {point}: readers see the same valid rows"
    );
    // The job runs again (what the queue does after the lease expires) and finishes the work,
    // or finds it done.
    let report = env.run_task(kind, &args.clone());
    let outcome = report["outcome"].as_str().unwrap_or("collected");
    assert!(
        [
            "compacted",
            "merged",
            "dropped",
            "not_online",
            "nothing_to_compact"
        ]
        .contains(&outcome)
            || kind == "gc",
        "{point}: {report}"
    );
    env.run_task("prebuild", &json!({"table": "orders", "partition": 0}));
    env.run_task("gc", &json!({"table": "orders", "grace_seconds": 0}));
    env.assert_only_referenced_objects("orders");
    assert_eq!(
        env.valid_rows(&format!("{point}-after.jsonl")),
        before,
        "{point}"
    );
    assert!(env
        .ok(&["verify", "--table", "orders"])
        .contains("partition 0: snapshot"));
}

#[test]
fn compaction_survives_sigkill_at_every_step() {
    let env = setup();
    let points = [
        "compact:before_upload",
        "compact:after_upload",
        "compact:after_swap",
    ];
    for (round, point) in points.into_iter().enumerate() {
        // Outputs keep their input's place in sequence order: round i takes a fresh segment.
        let ids = online_ids(&env);
        let args = json!({"table": "orders", "segment_id": ids[round]});
        crash_at(&env, "compact", &args, point);
        if point == "compact:after_swap" {
            assert!(
                !online_ids(&env).contains(&ids[round]),
                "the swap had committed"
            );
        }
    }
}

#[test]
fn merge_survives_sigkill_at_every_step() {
    let env = setup();
    let points = [
        "merge:before_upload",
        "merge:after_upload",
        "merge:after_swap",
    ];
    for (round, point) in points.into_iter().enumerate() {
        let ids = online_ids(&env);
        let args = json!({"table": "orders", "partition": 0, "segment_ids": ids[round..round + 3]});
        crash_at(&env, "merge", &args, point);
    }
}

#[test]
fn gc_survives_sigkill_between_objects_and_rows() {
    let env = setup();
    for id in online_ids(&env).into_iter().take(4) {
        env.run_task("compact", &json!({"table": "orders", "segment_id": id}));
    }
    env.run_task("prebuild", &json!({"table": "orders", "partition": 0}));
    let args = json!({"table": "orders", "grace_seconds": 0});
    crash_at(&env, "gc", &args, "gc:after_snapshot_objects");
    for id in online_ids(&env).into_iter().skip(4).take(2) {
        env.run_task("compact", &json!({"table": "orders", "segment_id": id}));
    }
    env.run_task("prebuild", &json!({"table": "orders", "partition": 0}));
    crash_at(&env, "gc", &args, "gc:after_segment_objects");
}
