//! `metadata_ttl` is exact on every path (issue 25): keys that left the hot key metadata are
//! kept in a cold key set, and late rows of those keys (newer than everything, newer than their
//! winner but below the watermark, older than their winner, tombstones) are resolved against
//! their winner by the loader's tail, by scan, by the next prebuild, across compaction, merge
//! and gc. A restart from the snapshot holds the same hot and cold sets as one without it.

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use crate::common::{StoreKind, TestEnv};

const TABLE: &str = r#"
name = "late"
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

[ttl]
metadata_ttl = 2000
"#;

/// The stream so far: per key, its winning row's (ts, n, deleted); `n` grows with arrival, so
/// it orders rows of equal `ts` as (segment sequence, docId) do.
#[derive(Default)]
struct Model {
    winners: BTreeMap<i64, (i64, i64, bool)>,
    next_n: i64,
    batches: usize,
}

impl Model {
    /// The `n` of every queryable row: winners that are not tombstones.
    fn queryable(&self) -> Vec<i64> {
        let mut rows: Vec<i64> = (self.winners.values())
            .filter(|(_, _, deleted)| !deleted)
            .map(|&(_, n, _)| n)
            .collect();
        rows.sort_unstable();
        rows
    }

    /// Ingests `rows` (id, ts, deleted) in this order, in segments of `segment_rows`.
    fn ingest(&mut self, env: &TestEnv, rows: &[(i64, i64, bool)], segment_rows: usize) {
        let path = env.path(&format!("late-{}.jsonl", self.batches));
        self.batches += 1;
        let mut lines = String::new();
        for &(id, ts, deleted) in rows {
            let n = self.next_n;
            self.next_n += 1;
            lines.push_str(&json!({"id": id, "ts": ts, "deleted": deleted, "n": n}).to_string());
            lines.push('\n');
            let winner = self.winners.entry(id).or_insert((ts, n, deleted));
            if (ts, n) > (winner.0, winner.1) {
                *winner = (ts, n, deleted);
            }
        }
        std::fs::write(&path, lines).unwrap();
        env.ok(&[
            "ingest",
            "--table",
            "late",
            "--input",
            path.to_str().unwrap(),
            "--segment-rows",
            &segment_rows.to_string(),
        ]);
    }
}

/// Both partitions load the same from their snapshot (plus tail, plus lineage) as from every
/// segment, and the queryable rows `scan` reads are the model's.
fn check(env: &TestEnv, model: &Model, step: &str) -> Vec<upsert_minion::loader::BootstrapReport> {
    let reports = (0..2)
        .map(|partition| env.assert_bootstrap_exact("late", partition, step))
        .collect();
    let path = env.path(&format!("scan-{step}.jsonl"));
    env.ok(&[
        "scan",
        "--table",
        "late",
        "--queryable-only",
        "--output",
        path.to_str().unwrap(),
    ]);
    let mut scanned: Vec<i64> = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(|line| {
            serde_json::from_str::<Value>(line).unwrap()["n"]
                .as_i64()
                .unwrap()
        })
        .collect();
    scanned.sort_unstable();
    assert!(
        scanned == model.queryable(),
        "{step}: scan read {} queryable rows, the model has {}",
        scanned.len(),
        model.queryable().len()
    );
    reports
}

fn prebuild(env: &TestEnv, partition: u32) -> Value {
    let report = env.run_task(
        "prebuild",
        &json!({"table": "late", "partition": partition}),
    );
    assert_eq!(report["outcome"], "published", "{report}");
    report
}

fn manifest(env: &TestEnv, partition: u32) -> Value {
    env.json(&[
        "snapshot",
        "show",
        "--table",
        "late",
        "--partition",
        &partition.to_string(),
        "--json",
    ])
}

fn verify_clean(env: &TestEnv, step: &str) {
    let verdicts: Vec<Value> = env.json(&["verify", "--table", "late", "--json"]);
    for verdict in &verdicts {
        assert_eq!(verdict["differences"], json!([]), "{step}: {verdict}");
    }
}

/// Late rows of the four kinds for keys whose winner went cold, plus some for hot keys.
fn late_rows(model: &Model, rng: &mut StdRng, cold: &[i64]) -> Vec<(i64, i64, bool)> {
    let mut keys = cold.to_vec();
    keys.shuffle(rng);
    let mut rows = Vec::new();
    for (index, &id) in keys.iter().take(1600).enumerate() {
        let (ts, _, _) = model.winners[&id];
        rows.push(match index % 4 {
            // Newer than everything: the key is hot again, and the watermark rises.
            0 => (id, 6000 + rng.gen_range(0..100), false),
            // Newer than its winner, still below the watermark: stays cold.
            1 => (id, ts + rng.gen_range(1..500), false),
            // Older than its winner (out of order): never valid.
            2 => (id, ts - rng.gen_range(1..50), rng.gen_bool(0.2)),
            // A tombstone newer than its winner, below the watermark.
            _ => (id, ts + rng.gen_range(0..300), true),
        });
    }
    for id in 3000..3100 {
        rows.push((id, 5000 + rng.gen_range(0..500), rng.gen_bool(0.1)));
    }
    rows.shuffle(rng);
    rows
}

