//! What a killed process leaves behind stops mattering quickly (issue 10): the sequence
//! reservations of a killed ingest, and the staging directories of killed jobs.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::{typed, TestEnv};

fn outstanding(env: &TestEnv) -> usize {
    env.with_catalog(async |catalog| {
        let mut total = 0;
        for partition in 0..4 {
            total += catalog
                .outstanding_reservations("orders", partition)
                .await
                .unwrap()
                .len();
        }
        total
    })
}

fn plan(env: &TestEnv) -> Value {
    env.run_task("plan", &json!({"table": "orders", "submit": false}))["plan"].clone()
}

fn prebuild_all(env: &TestEnv) {
    for partition in 0..4 {
        env.run_task(
            "prebuild",
            &json!({"table": "orders", "partition": partition}),
        );
    }
}

/// Orders with an ingest paused right before it registers (its sequences reserved under `lease`),
/// newer segments registered above its reservations, and every partition prebuilt.
fn stalled_ingest(lease: &str) -> (TestEnv, std::process::Child) {
    let env = TestEnv::orders(8000, 1500, 3, 500);
    let ingest = [
        "ingest",
        "--table",
        "orders",
        "--generate",
        "2000",
        "--keys",
        "1500",
        "--seed",
        "4",
        "--segment-rows",
        "500",
        "--reservation-lease",
        lease,
    ];
    let paused = env.spawn_paused("ingest", &ingest, "ingest:before_register");
    env.ingest_generated(8000, 1500, 5, 500);
    prebuild_all(&env);
    (env, paused)
}

#[test]
fn reservations_of_a_killed_ingest_are_released_within_their_lease() {
    // An ingest that has reserved its sequences and is about to register, renewing a 3s lease
    // (every second: a loaded machine must not make a live ingest look dead).
    let (env, mut paused) = stalled_ingest("3s");
    let held = outstanding(&env);
    assert!(held >= 4, "one reservation per segment it wrote");

    // Alive (renewing): longer than its lease later, plan keeps its reservations and splits
    // merges there.
    std::thread::sleep(Duration::from_secs(4));
    let live = plan(&env);
    assert_eq!(live["reservations_expired"], 0, "{live}");
    assert!(
        live["skipped"]["merge_split_by_reservation"]
            .as_u64()
            .unwrap_or(0)
            >= 1,
        "{live}"
    );
    assert_eq!(outstanding(&env), held);

    // Killed: once its lease has run out the next plan releases them, and proposes merges across.
    paused.kill().unwrap();
    paused.wait().unwrap();
    let killed_at = Instant::now();
    std::thread::sleep(Duration::from_millis(3500));
    let after = plan(&env);
    assert!(killed_at.elapsed() < Duration::from_secs(60));
    assert_eq!(
        after["reservations_expired"].as_u64().unwrap(),
        held as u64,
        "{after}"
    );
    assert!(
        after["skipped"].get("merge_split_by_reservation").is_none(),
        "{after}"
    );
    assert_eq!(outstanding(&env), 0);
    let merges = after["merge"].as_array().unwrap();
    assert!(!merges.is_empty(), "{after}");
    for group in merges {
        let ids: Vec<&Value> = group["segments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| &s["segment_id"])
            .collect();
        let report = env.run_task(
            "merge",
            &json!({"table": "orders", "partition": group["partition"], "segment_ids": ids}),
        );
        assert_eq!(report["outcome"], "merged", "{report}");
    }
}

#[test]
fn a_merge_that_the_swap_would_refuse_does_no_work() {
    let (env, mut paused) = stalled_ingest("1h");
    let online = env.online("orders", 0);
    let ids: Vec<&Value> = [&online[0], online.last().unwrap()]
        .into_iter()
        .map(|s| &s["id"])
        .collect();
    let report = env.run_task(
        "merge",
        &json!({"table": "orders", "partition": 0, "segment_ids": ids}),
    );
    assert_eq!(report["outcome"], "sequence_gap", "{report}");
    // Refused before any download or rewrite.
    let rewritten = report["row_groups"].as_object().unwrap();
    assert!(rewritten.values().all(|v| v == 0), "{report}");
    paused.kill().unwrap();
    paused.wait().unwrap();
}

/// Directories under `{staging}/minion-staging`.
fn staging_dirs(staging: &std::path::Path) -> Vec<std::path::PathBuf> {
    match std::fs::read_dir(staging.join("minion-staging")) {
        Ok(entries) => entries.map(|e| e.unwrap().path()).collect(),
        Err(_) => Vec::new(),
    }
}

#[test]
fn a_starting_worker_removes_the_staging_of_killed_processes_only() {
    let env = TestEnv::orders(6000, 1500, 3, 500);
    let staging = env.path("staging");
    let staging_env = [("MINION_STAGING_DIR", staging.to_str().unwrap())];
    let point = "prebuild:before_publish";
    let prebuild = |partition: u32| {
        let args = typed(
            "run prebuild",
            &json!({"table": "orders", "partition": partition}),
        );
        let name = format!("prebuild-{partition}");
        env.spawn_paused_with(&name, &args, point, &staging_env)
    };
    let mut killed = prebuild(0);
    let dead = staging_dirs(&staging);
    assert_eq!(dead.len(), 1, "{dead:?}");
    let files = walk(&dead[0]);
    assert!(files > 1, "the prebuild staged its files there ({files})");
    killed.kill().unwrap();
    killed.wait().unwrap();
    assert!(dead[0].exists(), "a SIGKILLed process leaves its directory");

    // A live process's directory (another paused prebuild) is left alone.
    let mut live = prebuild(1);
    let live_dir: Vec<_> = staging_dirs(&staging)
        .into_iter()
        .filter(|d| d != &dead[0])
        .collect();
    assert_eq!(live_dir.len(), 1);

    let mut worker = env.spawn_with("worker", &["worker", "--concurrency", "1"], &staging_env);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !env.log("worker").contains("worker started") {
        assert!(Instant::now() < deadline, "{}", env.log("worker"));
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !dead[0].exists(),
        "the worker removed the dead process's directory"
    );
    assert!(live_dir[0].exists(), "and left the live one alone");
    assert!(env.log("worker").contains("removed staging directories"));

    // The live prebuild finishes and removes its own directory; the worker's goes when it stops.
    std::fs::write(env.path("prebuild-1.resume"), b"").unwrap();
    assert!(live.wait().unwrap().success(), "{}", env.log("prebuild-1"));
    assert!(!live_dir[0].exists());
    crate::common::sigterm(&worker);
    assert!(worker.wait().unwrap().success());
    assert!(
        staging_dirs(&staging).is_empty(),
        "{:?}",
        staging_dirs(&staging)
    );
}

fn walk(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .map(|e| {
                    let path = e.unwrap().path();
                    if path.is_dir() {
                        walk(&path)
                    } else {
                        1
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}
