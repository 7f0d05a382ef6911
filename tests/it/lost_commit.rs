//! The answer to a catalog write is lost (issue 10): a proxy between `minion` and Postgres cuts
//! the connection right around a COMMIT. For every write that others depend on, the catalog and
//! the store agree afterwards, the outcome was learned (or is reported unknown), and a rerun
//! converges.

use std::time::Duration;

use serde_json::{json, Value};

use crate::common::{typed, StoreKind, TestEnv};
use crate::proxy::{upstream_of, Cut, PgProxy};

/// A world with the orders table, and a proxy in front of its database.
fn world() -> (TestEnv, PgProxy, String) {
    let env = TestEnv::new(StoreKind::Local);
    env.ok(&["migrate"]);
    env.create_example_table("orders.toml");
    let proxy = PgProxy::start(&upstream_of(&env.db.url));
    let via = proxy.url_for(&env.db.url);
    (env, proxy, via)
}

fn through(
    env: &TestEnv,
    via: &str,
    args: &[&str],
    extra: &[(&str, &str)],
) -> std::process::Output {
    let mut all = vec![("DATABASE_URL", via)];
    all.extend_from_slice(extra);
    env.minion_with(args, &all)
}

fn succeeded(output: &std::process::Output) -> (String, String) {
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    );
    assert!(output.status.success(), "failed:\n{stdout}{stderr}");
    (stdout, stderr)
}

const INGEST: &[&str] = &[
    "ingest",
    "--table",
    "orders",
    "--generate",
    "4000",
    "--keys",
    "700",
    "--seed",
    "5",
    "--segment-rows",
    "1000",
    "--json",
];

fn ingest_args(key: Option<&str>) -> Vec<&str> {
    let mut args = INGEST.to_vec();
    if let Some(key) = key {
        args.extend(["--idempotency-key", key]);
    }
    args
}

/// Every segment row not yet collected has its object, every snapshot its manifest, and (after
/// `gc` with grace 0) the store holds nothing the catalog does not reference.
fn assert_agree(env: &TestEnv) {
    let objects = env.objects();
    let segments: Vec<Value> = env.json(&["segment", "ls", "--table", "orders", "--json"]);
    for segment in &segments {
        let key = segment["object_key"].as_str().unwrap();
        assert!(objects.contains(key), "segment {segment} has no object");
    }
    let snapshots: Vec<Value> = env.json(&["snapshot", "ls", "--table", "orders", "--json"]);
    for snapshot in &snapshots {
        let key = snapshot["manifest_key"].as_str().unwrap();
        assert!(objects.contains(key), "snapshot {snapshot} has no manifest");
    }
    env.run_task("gc", &json!({"table": "orders", "grace_seconds": 0}));
    env.assert_only_referenced_objects("orders");
}

fn segment_count(env: &TestEnv) -> usize {
    let segments: Vec<Value> = env.json(&["segment", "ls", "--table", "orders", "--json"]);
    segments.len()
}

