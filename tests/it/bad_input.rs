//! Bad input of every kind: a clear message naming the problem, a non-zero exit, and a catalog
//! and store left as they were.

use serde_json::{json, Value};

use crate::common::{minion_command, StoreKind, TestEnv};
use crate::ingest::{order_rows, write_jsonl};

fn segments_of(env: &TestEnv, table: &str) -> usize {
    let listed: Vec<Value> =
        serde_json::from_str(&env.ok(&["segment", "ls", "--table", table, "--json"])).unwrap();
    listed.len()
}

fn objects_in_store(env: &TestEnv) -> usize {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(env.store().list("tables")).unwrap().len()
}

#[test]
fn malformed_table_files() {
    let env = TestEnv::new(StoreKind::Local);
    env.ok(&["migrate"]);
    let cases = [
        ("name = \"x\"\npartitions = ", "not valid TOML"),
        (
            "name = \"x\"\npartitions = 2\nprimary_key = [\"id\"]\ncomparison = \"ts\"\n[[columns]]\nname = \"ts\"\ntype = \"int64\"\n",
            "field `primary_key`: column `id` is not declared",
        ),
        (
            "name = \"x/y\"\npartitions = 2\nprimary_key = [\"id\"]\ncomparison = \"ts\"\n[[columns]]\nname = \"id\"\ntype = \"int64\"\n[[columns]]\nname = \"ts\"\ntype = \"int64\"\n",
            "field `name`",
        ),
        (
            "name = \"x\"\npartitions = 2\nprimary_key = [\"id\"]\ncomparison = \"ts\"\n[[columns]]\nname = \"id\"\ntype = \"int64\"\n[[columns]]\nname = \"ts\"\ntype = \"varchar\"\n",
            "varchar",
        ),
    ];
    for (index, (text, expected)) in cases.iter().enumerate() {
        let path = env.path(&format!("bad{index}.toml"));
        std::fs::write(&path, text).unwrap();
        let err = env.fails(&["table", "create", "--file", path.to_str().unwrap()]);
        assert!(err.contains(expected), "case {index}: {err}");
        assert!(
            err.contains(path.to_str().unwrap()),
            "names the file: {err}"
        );
    }
    let err = env.fails(&["table", "create", "--file", "/no/such/table.toml"]);
    assert!(
        err.contains("cannot read table file /no/such/table.toml"),
        "{err}"
    );
    let listed: Vec<Value> = serde_json::from_str(&env.ok(&["table", "ls", "--json"])).unwrap();
    assert!(listed.is_empty(), "no table was created");
}

/// Writes `good` rows then one bad row, ingests, and checks the error and that nothing stayed.
fn bad_row_case(env: &TestEnv, file_name: &str, content: &str, expected: &[&str]) {
    let path = env.path(file_name);
    std::fs::write(&path, content).unwrap();
    let err = env.fails(&[
        "ingest",
        "--table",
        "orders",
        "--input",
        path.to_str().unwrap(),
        "--segment-rows",
        "10",
    ]);
    for fragment in expected {
        assert!(
            err.contains(fragment),
            "{file_name}: expected `{fragment}` in: {err}"
        );
    }
    assert_eq!(
        segments_of(env, "orders"),
        0,
        "{file_name}: nothing registered"
    );
    assert_eq!(
        objects_in_store(env),
        0,
        "{file_name}: uploads of the failed ingest were removed"
    );
}

#[test]
fn bad_rows_in_every_format() {
    let env = TestEnv::new(StoreKind::Local);
    env.ok(&["migrate"]);
    env.create_example_table("orders.toml");
    let good: String = order_rows(120).iter().map(|r| format!("{r}\n")).collect();

    let wrong_type = format!(
        "{good}{}\n",
        json!({"order_id": 1, "updated_at": 5, "deleted": false, "amount": "lots"})
    );
    bad_row_case(
        &env,
        "wrong_type.jsonl",
        &wrong_type,
        &["line 121", "column `amount`", "expected a number"],
    );
    let missing_key = format!("{good}{}\n", json!({"updated_at": 5, "deleted": false}));
    bad_row_case(
        &env,
        "missing_key.jsonl",
        &missing_key,
        &["line 121", "column `order_id`", "missing value"],
    );
    let unparsable = format!("{good}{{\"order_id\": 1, \n");
    bad_row_case(
        &env,
        "unparsable.jsonl",
        &unparsable,
        &["line 121", "not valid JSON"],
    );
    let unknown = format!(
        "{good}{}\n",
        json!({"order_id": 1, "updated_at": 5, "deleted": false, "colour": "red"})
    );
    bad_row_case(
        &env,
        "unknown.jsonl",
        &unknown,
        &["line 121", "column `colour`", "unknown column"],
    );

    let mut csv = String::from("order_id,updated_at,deleted,amount\n");
    for i in 0..50 {
        csv.push_str(&format!("{i},{},false,1.5\n", 1000 + i));
    }
    csv.push_str("51,notatime,false,1.5\n");
    bad_row_case(
        &env,
        "bad_time.csv",
        &csv,
        &["line 52", "column `updated_at`", "not a timestamp"],
    );
    let ragged = "order_id,updated_at,deleted\n1,2,false\n3,4\n";
    bad_row_case(&env, "ragged.csv", ragged, &["line 3", "malformed CSV"]);
    let bad_header = "order_id,updated_at,deleted,colour\n1,2,false,red\n";
    bad_row_case(
        &env,
        "bad_header.csv",
        bad_header,
        &["line 1", "column `colour`"],
    );

    // Parquet: a null key, and a file that is not Parquet at all.
    let rows: Vec<Value> = (0..30)
        .map(|i| json!({"order_id": if i == 20 { Value::Null } else { json!(i) }, "updated_at": i, "deleted": false}))
        .collect();
    let jsonl = env.path("nullkey.jsonl");
    write_jsonl(&jsonl, &rows);
    let parquet = env.path("nullkey.parquet");
    crate::common::python(
        "jsonl_to_parquet.py",
        &[jsonl.to_str().unwrap(), parquet.to_str().unwrap()],
    );
    let err = env.fails(&[
        "ingest",
        "--table",
        "orders",
        "--input",
        parquet.to_str().unwrap(),
    ]);
    assert!(
        err.contains("line 21") && err.contains("column `order_id`"),
        "{err}"
    );
    bad_row_case(
        &env,
        "garbage.parquet",
        "PAR1 this is not parquet",
        &["garbage.parquet", "not a readable Parquet file"],
    );
    assert_eq!(segments_of(&env, "orders"), 0);
}

