//! Misuse of every class (issue 26): each refusal is a clear error that names the thing and the
//! fix, and the catalog and the store hold after it exactly what they held before.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray,
    TimestampSecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use serde_json::Value;

use crate::common::{minion_command, sigterm, StoreKind, TestEnv};
use crate::ingest::{order_rows, write_jsonl};

/// What the catalog and the store hold, to compare before and after a refusal.
#[derive(Debug, PartialEq)]
struct Held {
    tables: Value,
    segments: Value,
    snapshots: Value,
    jobs: Value,
    objects: BTreeSet<String>,
}

fn held(env: &TestEnv) -> Held {
    let tables: Value = env.json(&["table", "ls", "--json"]);
    let mut segments = Vec::new();
    let mut snapshots = Vec::new();
    for table in tables.as_array().unwrap() {
        let name = table["name"].as_str().unwrap();
        segments.push(env.json::<Value>(&["segment", "ls", "--table", name, "--json"]));
        snapshots.push(env.json::<Value>(&["snapshot", "ls", "--table", name, "--json"]));
    }
    Held {
        tables,
        segments: Value::Array(segments),
        snapshots: Value::Array(snapshots),
        jobs: env.json(&["job", "ls", "--json"]),
        objects: env.objects(),
    }
}

/// `minion ARGS` fails with every fragment in its message, and nothing held changed.
fn refused(env: &TestEnv, args: &[&str], fragments: &[&str]) -> String {
    let before = held(env);
    let err = env.fails(args);
    for fragment in fragments {
        assert!(
            err.contains(fragment),
            "{args:?}: expected `{fragment}` in: {err}"
        );
    }
    assert!(
        held(env) == before,
        "{args:?} changed the catalog or the store"
    );
    err
}

fn orders_env() -> TestEnv {
    let env = TestEnv::new(StoreKind::Local);
    env.ok(&["migrate"]);
    env.create_example_table("orders.toml");
    env
}

fn ingest_rows(env: &TestEnv, name: &str, rows: usize, extra: &[&str]) {
    let path = env.path(name);
    write_jsonl(&path, &order_rows(rows));
    let mut args = vec![
        "ingest",
        "--table",
        "orders",
        "--input",
        path.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    env.ok(&args);
}

/// A Parquet file of the `orders` columns, with `updated_at` as given.
fn orders_parquet(path: &Path, updated_at: (DataType, ArrayRef), extra: Option<(&str, ArrayRef)>) {
    let mut fields = vec![
        Field::new("order_id", DataType::Int64, false),
        Field::new("updated_at", updated_at.0, false),
        Field::new("deleted", DataType::Boolean, false),
    ];
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(vec![7, 7])),
        updated_at.1,
        Arc::new(BooleanArray::from(vec![false, false])),
    ];
    if let Some((name, array)) = extra {
        fields.push(Field::new(name, array.data_type().clone(), true));
        columns.push(array);
    }
    let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap();
    let file = std::fs::File::create(path).unwrap();
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
}

