//! Merge: valid rows of several segments in one, the largest input sequence, one atomic swap; and
//! the sequence guard that keeps every tie-break (refusing while a foreign sequence lies inside).

use serde_json::{json, Value};
use upsert_minion::catalog::ReservationLease;

use crate::common::{python, typed, TestEnv};

fn setup() -> TestEnv {
    TestEnv::orders(20000, 3000, 5, 1000)
}

fn ids(segments: &[Value]) -> Vec<i64> {
    segments.iter().map(|s| s["id"].as_i64().unwrap()).collect()
}

fn merge(env: &TestEnv, segments: &[i64]) -> Value {
    env.run_task(
        "merge",
        &json!({"table": "orders", "partition": 0, "segment_ids": segments}),
    )
}

#[test]
fn merge_keeps_the_valid_rows_under_the_largest_input_sequence() {
    let env = setup();
    env.run_task("prebuild", &json!({"table": "orders", "partition": 0}));
    let before = env.valid_rows("before.jsonl");
    let inputs = env.online("orders", 0);
    assert!(inputs.len() >= 4, "{inputs:?}");
    let report = merge(&env, &ids(&inputs));
    assert_eq!(report["outcome"], "merged", "{report}");
    let now = env.online("orders", 0);
    let outputs: Vec<&Value> = now
        .iter()
        .filter(|s| {
            report["new_segment_ids"]
                .as_array()
                .unwrap()
                .contains(&s["id"])
        })
        .collect();
    assert_eq!(
        outputs.len(),
        1,
        "one output under the target size: {report}"
    );
    let largest = inputs
        .iter()
        .map(|s| s["sequence"].as_i64().unwrap())
        .max()
        .unwrap();
    assert_eq!(
        outputs[0]["sequence"], largest,
        "the output takes the largest input sequence"
    );
    assert_eq!(outputs[0]["replaces"], json!(ids(&inputs)));
    assert_eq!(outputs[0]["row_count"].as_u64(), Some(before.len() as u64));
    assert_eq!(now.len(), 1);
    // Every input became `replaced`, pointing at the output.
    let all: Vec<Value> = env.json(&[
        "segment",
        "ls",
        "--table",
        "orders",
        "--partition",
        "0",
        "--json",
    ]);
    for input in &inputs {
        let row = all.iter().find(|s| s["id"] == input["id"]).unwrap();
        assert_eq!(row["state"], "replaced");
        assert_eq!(row["replaced_by"], outputs[0]["id"]);
    }
    // A later ingest still wins its ties against the merged rows; the table is unchanged.
    env.run_task("prebuild", &json!({"table": "orders", "partition": 0}));
    assert_eq!(env.valid_rows("after.jsonl"), before);
    assert!(env
        .ok(&["verify", "--table", "orders"])
        .contains("partition 0: snapshot 2 matches"));
    // Merging them again: they are no longer online.
    assert_eq!(merge(&env, &ids(&inputs))["outcome"], "not_online");
    // DuckDB reads the merged segment and finds exactly the valid rows.
    let table_json = env.path("orders.json");
    std::fs::write(&table_json, env.ok(&["table", "show", "orders", "--json"])).unwrap();
    let local = env.path("merged.parquet");
    env.download(outputs[0]["object_key"].as_str().unwrap(), &local);
    let checked = python(
        "segment_rows.py",
        &[table_json.to_str().unwrap(), "-", local.to_str().unwrap()],
    );
    assert!(
        checked.contains(&format!("rows={}", before.len())),
        "{checked}"
    );
}

#[test]
fn merge_splits_at_the_target_size_and_copies_whole_row_groups() {
    let env = setup();
    // Fresh keys only, in small row groups: every row stays valid, so whole groups copy through.
    let fresh = env.path("fresh.jsonl");
    let lines: Vec<String> = (0..400)
        .map(|i| {
            json!({"order_id": 10_000_000 + i, "updated_at": 1_700_000_000_000i64 + i, "deleted": false,
                   "customer": format!("c{i}"), "status": "new", "amount": 1.5, "quantity": 1})
            .to_string()
        })
        .collect();
    std::fs::write(&fresh, lines.join("\n")).unwrap();
    env.ok(&[
        "ingest",
        "--table",
        "orders",
        "--input",
        fresh.to_str().unwrap(),
        "--row-group-rows",
        "20",
    ]);
    env.run_task("prebuild", &json!({"table": "orders", "partition": 0}));
    let before = env.valid_rows("before.jsonl");
    let inputs = env.online("orders", 0);
    // Outputs of about a third of the valid rows each: the job reads the target from the catalog.
    let target = before.len() / 3 + 1;
    env.with_catalog(async |_| {
        let pool = sqlx::PgPool::connect(&env.db.url).await.unwrap();
        sqlx::query("UPDATE tables SET config = jsonb_set(config, '{compaction,target_segment_rows}', to_jsonb($1::bigint)) WHERE name = 'orders'")
            .bind(target as i64)
            .execute(&pool)
            .await
            .unwrap();
    });
    let report = merge(&env, &ids(&inputs));
    assert_eq!(report["outcome"], "merged", "{report}");
    assert!(
        report["row_groups"]["copied_row_groups"].as_u64().unwrap() >= 4,
        "{report}"
    );
    let now = env.online("orders", 0);
    assert!(now.len() >= 3, "split at the target: {now:?}");
    let mut previous = -1;
    for output in &now {
        // Each output holds consecutive inputs and takes the largest sequence among them.
        let sources: Vec<&Value> = inputs
            .iter()
            .filter(|s| output["replaces"].as_array().unwrap().contains(&s["id"]))
            .collect();
        assert!(!sources.is_empty(), "{output}");
        let group_max = sources
            .iter()
            .map(|s| s["sequence"].as_i64().unwrap())
            .max()
            .unwrap();
        assert_eq!(output["sequence"], group_max);
        assert!(sources
            .iter()
            .all(|s| s["sequence"].as_i64().unwrap() > previous));
        previous = group_max;
        let rows = output["row_count"].as_u64().unwrap();
        assert!(rows <= target as u64 || sources.len() == 1, "{output}");
    }
    env.run_task("prebuild", &json!({"table": "orders", "partition": 0}));
    let after = env.valid_rows("after.jsonl");
    let missing: Vec<&String> = before.iter().filter(|r| !after.contains(r)).collect();
    let extra: Vec<&String> = after.iter().filter(|r| !before.contains(r)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing {missing:?}\nextra {extra:?}\n{report}"
    );
    assert!(env
        .ok(&["verify", "--table", "orders"])
        .contains("partition 0: snapshot 2 matches"));
}

