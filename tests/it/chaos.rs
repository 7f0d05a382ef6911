//! The chaos test (issue 10): a table ingested in batches (ties, late rows, deletes) while three
//! workers run `plan`, `gc` and what they submit; meanwhile a driver SIGKILLs workers and ingests,
//! restarts Postgres with `-m immediate`, a proxy cuts Postgres connections right after COMMITs,
//! and another resets S3 connections. After the faults stop and the pool drains: the rows equal a
//! naive model of the stream, `verify` passes, no job was discarded, the store holds exactly what
//! the catalog references, and no staging directory of a dead process is left.
//!
//! Seeded: the seed is printed (`MINION_CHAOS_SEED=N` replays the same stream and fault dice;
//! timing still differs). `MINION_CHAOS_KILLS=200` makes the long run, by hand.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use crate::common::{cluster_dir, s3_endpoint, sigterm, StoreKind, TestDb, TestEnv};
use crate::proxy::{PgProxy, ResetProxy};

const KEYS: i64 = 500;
const ROWS_PER_BATCH: usize = 1200;

/// One row of the stream, and where it stands in upsert order.
#[derive(Debug, Clone)]
struct Row {
    order_id: i64,
    updated_at: i64,
    deleted: bool,
    /// Unique per row: `b{batch}r{index}`; the model and the scan are compared on it.
    customer: String,
}

fn batches(rng: &mut StdRng, count: usize) -> Vec<Vec<Row>> {
    let base = 1_700_000_000_000i64;
    (0..count)
        .map(|batch| {
            (0..ROWS_PER_BATCH)
                .map(|index| Row {
                    order_id: rng.gen_range(0..KEYS),
                    // A narrow window: many ties, and rows later in the stream that are older.
                    updated_at: base + rng.gen_range(0..400),
                    deleted: rng.gen_bool(0.06),
                    customer: format!("b{batch}r{index}"),
                })
                .collect()
        })
        .collect()
}

/// The naive model: per key, the winner by (comparison, batch, position in batch) — batches
/// register in order and a partition's rows keep stream order across its segments — and the
/// queryable rows are the winners that are not deletes.
fn model(batches: &[Vec<Row>]) -> BTreeSet<String> {
    let mut winners: BTreeMap<i64, (i64, usize, usize, &Row)> = BTreeMap::new();
    for (batch, rows) in batches.iter().enumerate() {
        for (index, row) in rows.iter().enumerate() {
            let candidate = (row.updated_at, batch, index, row);
            let entry = winners.entry(row.order_id).or_insert(candidate);
            if (candidate.0, candidate.1, candidate.2) >= (entry.0, entry.1, entry.2) {
                *entry = candidate;
            }
        }
    }
    winners
        .values()
        .filter(|(_, _, _, row)| !row.deleted)
        .map(|(_, _, _, row)| row.customer.clone())
        .collect()
}

fn write_batch(path: &Path, rows: &[Row]) {
    let text: Vec<String> = rows
        .iter()
        .map(|row| {
            json!({"order_id": row.order_id, "updated_at": row.updated_at, "deleted": row.deleted,
                "customer": row.customer, "status": "s", "amount": 1.5, "quantity": 1})
            .to_string()
        })
        .collect();
    std::fs::write(path, text.join("\n")).unwrap();
}

#[derive(Debug, Default)]
struct Figures {
    worker_kills: u64,
    ingest_kills: u64,
    ingest_failures: u64,
    postgres_restarts: u64,
}

struct Pool<'a> {
    env: &'a TestEnv,
    chaos_env: Vec<(String, String)>,
    workers: Vec<Child>,
    spawned: usize,
}