#[test]
fn input_types_are_never_converted_lossily() {
    let env = orders_env();
    let ingest = |name: &str| {
        let path = env.path(name).display().to_string();
        vec!["ingest", "--table", "orders", "--input", &path]
            .into_iter()
            .map(String::from)
            .collect::<Vec<String>>()
    };
    /// File name, `updated_at` as written, another column, what the refusal says.
    type Case<'a> = (
        &'a str,
        (DataType, ArrayRef),
        Option<(&'a str, ArrayRef)>,
        Vec<&'a str>,
    );
    let cases: Vec<Case> = vec![
        (
            // 1.9 would become 1 and lose to 1.1's 1 by sequence: the wrong winner.
            "float_time.parquet",
            (
                DataType::Float64,
                Arc::new(Float64Array::from(vec![1.9, 1.1])),
            ),
            None,
            vec![
                "column `updated_at`",
                "declared timestamp (ms)",
                "the file has Float64",
            ],
        ),
        (
            "string_time.parquet",
            (
                DataType::Utf8,
                Arc::new(StringArray::from(vec!["12", "13"])),
            ),
            None,
            vec!["column `updated_at`", "the file has Utf8"],
        ),
        (
            "int_bool.parquet",
            (
                DataType::Timestamp(TimeUnit::Second, None),
                Arc::new(TimestampSecondArray::from(vec![1, 2])),
            ),
            Some(("status", Arc::new(Int64Array::from(vec![1, 0])) as ArrayRef)),
            vec!["column `status`", "declared string", "the file has Int64"],
        ),
    ];
    for (name, updated_at, extra, fragments) in cases {
        orders_parquet(&env.path(name), updated_at, extra);
        let args = ingest(name);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        refused(&env, &args, &fragments);
    }
    // Lossless ones go through: seconds into milliseconds, int32 into an int64 key.
    orders_parquet(
        &env.path("seconds.parquet"),
        (
            DataType::Timestamp(TimeUnit::Second, None),
            Arc::new(TimestampSecondArray::from(vec![
                1_700_000_000,
                1_700_000_001,
            ])),
        ),
        Some((
            "quantity",
            Arc::new(Int32Array::from(vec![1, 2])) as ArrayRef,
        )),
    );
    let args = ingest("seconds.parquet");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    env.ok(&args);
    let out = env.path("seconds.jsonl");
    env.ok(&[
        "scan",
        "--table",
        "orders",
        "--output",
        out.to_str().unwrap(),
    ]);
    let row: Value = serde_json::from_str(std::fs::read_to_string(&out).unwrap().trim()).unwrap();
    assert!(
        row["updated_at"]
            .as_str()
            .unwrap()
            .starts_with("2023-11-14T22:13:21"),
        "seconds became milliseconds exactly: {row}"
    );
    // JSON Lines and CSV follow the same rule: a float is no timestamp.
    let jsonl = env.path("float.jsonl");
    std::fs::write(
        &jsonl,
        "{\"order_id\": 1, \"updated_at\": 1.9, \"deleted\": false}\n",
    )
    .unwrap();
    refused(
        &env,
        &[
            "ingest",
            "--table",
            "orders",
            "--input",
            jsonl.to_str().unwrap(),
        ],
        &["column `updated_at`", "1.9"],
    );
    let csv = env.path("float.csv");
    std::fs::write(&csv, "order_id,updated_at,deleted\n1,1.9,false\n").unwrap();
    refused(
        &env,
        &[
            "ingest",
            "--table",
            "orders",
            "--input",
            csv.to_str().unwrap(),
        ],
        &["column `updated_at`", "1.9"],
    );
}