#[test]
fn ingest_learns_that_its_registration_committed() {
    let (env, proxy, via) = world();
    proxy.arm(Cut::after_commit_of("INSERT INTO segments"));
    let (stdout, stderr) = succeeded(&through(&env, &via, &ingest_args(None), &[]));
    assert_eq!(proxy.fired(), 1);
    assert!(stderr.contains("answer to a COMMIT was lost"), "{stderr}");
    assert!(stderr.contains("the write had committed"), "{stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["outcome"], "registered");
    let ids = report["segment_ids"].as_array().unwrap().len();
    assert!(ids >= 4, "{report}");
    assert_eq!(segment_count(&env), ids);
    assert_agree(&env);
}

#[test]
fn ingest_deletes_its_uploads_only_when_the_registration_did_not_commit() {
    let (env, proxy, via) = world();
    // The COMMIT never reaches Postgres: the outcome learned is "aborted", a definite no.
    proxy.arm(Cut {
        deliver: false,
        ..Cut::after_commit_of("INSERT INTO segments")
    });
    let output = through(&env, &via, &ingest_args(None), &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("the write had not committed"), "{stderr}");
    assert_eq!(segment_count(&env), 0);
    assert!(
        env.objects().is_empty(),
        "uploads deleted: {:?}",
        env.objects()
    );
    // And a rerun goes through.
    succeeded(&through(&env, &via, &ingest_args(None), &[]));
    assert_agree(&env);
}

#[test]
fn an_unknown_registration_outcome_keeps_the_uploads_and_a_keyed_rerun_is_a_no_op() {
    let (env, proxy, via) = world();
    let quick = [("MINION_COMMIT_LEARN_DEADLINE", "1s")];
    // Committed, but the catalog stays away longer than the ingest asks.
    proxy.arm(Cut {
        refuse_for: Duration::from_secs(4),
        ..Cut::after_commit_of("INSERT INTO segments")
    });
    let output = through(&env, &via, &ingest_args(Some("batch-1")), &quick);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!output.status.success());
    for needle in [
        "outcome of registering",
        "is unknown",
        "minion segment ls --table orders",
        "--idempotency-key batch-1",
        "left in place",
    ] {
        assert!(stderr.contains(needle), "`{needle}` in: {stderr}");
    }
    let registered = segment_count(&env);
    assert!(registered >= 4, "the commit went through");
    std::thread::sleep(Duration::from_secs(4));
    let (stdout, _) = succeeded(&through(&env, &via, &ingest_args(Some("batch-1")), &[]));
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["outcome"], "already_registered", "{report}");
    assert_eq!(report["segment_ids"].as_array().unwrap().len(), registered);
    assert_eq!(
        segment_count(&env),
        registered,
        "the rerun registered nothing"
    );
    assert_agree(&env);

    // Not committed (the COMMIT dropped), and unknown: uploads stay for gc; the keyed rerun
    // registers.
    proxy.arm(Cut {
        deliver: false,
        refuse_for: Duration::from_secs(4),
        ..Cut::after_commit_of("INSERT INTO segments")
    });
    let before = env.objects().len();
    let output = through(&env, &via, &ingest_args(Some("batch-2")), &quick);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("is unknown"));
    assert_eq!(segment_count(&env), registered, "nothing registered");
    assert!(env.objects().len() > before, "uploads left in place");
    std::thread::sleep(Duration::from_secs(4));
    let (stdout, _) = succeeded(&through(&env, &via, &ingest_args(Some("batch-2")), &[]));
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["outcome"], "registered", "{report}");
    assert_eq!(segment_count(&env), 2 * registered);
    assert_agree(&env);
}

#[test]
fn a_reservation_whose_answer_was_lost_is_learned() {
    let (env, proxy, via) = world();
    proxy.arm(Cut::after_commit_of("INSERT INTO sequence_reservations"));
    let (_, stderr) = succeeded(&through(&env, &via, &ingest_args(None), &[]));
    assert_eq!(proxy.fired(), 1);
    assert!(stderr.contains("the write had committed"), "{stderr}");
    assert_agree(&env);
}

/// A world with ingested, prebuilt segments, ready for compaction.
fn compactable() -> (TestEnv, PgProxy, String) {
    let (env, proxy, via) = world();
    env.ingest_generated(12000, 1500, 7, 500);
    env.run_task("prebuild", &json!({"table": "orders", "partition": 0}));
    (env, proxy, via)
}

fn run_through(env: &TestEnv, via: &str, kind: &str, args: &Value) -> (Value, String) {
    let words = typed(&format!("run {kind}"), args);
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    let (stdout, stderr) = succeeded(&through(env, via, &words, &[]));
    (serde_json::from_str(&stdout).unwrap(), stderr)
}

