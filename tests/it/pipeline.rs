//! Random sequences of ingest / prebuild / plan / compact / merge / gc on a small table with many
//! ties: after every step `minion scan --valid-only` holds exactly the winners of a naive model of
//! the whole stream, and at the end DuckDB computes the same winners from the ingested files.

use std::collections::{BTreeMap, BTreeSet};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use crate::common::{python, StoreKind, TestEnv};

const TABLE: &str = r#"
name = "events"
partitions = 2
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

[[columns]]
name = "n"
type = "int64"

[compaction]
invalid_ratio_threshold = 0.1
invalid_count_threshold = 1
target_segment_rows = 600
max_segments_per_merge = 4
max_tasks_per_table = 100
"#;

/// The stream so far and its winners: key -> (ts, n) of the winning row.
struct Model {
    winners: BTreeMap<i64, (i64, i64)>,
    next_n: i64,
    files: Vec<String>,
}

impl Model {
    fn valid(&self) -> BTreeSet<i64> {
        self.winners.values().map(|&(_, n)| n).collect()
    }
}

fn ingest_batch(env: &TestEnv, model: &mut Model, rng: &mut StdRng, rows: usize) {
    ingest_batch_of(env, model, rng, rows, 800, 60..400);
}

/// Appends `rows` random rows over keys `0..keys` (timestamps with many ties) to the stream,
/// ingests them in segments of a random size from `segment_rows`, and updates the model.
fn ingest_batch_of(
    env: &TestEnv,
    model: &mut Model,
    rng: &mut StdRng,
    rows: usize,
    keys: i64,
    segment_rows: std::ops::Range<usize>,
) {
    let path = env.path(&format!("batch-{}.jsonl", model.files.len()));
    let mut lines = String::new();
    for _ in 0..rows {
        let (id, ts, n) = (
            rng.gen_range(0..keys),
            rng.gen_range(0..12i64),
            model.next_n,
        );
        let deleted = rng.gen_bool(0.1);
        lines.push_str(&json!({"id": id, "ts": ts, "deleted": deleted, "n": n}).to_string());
        lines.push('\n');
        model.next_n += 1;
        let entry = model.winners.entry(id).or_insert((ts, n));
        if (ts, n) > *entry {
            *entry = (ts, n);
        }
    }
    std::fs::write(&path, lines).unwrap();
    let segment_rows = rng.gen_range(segment_rows).to_string();
    env.ok(&[
        "ingest",
        "--table",
        "events",
        "--input",
        path.to_str().unwrap(),
        "--segment-rows",
        &segment_rows,
    ]);
    model.files.push(path.display().to_string());
}

fn scanned(env: &TestEnv, step: usize) -> BTreeSet<i64> {
    let path = env.path(&format!("scan-{step}.jsonl"));
    env.ok(&[
        "scan",
        "--table",
        "events",
        "--valid-only",
        "--output",
        path.to_str().unwrap(),
    ]);
    let mut seen = BTreeSet::new();
    for line in std::fs::read_to_string(path).unwrap().lines() {
        let row: Value = serde_json::from_str(line).unwrap();
        assert!(seen.insert(row["n"].as_i64().unwrap()), "row twice: {line}");
    }
    seen
}

#[test]
fn any_sequence_of_operations_keeps_exactly_the_stream_winners() {
    random_operations(TABLE, 20261121, false);
}

/// The same with a `deleted_keys_ttl` that forgets old tombstones (which the slow path, reading
/// segments alone, keeps by design): after every step the load through lineage equals the load
/// that sends every replacement through the compare path.
#[test]
fn any_sequence_of_operations_with_a_ttl_loads_the_same_through_lineage() {
    let table = TABLE.replace(
        "delete_column = \"deleted\"\n",
        "delete_column = \"deleted\"\n\n[ttl]\ndeleted_keys_ttl = 4\n",
    );
    assert!(table.contains("[ttl]"));
    random_operations(&table, 20261129, true);
}

