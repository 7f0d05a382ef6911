//! Shared test fixtures: a private Postgres database per test, a private S3 bucket per test on a
//! real S3 server (moto_server), and a runner for the `minion` binary.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

use upsert_minion::storage::Store;

/// URL of a database that can create others: DATABASE_URL, or the embedded dev cluster.
fn admin_url() -> &'static str {
    static ADMIN: OnceLock<String> = OnceLock::new();
    ADMIN.get_or_init(|| match std::env::var("DATABASE_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => {
            let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("minion-test-pg");
            let dev =
                upsert_minion::devdb::ensure_running(&dir).expect("embedded test Postgres starts");
            dev.url_for("postgres")
        }
    })
}

/// A fresh database, dropped when the value is dropped.
pub struct TestDb {
    pub url: String,
    name: String,
    admin: String,
}

impl TestDb {
    pub fn new() -> TestDb {
        TestDb::on(admin_url())
    }

    /// A fresh database on the server of `admin` (a URL of a database that can create others).
    pub fn on(admin: &str) -> TestDb {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "minion_t_{}_{}_{:x}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            rand::random::<u32>()
        );
        let statement = format!("CREATE DATABASE {name}");
        run_admin(admin, &statement);
        let mut url = url::Url::parse(admin).expect("admin URL parses");
        url.set_path(&format!("/{name}"));
        TestDb {
            url: url.to_string(),
            name,
            admin: admin.to_string(),
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let statement = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        run_admin(&self.admin, &statement);
    }
}

/// Runs one statement on the admin database from a private runtime (callable anywhere).
fn run_admin(admin: &str, statement: &str) {
    let (admin, statement) = (admin.to_string(), statement.to_string());
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            use sqlx::Connection;
            let mut conn = sqlx::PgConnection::connect(&admin)
                .await
                .expect("admin connection");
            sqlx::query(&statement)
                .execute(&mut conn)
                .await
                .expect("admin statement");
        });
    })
    .join()
    .expect("admin thread");
}

/// Endpoint of the S3 server: the one scripts/test.sh started, or one started here.
pub fn s3_endpoint() -> &'static str {
    static ENDPOINT: OnceLock<String> = OnceLock::new();
    ENDPOINT.get_or_init(|| {
        if let Ok(endpoint) = std::env::var("MINION_TEST_S3_ENDPOINT") {
            return endpoint;
        }
        start_moto()
    })
}

