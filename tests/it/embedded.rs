//! The embedded default: no DATABASE_URL, a private Postgres under the working directory.

use crate::common::minion_command;

#[test]
fn embedded_database_starts_is_reused_and_stops() {
    let dir = tempfile::Builder::new()
        .prefix("minion-embedded-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    // Postgres runs as the `postgres` user when we are root: it must be able to reach the directory.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let dev_dir = dir.path().join("pg");
    let run = |args: &[&str]| {
        let output = minion_command()
            .current_dir(dir.path())
            .env("MINION_DEV_DIR", &dev_dir)
            .args(args)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "minion {args:?}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        (
            String::from_utf8(output.stdout).unwrap(),
            String::from_utf8(output.stderr).unwrap(),
        )
    };
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/tables/orders.toml");
    let (_, stderr) = run(&["table", "create", "--file", file.to_str().unwrap()]);
    assert!(
        stderr.contains("embedded dev Postgres"),
        "says where it is: {stderr}"
    );
    run(&[
        "ingest",
        "--table",
        "orders",
        "--generate",
        "2000",
        "--keys",
        "100",
    ]);
    // The default store is ./minion-data under the working directory.
    assert!(dir.path().join("minion-data/tables/orders").is_dir());
    // A later call reuses the cluster and sees the table.
    let (listed, _) = run(&["table", "ls"]);
    assert!(listed.contains("orders"), "{listed}");
    let (status, _) = run(&["dev", "status"]);
    assert!(status.contains("running"), "{status}");
    let (stopped, _) = run(&["dev", "stop"]);
    assert!(stopped.contains("stopped"), "{stopped}");
    let (status, _) = run(&["dev", "status"]);
    assert!(status.contains("not running"), "{status}");
}