#[test]
fn a_catalog_refuses_any_store_but_its_own() {
    let env = orders_env();
    // Before the first write, reads need no store and make none.
    env.ok(&["status"]);
    env.ok(&[
        "scan",
        "--table",
        "orders",
        "--output",
        env.path("empty.jsonl").to_str().unwrap(),
    ]);
    assert!(
        !Path::new(&env.store_url).exists(),
        "a read made the store directory"
    );
    ingest_rows(&env, "rows.jsonl", 50, &[]);
    let bound = env.store_url.clone();
    let rows = env.path("rows.jsonl").display().to_string();
    let ingest = ["ingest", "--table", "orders", "--input", &rows];
    let other_dir = env.path("other-store").display().to_string();
    for store in ["memory://", other_dir.as_str()] {
        let mut args = ingest.to_vec();
        args.extend(["--store", store]);
        refused(
            &env,
            &args,
            &["this catalog's objects are in store", &bound, store],
        );
    }
    // The default store, `./minion-data`, of another working directory.
    let elsewhere = tempfile::tempdir().unwrap();
    let output = minion_command()
        .current_dir(elsewhere.path())
        .env("DATABASE_URL", &env.db.url)
        .args(ingest)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success() && err.contains(&bound), "{err}");
    // A read-only command creates no store directory.
    let missing = env.path("no-such-store");
    env.ok(&[
        "segment",
        "ls",
        "--table",
        "orders",
        "--store",
        missing.to_str().unwrap(),
    ]);
    let err = env.fails(&[
        "scan",
        "--table",
        "orders",
        "--output",
        env.path("x.jsonl").to_str().unwrap(),
        "--store",
        missing.to_str().unwrap(),
    ]);
    assert!(
        err.contains("does not exist (nothing was created)"),
        "{err}"
    );
    assert!(!missing.exists(), "a read made the store directory");
    // A second catalog may not take a store that belongs to the first.
    let second = crate::common::TestDb::new();
    let output = minion_command()
        .env("DATABASE_URL", &second.url)
        .env("MINION_STORE", &bound)
        .args(["migrate"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let table_file = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/tables/orders.toml");
    let output = minion_command()
        .env("DATABASE_URL", &second.url)
        .env("MINION_STORE", &bound)
        .args(["table", "create", "--file", table_file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(output.status.success());
    let output = minion_command()
        .env("DATABASE_URL", &second.url)
        .env("MINION_STORE", &bound)
        .args(ingest)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success() && err.contains("belongs to another catalog"),
        "{err}"
    );
    // The catalog's own store still works.
    ingest_rows(&env, "more.jsonl", 20, &[]);
}

#[test]
fn a_failed_command_never_destroys_what_the_operator_had() {
    let env = orders_env();
    ingest_rows(&env, "rows.jsonl", 60, &["--segment-rows", "20"]);
    let output = env.path("rows-out.jsonl");
    env.ok(&[
        "scan",
        "--table",
        "orders",
        "--output",
        output.to_str().unwrap(),
    ]);
    let good = std::fs::read(&output).unwrap();
    assert!(!good.is_empty());
    // Damage a segment: the scan fails, and the earlier output is still there, whole.
    let segments: Vec<Value> = env.json(&["segment", "ls", "--table", "orders", "--json"]);
    let object = Path::new(&env.store_url).join(segments[0]["object_key"].as_str().unwrap());
    let original = std::fs::read(&object).unwrap();
    let mut damaged = original.clone();
    damaged[10] ^= 0xff;
    std::fs::write(&object, &damaged).unwrap();
    let err = env.fails(&[
        "scan",
        "--table",
        "orders",
        "--output",
        output.to_str().unwrap(),
    ]);
    assert!(err.contains("checksum"), "{err}");
    assert_eq!(
        std::fs::read(&output).unwrap(),
        good,
        "the previous output survives"
    );
    let leftovers: Vec<_> = std::fs::read_dir(output.parent().unwrap())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".partial"))
        .collect();
    assert!(leftovers.is_empty(), "no partial file left: {leftovers:?}");
    // A failed bootstrap leaves its directory clean, so the retry after the repair works.
    let partition = segments[0]["partition"].as_u64().unwrap().to_string();
    let dir = env.path("boot").display().to_string();
    let boot = [
        "bootstrap",
        "--table",
        "orders",
        "--partition",
        &partition,
        "--dir",
        &dir,
    ];
    env.fails(&boot);
    assert!(
        !Path::new(&dir).exists() || std::fs::read_dir(&dir).unwrap().next().is_none(),
        "a failed bootstrap left files in {dir}"
    );
    std::fs::write(&object, &original).unwrap();
    env.ok(&boot);
}

