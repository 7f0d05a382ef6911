//! Restarts stay fast through compaction (issue 14): the loader keeps the newest snapshot across
//! compaction and merge by mapping it through each output's lineage, falls back segment by
//! segment where the lineage proves nothing, and the follow-up prebuild reads key runs only.

use std::path::PathBuf;

use serde_json::{json, Value};

use upsert_minion::snapshot::keyrun::build_run;
use upsert_minion::storage::layout;

use crate::common::TestEnv;

fn ids(segments: &[Value]) -> Vec<i64> {
    segments.iter().map(|s| s["id"].as_i64().unwrap()).collect()
}

fn compact(env: &TestEnv, segment: &Value) -> Value {
    env.run_task(
        "compact",
        &json!({"table": "orders", "segment_id": segment["id"]}),
    )
}

fn sql(env: &TestEnv, statement: &str) {
    env.with_catalog(async |_| {
        let pool = sqlx::PgPool::connect(&env.db.url).await.unwrap();
        sqlx::query(statement).execute(&pool).await.unwrap();
    });
}

/// Moves the Parquet files of `segments` aside (local store), or back.
fn hide_parquet(env: &TestEnv, segments: &[Value], hide: bool) {
    let root = PathBuf::from(&env.store_url);
    for segment in segments {
        let path = root.join(segment["object_key"].as_str().unwrap());
        let hidden = path.with_extension("hidden");
        let (from, to) = if hide {
            (&path, &hidden)
        } else {
            (&hidden, &path)
        };
        std::fs::rename(from, to).unwrap();
    }
}

#[test]
fn the_snapshot_is_mapped_through_compaction_and_merge_and_the_follow_up_reads_no_parquet() {
    let env = TestEnv::orders(24000, 8000, 7, 1000);
    env.run_task("prebuild", &json!({"table": "orders", "partition": 0}));
    let before = env.valid_rows("before.jsonl");
    let segments = env.online("orders", 0);
    assert!(segments.len() >= 5, "{segments:?}");
    for segment in &segments[..2] {
        let report = compact(&env, segment);
        assert_eq!(report["outcome"], "compacted", "{report}");
        assert_eq!(report["key_run"], "derived", "{report}");
    }
    let merged = env.run_task(
        "merge",
        &json!({"table": "orders", "partition": 0, "segment_ids": ids(&segments[2..5])}),
    );
    assert_eq!(merged["outcome"], "merged", "{merged}");
    assert_eq!(merged["key_runs"], json!(["derived"]), "{merged}");

    // The catalog records how the merged output was made: inputs in sequence order, each
    // starting where the previous one's kept rows end.
    let output = env
        .online("orders", 0)
        .into_iter()
        .find(|s| s["id"] == merged["new_segment_ids"][0])
        .unwrap();
    let lineage = &output["lineage"];
    assert_eq!(lineage["snapshot_version"], 1, "{output}");
    let inputs = lineage["inputs"].as_array().unwrap();
    assert_eq!(
        inputs
            .iter()
            .map(|i| i["segment_id"].clone())
            .collect::<Vec<_>>(),
        segments[2..5]
            .iter()
            .map(|s| s["id"].clone())
            .collect::<Vec<_>>()
    );
    let mut offset = 0;
    for input in inputs {
        assert_eq!(input["offset"], offset, "{lineage}");
        offset += input["valid_docs"].as_u64().unwrap();
    }
    assert_eq!(output["row_count"], offset, "{output}");
    // The derived key run is byte for byte the run built from the output file.
    let table = env.with_catalog(async |catalog| catalog.table("orders").await.unwrap());
    let name = output["name"].as_str().unwrap();
    let root = PathBuf::from(&env.store_url);
    let derived = std::fs::read(root.join(layout::keyrun_key("orders", 0, name))).unwrap();
    let built = env.path("built.run");
    build_run(
        &root.join(output["object_key"].as_str().unwrap()),
        output["checksum"].as_str().unwrap(),
        &table,
        &built,
        env.dir.path(),
        1000,
    )
    .unwrap();
    assert!(
        derived == std::fs::read(&built).unwrap(),
        "derived run differs"
    );

    // Before the follow-up prebuild: the snapshot is kept, mapped onto the three outputs, and
    // the result is the slow path's, key for key and bit for bit.
    let report = env.assert_bootstrap_exact("orders", 0, "mapped");
    assert_eq!(report.snapshot_version, Some(1));
    assert_eq!(report.replaced_segments, 5, "{report:?}");
    assert_eq!(report.mapped_segments, 3, "{report:?}");
    assert_eq!(report.uncovered_segments, 0, "{report:?}");
    assert!(report.lineage_refused.is_empty(), "{report:?}");
    assert_eq!(report.covered_segments, segments.len() - 5);
    // `scan` loads the same way: the valid rows are unchanged.
    assert_eq!(env.valid_rows("between.jsonl"), before);
    let out = env.bootstrap_orders("cli");
    assert!(
        out.contains("from snapshot (snapshot 1:")
            && out.contains("3 replacements mapped through lineage, 0 through the compare path"),
        "{out}"
    );

    // A new ingest arrives before the follow-up prebuild, so it cannot just map the snapshot:
    // it resolves runs. With the Parquet of every segment but the new ones moved away it still
    // publishes, building runs for the new segments only, and equals verify's rebuild.
    let replaced = env.online("orders", 0);
    env.ingest_generated(4000, 8000, 8, 1000);
    let new_segments = env.online("orders", 0).len() - replaced.len();
    assert!(new_segments > 0);
    hide_parquet(&env, &replaced, true);
    let prebuilt = env.run_task("prebuild", &json!({"table": "orders", "partition": 0}));
    hide_parquet(&env, &replaced, false);
    assert_eq!(prebuilt["outcome"], "published", "{prebuilt}");
    assert_eq!(prebuilt["runs_built"], new_segments, "{prebuilt}");
    assert_eq!(prebuilt["runs_reused"], replaced.len(), "{prebuilt}");
    let verified = env.ok(&["verify", "--table", "orders"]);
    assert!(
        verified.contains("partition 0: snapshot 2 matches"),
        "{verified}"
    );
    let report = env.assert_bootstrap_exact("orders", 0, "after");
    assert_eq!(
        (report.replaced_segments, report.uncovered_segments),
        (0, 0)
    );
}