#[test]
fn merge_refuses_while_a_foreign_sequence_lies_inside_its_range() {
    let env = setup();
    // An ingest that reserved a sequence and has not registered yet, then a newer ingest.
    let lease = ReservationLease::new(std::time::Duration::from_secs(3600));
    let reserved = env.with_catalog(async |catalog| {
        catalog
            .reserve_sequences(&lease, "orders", 0, 1)
            .await
            .unwrap()
    });
    env.ingest_generated(20000, 3000, 6, 1000);
    env.run_task("prebuild", &json!({"table": "orders", "partition": 0}));
    let segments = env.online("orders", 0);
    let below = segments
        .iter()
        .rev()
        .find(|s| s["sequence"].as_i64().unwrap() < reserved)
        .unwrap();
    let above = segments
        .iter()
        .find(|s| s["sequence"].as_i64().unwrap() > reserved)
        .unwrap();
    let pair = [below["id"].as_i64().unwrap(), above["id"].as_i64().unwrap()];
    let report = merge(&env, &pair);
    assert_eq!(report["outcome"], "sequence_gap", "{report}");
    assert_eq!(report["gap_sequence"], reserved);
    assert_eq!(env.online("orders", 0), segments, "nothing changed");

    // Released (the ingest gave up): the same merge goes through.
    env.with_catalog(async |catalog| {
        catalog
            .release_sequences(&lease, "orders", &[(0, reserved)])
            .await
            .unwrap()
    });
    assert_eq!(merge(&env, &pair)["outcome"], "merged");

    // An online segment the snapshot does not cover, inside the range, blocks it too.
    env.run_task("prebuild", &json!({"table": "orders", "partition": 0}));
    let segments = env.online("orders", 0);
    let (first, middle, last) = (&segments[0], &segments[1], &segments[2]);
    let compacted = env.run_task(
        "compact",
        &json!({"table": "orders", "segment_id": middle["id"]}),
    );
    assert_eq!(compacted["outcome"], "compacted", "{compacted}");
    let report = merge(
        &env,
        &[first["id"].as_i64().unwrap(), last["id"].as_i64().unwrap()],
    );
    assert_eq!(report["outcome"], "sequence_gap", "{report}");
    assert_eq!(report["gap_sequence"], middle["sequence"]);
}

#[test]
fn merge_arguments_are_checked() {
    let env = setup();
    let err = env.fails(&typed(
        "run merge",
        &json!({"table": "orders", "partition": 0, "segment_ids": [1]}),
    ));
    assert!(err.contains("two or more segments"), "{err}");
    let segments = env.online("orders", 1);
    let err = env.fails(&typed(
        "run merge",
        &json!({"table": "orders", "partition": 0, "segment_ids": ids(&segments[..2])}),
    ));
    assert!(err.contains("not orders partition 0"), "{err}");
    // Not covered by a snapshot yet: a prebuild is queued and nothing else happens.
    let report = merge(&env, &ids(&env.online("orders", 0)[..2]));
    assert_eq!(report["outcome"], "not_covered", "{report}");
}

#[test]
fn a_merge_input_left_without_valid_rows_is_dropped() {
    let env = setup();
    let write = |name: &str, updated_at: i64| {
        let path = env.path(name);
        let row = json!({"order_id": 77_000_000, "updated_at": updated_at, "deleted": false,
            "customer": "c", "status": "new", "amount": 1.0, "quantity": 1});
        std::fs::write(&path, row.to_string()).unwrap();
        env.ok(&[
            "ingest",
            "--table",
            "orders",
            "--input",
            path.to_str().unwrap(),
        ]);
    };
    // The same key twice, each version alone in its segment: the older segment ends empty.
    write("old.jsonl", 1_700_000_000_001);
    write("new.jsonl", 1_700_000_000_002);
    let mut all: Vec<Value> = env.json(&["segment", "ls", "--table", "orders", "--json"]);
    all.sort_by_key(|s| s["id"].as_i64().unwrap());
    let (old, new) = (&all[all.len() - 2], &all[all.len() - 1]);
    let partition = old["partition"].as_u64().unwrap() as u32;
    assert_eq!(new["partition"], old["partition"]);
    env.run_task(
        "prebuild",
        &json!({"table": "orders", "partition": partition}),
    );
    let report = env.run_task(
        "merge",
        &json!({"table": "orders", "partition": partition, "segment_ids": [old["id"], new["id"]]}),
    );
    assert_eq!(report["outcome"], "merged", "{report}");
    let all: Vec<Value> = env.json(&["segment", "ls", "--table", "orders", "--json"]);
    let state = |id: &Value| all.iter().find(|s| &s["id"] == id).unwrap().clone();
    assert_eq!(state(&old["id"])["state"], "dropped");
    assert_eq!(state(&new["id"])["state"], "replaced");
    assert_eq!(
        state(&new["id"])["replaced_by"],
        report["new_segment_ids"][0]
    );
}