#[test]
fn an_idempotency_key_names_one_input() {
    let env = orders_env();
    let first = env.path("first.jsonl");
    write_jsonl(&first, &order_rows(30));
    let keyed = |path: &Path| {
        vec![
            "ingest".to_string(),
            "--table".into(),
            "orders".into(),
            "--input".into(),
            path.display().to_string(),
            "--idempotency-key".into(),
            "batch-1".into(),
        ]
    };
    let args = keyed(&first);
    env.ok(&args);
    // The same input again: nothing registered, said so.
    let again = env.ok(&args);
    assert!(again.contains("already registered"), "{again}");
    // Other rows under the same key: refused, not reported as done with the rows dropped.
    let second = env.path("second.jsonl");
    write_jsonl(&second, &order_rows(31));
    let args = keyed(&second);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    refused(
        &env,
        &args,
        &[
            "idempotency key `batch-1`",
            "was used for another input",
            "new key",
        ],
    );
}

#[test]
fn durations_and_numbers_out_of_range_are_refused_without_a_panic() {
    let env = orders_env();
    for args in [
        vec!["run", "gc", "--table", "orders", "--grace", "99999999999d"],
        vec![
            "job",
            "submit",
            "gc",
            "--table",
            "orders",
            "--grace",
            "99999999999d",
        ],
        vec![
            "job",
            "submit",
            "sleep",
            "--seconds",
            "1",
            "--in",
            "99999999999d",
        ],
        vec![
            "job",
            "submit",
            "gc",
            "--args",
            "{\"table\": \"orders\", \"grace_seconds\": 1e300}",
        ],
    ] {
        let err = refused(&env, &args, &[]);
        assert!(
            err.contains("hundred years") || err.contains("grace_seconds"),
            "{args:?}: {err}"
        );
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
    let err = refused(
        &env,
        &["run", "gc", "--table", "orders", "--grace", "-5s"],
        &["negative"],
    );
    assert!(!err.contains("unexpected argument"), "{err}");
    refused(
        &env,
        &[
            "job",
            "submit",
            "prebuild",
            "--table",
            "orders",
            "--partition",
            "4294967296",
        ],
        &["partition"],
    );
}

#[test]
fn a_job_that_cannot_run_is_never_enqueued() {
    let env = orders_env();
    ingest_rows(&env, "rows.jsonl", 40, &[]);
    refused(
        &env,
        &[
            "job",
            "submit",
            "prebuild",
            "--table",
            "orders",
            "--partition",
            "99",
        ],
        &[
            "table orders has partitions 0 to 3, not 99",
            "nothing was submitted",
        ],
    );
    refused(
        &env,
        &["job", "submit", "gc", "--table", "nosuch"],
        &["table `nosuch` does not exist"],
    );
    refused(
        &env,
        &[
            "job",
            "submit",
            "compact",
            "--table",
            "orders",
            "--segment",
            "999999",
        ],
        &[
            "segment 999999 does not exist",
            "minion segment ls --table orders",
        ],
    );
    let segments: Vec<Value> = env.json(&["segment", "ls", "--table", "orders", "--json"]);
    let (a, b) = (&segments[0], &segments[1]);
    let ids = format!("{},{}", a["id"], b["id"]);
    let partition = if a["partition"] == b["partition"] {
        "9"
    } else {
        "0"
    };
    refused(
        &env,
        &[
            "job",
            "submit",
            "merge",
            "--table",
            "orders",
            "--partition",
            partition,
            "--segments",
            &ids,
        ],
        &["nothing was submitted"],
    );
    let out = env.ok(&[
        "job",
        "submit",
        "prebuild",
        "--table",
        "orders",
        "--partition",
        "0",
    ]);
    assert!(out.contains("submitted job"), "{out}");
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// `minion table ls` with `DATABASE_URL=url` and logs in `format`: whether it succeeded, and all
/// it printed.
fn table_ls_with(url: &str, format: &str) -> (bool, String) {
    let output = minion_command()
        .env("DATABASE_URL", url)
        .env("MINION_LOG_FORMAT", format)
        .args(["table", "ls"])
        .output()
        .unwrap();
    let shown = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), shown)
}