fn start_moto() -> String {
    let binary = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/moto_server");
    assert!(
        binary.exists(),
        "S3 tests need moto_server: run scripts/setup.sh (or scripts/test.sh), or set MINION_TEST_S3_ENDPOINT"
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (sender, receiver) = std::sync::mpsc::channel();
    // The child dies with the thread that spawned it (PR_SET_PDEATHSIG), so that thread lives as
    // long as the test process.
    std::thread::spawn(move || {
        use std::os::unix::process::CommandExt;
        let mut command = Command::new(binary);
        command
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: prctl is async-signal-safe.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = command.spawn().expect("moto_server starts");
        sender.send(()).unwrap();
        // Blocks for the life of the test process; the server dies with it.
        let _ = child.wait();
    });
    receiver.recv().unwrap();
    for _ in 0..200 {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return format!("http://127.0.0.1:{port}");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("moto_server did not start on port {port}");
}

/// A fresh bucket on the S3 server; returns its name.
pub fn new_bucket() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let bucket = format!(
        "minion-test-{}-{}-{:x}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        rand::random::<u16>()
    );
    let address = s3_endpoint().trim_start_matches("http://").to_string();
    let mut stream = TcpStream::connect(&address).expect("S3 server reachable");
    write!(stream, "PUT /{bucket} HTTP/1.1\r\nHost: {address}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(
        response.starts_with("HTTP/1.1 200"),
        "bucket creation failed: {response}"
    );
    bucket
}

/// The AWS settings that point an S3 client at the test server.
pub fn s3_settings() -> BTreeMap<String, String> {
    [
        ("AWS_ENDPOINT_URL", s3_endpoint()),
        ("AWS_ALLOW_HTTP", "true"),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_REGION", "us-east-1"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Where a test keeps its data: a local directory store, or a bucket on the S3 server.
pub enum StoreKind {
    Local,
    S3,
}

/// One test's world: a database, a store, a working directory, and the binary to drive them.
pub struct TestEnv {
    pub db: TestDb,
    pub store_url: String,
    pub dir: tempfile::TempDir,
    env: BTreeMap<String, String>,
}

impl TestEnv {
    pub fn new(kind: StoreKind) -> TestEnv {
        TestEnv::with_db(kind, TestDb::new())
    }

    /// A world on a given database (e.g. on a private cluster a test restarts).
    pub fn with_db(kind: StoreKind, db: TestDb) -> TestEnv {
        let dir = tempfile::tempdir().unwrap();
        let mut env = BTreeMap::new();
        let store_url = match kind {
            StoreKind::Local => dir.path().join("store").display().to_string(),
            StoreKind::S3 => {
                env.extend(s3_settings());
                format!("s3://{}/data", new_bucket())
            }
        };
        env.insert("DATABASE_URL".into(), db.url.clone());
        env.insert("MINION_STORE".into(), store_url.clone());
        TestEnv {
            db,
            store_url,
            dir,
            env,
        }
    }

    pub fn store(&self) -> Store {
        Store::open_with(&self.store_url, self.env.clone()).unwrap()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Runs `minion ARGS` with this world's settings.
    pub fn minion<S: AsRef<str> + std::fmt::Debug>(&self, args: &[S]) -> Output {
        self.minion_with(args, &[])
    }

    pub fn minion_with<S: AsRef<str> + std::fmt::Debug>(
        &self,
        args: &[S],
        extra_env: &[(&str, &str)],
    ) -> Output {
        let mut command = minion_command();
        command
            .current_dir(self.dir.path())
            .envs(&self.env)
            .args(args.iter().map(|a| a.as_ref()));
        for (key, value) in extra_env {
            command.env(key, value);
        }
        command.output().expect("minion runs")
    }

    /// Runs `minion ARGS`, asserts success, returns stdout.
    pub fn ok<S: AsRef<str> + std::fmt::Debug>(&self, args: &[S]) -> String {
        let output = self.minion(args);
        assert!(
            output.status.success(),
            "minion {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    /// Runs `minion ARGS`, asserts failure, returns stderr.
    pub fn fails<S: AsRef<str> + std::fmt::Debug>(&self, args: &[S]) -> String {
        let output = self.minion(args);
        assert!(
            !output.status.success(),
            "minion {args:?} should have failed:\n{}",
            String::from_utf8_lossy(&output.stdout)
        );
        String::from_utf8(output.stderr).unwrap()
    }

    /// Starts `minion ARGS` in the background; its stderr goes to `name.log` in the work dir.
    pub fn spawn<S: AsRef<str> + std::fmt::Debug>(
        &self,
        name: &str,
        args: &[S],
    ) -> std::process::Child {
        self.spawn_with(name, args, &[])
    }

    pub fn spawn_with<S: AsRef<str> + std::fmt::Debug>(
        &self,
        name: &str,
        args: &[S],
        extra_env: &[(&str, &str)],
    ) -> std::process::Child {
        let log = std::fs::File::create(self.path(&format!("{name}.log"))).unwrap();
        minion_command()
            .current_dir(self.dir.path())
            .envs(&self.env)
            .env("MINION_LOG", "upsert_minion=debug")
            .envs(extra_env.iter().copied())
            .args(args.iter().map(|a| a.as_ref()))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("minion starts")
    }

    /// Starts `minion ARGS` with `MINION_PAUSE_AT=point` and waits until it paused there (see
    /// `upsert_minion::faults`); creating `self.path(resume)` lets it go on.
    pub fn spawn_paused<S: AsRef<str> + std::fmt::Debug>(
        &self,
        name: &str,
        args: &[S],
        point: &str,
    ) -> std::process::Child {
        self.spawn_paused_with(name, args, point, &[])
    }

    /// `spawn_paused` with more environment.
    pub fn spawn_paused_with<S: AsRef<str> + std::fmt::Debug>(
        &self,
        name: &str,
        args: &[S],
        point: &str,
        extra_env: &[(&str, &str)],
    ) -> std::process::Child {
        let resume = self.path(&format!("{name}.resume"));
        let mut env = vec![
            ("MINION_PAUSE_AT", point),
            ("MINION_RESUME_FILE", resume.to_str().unwrap()),
        ];
        env.extend_from_slice(extra_env);
        let mut child = self.spawn_with(name, args, &env);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !self
            .log(name)
            .contains(&format!("MINION_PAUSED_AT {point}"))
        {
            if let Some(status) = child.try_wait().unwrap() {
                panic!(
                    "minion {args:?} ended ({status}) before {point}:\n{}",
                    self.log(name)
                );
            }
            assert!(
                std::time::Instant::now() < deadline,
                "never paused at {point}:\n{}",
                self.log(name)
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        child
    }

    /// Every object of the tables (under `tables/`), as keys: the store's marker object
    /// (`binding`) is not one of them.
    pub fn objects(&self) -> std::collections::BTreeSet<String> {
        if self.store_url.starts_with("s3://") {
            let store = self.store();
            return std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                let listed = runtime.block_on(store.list("tables")).unwrap();
                listed.into_iter().map(|o| o.location.to_string()).collect()
            })
            .join()
            .unwrap();
        }
        let root = PathBuf::from(&self.store_url);
        let mut found = std::collections::BTreeSet::new();
        let mut stack = vec![root.join("tables")];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            for entry in entries {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                } else {
                    found.insert(path.strip_prefix(&root).unwrap().display().to_string());
                }
            }
        }
        found
    }

    /// Asserts the store holds nothing but objects the catalog references (segments of any
    /// state, their key runs, and the directories of listed snapshots).
    pub fn assert_only_referenced_objects(&self, table: &str) {
        let all: Vec<serde_json::Value> = self.json(&["segment", "ls", "--table", table, "--json"]);
        let snapshots: Vec<serde_json::Value> =
            self.json(&["snapshot", "ls", "--table", table, "--json"]);
        let snapshot_dirs: Vec<String> = snapshots
            .iter()
            .map(|s| {
                let key = s["manifest_key"].as_str().unwrap();
                format!("{}/", key.rsplit_once('/').unwrap().0)
            })
            .collect();
        for object in self.objects() {
            let known = all.iter().any(|s| {
                s["object_key"] == object.as_str()
                    || object.ends_with(&format!("keyruns/{}.run", s["name"].as_str().unwrap()))
            }) || snapshot_dirs
                .iter()
                .any(|dir| object.starts_with(dir.as_str()));
            assert!(known, "unreferenced object left: {object}");
        }
    }

    /// Runs `minion ARGS` (which prints JSON), asserts success, parses stdout.
    pub fn json<T: serde::de::DeserializeOwned>(
        &self,
        args: &[impl AsRef<str> + std::fmt::Debug],
    ) -> T {
        serde_json::from_str(&self.ok(args)).unwrap()
    }

    /// The newest snapshot manifest of `orders` partition `partition`, as `snapshot show --json`
    /// prints it.
    pub fn orders_manifest(&self, partition: u32) -> serde_json::Value {
        let partition = partition.to_string();
        self.json(&[
            "snapshot",
            "show",
            "--table",
            "orders",
            "--partition",
            &partition,
            "--json",
        ])
    }

    /// Every valid row of `orders` partition 0 from `minion scan --valid-only`, as sorted JSON
    /// lines (written to `name` in the work directory).
    pub fn valid_rows(&self, name: &str) -> Vec<String> {
        let path = self.path(name);
        self.ok(&[
            "scan",
            "--table",
            "orders",
            "--partition",
            "0",
            "--valid-only",
            "--output",
            path.to_str().unwrap(),
        ]);
        let mut rows: Vec<String> = std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(String::from)
            .collect();
        rows.sort();
        rows
    }

    /// Downloads object `key` of this world's store to `local`; callable from async tests (the
    /// download runs on its own thread and runtime).
    pub fn download(&self, key: &str, local: &Path) -> String {
        let (store, key, local) = (self.store(), key.to_string(), local.to_path_buf());
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(store.download_to(&key, &local)).unwrap()
        })
        .join()
        .unwrap()
    }

    /// Polls `minion job show ID` until the job is in `state`; fails the test with the job and
    /// the worker's log after 30 seconds.
    pub fn wait_job_state(&self, id: &str, state: &str) -> serde_json::Value {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let job: serde_json::Value =
                serde_json::from_str(&self.ok(&["job", "show", id, "--json"])).unwrap();
            if job["state"] == state {
                return job;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "job never got {state}: {job}\n{}",
                self.log("worker")
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    /// What a background process logged so far.
    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(&format!("{name}.log"))).unwrap_or_default()
    }

    /// The catalog, for what the CLI does not expose (e.g. reservations of an ingest in flight).
    pub fn with_catalog<T>(
        &self,
        work: impl AsyncFnOnce(&upsert_minion::catalog::Catalog) -> T,
    ) -> T {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let catalog = upsert_minion::catalog::Catalog::connect(&self.db.url)
                .await
                .unwrap();
            work(&catalog).await
        })
    }

    /// A local-store world with the example `orders` table and a generated stream ingested.
    pub fn orders(rows: u64, keys: u64, seed: u64, segment_rows: u64) -> TestEnv {
        let env = TestEnv::new(StoreKind::Local);
        env.ok(&["migrate"]);
        env.create_example_table("orders.toml");
        env.ingest_generated(rows, keys, seed, segment_rows);
        env
    }

    /// Ingests a generated stream into `orders`.
    pub fn ingest_generated(&self, rows: u64, keys: u64, seed: u64, segment_rows: u64) {
        self.ingest_generated_from(rows, keys, seed, segment_rows, None);
    }

    /// `ingest_generated` with the stream's first timestamp (`--start-time-ms`).
    pub fn ingest_generated_from(
        &self,
        rows: u64,
        keys: u64,
        seed: u64,
        segment_rows: u64,
        start_time_ms: Option<u64>,
    ) {
        let (rows, keys, seed, segment_rows) = (
            rows.to_string(),
            keys.to_string(),
            seed.to_string(),
            segment_rows.to_string(),
        );
        let mut args = vec![
            "ingest",
            "--table",
            "orders",
            "--generate",
            &rows,
            "--keys",
            &keys,
            "--seed",
            &seed,
            "--segment-rows",
            &segment_rows,
        ];
        let start = start_time_ms.map(|ms| ms.to_string());
        if let Some(start) = &start {
            args.extend(["--start-time-ms", start]);
        }
        self.ok(&args);
    }

    /// Loads `table`/`partition` from its newest snapshot and without one (every segment through
    /// the compare path), asserts the two are identical (hot and cold key sets, validDocIds and
    /// queryableDocIds), and returns the report of the load from the snapshot.
    pub fn assert_bootstrap_exact(
        &self,
        table: &str,
        partition: u32,
        tag: &str,
    ) -> upsert_minion::loader::BootstrapReport {
        self.assert_bootstraps_agree(table, partition, tag, (true, true), (false, true))
    }

    /// Loads `table`/`partition` twice with `(use_snapshot, use_lineage)` set as given, asserts
    /// the two are identical, and returns the first load's report.
    pub fn assert_bootstraps_agree(
        &self,
        table: &str,
        partition: u32,
        tag: &str,
        first: (bool, bool),
        second: (bool, bool),
    ) -> upsert_minion::loader::BootstrapReport {
        use upsert_minion::loader::{bootstrap, BootstrapOptions};
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let catalog = upsert_minion::catalog::Catalog::connect(&self.db.url)
                .await
                .unwrap();
            let store = self.store();
            let options = |(use_snapshot, use_lineage)| BootstrapOptions {
                use_snapshot,
                use_lineage,
                sst_format_version: 5,
                staging_dir: self.dir.path().to_path_buf(),
            };
            let (fast_dir, slow_dir) = (
                self.path(&format!("{tag}-p{partition}-fast")),
                self.path(&format!("{tag}-p{partition}-slow")),
            );
            let fast = bootstrap(&catalog, &store, table, partition, &fast_dir, &options(first))
                .await
                .unwrap();
            let slow = bootstrap(&catalog, &store, table, partition, &slow_dir, &options(second))
                .await
                .unwrap();
            let report = fast.report.clone();
            assert!(
                fast.bitmaps == slow.bitmaps,
                "{tag}: the bitmaps of load {first:?} differ from load {second:?}'s: {report:?}"
            );
            assert!(
                fast.dump_keys().unwrap() == slow.dump_keys().unwrap(),
                "{tag}: the key metadata of load {first:?} differs from load {second:?}'s: {report:?}"
            );
            assert!(
                fast.dump_cold_keys().unwrap() == slow.dump_cold_keys().unwrap(),
                "{tag}: the cold key set of load {first:?} differs from load {second:?}'s: {report:?}"
            );
            assert_eq!(report.keys, slow.report.keys, "{tag}");
            assert_eq!(report.cold_keys, slow.report.cold_keys, "{tag}");
            assert_eq!(report.keys, fast.dump_keys().unwrap().len() as u64, "{tag}");
            assert_eq!(
                report.cold_keys,
                fast.dump_cold_keys().unwrap().len() as u64,
                "{tag}"
            );
            drop((fast, slow));
            let _ = std::fs::remove_dir_all(&fast_dir);
            let _ = std::fs::remove_dir_all(&slow_dir);
            report
        })
    }

    /// Compacts `segment` of `orders` partition 0 with its bitmap from the newest snapshot while,
    /// between its upload and its swap, newer versions of the same keys arrive and a newer
    /// snapshot is published; `between` runs just before the compaction goes on to its swap.
    pub fn compact_racing_a_newer_snapshot<T>(
        &self,
        segment: &serde_json::Value,
        between: impl FnOnce() -> T,
    ) -> T {
        let args = typed(
            "run compact",
            &serde_json::json!({"table": "orders", "segment_id": segment["id"]}),
        );
        let mut compaction = self.spawn_paused("compaction", &args, "compact:after_upload");
        self.ingest_generated_from(8000, 2000, 22, 600, Some(1_700_000_100_000));
        self.run_task(
            "prebuild",
            &serde_json::json!({"table": "orders", "partition": 0}),
        );
        let result = between();
        std::fs::write(self.path("compaction.resume"), b"").unwrap();
        assert!(
            compaction.wait().unwrap().success(),
            "{}",
            self.log("compaction")
        );
        result
    }

    /// The arguments of `minion bootstrap` of `orders` partition 0 into directory `dir` of this
    /// world.
    pub fn bootstrap_orders_args(&self, dir: &str) -> Vec<String> {
        let dir = self.path(dir).display().to_string();
        [
            "bootstrap",
            "--table",
            "orders",
            "--partition",
            "0",
            "--dir",
            &dir,
        ]
        .map(String::from)
        .to_vec()
    }

    /// `minion bootstrap` of `orders` partition 0 into a fresh directory `dir` of this world;
    /// what it printed.
    pub fn bootstrap_orders(&self, dir: &str) -> String {
        self.ok(&self.bootstrap_orders_args(dir))
    }

    /// `minion run KIND --flags` in this process, its JSON report back.
    pub fn run_task(&self, kind: &str, args: &serde_json::Value) -> serde_json::Value {
        self.json(&typed(&format!("run {kind}"), args))
    }

    /// The online segments of one partition, in sequence order.
    pub fn online(&self, table: &str, partition: u32) -> Vec<serde_json::Value> {
        self.json(&[
            "segment",
            "ls",
            "--table",
            table,
            "--partition",
            &partition.to_string(),
            "--state",
            "online",
            "--json",
        ])
    }

    pub fn create_example_table(&self, example: &str) {
        let file = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("examples/tables")
            .join(example);
        self.ok(&["table", "create", "--file", file.to_str().unwrap()]);
    }
}

