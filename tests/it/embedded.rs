//! The embedded default: no DATABASE_URL, a private Postgres under the working directory.

use crate::common::minion_command;

#[test]
fn embedded_database_starts_is_reused_and_stops() {
    let dir = crate::common::cluster_dir("minion-embedded-");
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

    // A stale postmaster.pid whose pid now belongs to another live process of the cluster's user
    // (what a crash or reboot can leave): `pg_ctl status` calls that running; minion must not.
    let mut impostor = std::process::Command::new("sleep");
    impostor.arg("120");
    if let Some(uid) = postgres_uid() {
        use std::os::unix::process::CommandExt;
        impostor.uid(uid);
    }
    let mut impostor = impostor.spawn().unwrap();
    let pid_file = dev_dir.join("data/postmaster.pid");
    std::fs::write(
        &pid_file,
        format!("{}\n{}\n", impostor.id(), dev_dir.join("data").display()),
    )
    .unwrap();
    let (listed, stderr) = run(&["table", "ls"]);
    impostor.kill().unwrap();
    impostor.wait().unwrap();
    assert!(listed.contains("orders"), "{listed}\n{stderr}");
    assert!(stderr.contains("stale"), "says what it removed: {stderr}");
    run(&["dev", "stop"]);
}

/// The uid the embedded cluster runs as when the tests run as root.
fn postgres_uid() -> Option<u32> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let output = std::process::Command::new("id")
        .args(["-u", "postgres"])
        .output()
        .ok()?;
    String::from_utf8(output.stdout).ok()?.trim().parse().ok()
}