#[test]
fn secrets_are_never_shown_in_any_form_of_the_url() {
    // A closed port: refused at once, named, and the password in none of its forms.
    let port = closed_port();
    for url in [
        format!("postgres://u:hunter2@127.0.0.1:{port}/db"),
        format!("postgres://u@127.0.0.1:{port}/db?password=hunter2"),
        format!("postgres://u@127.0.0.1:{port}/db?sslmode=disable&password=hunter2"),
        format!("host=127.0.0.1 port={port} user=u password=hunter2 dbname=db"),
    ] {
        let (succeeded, shown) = table_ls_with(&url, "text");
        assert!(!succeeded, "{url}");
        assert!(!shown.contains("hunter2"), "{url} shown as: {shown}");
        if url.starts_with("postgres://") {
            assert!(shown.to_lowercase().contains("refused"), "{url}: {shown}");
            assert!(!shown.contains("pool timed out"), "{url}: {shown}");
        }
    }
}

#[test]
fn text_from_users_is_escaped_where_it_is_shown() {
    let env = orders_env();
    let key = "k\n\u{1b}[31mred\u{202e}";
    env.ok(&[
        "job",
        "submit",
        "sleep",
        "--seconds",
        "0",
        "--unique-key",
        key,
        "--in",
        "1h",
    ]);
    for args in [vec!["job", "ls"], vec!["job", "show", "1"]] {
        let out = env.ok(&args);
        assert!(
            !out.contains('\u{1b}') && !out.contains('\u{202e}'),
            "{args:?}: {out:?}"
        );
        assert!(out.contains("k\\n\\u{1b}[31mred"), "{args:?}: {out}");
    }
    // A message with a newline cannot forge a line of the worker's text log.
    env.ok(&[
        "job",
        "submit",
        "fail",
        "--permanent",
        "--message",
        "boom\nERROR forged line",
    ]);
    let mut worker = env.spawn(
        "worker",
        &["worker", "--concurrency", "1", "--poll-interval", "100ms"],
    );
    let job = env.wait_job_state("2", "discarded");
    sigterm(&worker);
    worker.wait().unwrap();
    assert!(job["errors"][0]["error"]
        .as_str()
        .unwrap()
        .contains("boom\nERROR"));
    let log = env.log("worker");
    assert!(log.contains("boom\\nERROR forged line"), "{log}");
    assert!(
        !log.lines().any(|line| line.starts_with("ERROR forged")),
        "a forged line: {log}"
    );
}

/// Flips one byte of the object at `key` in the local store.
fn flip(env: &TestEnv, key: &str) {
    let path = Path::new(&env.store_url).join(key);
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&path, bytes).unwrap();
}