#[test]
fn late_rows_of_expired_keys_are_exact_on_every_path() {
    let env = TestEnv::new(StoreKind::Local);
    env.ok(&["migrate"]);
    let table_file = env.path("late.toml");
    std::fs::write(&table_file, TABLE).unwrap();
    env.ok(&["table", "create", "--file", table_file.to_str().unwrap()]);
    let mut rng = StdRng::seed_from_u64(25);
    let mut model = Model::default();

    // Old keys 0..3000 with one to three versions at ts below 1000, then fresh keys 3000..3300
    // near ts 5000: the watermark (5000 - 2000) sends every old key to the cold set.
    let mut rows = Vec::new();
    for id in 0..3000 {
        for _ in 0..rng.gen_range(1..=3) {
            rows.push((id, rng.gen_range(100..1000), rng.gen_bool(0.05)));
        }
    }
    rows.shuffle(&mut rng);
    for id in 3000..3300 {
        rows.push((id, rng.gen_range(4000..5000), false));
    }
    model.ingest(&env, &rows, 900);
    for partition in 0..2 {
        prebuild(&env, partition);
        let manifest = manifest(&env, partition);
        assert_eq!(manifest["format"], 3, "a cold key set needs format 3");
        assert!(!manifest["cold_key_files"].as_array().unwrap().is_empty());
        let cold =
            manifest["live_keys"].as_u64().unwrap() - manifest["key_count"].as_u64().unwrap();
        assert!(cold > 1000, "{cold} cold keys: {manifest}");
    }
    let shown = env.ok(&["snapshot", "show", "--table", "late", "--partition", "0"]);
    assert!(
        shown.contains("cold key file") && shown.contains("cold keys:"),
        "{shown}"
    );
    let reports = check(&env, &model, "snapshot");
    assert!(
        reports.iter().all(|r| r.cold_keys > 1000 && r.keys < 300),
        "{reports:?}"
    );
    verify_clean(&env, "snapshot");

    // Late rows: before the next prebuild, the loader resolves them against the cold set.
    let cold: Vec<i64> = (0..3000).collect();
    let late = late_rows(&model, &mut rng, &cold);
    model.ingest(&env, &late, 400);
    let reports = check(&env, &model, "tail");
    for report in &reports {
        assert!(report.uncovered_segments > 0, "{report:?}");
        // The keys written at ts 6000 are hot again; the fresh keys below the risen watermark
        // (6000 + - 2000) went cold.
        assert!(report.keys > 300 && report.cold_keys > 1000, "{report:?}");
    }

    // The next prebuild covers them: same state, and verify agrees with a rebuild.
    for partition in 0..2 {
        prebuild(&env, partition);
    }
    let after = check(&env, &model, "prebuilt");
    for (report, before) in after.iter().zip(&reports) {
        assert_eq!(report.uncovered_segments, 0, "{report:?}");
        assert_eq!(
            (report.keys, report.cold_keys),
            (before.keys, before.cold_keys)
        );
    }
    verify_clean(&env, "prebuilt");

    // Compaction of partition 0's oldest segment: right after it (the snapshot mapped through
    // the output's lineage), the state is the same.
    let oldest = env.online("late", 0)[0].clone();
    let compacted = env.run_task(
        "compact",
        &json!({"table": "late", "segment_id": oldest["id"]}),
    );
    assert_eq!(compacted["outcome"], "compacted", "{compacted}");
    let reports = check(&env, &model, "compacted");
    assert_eq!(reports[0].mapped_segments, 1, "{:?}", reports[0]);

    // Merge of partition 1's first three segments, then gc: the same again.
    let inputs: Vec<Value> = env.online("late", 1)[..3]
        .iter()
        .map(|s| s["id"].clone())
        .collect();
    let merged = env.run_task(
        "merge",
        &json!({"table": "late", "partition": 1, "segment_ids": inputs}),
    );
    assert_eq!(merged["outcome"], "merged", "{merged}");
    env.ok(&["run", "gc", "--table", "late", "--grace", "0s"]);
    let reports = check(&env, &model, "merged");
    assert_eq!(reports[1].mapped_segments, 1, "{:?}", reports[1]);

    // The follow-ups layer the moved keys, cold ones in a cold layer.
    for partition in 0..2 {
        let report = prebuild(&env, partition);
        assert_eq!(report["method"], "layered", "{report}");
        let manifest = manifest(&env, partition);
        let layers: Vec<u64> = manifest["cold_key_files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["layer"].as_u64().unwrap_or(0))
            .collect();
        assert!(
            layers.contains(&1),
            "a cold layer above the first: {manifest}"
        );
    }
    check(&env, &model, "layered");
    verify_clean(&env, "layered");

    // More late rows after all that, then gc of everything superseded: still exact.
    let late = late_rows(&model, &mut rng, &cold);
    model.ingest(&env, &late, 700);
    check(&env, &model, "second tail");
    for partition in 0..2 {
        prebuild(&env, partition);
    }
    env.ok(&["run", "gc", "--table", "late", "--grace", "0s"]);
    check(&env, &model, "second prebuild");
    verify_clean(&env, "second prebuild");
}

#[test]
fn a_snapshot_without_a_cold_key_set_is_not_used_for_a_table_with_metadata_ttl() {
    // A snapshot written before cold key sets existed: keys left its key metadata and no file
    // holds them. The loader must not resolve late rows against it; it loads every segment, says
    // why, and the next prebuild builds in full rather than layering on it.
    let env = TestEnv::new(StoreKind::Local);
    env.ok(&["migrate"]);
    let table_file = env.path("late.toml");
    std::fs::write(&table_file, TABLE).unwrap();
    env.ok(&["table", "create", "--file", table_file.to_str().unwrap()]);
    let mut model = Model::default();
    let rows: Vec<(i64, i64, bool)> = (0..400)
        .map(|id| (id, if id < 300 { 100 } else { 5000 }, false))
        .collect();
    model.ingest(&env, &rows, 100);
    prebuild(&env, 0);
    prebuild(&env, 1);

    downgrade_newest_snapshot(&env, 0);

    // Late rows for the expired keys, older than their winners: never valid.
    let late: Vec<(i64, i64, bool)> = (0..300).map(|id| (id, 50, false)).collect();
    model.ingest(&env, &late, 100);
    let report = env.assert_bootstrap_exact("late", 0, "old snapshot");
    assert_eq!(report.snapshot_version, None, "{report:?}");
    assert!(
        report
            .snapshot_unused
            .as_deref()
            .is_some_and(|why| why.contains("predates cold key sets")),
        "{report:?}"
    );
    let dir = env.path("cli-old").display().to_string();
    let out = env.ok(&[
        "bootstrap",
        "--table",
        "late",
        "--partition",
        "0",
        "--dir",
        &dir,
    ]);
    assert!(out.contains("predates cold key sets"), "{out}");
    assert_built_in_full_because_no_cold_set(&prebuild(&env, 0));
    check(&env, &model, "rebuilt");

    // With nothing new to cover, the prebuild does not call such a snapshot up to date.
    downgrade_newest_snapshot(&env, 0);
    assert_built_in_full_because_no_cold_set(&prebuild(&env, 0));
    check(&env, &model, "rebuilt again");
}

/// A prebuild report of a full build made because the snapshot had no cold key set.
fn assert_built_in_full_because_no_cold_set(report: &Value) {
    assert_eq!(report["method"], "full", "{report}");
    assert!(
        report["full_because"]
            .as_str()
            .is_some_and(|why| why.contains("predates cold key sets")),
        "{report}"
    );
}

/// Rewrites the newest snapshot of `late` partition `partition` as a minion before cold key sets
/// wrote it: format 1, no cold files (the keys past the TTL in no file).
fn downgrade_newest_snapshot(env: &TestEnv, partition: u32) {
    let snapshot: Vec<Value> = env.json(&[
        "snapshot",
        "ls",
        "--table",
        "late",
        "--partition",
        &partition.to_string(),
        "--json",
    ]);
    let key = snapshot[0]["manifest_key"].as_str().unwrap().to_string();
    let root = std::path::PathBuf::from(&env.store_url);
    let mut old: Value = serde_json::from_slice(&std::fs::read(root.join(&key)).unwrap()).unwrap();
    assert_eq!(old["format"], 3, "{old}");
    old["format"] = json!(1);
    old.as_object_mut().unwrap().remove("cold_key_files");
    let old_key = key.replace("manifest.json", "manifest-old.json");
    let bytes = serde_json::to_vec_pretty(&old).unwrap();
    std::fs::write(root.join(&old_key), &bytes).unwrap();
    let checksum = upsert_minion::storage::sha256_hex(&bytes);
    env.with_catalog(async |_| {
        let pool = sqlx::PgPool::connect(&env.db.url).await.unwrap();
        sqlx::query("UPDATE snapshots SET manifest_key = $1, manifest_checksum = $2 WHERE manifest_key = $3")
            .bind(&old_key)
            .bind(&checksum)
            .bind(&key)
            .execute(&pool)
            .await
            .unwrap();
    });
}
