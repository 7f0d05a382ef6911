//! Restarts stay fast through compaction (issue 14): the loader keeps the newest snapshot across
//! compaction and merge by mapping it through each output's lineage, falls back segment by
//! segment where the lineage proves nothing, and the follow-up prebuild reads key runs only.

use std::path::PathBuf;

use serde_json::{json, Value};

use upsert_minion::snapshot::keyrun::build_run;
use upsert_minion::storage::layout;

use crate::common::{python, StoreKind, TestEnv};

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
    assert_eq!(prebuilt["method"], "full", "{prebuilt}");
    assert!(
        prebuilt["full_because"]
            .as_str()
            .unwrap()
            .contains("is new since snapshot 1"),
        "{prebuilt}"
    );
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

    // The follow-up prebuild, every segment's Parquet out of reach: layered on snapshot 1, it
    // reads the outputs' runs only, and writes exactly their rows as the moved keys.
    hide_parquet(&env, &online, true);
    let prebuilt = env.run_task("prebuild", &json!({"table": "orders", "partition": 0}));
    hide_parquet(&env, &online, false);
    assert_eq!(prebuilt["outcome"], "published", "{prebuilt}");
    assert_eq!(prebuilt["method"], "layered", "{prebuilt}");
    assert_eq!(
        (&prebuilt["runs_built"], &prebuilt["runs_reused"]),
        (&json!(0), &json!(0))
    );
    let output_rows: u64 = online
        .iter()
        .filter(|s| s["lineage"].is_object())
        .map(|s| s["row_count"].as_u64().unwrap())
        .sum();
    assert_eq!(prebuilt["moved_keys"], output_rows, "{prebuilt}");
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

fn checksums(manifest: &Value, layer: u64) -> Vec<Value> {
    manifest["key_files"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["layer"].as_u64().unwrap_or(0) == layer)
        .map(|f| f["checksum"].clone())
        .collect()
}

/// After each compaction the follow-up prebuild keeps the previous snapshot's SST files as they
/// are and adds the keys that moved as a layer above them, until the layer cap; a new segment
/// sends it back to a full build. Every snapshot equals verify's rebuild and loads exactly, also
/// once gc has collected the snapshots its files were copied from.
#[test]
fn a_layered_follow_up_adds_the_moved_keys_over_the_previous_files_up_to_the_cap() {
    let env = TestEnv::orders(24000, 8000, 29, 1000);
    env.run_task("prebuild", &json!({"table": "orders", "partition": 0}));
    let segments = env.online("orders", 0);
    assert!(segments.len() >= 5, "{segments:?}");
    let mut previous = env.orders_manifest(0);
    assert_eq!(previous["format"], 1, "{previous}");
    for (step, segment) in segments[..4].iter().enumerate() {
        let compacted = compact(&env, segment);
        assert_eq!(compacted["outcome"], "compacted", "{compacted}");
        let output = env
            .online("orders", 0)
            .into_iter()
            .find(|s| s["id"] == compacted["new_segment_id"])
            .unwrap();
        let prebuilt = env.run_task("prebuild", &json!({"table": "orders", "partition": 0}));
        assert_eq!(prebuilt["outcome"], "published", "{prebuilt}");
        let version = step as u64 + 2;
        assert_eq!(prebuilt["version"], version, "{prebuilt}");
        let now = env.orders_manifest(0);
        if step < 3 {
            // Layers 0..=step are the previous snapshot's files, copied unchanged; the new top
            // layer holds the output's rows, each a key that moved.
            assert_eq!(prebuilt["method"], "layered", "{prebuilt}");
            assert_eq!(prebuilt["full_because"], Value::Null, "{prebuilt}");
            assert_eq!(prebuilt["moved_keys"], output["row_count"], "{prebuilt}");
            assert_eq!(now["format"], 2, "{now}");
            for layer in 0..=step as u64 {
                assert_eq!(
                    checksums(&now, layer),
                    checksums(&previous, layer),
                    "layer {layer}"
                );
            }
            let top: u64 = now["key_files"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|f| f["layer"] == step as u64 + 1)
                .map(|f| f["entries"].as_u64().unwrap())
                .sum();
            assert_eq!(top, output["row_count"].as_u64().unwrap(), "{now}");
            assert_eq!(now["key_count"], previous["key_count"]);
            assert_eq!(now["valid_docs"], previous["valid_docs"]);
        } else {
            // Snapshot 4 has the most layers a snapshot may have: this one is built in full.
            assert_eq!(prebuilt["method"], "full", "{prebuilt}");
            let because = prebuilt["full_because"].as_str().unwrap();
            assert!(because.contains("has 4 key layers"), "{because}");
            assert_eq!(now["format"], 1, "{now}");
            assert!(checksums(&now, 1).is_empty(), "{now}");
        }
        // Read by sst_dump and pyroaring: the distinct keys of all layers are the manifest's.
        let path = env.path(&format!("manifest-{version}.json"));
        std::fs::write(&path, now.to_string()).unwrap();
        let checked = python(
            "check_snapshot_files.py",
            &[&env.store_url, path.to_str().unwrap()],
        );
        assert!(checked.starts_with("ok"), "{checked}");
        let verified = env.ok(&["verify", "--table", "orders"]);
        assert!(
            verified.contains(&format!("partition 0: snapshot {version} matches")),
            "{verified}"
        );
        if step == 1 {
            // The files of snapshots 1 and 2 were copied: collecting those snapshots leaves
            // snapshot 3 whole.
            env.run_task("gc", &json!({"table": "orders", "grace_seconds": 0}));
            env.assert_only_referenced_objects("orders");
        }
        let report = env.assert_bootstrap_exact("orders", 0, &format!("layered-{step}"));
        assert_eq!(report.snapshot_version, Some(version as i64));
        assert_eq!(report.replaced_segments + report.uncovered_segments, 0);
        previous = now;
    }
    // With `max_key_layers = 1` (servers whose loader predates layers) nothing is layered.
    std::fs::write(env.path("minion.toml"), "[prebuild]\nmax_key_layers = 1\n").unwrap();
    assert_eq!(compact(&env, &segments[4])["outcome"], "compacted");
    let prebuilt = env.run_task("prebuild", &json!({"table": "orders", "partition": 0}));
    assert_eq!(prebuilt["method"], "full", "{prebuilt}");
    let because = prebuilt["full_because"].as_str().unwrap();
    assert!(because.contains("max_key_layers = 1"), "{because}");
    assert_eq!(env.orders_manifest(0)["format"], 1);
}