#[test]
fn a_damaged_snapshot_is_repaired_with_the_tool() {
    let env = orders_env();
    ingest_rows(&env, "rows.jsonl", 400, &["--segment-rows", "100"]);
    for partition in 0..4 {
        env.ok(&[
            "run",
            "prebuild",
            "--table",
            "orders",
            "--partition",
            &partition.to_string(),
        ]);
    }
    // A flipped byte in a bitmap: verify says so and names the repair, which works.
    let manifest = env.orders_manifest(1);
    flip(
        &env,
        manifest["segments"][0]["valid"]["key"].as_str().unwrap(),
    );
    let err = env.fails(&["verify", "--table", "orders"]);
    let out =
        String::from_utf8_lossy(&env.minion(&["verify", "--table", "orders"]).stdout).to_string();
    assert!(
        out.contains("minion run prebuild --table orders --partition 1 --force"),
        "{out}{err}"
    );
    let report: Value = env.json(&["run", "prebuild", "--table", "orders", "--partition", "1"]);
    assert_eq!(report["outcome"], "up_to_date", "{report}");
    let report: Value = env.json(&[
        "run",
        "prebuild",
        "--table",
        "orders",
        "--partition",
        "1",
        "--force",
    ]);
    assert_eq!(report["outcome"], "published", "{report}");
    env.ok(&["verify", "--table", "orders"]);
    // A flipped byte in a manifest: plan reports that partition and plans the others; the next
    // prebuild sees the damage and builds again without being told.
    let snapshots: Vec<Value> = env.json(&[
        "snapshot",
        "ls",
        "--table",
        "orders",
        "--partition",
        "2",
        "--json",
    ]);
    flip(&env, snapshots[0]["manifest_key"].as_str().unwrap());
    let plan: Value = env.json(&["run", "plan", "--table", "orders", "--dry-run"]);
    let failed = plan["plan"]["failed_partitions"].as_array().unwrap();
    assert_eq!(failed.len(), 1, "{plan}");
    assert_eq!(failed[0]["partition"], 2);
    assert!(
        failed[0]["error"].as_str().unwrap().contains("checksum"),
        "{plan}"
    );
    assert!(
        plan["plan"]["prebuild"]
            .as_array()
            .unwrap()
            .contains(&Value::from(2)),
        "{plan}"
    );
    env.ok(&["status"]);
    let report: Value = env.json(&["run", "prebuild", "--table", "orders", "--partition", "2"]);
    assert_eq!(report["outcome"], "published", "{report}");
    assert!(
        report["full_because"].as_str().unwrap().contains("damaged"),
        "{report}"
    );
    env.ok(&["verify", "--table", "orders"]);
    // A damaged key run is rebuilt from its segment, and the error names the object.
    let segments: Vec<Value> = env.json(&[
        "segment",
        "ls",
        "--table",
        "orders",
        "--partition",
        "3",
        "--json",
    ]);
    let run = format!(
        "tables/orders/p3/keyruns/{}.run",
        segments[0]["name"].as_str().unwrap()
    );
    flip(&env, &run);
    let report: Value = env.json(&[
        "run",
        "prebuild",
        "--table",
        "orders",
        "--partition",
        "3",
        "--force",
    ]);
    assert_eq!(report["outcome"], "published", "{report}");
    assert_eq!(report["runs_built"], 1, "{report}");
    env.ok(&["verify", "--table", "orders"]);
}

#[test]
fn every_command_an_error_suggests_exists_and_parses() {
    use clap::Parser;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut suggestions = BTreeSet::new();
    let mut stack = vec![root];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for line in text.lines() {
                let code = line.trim_start();
                if code.starts_with("//") {
                    continue;
                }
                for (index, part) in line.split('`').enumerate() {
                    if index % 2 == 1 && part.starts_with("minion ") {
                        suggestions.insert((path.display().to_string(), part.to_string()));
                    }
                }
            }
        }
    }
    assert!(suggestions.len() > 10, "{suggestions:?}");
    let placeholders = [
        ("{table}", "orders"),
        ("{name}", "orders"),
        ("{0}", "orders"),
        ("{partition}", "0"),
        ("{key}", "k"),
        ("{id}", "1"),
        ("{}", "orders"),
        ("TABLE.toml", "t.toml"),
        ("TABLE", "orders"),
        (" N ", " 0 "),
        ("F.toml", "t.toml"),
        ("ID", "1"),
    ];
    for (file, suggestion) in &suggestions {
        // Forms that stand for many commands, not one to run.
        if suggestion.contains('|') || suggestion.contains("...") || suggestion.contains("KIND") {
            continue;
        }
        let mut command = suggestion.clone();
        for (placeholder, value) in placeholders {
            command = command.replace(placeholder, value);
        }
        let words: Vec<&str> = command.split_whitespace().collect();
        let parsed = upsert_minion::cli::Cli::try_parse_from(&words);
        if let Err(err) = parsed {
            use clap::error::ErrorKind;
            assert!(
                matches!(
                    err.kind(),
                    ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
                ),
                "{file}: `{suggestion}` does not parse: {err}"
            );
        }
    }
}

