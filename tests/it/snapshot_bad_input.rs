//! Bad input around snapshots: damaged files give clear errors, permanent prebuild failures are
//! discarded, and nothing is published.

use std::path::PathBuf;

use serde_json::{json, Value};

use crate::common::{typed, StoreKind, TestEnv};

fn setup() -> TestEnv {
    let env = TestEnv::new(StoreKind::Local);
    env.ok(&["migrate"]);
    env.create_example_table("orders.toml");
    env.ok(&[
        "ingest",
        "--table",
        "orders",
        "--generate",
        "8000",
        "--keys",
        "800",
        "--segment-rows",
        "1000",
    ]);
    env
}

fn prebuild(env: &TestEnv) -> Value {
    serde_json::from_str(&env.ok(&typed(
        "run prebuild",
        &json!({"table": "orders", "partition": 0}),
    )))
    .unwrap()
}

fn object(env: &TestEnv, key: &str) -> PathBuf {
    PathBuf::from(&env.store_url).join(key)
}

fn bootstrap_fails(env: &TestEnv, name: &str) -> String {
    env.fails(&env.bootstrap_orders_args(name))
}

async fn psql(env: &TestEnv, statement: &str) {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .connect(&env.db.url)
        .await
        .unwrap();
    sqlx::query(statement).execute(&pool).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn damaged_snapshot_files_are_refused() {
    let env = setup();
    prebuild(&env);
    let manifest = env.orders_manifest(0);

    // A truncated bitmap.
    let bitmap = object(
        &env,
        manifest["segments"][0]["valid"]["key"].as_str().unwrap(),
    );
    let original = std::fs::read(&bitmap).unwrap();
    std::fs::write(&bitmap, &original[..original.len() / 2]).unwrap();
    let err = bootstrap_fails(&env, "a");
    assert!(
        err.contains("does not match its checksum") && err.contains("valid/"),
        "{err}"
    );
    // Even with a checksum that matches, a bitmap that does not parse is named as such.
    let parse =
        upsert_minion::snapshot::read::parse_bitmap("k", &original[..original.len() / 2], 1000);
    assert!(parse
        .unwrap_err()
        .to_string()
        .contains("bitmap k is corrupt or truncated"));
    // A bitmap whose docIds exceed the segment's rows.
    let mut too_big = roaring::RoaringBitmap::new();
    too_big.insert(5000);
    let mut bytes = Vec::new();
    too_big.serialize_into(&mut bytes).unwrap();
    let err = upsert_minion::snapshot::read::parse_bitmap("k", &bytes, 1000)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("marks docId 5000 but the segment has only 1000 rows"),
        "{err}"
    );
    std::fs::write(&bitmap, &original).unwrap();

    // A corrupt SST.
    let sst = object(&env, manifest["key_files"][0]["key"].as_str().unwrap());
    let mut damaged = std::fs::read(&sst).unwrap();
    let middle = damaged.len() / 2;
    damaged[middle] ^= 0x55;
    std::fs::write(&sst, &damaged).unwrap();
    let err = bootstrap_fails(&env, "b");
    assert!(
        err.contains("key-metadata file") && err.contains("does not match its checksum"),
        "{err}"
    );
    let verified = env.fails(&["verify", "--table", "orders"]);
    assert!(verified.contains("differences"), "{verified}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_manifest_of_an_unknown_format_is_refused() {
    let env = setup();
    prebuild(&env);
    let snapshots: Vec<Value> = serde_json::from_str(&env.ok(&[
        "snapshot",
        "ls",
        "--table",
        "orders",
        "--partition",
        "0",
        "--json",
    ]))
    .unwrap();
    let key = snapshots[0]["manifest_key"].as_str().unwrap();
    let path = object(&env, key);
    let mut manifest: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    manifest["format"] = json!(4);
    let bytes = serde_json::to_vec(&manifest).unwrap();
    std::fs::write(&path, &bytes).unwrap();
    let checksum = upsert_minion::storage::sha256_hex(&bytes);
    psql(
        &env,
        &format!("UPDATE snapshots SET manifest_checksum = '{checksum}'"),
    )
    .await;
    let err = bootstrap_fails(&env, "a");
    assert!(
        err.contains("has format 4, but this minion reads formats 1 to 3"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_segment_that_changed_since_the_snapshot_is_refused() {
    let env = setup();
    prebuild(&env);
    psql(&env, "UPDATE segments SET checksum = 'f00d' WHERE id = (SELECT min(id) FROM segments WHERE partition_id = 0)").await;
    let err = bootstrap_fails(&env, "a");
    assert!(
        err.contains("refusing that snapshot entry") && err.contains("now has checksum f00d"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn permanent_prebuild_failures_are_discarded_and_publish_nothing() {
    let env = setup();
    let segments: Vec<Value> = serde_json::from_str(&env.ok(&[
        "segment",
        "ls",
        "--table",
        "orders",
        "--partition",
        "0",
        "--json",
    ]))
    .unwrap();
    // A missing segment object.
    std::fs::remove_file(object(&env, segments[0]["object_key"].as_str().unwrap())).unwrap();
    // A corrupt segment in another partition.
    let other: Vec<Value> = serde_json::from_str(&env.ok(&[
        "segment",
        "ls",
        "--table",
        "orders",
        "--partition",
        "1",
        "--json",
    ]))
    .unwrap();
    let victim = object(&env, other[0]["object_key"].as_str().unwrap());
    let mut bytes = std::fs::read(&victim).unwrap();
    let length = bytes.len();
    bytes.truncate(length - 100);
    std::fs::write(&victim, &bytes).unwrap();

    let err = env.fails(&typed(
        "run prebuild",
        &json!({"table": "orders", "partition": 0}),
    ));
    assert!(err.contains("is missing from the store"), "{err}");
    let mut worker = env.spawn(
        "worker",
        &[
            "worker",
            "--poll-interval",
            "200ms",
            "--retry-backoff",
            "100ms",
        ],
    );
    let mut ids = Vec::new();
    for partition in [0, 1] {
        let args = typed(
            "job submit prebuild",
            &json!({"table": "orders", "partition": partition}),
        );
        let submitted: Value = env.json(&[&args[..], &["--json".to_string()]].concat());
        ids.push(submitted["id"].as_i64().unwrap().to_string());
    }
    for (id, expected) in ids
        .iter()
        .zip(["is missing from the store", "has checksum"])
    {
        let job = env.wait_job_state(id, "discarded");
        assert_eq!(job["attempt"], 1, "permanent: not retried");
        let error = job["errors"][0]["error"].as_str().unwrap();
        assert!(error.contains(expected), "{error}");
    }
    unsafe { libc::kill(worker.id() as i32, libc::SIGTERM) };
    worker.wait().unwrap();
    let snapshots: Vec<Value> =
        serde_json::from_str(&env.ok(&["snapshot", "ls", "--table", "orders", "--json"])).unwrap();
    assert!(snapshots.is_empty(), "nothing published: {snapshots:?}");
}