impl Pool<'_> {
    fn spawn_worker(&mut self) -> Child {
        self.spawned += 1;
        let env: Vec<(&str, &str)> = self
            .chaos_env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        self.env.spawn_with(
            &format!("worker-{}", self.spawned),
            &[
                "worker",
                "--concurrency",
                "2",
                "--lease",
                "3s",
                "--rescue-interval",
                "1s",
                "--retry-backoff",
                "200ms",
                "--poll-interval",
                "200ms",
                "--shutdown-timeout",
                "20s",
            ],
            &env,
        )
    }

    fn spawn_ingest(&self, batch: usize, file: &Path) -> Child {
        let env: Vec<(&str, &str)> = self
            .chaos_env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let key = format!("batch-{batch}");
        self.env.spawn_with(
            &format!("ingest-{batch}"),
            &[
                "ingest",
                "--table",
                "orders",
                "--input",
                file.to_str().unwrap(),
                "--segment-rows",
                "150",
                "--reservation-lease",
                "2s",
                "--idempotency-key",
                &key,
            ],
            &env,
        )
    }

    fn stop_all(&mut self) {
        for worker in &self.workers {
            sigterm(worker);
        }
        for mut worker in self.workers.drain(..) {
            let _ = worker.wait();
        }
    }
}

/// The driver's `plan`: the jobs it submits get the attempts a schedule would give them.
const PLAN: &[&str] = &[
    "job",
    "submit",
    "plan",
    "--table",
    "orders",
    "--job-attempts",
    "20",
];

fn job_counts(env: &TestEnv) -> BTreeMap<String, i64> {
    env.with_catalog(async |catalog| {
        let queue = upsert_minion::queue::Queue::new(catalog.pool().clone());
        queue
            .count_by_state()
            .await
            .unwrap()
            .into_iter()
            .map(|(state, count)| (state.to_string(), count))
            .collect()
    })
}

/// Unfinished jobs the drain must wait for. A periodic `plan` or `gc` of the driver's that is
/// waiting out a long backoff (it had many attempts, each a lease lost to a kill) is not waited
/// for: nothing submits another, and its work is what the drain's own plans do.
fn unfinished(env: &TestEnv) -> i64 {
    env.with_catalog(async |catalog| {
        let (count,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM jobs WHERE state IN ('available', 'scheduled', 'running', 'retryable') \
             AND NOT (state = 'retryable' AND kind IN ('plan', 'gc') AND attempt >= 5)",
        )
        .fetch_one(catalog.pool())
        .await
        .unwrap();
        count
    })
}

/// Jobs that needed more than two attempts: (kind, attempts, last error), for the figures.
fn retried(env: &TestEnv) -> Vec<(String, i32, String)> {
    env.with_catalog(async |catalog| {
        sqlx::query_as(
            "SELECT kind, attempt, coalesce(errors -> -1 ->> 'error', '') FROM jobs \
             WHERE attempt > 2 ORDER BY attempt DESC LIMIT 10",
        )
        .fetch_all(catalog.pool())
        .await
        .unwrap()
    })
}