#[test]
fn table_drop_says_what_it_deletes_and_needs_yes() {
    let env = orders_env();
    ingest_rows(&env, "rows.jsonl", 80, &[]);
    env.ok(&["run", "prebuild", "--table", "orders", "--partition", "0"]);
    env.ok(&["job", "submit", "gc", "--table", "orders", "--in", "1h"]);
    let err = refused(
        &env,
        &["table", "drop", "orders"],
        &[
            "dropping would delete table orders",
            "segments",
            "snapshots",
            "1 waiting jobs",
            "objects",
            "--yes",
        ],
    );
    assert!(err.contains("Nothing was deleted"), "{err}");
    let out = env.ok(&["table", "drop", "orders", "--yes"]);
    assert!(out.contains("dropped table orders"), "{out}");
    let tables: Vec<Value> = env.json(&["table", "ls", "--json"]);
    assert!(tables.is_empty());
    assert!(env.objects().is_empty(), "{:?}", env.objects());
    let jobs: Vec<Value> = env.json(&["job", "ls", "--json"]);
    assert!(jobs.iter().all(|j| j["kind"] != "gc"), "{jobs:?}");
    // Gone, and back with the same name.
    env.fails(&["table", "drop", "orders", "--yes"]);
    env.create_example_table("orders.toml");
    ingest_rows(&env, "again.jsonl", 10, &[]);
}

#[test]
fn json_lines_csv_and_float_comparisons_follow_the_lossless_rule_too() {
    let env = orders_env();
    let cases: [(&str, &str, &[&str]); 4] = [
        (
            "submilli.jsonl",
            "{\"order_id\": 1, \"updated_at\": \"2023-11-14T22:13:20.0005Z\", \"deleted\": false}\n",
            &["column `updated_at`", "below the millisecond"],
        ),
        (
            "big.jsonl",
            "{\"order_id\": 1, \"updated_at\": 5, \"deleted\": false, \"amount\": 9007199254740993}\n",
            &["column `amount`", "beyond 2^53"],
        ),
        (
            "bool.csv",
            "order_id,updated_at,deleted\n1,5,1\n",
            &["column `deleted`", "not a bool"],
        ),
        (
            "huge.csv",
            "order_id,updated_at,deleted,amount\n1,5,false,1e400\n",
            &["column `amount`", "beyond the range"],
        ),
    ];
    for (name, text, fragments) in cases {
        let path = env.path(name);
        std::fs::write(&path, text).unwrap();
        let input = path.to_str().unwrap();
        refused(
            &env,
            &["ingest", "--table", "orders", "--input", input],
            fragments,
        );
    }
    // A float comparison column takes finite numbers only: a NaN would beat every update.
    let floats = env.path("floats.toml");
    std::fs::write(
        &floats,
        "name = \"fc\"\npartitions = 1\nprimary_key = [\"id\"]\ncomparison = \"v\"\n\
         [[columns]]\nname = \"id\"\ntype = \"int64\"\n[[columns]]\nname = \"v\"\ntype = \"float64\"\n",
    )
    .unwrap();
    env.ok(&["table", "create", "--file", floats.to_str().unwrap()]);
    let nan = env.path("nan.csv");
    std::fs::write(&nan, "id,v\n1,5.0\n1,NaN\n").unwrap();
    let input = nan.to_str().unwrap();
    refused(
        &env,
        &["ingest", "--table", "fc", "--input", input],
        &[
            "line 2",
            "column `v`",
            "NaN in the comparison column",
            "finite",
        ],
    );
    let inf = env.path("inf.parquet");
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("v", DataType::Float64, false),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(vec![1, 2])),
        Arc::new(Float64Array::from(vec![1.0, f64::INFINITY])),
    ];
    let batch = RecordBatch::try_new(schema.clone(), columns).unwrap();
    let file = std::fs::File::create(&inf).unwrap();
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, schema, None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    let input = inf.to_str().unwrap();
    refused(
        &env,
        &["ingest", "--table", "fc", "--input", input],
        &["column `v`", "inf in the comparison column"],
    );
    // A column name from the file with control characters is shown escaped.
    let forged = env.path("forged.jsonl");
    std::fs::write(
        &forged,
        "{\"order_id\": 1, \"updated_at\": 1, \"deleted\": false, \"\\u001b[31mX\\nINFO forged\": 1}\n",
    )
    .unwrap();
    let input = forged.to_str().unwrap();
    let err = refused(
        &env,
        &["ingest", "--table", "orders", "--input", input],
        &["unknown column"],
    );
    assert!(
        !err.contains('\u{1b}') && !err.contains("\nINFO forged"),
        "{err:?}"
    );
}