/// Random steps on `table`; after each one, scans and loads are checked. With `ttl` the stream
/// model does not predict what the TTL forgets: loads through lineage are compared with loads
/// without it instead of with the slow path, and the model checks are left out.
fn random_operations(table: &str, seed: u64, ttl: bool) {
    let env = TestEnv::new(StoreKind::Local);
    env.ok(&["migrate"]);
    let table_file = env.path("events.toml");
    std::fs::write(&table_file, table).unwrap();
    env.ok(&["table", "create", "--file", table_file.to_str().unwrap()]);
    let mut rng = StdRng::seed_from_u64(seed);
    let (mut mapped, mut refused) = (0, 0);
    let mut model = Model {
        winners: BTreeMap::new(),
        next_n: 0,
        files: Vec::new(),
    };
    ingest_batch(&env, &mut model, &mut rng, 1500);
    let mut done: BTreeMap<String, usize> = BTreeMap::new();
    // Prebuilds by method: layered on the previous snapshot, or full.
    let mut methods: BTreeMap<String, usize> = BTreeMap::new();
    for step in 0..24 {
        let partition = rng.gen_range(0..2u32);
        let op = match rng.gen_range(0..10) {
            0 | 1 if model.files.len() < 6 => {
                ingest_batch(&env, &mut model, &mut rng, 800);
                "ingest".to_string()
            }
            0..=2 => {
                let report = env.run_task(
                    "prebuild",
                    &json!({"table": "events", "partition": partition}),
                );
                *methods.entry(report["method"].to_string()).or_default() += 1;
                "prebuild".to_string()
            }
            3 | 4 => {
                let planned = env.run_task("plan", &json!({"table": "events", "submit": false}));
                let mut outcomes = Vec::new();
                for (kind, key) in [
                    ("prebuild", "prebuild"),
                    ("merge", "merge"),
                    ("compact", "compact"),
                ] {
                    for entry in planned["plan"][key].as_array().unwrap() {
                        let args = match kind {
                            "prebuild" => json!({"table": "events", "partition": entry}),
                            "merge" => json!({
                                "table": "events",
                                "partition": entry["partition"],
                                "segment_ids": entry["segments"].as_array().unwrap().iter()
                                    .map(|s| s["segment_id"].clone()).collect::<Vec<_>>(),
                            }),
                            _ => json!({"table": "events", "segment_id": entry["segment_id"]}),
                        };
                        let report = env.run_task(kind, &args);
                        if kind == "prebuild" {
                            *methods.entry(report["method"].to_string()).or_default() += 1;
                        }
                        outcomes.push(format!(
                            "{kind}:{}",
                            report["outcome"].as_str().unwrap_or("published")
                        ));
                    }
                }
                format!("plan[{}]", outcomes.join(","))
            }
            5 | 6 => {
                let segments = env.online("events", partition);
                let Some(segment) = segments.get(rng.gen_range(0..segments.len().max(1))) else {
                    continue;
                };
                let report = env.run_task(
                    "compact",
                    &json!({"table": "events", "segment_id": segment["id"]}),
                );
                format!("compact:{}", report["outcome"].as_str().unwrap())
            }
            7 | 8 => {
                let segments = env.online("events", partition);
                if segments.len() < 2 {
                    continue;
                }
                let first = rng.gen_range(0..segments.len() - 1);
                let count = rng.gen_range(2..=(segments.len() - first).min(4));
                let ids: Vec<Value> = segments[first..first + count]
                    .iter()
                    .map(|s| s["id"].clone())
                    .collect();
                let report = env.run_task(
                    "merge",
                    &json!({"table": "events", "partition": partition, "segment_ids": ids}),
                );
                let outcome = report["outcome"].as_str().unwrap();
                assert_ne!(
                    outcome, "sequence_gap",
                    "consecutive online segments never straddle a foreign sequence: {report}"
                );
                format!("merge:{outcome}")
            }
            _ => {
                env.run_task("gc", &json!({"table": "events", "grace_seconds": 0}));
                "gc".to_string()
            }
        };
        *done
            .entry(op.split(['[', ':']).next().unwrap().to_string())
            .or_default() += 1;
        let valid = scanned(&env, step);
        if !ttl {
            assert_eq!(
                valid,
                model.valid(),
                "after step {step} ({op}) the valid rows differ from the model"
            );
        }
        // Every snapshot is a from-scratch rebuild.
        let verified = env.ok(&["verify", "--table", "events"]);
        assert!(
            !verified.contains("differ"),
            "after step {step} ({op}): {verified}"
        );
        // Restarting now: the newest snapshot, mapped through the lineage of what was compacted
        // and merged since, loads exactly what the slow path (or, with a TTL, the compare path
        // for every replacement) does.
        for partition in 0..2u32 {
            let tag = format!("step-{step}");
            let report = if ttl {
                env.assert_bootstraps_agree("events", partition, &tag, (true, true), (true, false))
            } else {
                env.assert_bootstrap_exact("events", partition, &tag)
            };
            mapped += report.mapped_segments;
            refused += report.lineage_refused.len();
        }
    }
    assert!(
        mapped > 0,
        "no restart ever mapped a replacement through lineage ({refused} refused): {done:?}"
    );
    assert_eq!(
        refused, 0,
        "every replacement was made from the newest snapshot"
    );
    // With deleted_keys_ttl a prebuild layers only on a snapshot that keeps no expired
    // tombstone beside older rows (`snapshot::layers`); verify above held every one exact.
    let layered = methods.get("\"layered\"").copied().unwrap_or(0);
    assert!(
        ttl || layered > 0,
        "prebuilds by method: {methods:?} ({done:?})"
    );
    println!("prebuilds by method: {methods:?}");
    if ttl {
        let verified = env.ok(&["verify", "--table", "events"]);
        assert!(!verified.contains("differ"), "{verified}");
        return;
    }
    // Land everything and check it from every side.
    for partition in 0..2u32 {
        env.run_task(
            "prebuild",
            &json!({"table": "events", "partition": partition}),
        );
    }
    env.run_task("gc", &json!({"table": "events", "grace_seconds": 0}));
    env.assert_only_referenced_objects("events");
    let verified = env.ok(&["verify", "--table", "events"]);
    assert!(!verified.contains("differ"), "{verified}");
    let mut args = vec!["id", "ts", "n"];
    args.extend(model.files.iter().map(String::as_str));
    let duckdb: BTreeSet<i64> = python("stream_winners.py", &args)
        .lines()
        .map(|line| line.parse().unwrap())
        .collect();
    assert_eq!(duckdb, model.valid(), "DuckDB and the naive model agree");
    assert_eq!(scanned(&env, 999), duckdb);
    for op in ["ingest", "prebuild", "plan", "compact", "merge", "gc"] {
        assert!(
            done.get(op).is_some_and(|&n| n > 0),
            "the sequence never ran {op}: {done:?}"
        );
    }
}