/// On S3 the previous snapshot's files are copied by the store (CopyObject), not downloaded.
#[test]
fn a_layered_follow_up_on_s3_copies_the_files_in_the_store() {
    let env = TestEnv::new(StoreKind::S3);
    env.ok(&["migrate"]);
    env.create_example_table("orders.toml");
    env.ingest_generated(12000, 4000, 31, 1000);
    env.run_task("prebuild", &json!({"table": "orders", "partition": 0}));
    let segments = env.online("orders", 0);
    assert_eq!(compact(&env, &segments[0])["outcome"], "compacted");
    let prebuilt = env.run_task("prebuild", &json!({"table": "orders", "partition": 0}));
    assert_eq!(
        (&prebuilt["outcome"], &prebuilt["method"]),
        (&json!("published"), &json!("layered")),
        "{prebuilt}"
    );
    env.run_task("gc", &json!({"table": "orders", "grace_seconds": 0}));
    let verified = env.ok(&["verify", "--table", "orders"]);
    assert!(
        verified.contains("partition 0: snapshot 2 matches"),
        "{verified}"
    );
    let report = env.assert_bootstrap_exact("orders", 0, "s3");
    assert_eq!(report.snapshot_version, Some(2));
}

/// With `deleted_keys_ttl`, a snapshot that keeps tombstones past the TTL beside older rows of
/// their keys is followed by a full build: compaction dropping those rows may have made them
/// forgettable, which only resolving every key finds.
#[test]
fn expired_tombstones_kept_beside_older_rows_send_the_follow_up_to_a_full_build() {
    let env = TestEnv::orders(24000, 8000, 37, 1000);
    // Three days on: every earlier tombstone is past the table's one-day deleted_keys_ttl.
    env.ingest_generated_from(
        2000,
        8000,
        38,
        1000,
        Some(1_700_000_000_000 + 3 * 86_400_000),
    );
    env.run_task("prebuild", &json!({"table": "orders", "partition": 0}));
    let first = env.orders_manifest(0);
    let kept = first["expired_tombstones_kept"].as_u64().unwrap();
    assert!(kept > 0, "{first}");
    let segments = env.online("orders", 0);
    assert_eq!(compact(&env, &segments[0])["outcome"], "compacted");
    let prebuilt = env.run_task("prebuild", &json!({"table": "orders", "partition": 0}));
    assert_eq!(prebuilt["method"], "full", "{prebuilt}");
    let because = prebuilt["full_because"].as_str().unwrap();
    assert!(
        because.contains(&format!("keeps {kept} tombstones past deleted_keys_ttl")),
        "{because}"
    );
    let verified = env.ok(&["verify", "--table", "orders"]);
    assert!(
        verified.contains("partition 0: snapshot 2 matches"),
        "{verified}"
    );
}