#[test]
fn a_refused_write_creates_no_store_directory() {
    let env = orders_env();
    ingest_rows(&env, "rows.jsonl", 20, &[]);
    let other = env.path("other");
    for args in [
        vec!["run", "gc", "--table", "orders"],
        vec!["run", "plan", "--table", "orders", "--dry-run"],
        vec!["table", "drop", "orders", "--yes"],
    ] {
        let mut args = args.clone();
        args.extend(["--store", other.to_str().unwrap()]);
        refused(&env, &args, &["this catalog's objects are in store"]);
        assert!(!other.exists(), "{args:?} made {}", other.display());
    }
}

#[test]
fn jobs_naming_a_segment_twice_or_holding_nul_are_refused() {
    let env = orders_env();
    ingest_rows(&env, "rows.jsonl", 40, &[]);
    let segments: Vec<Value> = env.json(&[
        "segment",
        "ls",
        "--table",
        "orders",
        "--partition",
        "0",
        "--json",
    ]);
    let twice = format!("{},{}", segments[0]["id"], segments[0]["id"]);
    refused(
        &env,
        &[
            "job",
            "submit",
            "merge",
            "--table",
            "orders",
            "--partition",
            "0",
            "--segments",
            &twice,
        ],
        &["names a segment twice"],
    );
    refused(
        &env,
        &[
            "job",
            "submit",
            "fail",
            "--args",
            "{\"message\": \"a\\u0000b\"}",
        ],
        &["NUL character"],
    );
}

#[test]
fn secret_query_parameters_never_reach_the_logs() {
    let port = closed_port();
    for url in [
        format!("postgres://u@127.0.0.1:{port}/db?sslpassword=hunter2&sslmode=disable"),
        format!("postgres://u@127.0.0.1:{port}/db?PassWord=hunter2"),
    ] {
        for format in ["text", "json"] {
            let (_, shown) = table_ls_with(&url, format);
            assert!(
                !shown.contains("hunter2"),
                "{url} ({format}) shown as: {shown}"
            );
        }
    }
}

#[test]
fn verify_reports_a_missing_manifest_per_partition() {
    let env = orders_env();
    ingest_rows(&env, "rows.jsonl", 200, &["--segment-rows", "50"]);
    for partition in ["0", "1"] {
        env.ok(&[
            "run",
            "prebuild",
            "--table",
            "orders",
            "--partition",
            partition,
        ]);
    }
    let snapshots: Vec<Value> = env.json(&[
        "snapshot",
        "ls",
        "--table",
        "orders",
        "--partition",
        "0",
        "--json",
    ]);
    let gone = Path::new(&env.store_url).join(snapshots[0]["manifest_key"].as_str().unwrap());
    std::fs::remove_file(gone).unwrap();
    let output = env.minion(&["verify", "--table", "orders"]);
    let out = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success());
    assert!(out.contains("damaged or missing"), "{out}");
    assert!(out.contains("partition 1: snapshot 1 matches"), "{out}");
    assert!(out.contains("--partition 0 --force"), "{out}");
    env.ok(&["run", "prebuild", "--table", "orders", "--partition", "0"]);
    env.ok(&["verify", "--table", "orders"]);
}