/// A larger stream, compacted and merged by a worker pool through the queue (`plan` submits the
/// jobs): the valid rows are DuckDB's winners of the ingested files.
#[test]
fn the_worker_pool_compacts_a_larger_stream_to_duckdbs_winners() {
    let env = TestEnv::new(StoreKind::Local);
    env.ok(&["migrate"]);
    let table_file = env.path("events.toml");
    std::fs::write(
        &table_file,
        TABLE.replace("target_segment_rows = 600", "target_segment_rows = 1500"),
    )
    .unwrap();
    env.ok(&["table", "create", "--file", table_file.to_str().unwrap()]);
    let mut rng = StdRng::seed_from_u64(7);
    let mut model = Model {
        winners: BTreeMap::new(),
        next_n: 0,
        files: Vec::new(),
    };
    for _ in 0..3 {
        ingest_batch_of(&env, &mut model, &mut rng, 20_000, 20_000, 1_000..3_000);
    }
    let mut worker = env.spawn(
        "worker",
        &["worker", "--concurrency", "2", "--poll-interval", "200ms"],
    );
    for round in 0..3 {
        let submitted: Value = env.json(&["job", "submit", "plan", "--table", "events", "--json"]);
        env.wait_job_state(&submitted["id"].to_string(), "completed");
        // Wait for what the plan submitted (and the prebuilds those queue) to finish.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        loop {
            let busy: Vec<Value> = ["available", "running", "retryable", "scheduled"]
                .iter()
                .flat_map(|state| {
                    env.json::<Vec<Value>>(&["job", "ls", "--state", state, "--json"])
                })
                .collect();
            if busy.is_empty() {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "round {round}: {busy:?}\n{}",
                env.log("worker")
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }
    worker.kill().unwrap();
    worker.wait().unwrap();
    let discarded: Vec<Value> = env.json(&["job", "ls", "--state", "discarded", "--json"]);
    assert!(discarded.is_empty(), "{discarded:?}");
    let merged: Vec<Value> = env.json(&["job", "ls", "--kind", "merge", "--json"]);
    let compacted: Vec<Value> = env.json(&["job", "ls", "--kind", "compact", "--json"]);
    assert!(
        !merged.is_empty() && !compacted.is_empty(),
        "the plans found both kinds of work: {} merges, {} compactions",
        merged.len(),
        compacted.len()
    );
    env.run_task("gc", &json!({"table": "events", "grace_seconds": 0}));
    let mut args = vec!["id", "ts", "n"];
    args.extend(model.files.iter().map(String::as_str));
    let duckdb: BTreeSet<i64> = python("stream_winners.py", &args)
        .lines()
        .map(|line| line.parse().unwrap())
        .collect();
    assert_eq!(scanned(&env, 0), duckdb);
    assert_eq!(duckdb, model.valid());
}