#[test]
fn the_follow_up_prebuild_reads_runs_only_and_a_missing_run_is_scanned_around() {
    let env = TestEnv::orders(24000, 8000, 17, 1000);
    env.run_task("prebuild", &json!({"table": "orders", "partition": 0}));
    let segments = env.online("orders", 0);
    for segment in &segments[..2] {
        assert_eq!(compact(&env, segment)["outcome"], "compacted");
    }
    let merged = env.run_task(
        "merge",
        &json!({"table": "orders", "partition": 0, "segment_ids": ids(&segments[2..5])}),
    );
    assert_eq!(merged["outcome"], "merged", "{merged}");
    // Without an output's key run, the loader rewrites the key metadata by scanning it.
    let online = env.online("orders", 0);
    let root = PathBuf::from(&env.store_url);
    let output = online
        .iter()
        .find(|s| s["id"] == merged["new_segment_ids"][0])
        .unwrap();
    let run = root.join(layout::keyrun_key(
        "orders",
        0,
        output["name"].as_str().unwrap(),
    ));
    std::fs::rename(&run, run.with_extension("hidden")).unwrap();
    let report = env.assert_bootstrap_exact("orders", 0, "scanned");
    assert_eq!(report.mapped_segments, 3, "{report:?}");
    std::fs::rename(run.with_extension("hidden"), &run).unwrap();

    // The follow-up prebuild: every segment's Parquet out of reach, every run reused.
    hide_parquet(&env, &online, true);
    let prebuilt = env.run_task("prebuild", &json!({"table": "orders", "partition": 0}));
    hide_parquet(&env, &online, false);
    assert_eq!(prebuilt["outcome"], "published", "{prebuilt}");
    assert_eq!(
        (&prebuilt["runs_built"], &prebuilt["runs_reused"]),
        (&json!(0), &json!(online.len()))
    );
    let verified = env.ok(&["verify", "--table", "orders"]);
    assert!(
        verified.contains("partition 0: snapshot 2 matches"),
        "{verified}"
    );
    let report = env.assert_bootstrap_exact("orders", 0, "follow-up");
    assert_eq!(report.snapshot_version, Some(2));
    assert_eq!(report.covered_segments, online.len());
}