#[test]
fn compact_and_merge_learn_that_their_swap_committed() {
    let (env, proxy, via) = compactable();
    let before = env.valid_rows("before.jsonl");
    let online = env.online("orders", 0);
    proxy.arm(Cut::after_commit_of("UPDATE segments SET state"));
    let (report, stderr) = run_through(
        &env,
        &via,
        "compact",
        &json!({"table": "orders", "segment_id": online[0]["id"]}),
    );
    assert_eq!(report["outcome"], "compacted", "{report}\n{stderr}");
    assert!(stderr.contains("the write had committed"), "{stderr}");

    let ids: Vec<&Value> = online[1..4].iter().map(|s| &s["id"]).collect();
    proxy.arm(Cut::after_commit_of("UPDATE segments SET state"));
    let (report, stderr) = run_through(
        &env,
        &via,
        "merge",
        &json!({"table": "orders", "partition": 0, "segment_ids": ids}),
    );
    assert_eq!(report["outcome"], "merged", "{report}\n{stderr}");
    assert!(stderr.contains("the write had committed"), "{stderr}");
    assert_eq!(proxy.fired(), 2);

    // The follow-up prebuild was queued in the same transaction; run it, then everything agrees.
    env.run_task("prebuild", &json!({"table": "orders", "partition": 0}));
    assert_eq!(env.valid_rows("after.jsonl"), before);
    assert_agree(&env);
}

#[test]
fn prebuild_learns_that_its_publish_committed_and_gc_its_deletions() {
    let (env, proxy, via) = compactable();
    env.ingest_generated(3000, 1500, 8, 1000);
    proxy.arm(Cut::after_commit_of("INSERT INTO snapshots"));
    let (report, stderr) = run_through(
        &env,
        &via,
        "prebuild",
        &json!({"table": "orders", "partition": 0}),
    );
    assert_eq!(report["outcome"], "published", "{report}\n{stderr}");
    assert!(stderr.contains("the write had committed"), "{stderr}");
    // Running again finds it published.
    let again = env.run_task("prebuild", &json!({"table": "orders", "partition": 0}));
    assert_eq!(again["outcome"], "up_to_date", "{again}");

    let online = env.online("orders", 0);
    env.run_task(
        "compact",
        &json!({"table": "orders", "segment_id": online[0]["id"]}),
    );
    env.run_task("prebuild", &json!({"table": "orders", "partition": 0}));
    proxy.arm(Cut::after_commit_of("DELETE FROM segments"));
    let (report, stderr) = run_through(
        &env,
        &via,
        "gc",
        &json!({"table": "orders", "grace_seconds": 0}),
    );
    assert!(stderr.contains("the write had committed"), "{stderr}");
    assert_eq!(report["segments_collected"], 1, "{report}");
    assert_agree(&env);
    assert!(env
        .ok(&["verify", "--table", "orders"])
        .contains("partition 0: snapshot"));
}

#[test]
fn a_worker_learns_that_a_completion_committed() {
    let (env, proxy, via) = world();
    let mut worker = env.spawn_with(
        "worker",
        &["worker", "--concurrency", "2", "--poll-interval", "100ms"],
        &[("DATABASE_URL", &via)],
    );
    proxy.arm(Cut {
        marker: "SET state = 'completed'",
        at_commit: false,
        deliver: true,
        refuse_for: Duration::ZERO,
    });
    let submitted = env.ok(&["job", "submit", "noop"]);
    let id = submitted
        .split_whitespace()
        .find_map(|word| {
            word.trim_matches(|c: char| !c.is_ascii_digit())
                .parse::<i64>()
                .ok()
        })
        .expect("job id printed");
    let job = env.wait_job_state(&id.to_string(), "completed");
    assert_eq!(job["attempt"], 1, "{job}");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !env.log("worker").contains("had committed") {
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            env.log("worker")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    worker.kill().unwrap();
    worker.wait().unwrap();
    assert_eq!(proxy.fired(), 1);
    let log = env.log("worker");
    assert!(!log.contains("results dropped"), "{log}");
}