/// The binary with a clean environment: no settings leak in from the developer's shell.
pub fn minion_command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_minion"));
    for key in [
        "DATABASE_URL",
        "MINION_STORE",
        "MINION_CONFIG",
        "MINION_LOG_FORMAT",
        "MINION_LOG",
        "MINION_DEV_DIR",
    ] {
        command.env_remove(key);
    }
    command
}

/// Runs a Python check from tests/py with the venv's interpreter; returns its stdout.
pub fn python(script: &str, args: &[&str]) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let interpreter = root.join(".venv/bin/python");
    assert!(
        interpreter.exists(),
        "run scripts/setup.sh first: the Python test tools live in .venv"
    );
    let output = Command::new(interpreter)
        .arg(root.join("tests/py").join(script))
        .args(args)
        .output()
        .expect("python runs");
    assert!(
        output.status.success(),
        "{script} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// Sends SIGTERM to a child process (a graceful stop).
pub fn sigterm(child: &std::process::Child) {
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
}

/// A directory for a private Postgres cluster (under `target/tmp`), readable by the `postgres`
/// user the cluster runs as when the tests run as root. The cluster goes in its `pg` folder.
pub fn cluster_dir(prefix: &str) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// The words of `minion COMMAND --flag=value ...` for a job whose arguments a test writes as a
/// JSON object (for brevity): each field becomes the kind's typed flag, so the CLI is driven the
/// way an operator drives it. `command` is e.g. "run compact" or "job submit plan".
pub fn typed(command: &str, args: &serde_json::Value) -> Vec<String> {
    let mut words: Vec<String> = command.split_whitespace().map(str::to_string).collect();
    for (field, value) in args.as_object().expect("job arguments are an object") {
        let flag = match field.as_str() {
            "segment_id" => "segment".to_string(),
            "segment_ids" => "segments".to_string(),
            "grace_seconds" => "grace".to_string(),
            "reservation_ttl_seconds" => "reservation-ttl".to_string(),
            "submit" => {
                if value == false {
                    words.push("--dry-run".into());
                }
                continue;
            }
            other => other.replace('_', "-"),
        };
        match value {
            serde_json::Value::Bool(true) => words.push(format!("--{flag}")),
            serde_json::Value::Bool(false) | serde_json::Value::Null => {}
            serde_json::Value::String(text) => words.push(format!("--{flag}={text}")),
            serde_json::Value::Array(items) => {
                let items: Vec<String> = items.iter().map(|i| i.to_string()).collect();
                words.push(format!("--{flag}={}", items.join(",")));
            }
            other => words.push(format!("--{flag}={other}")),
        }
    }
    words
}

/// A private Postgres cluster that a test may stop and start, with a local store beside it:
/// `minion` commands run against the two through [`PrivateCluster::command`].
pub struct PrivateCluster {
    dir: tempfile::TempDir,
    pub url: String,
}

impl PrivateCluster {
    /// Starts a cluster under `target/tmp/{prefix}...`.
    pub fn start(prefix: &str) -> PrivateCluster {
        let dir = cluster_dir(prefix);
        let dev = upsert_minion::devdb::ensure_running(&dir.path().join("pg")).unwrap();
        PrivateCluster {
            url: dev.url(),
            dir,
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `minion` with this cluster's database and store.
    pub fn command(&self) -> Command {
        let mut command = minion_command();
        command
            .env("DATABASE_URL", &self.url)
            .env("MINION_STORE", self.path("store"));
        command
    }

    /// Runs `minion ARGS` to the end.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command().args(args).output().unwrap()
    }

    /// Stops the server; true if it was running.
    pub fn stop(&self) -> bool {
        upsert_minion::devdb::stop(&self.path("pg")).unwrap()
    }

    /// Starts the server again (same data, same port).
    pub fn restart(&self) {
        upsert_minion::devdb::ensure_running(&self.path("pg")).unwrap();
    }
}