#[test]
fn bad_store_urls_and_unknown_tables() {
    let env = TestEnv::new(StoreKind::Local);
    env.ok(&["migrate"]);
    env.create_example_table("orders.toml");
    let rows = env.path("rows.jsonl");
    write_jsonl(&rows, &order_rows(10));
    let args = [
        "ingest",
        "--table",
        "orders",
        "--input",
        rows.to_str().unwrap(),
    ];
    let output = env.minion_with(&args, &[("MINION_STORE", "ftp://example/x")]);
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        err.contains("bad object store URL `ftp://example/x`")
            && err.contains("s3://bucket/prefix"),
        "{err}"
    );

    // An S3 store whose endpoint does not answer: named, and nothing registered.
    let output = env.minion_with(
        &args,
        &[
            ("MINION_STORE", "s3://nobucket/x"),
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:9"),
            ("AWS_ALLOW_HTTP", "true"),
            ("AWS_ACCESS_KEY_ID", "x"),
            ("AWS_SECRET_ACCESS_KEY", "x"),
        ],
    );
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(err.contains("object store s3://nobucket/x failed"), "{err}");
    assert_eq!(segments_of(&env, "orders"), 0);

    let err = env.fails(&[
        "ingest",
        "--table",
        "nope",
        "--input",
        rows.to_str().unwrap(),
    ]);
    assert!(err.contains("table `nope` does not exist"), "{err}");
    let err = env.fails(&["segment", "ls", "--table", "orders", "--partition", "9"]);
    assert!(err.contains("partitions 0 to 3"), "{err}");
    let err = env.fails(&[
        "ingest",
        "--table",
        "orders",
        "--generate",
        "10",
        "--keys",
        "0",
    ]);
    assert!(err.contains("--keys must be at least 1"), "{err}");
}

#[test]
fn unreachable_database() {
    let output = minion_command()
        .env("DATABASE_URL", "postgres://postgres@127.0.0.1:9/nowhere")
        .args(["table", "ls"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(
        err.contains(
            "cannot reach the catalog database at postgres://postgres@127.0.0.1:9/nowhere"
        ),
        "{err}"
    );
    assert!(err.contains("DATABASE_URL"), "says how to fix it: {err}");

    let output = minion_command()
        .env(
            "DATABASE_URL",
            "postgres://user:hunter2@127.0.0.1:9/nowhere",
        )
        .arg("migrate")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(
        !err.contains("hunter2"),
        "passwords never appear in messages: {err}"
    );
}

#[test]
fn scan_refuses_a_segment_whose_object_was_altered() {
    let env = TestEnv::orders(4000, 500, 9, 1000);
    env.run_task("prebuild", &json!({"table": "orders", "partition": 0}));
    let segment = env.online("orders", 0)[0].clone();
    let path =
        std::path::PathBuf::from(&env.store_url).join(segment["object_key"].as_str().unwrap());
    let original = std::fs::read(&path).unwrap();
    let mut altered = original.clone();
    let middle = altered.len() / 2;
    altered[middle] ^= 0x01;
    std::fs::write(&path, &altered).unwrap();
    let name = segment["name"].as_str().unwrap();
    let output = env.path("rows.jsonl");
    for args in [
        vec![
            "scan",
            "--table",
            "orders",
            "--output",
            output.to_str().unwrap(),
        ],
        vec![
            "scan",
            "--table",
            "orders",
            "--partition",
            "0",
            "--snapshot",
            "1",
            "--output",
            output.to_str().unwrap(),
        ],
    ] {
        let err = env.fails(&args);
        assert!(
            err.contains("does not match its checksum") && err.contains(name),
            "{args:?}: {err}"
        );
    }
    std::fs::write(&path, &original).unwrap();
    env.ok(&[
        "scan",
        "--table",
        "orders",
        "--output",
        output.to_str().unwrap(),
    ]);
}

/// A segment state written by a newer minion is a clear error, not a panic.
#[test]
fn a_segment_in_a_state_this_minion_does_not_know_is_a_clear_error() {
    let env = TestEnv::orders(1000, 500, 3, 1000);
    env.with_catalog(async |catalog| {
        let pool = catalog.pool();
        sqlx::query("ALTER TABLE segments DROP CONSTRAINT segments_state_check")
            .execute(pool)
            .await
            .unwrap();
        sqlx::query(
            "UPDATE segments SET state = 'archived' WHERE id = (SELECT min(id) FROM segments)",
        )
        .execute(pool)
        .await
        .unwrap();
    });
    let err = env.fails(&["segment", "ls", "--table", "orders"]);
    assert!(
        err.contains("unknown segment state `archived`") && !err.contains("panicked"),
        "{err}"
    );
}