#[test]
fn a_replacement_made_from_an_older_snapshot_alone_goes_through_the_compare_path() {
    let env = TestEnv::orders(20000, 2000, 21, 600);
    env.run_task("prebuild", &json!({"table": "orders", "partition": 0}));
    let segments: Vec<Value> = env.online("orders", 0);
    let target = &segments[0];
    // Compacted with its bitmap from snapshot 1 while snapshot 2 is published.
    env.compact_racing_a_newer_snapshot(target, || ());
    let old = env
        .online("orders", 0)
        .into_iter()
        .find(|s| s["replaces"] == json!([target["id"]]))
        .expect("the compaction swapped in");
    assert_eq!(old["lineage"]["snapshot_version"], 1, "{old}");
    // Another segment compacted from snapshot 2, the newest: that one maps.
    let mapped = segments[1..]
        .iter()
        .map(|segment| compact(&env, segment))
        .find(|report| report["outcome"] == "compacted")
        .expect("some segment has rows beaten since");

    let report = env.assert_bootstrap_exact("orders", 0, "mixed");
    assert_eq!(report.snapshot_version, Some(2));
    assert_eq!(report.mapped_segments, 1, "{report:?}");
    assert_eq!(report.replaced_segments, 2, "{report:?}");
    assert_eq!(report.uncovered_segments, 1, "{report:?}");
    let [refusal] = report.lineage_refused.as_slice() else {
        panic!("one refusal: {report:?}");
    };
    assert_eq!(refusal.segment_id, old["id"].as_i64().unwrap());
    assert_ne!(Some(refusal.segment_id), mapped["new_segment_id"].as_i64());
    assert!(
        refusal.reason.contains("snapshot 1's validDocIds")
            && refusal.reason.contains("snapshot 2 holds another bitmap"),
        "{refusal:?}"
    );
}

#[test]
fn a_forged_lineage_is_refused_for_that_segment_and_the_load_stays_exact() {
    let env = TestEnv::orders(24000, 8000, 9, 1000);
    env.run_task("prebuild", &json!({"table": "orders", "partition": 0}));
    let segments = env.online("orders", 0);
    let forged = compact(&env, &segments[0]);
    // An input without a stored key run: the output's run is built from the local output file.
    let root = PathBuf::from(&env.store_url);
    let name = segments[1]["name"].as_str().unwrap();
    std::fs::remove_file(root.join(layout::keyrun_key("orders", 0, name))).unwrap();
    let honest = compact(&env, &segments[1]);
    for report in [&forged, &honest] {
        assert_eq!(report["outcome"], "compacted", "{report}");
    }
    assert_eq!(
        (&forged["key_run"], &honest["key_run"]),
        (&json!("derived"), &json!("built"))
    );
    sql(
        &env,
        &format!(
            "UPDATE segments SET lineage = jsonb_set(lineage, '{{inputs,0,valid_checksum}}', \
             to_jsonb(repeat('0', 64))) WHERE id = {}",
            forged["new_segment_id"]
        ),
    );
    let report = env.assert_bootstrap_exact("orders", 0, "forged");
    assert_eq!(report.mapped_segments, 1, "{report:?}");
    assert_eq!(report.uncovered_segments, 1, "{report:?}");
    let [refusal] = report.lineage_refused.as_slice() else {
        panic!("one refusal: {report:?}");
    };
    assert_eq!(Some(refusal.segment_id), forged["new_segment_id"].as_i64());
    assert!(
        refusal.reason.contains("sha256 000000000000"),
        "{refusal:?}"
    );
    let out = env.bootstrap_orders("cli");
    assert!(
        out.contains(&format!(
            "note: segment {} through the compare path",
            refusal.segment
        )),
        "{out}"
    );

    // A replacement with no lineage at all (as written before lineage was recorded) too.
    sql(
        &env,
        &format!(
            "UPDATE segments SET lineage = NULL WHERE id = {}",
            honest["new_segment_id"]
        ),
    );
    let report = env.assert_bootstrap_exact("orders", 0, "unrecorded");
    assert_eq!(
        (report.mapped_segments, report.uncovered_segments),
        (0, 2),
        "{report:?}"
    );
    assert!(
        report.lineage_refused[1]
            .reason
            .contains("records no lineage"),
        "{report:?}"
    );
}
