//! Tables in the catalog and migrations, through the binary.

use crate::common::{minion_command, StoreKind, TestEnv};

#[test]
fn migrate_is_idempotent_and_safe_when_concurrent() {
    let env = TestEnv::new(StoreKind::Local);
    // Four processes start at once on a fresh database: all succeed, the schema is made once.
    let children: Vec<_> = (0..4)
        .map(|_| {
            minion_command()
                .env("DATABASE_URL", &env.db.url)
                .current_dir(env.dir.path())
                .arg("migrate")
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    env.ok(&["migrate"]);
    env.create_example_table("orders.toml");
}

#[test]
fn unmigrated_catalog_is_reported() {
    let env = TestEnv::new(StoreKind::Local);
    let err = env.fails(&["table", "ls"]);
    assert!(
        err.contains("not migrated") && err.contains("minion migrate"),
        "{err}"
    );
}

#[test]
fn tables_round_trip() {
    let env = TestEnv::new(StoreKind::Local);
    env.ok(&["migrate"]);
    env.create_example_table("orders.toml");
    env.create_example_table("sessions.toml");
    // Creating the identical table again is fine.
    env.create_example_table("orders.toml");

    let listed: serde_json::Value =
        serde_json::from_str(&env.ok(&["table", "ls", "--json"])).unwrap();
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["orders", "sessions"]);

    let shown: upsert_minion::table::TableConfig =
        serde_json::from_str(&env.ok(&["table", "show", "sessions", "--json"])).unwrap();
    let file =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/tables/sessions.toml");
    assert_eq!(
        shown,
        upsert_minion::table::TableConfig::from_file(&file).unwrap()
    );

    let text = env.ok(&["table", "ls"]);
    assert!(
        text.contains("orders") && text.contains("order_id"),
        "{text}"
    );
    let toml_text = env.ok(&["table", "show", "orders"]);
    assert!(
        toml_text.contains("primary_key = [\"order_id\"]"),
        "{toml_text}"
    );

    let err = env.fails(&["table", "show", "nope"]);
    assert!(err.contains("table `nope` does not exist"), "{err}");
}

#[test]
fn a_different_table_under_an_existing_name_is_refused() {
    let env = TestEnv::new(StoreKind::Local);
    env.ok(&["migrate"]);
    env.create_example_table("orders.toml");
    let changed = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/tables/orders.toml"),
    )
    .unwrap()
    .replace("partitions = 4", "partitions = 8");
    let path = env.path("orders8.toml");
    std::fs::write(&path, changed).unwrap();
    let err = env.fails(&["table", "create", "--file", path.to_str().unwrap()]);
    assert!(
        err.contains("already exists with a different definition"),
        "{err}"
    );
    let shown: serde_json::Value =
        serde_json::from_str(&env.ok(&["table", "show", "orders", "--json"])).unwrap();
    assert_eq!(shown["partitions"], 4, "the catalog is unchanged");
}