#[test]
fn the_pool_converges_under_kills_restarts_and_connection_faults() {
    let seed: u64 = std::env::var("MINION_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    let kills: u64 = std::env::var("MINION_CHAOS_KILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    eprintln!("chaos: seed {seed} (replay with MINION_CHAOS_SEED={seed}), {kills} worker kills");
    let mut rng = StdRng::seed_from_u64(seed);
    // The long run ingests more: a batch per four kills, at least ten.
    let batch_count = (kills as usize / 4).max(10);
    let stream = batches(&mut rng, batch_count);
    let expected = model(&stream);

    // A private cluster, so restarting it disturbs no other test.
    let cluster = cluster_dir("minion-chaos-");
    let pg_dir = cluster.path().join("pg");
    let dev = upsert_minion::devdb::ensure_running(&pg_dir).unwrap();
    let env = TestEnv::with_db(StoreKind::S3, TestDb::on(&dev.url_for("postgres")));
    env.ok(&["migrate"]);
    env.create_example_table("orders.toml");

    let pg_proxy = PgProxy::start(&format!("127.0.0.1:{}", dev.port));
    pg_proxy.set_random_commit_cuts(0.05);
    let s3 = s3_endpoint().trim_start_matches("http://").to_string();
    let s3_proxy = ResetProxy::start(&s3, 0.03, seed);
    let staging = env.path("staging");
    let mut pool = Pool {
        env: &env,
        chaos_env: vec![
            ("DATABASE_URL".into(), pg_proxy.url_for(&env.db.url)),
            (
                "AWS_ENDPOINT_URL".into(),
                format!("http://127.0.0.1:{}", s3_proxy.port),
            ),
            ("MINION_STAGING_DIR".into(), staging.display().to_string()),
        ],
        workers: Vec::new(),
        spawned: 0,
    };
    for _ in 0..3 {
        let worker = pool.spawn_worker();
        pool.workers.push(worker);
    }

    let mut figures = Figures::default();
    let mut next_batch = 0;
    let mut ingest: Option<(Child, Option<Instant>)> = None;
    let started = Instant::now();
    let mut next_kill = started + Duration::from_secs(3);
    let mut next_plan = started;
    let mut next_gc = started + Duration::from_secs(5);
    // Three Postgres restarts, one per twenty kills in the long run, spread over the kills.
    let restarts = (kills / 20).max(3);
    let restarts_at: Vec<Duration> = (0..restarts)
        .map(|i| Duration::from_secs(4 + i * 3 * kills.max(3) / restarts))
        .collect();
    let chaos_deadline = started + Duration::from_secs(60 + 3 * kills);
    let submit = |args: &[&str]| {
        // The driver's own submissions may meet Postgres restarting: a miss is fine.
        let _ = env.minion(args);
    };
    loop {
        let now = Instant::now();
        let faults_done =
            figures.worker_kills >= kills && figures.postgres_restarts >= restarts_at.len() as u64;
        if (faults_done && next_batch == batch_count) || now > chaos_deadline {
            break;
        }
        // Ingest the batches in order, each under its idempotency key; a killed or failed batch
        // runs again under the same key.
        match ingest.as_mut() {
            None if next_batch < batch_count => {
                let file = env.path(&format!("batch-{next_batch}.jsonl"));
                write_batch(&file, &stream[next_batch]);
                let kill_at = rng
                    .gen_bool(0.3)
                    .then(|| now + Duration::from_millis(rng.gen_range(100..1500)));
                ingest = Some((pool.spawn_ingest(next_batch, &file), kill_at));
            }
            Some((child, kill_at)) => {
                if let Some(status) = child.try_wait().unwrap() {
                    if status.success() {
                        next_batch += 1;
                    } else {
                        figures.ingest_failures += 1;
                    }
                    ingest = None;
                } else if kill_at.is_some_and(|at| now >= at) && !faults_done {
                    child.kill().unwrap();
                    child.wait().unwrap();
                    figures.ingest_kills += 1;
                    ingest = None;
                }
            }
            None => {}
        }
        // Periodic jobs, and the jobs a plan submits, get the attempts a schedule would give
        // them: a gc takes seconds against S3 here and a worker dies every few seconds, so five
        // lease expiries in a row (each an attempt, by design) discarded gc jobs in the 200-kill
        // run, and a merge lost to three kills and two connection cuts was discarded once.
        if now >= next_plan {
            submit(&[PLAN, &["--max-attempts", "20"]].concat());
            next_plan = now + Duration::from_secs(2);
        }
        if now >= next_gc {
            submit(&[
                "job",
                "submit",
                "gc",
                "--table",
                "orders",
                "--grace",
                "30s",
                "--max-attempts",
                "20",
            ]);
            next_gc = now + Duration::from_secs(7);
        }
        if now >= next_kill && figures.worker_kills < kills {
            let victim = rng.gen_range(0..pool.workers.len());
            pool.workers[victim].kill().unwrap();
            pool.workers[victim].wait().unwrap();
            let fresh = pool.spawn_worker();
            pool.workers[victim] = fresh;
            figures.worker_kills += 1;
            next_kill = now + Duration::from_millis(rng.gen_range(2000..4000));
        }
        let restarts = figures.postgres_restarts as usize;
        if restarts < restarts_at.len() && now - started >= restarts_at[restarts] {
            upsert_minion::devdb::stop_with(&pg_dir, "immediate").unwrap();
            std::thread::sleep(Duration::from_millis(rng.gen_range(200..1500)));
            upsert_minion::devdb::ensure_running(&pg_dir).unwrap();
            figures.postgres_restarts += 1;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let chaos_seconds = started.elapsed().as_secs_f64();
    pg_proxy.set_random_commit_cuts(0.0);
    s3_proxy.set_probability(0.0);
    assert_eq!(
        next_batch, batch_count,
        "every batch registered during the chaos ({figures:?})"
    );
    if let Some((mut child, _)) = ingest.take() {
        let _ = child.wait();
    }

    // Drain: plan until nothing is left to do and the queue is empty.
    let drain_deadline = Instant::now() + Duration::from_secs(180);
    loop {
        submit(PLAN);
        std::thread::sleep(Duration::from_secs(2));
        let counts = job_counts(&env);
        let plan =
            env.run_task("plan", &json!({"table": "orders", "submit": false}))["plan"].clone();
        let idle = ["prebuild", "merge", "compact"]
            .iter()
            .all(|kind| plan[kind].as_array().is_some_and(|a| a.is_empty()));
        if idle && unfinished(&env) == 0 {
            break;
        }
        assert!(
            Instant::now() < drain_deadline,
            "the pool did not drain: {counts:?}\n{plan}"
        );
    }
    let counts = job_counts(&env);

    // Rows: the queryable rows equal the model.
    let scanned = env.path("scan.jsonl");
    env.ok(&[
        "scan",
        "--table",
        "orders",
        "--queryable-only",
        "--output",
        scanned.to_str().unwrap(),
    ]);
    let rows: BTreeSet<String> = std::fs::read_to_string(&scanned)
        .unwrap()
        .lines()
        .map(|line| {
            let row: Value = serde_json::from_str(line).unwrap();
            row["customer"].as_str().unwrap().to_string()
        })
        .collect();
    let missing: Vec<&String> = expected.difference(&rows).take(10).collect();
    let extra: Vec<&String> = rows.difference(&expected).take(10).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "seed {seed}: rows differ from the model: missing {missing:?}, extra {extra:?}"
    );
    let verify = env.ok(&["verify", "--table", "orders"]);
    let discarded: Vec<Value> = env.json(&["job", "ls", "--state", "discarded", "--json"]);
    assert!(
        discarded.is_empty(),
        "seed {seed}: discarded jobs: {discarded:#?}"
    );

    // Objects: stop the pool, collect with grace 0; then the store and the catalog agree.
    pool.stop_all();
    env.run_task("gc", &json!({"table": "orders", "grace_seconds": 0}));
    let objects = env.objects();
    let segments: Vec<Value> = env.json(&["segment", "ls", "--table", "orders", "--json"]);
    for segment in &segments {
        let key = segment["object_key"].as_str().unwrap();
        assert!(
            objects.contains(key),
            "seed {seed}: segment without object: {segment}"
        );
    }
    env.assert_only_referenced_objects("orders");

    // Staging: a starting worker sweeps what killed processes left; nothing remains after it.
    let chaos_env: Vec<(&str, &str)> = pool
        .chaos_env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let mut sweeper = env.spawn_with("sweeper", &["worker"], &chaos_env);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !env.log("sweeper").contains("worker started") {
        assert!(Instant::now() < deadline, "{}", env.log("sweeper"));
        std::thread::sleep(Duration::from_millis(50));
    }
    sigterm(&sweeper);
    sweeper.wait().unwrap();
    let left: Vec<_> = std::fs::read_dir(staging.join("minion-staging"))
        .map(|entries| entries.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "seed {seed}: staging left: {left:?}");

    println!(
        "chaos figures: seed {seed}; {chaos_seconds:.0}s of faults: {} worker kills, {} ingest kills, \
         {} failed ingest runs, {} Postgres restarts (-m immediate), {} connections cut after COMMIT, \
         {} S3 connections reset; jobs by state {counts:?}; most attempts: {:?}; checks: {} queryable rows = model, \
         verify: {}, discarded jobs: 0, {} objects all referenced, staging clean",
        figures.worker_kills,
        figures.ingest_kills,
        figures.ingest_failures,
        figures.postgres_restarts,
        pg_proxy.fired(),
        s3_proxy.resets(),
        retried(&env),
        rows.len(),
        verify.lines().count(),
        objects.len(),
    );
    drop(pool);
    drop(env);
    let _ = upsert_minion::devdb::stop(&pg_dir);
}
