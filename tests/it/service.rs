//! The service surface of a worker: `/metrics` scraped after a scheduled pipeline and parsed by
//! `prometheus_client` (a parser nobody here wrote), `/healthz` and `/readyz` through a database
//! outage and a SIGTERM, `minion status`, and job timeouts.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::{python, sigterm, StoreKind, TestEnv};

/// A port free right now on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET path` over HTTP/1.0; `None` while nothing listens.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    let (head, body) = answer.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

/// Polls `path` until it answers `status`; returns the body.
pub fn wait_status(
    port: u16,
    path: &str,
    status: u16,
    within: Duration,
    log: &dyn Fn() -> String,
) -> String {
    let deadline = Instant::now() + within;
    let mut last = None;
    while Instant::now() < deadline {
        match http_get(port, path) {
            Some((got, body)) if got == status => return body,
            other => last = other,
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{path} never answered {status}; last: {last:?}\n{}", log());
}

/// The samples named `name` whose labels include `labels`.
fn matching<'a>(
    families: &'a [Value],
    name: &'a str,
    labels: &'a [(&'a str, &'a str)],
) -> impl Iterator<Item = f64> + 'a {
    families
        .iter()
        .flat_map(|f| f["samples"].as_array().unwrap())
        .filter(move |s| {
            s["name"] == name
                && labels
                    .iter()
                    .all(|(key, value)| s["labels"][*key].as_str() == Some(*value))
        })
        .map(|s| s["value"].as_f64().unwrap())
}

/// One sample's value, by sample name and labels.
fn sample(families: &[Value], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    matching(families, name, labels).next()
}

fn samples_sum(families: &[Value], name: &str, labels: &[(&str, &str)]) -> f64 {
    matching(families, name, labels).sum()
}

fn scrape(env: &TestEnv, port: u16) -> Vec<Value> {
    let (status, text) = http_get(port, "/metrics").expect("the worker listens");
    assert_eq!(status, 200, "{text}");
    let file = env.path("metrics.txt");
    std::fs::write(&file, &text).unwrap();
    serde_json::from_str(&python("parse_metrics.py", &[file.to_str().unwrap()])).unwrap()
}

/// Waits until the scheduled plans find nothing more to do: no unfinished compaction work, both
/// compactions and merges done, and the newest plan (with the schedule's settings) empty.
fn wait_settled(env: &TestEnv, log: &dyn Fn() -> String) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let status: Value = env.json(&["status", "--json"]);
        let depth = &status["queue"]["by_state"];
        let mut busy = 0;
        for state in ["available", "running", "retryable", "scheduled"] {
            for kind in ["prebuild", "compact", "merge"] {
                busy += depth[state][kind].as_i64().unwrap_or(0);
            }
        }
        let done = |kind: &str| -> Vec<Value> {
            env.json(&[
                "job",
                "ls",
                "--kind",
                kind,
                "--state",
                "completed",
                "--json",
            ])
        };
        let plans = done("plan");
        let newest = plans.first().map(|p| &p["output"]["plan"]);
        let empty = |field: &str| newest.is_some_and(|p| p[field].as_array().unwrap().is_empty());
        if busy == 0
            && !done("compact").is_empty()
            && !done("merge").is_empty()
            && empty("prebuild")
            && empty("merge")
            && empty("compact")
        {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "never settled: {status}\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn metrics_of_a_scheduled_pipeline_parse_and_match_the_reports() {
    // Large segments (compaction material), then a burst of small ones (merge material).
    let env = TestEnv::orders(24_000, 3_000, 7, 1_500);
    env.ingest_generated(800, 3_000, 8, 40);
    let jobs = env.path("jobs");
    std::fs::create_dir_all(&jobs).unwrap();
    std::fs::write(
        jobs.join("plan.toml"),
        // Overrides of the table's [compaction]: segments with 50 valid rows or more are
        // compacted, smaller ones merged, so the pipeline runs both.
        "[[schedule]]\nname = \"plan\"\ncron = \"* * * * * *\"\nkind = \"plan\"\ntables = [\"*\"]\n\
         [schedule.args.compaction]\ntarget_segment_rows = 100\ninvalid_count_threshold = 10\n",
    )
    .unwrap();
    let port = free_port();
    let mut worker = env.spawn(
        "worker",
        &[
            "worker",
            "--id",
            "w1",
            "--concurrency",
            "3",
            "--poll-interval",
            "100ms",
            "--scheduler",
            "--jobs",
            jobs.to_str().unwrap(),
            "--leader-lease",
            "3s",
            "--sample-interval",
            "200ms",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ],
    );
    let log = || env.log("worker");
    wait_status(port, "/readyz", 200, Duration::from_secs(20), &log);
    let health = wait_status(port, "/healthz", 200, Duration::from_secs(5), &log);
    assert!(
        health.contains("worker_claim") && health.contains("scheduler"),
        "{health}"
    );

    let status = wait_settled(&env, &log);
    // minion status: the worker and its scheduler, and the leader.
    let roles: Vec<(String, String)> = status["processes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["role"].as_str().unwrap().into(),
                p["id"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert!(roles.contains(&("worker".into(), "w1".into())), "{status}");
    assert!(
        roles.contains(&("scheduler".into(), "w1-scheduler".into())),
        "{status}"
    );
    assert_eq!(status["leader"]["leader_id"], "w1-scheduler", "{status}");
    let table = &status["tables"][0];
    assert_eq!(table["table"], "orders");
    assert_eq!(table["snapshot_lag_segments"], 0, "{table}");

    // gc with no grace collects what the compactions replaced.
    let gc: Value = env.json(&[
        "job", "submit", "gc", "--table", "orders", "--grace", "0", "--json",
    ]);
    let gc = env.wait_job_state(&gc["id"].to_string(), "completed");
    let deleted = gc["output"]["objects_deleted"].as_u64().unwrap();
    assert!(deleted > 0, "{gc}");
    std::thread::sleep(Duration::from_millis(600)); // one more gauge sample

    // Listed before the scrape: plans keep completing, and a job is counted when it ends,
    // just before its completion is written.
    let completed: Vec<Value> = env.json(&[
        "job",
        "ls",
        "--state",
        "completed",
        "--json",
        "--limit",
        "100000",
    ]);
    let families = scrape(&env, port);
    for name in [
        "minion_jobs_total",
        "minion_job_duration_seconds_bucket",
        "minion_job_attempts_total",
        "minion_job_pickup_latency_seconds_count",
        "minion_worker_slots",
        "minion_compaction_reclaimed_rows_total",
        "minion_compaction_reclaimed_bytes_total",
        "minion_gc_deleted_objects_total",
        "minion_gc_deleted_bytes_total",
        "minion_plan_skipped_total",
        "minion_scheduler_leader",
        "minion_scheduler_ticks_total",
        "minion_queue_jobs",
        "minion_queue_oldest_available_age_seconds",
        "minion_table_online_segments",
        "minion_table_online_rows",
        "minion_table_dead_row_ratio",
        "minion_table_snapshot_lag_segments",
        "minion_table_snapshot_age_seconds",
        "minion_build_info",
    ] {
        assert!(
            families.iter().any(|f| f["samples"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s["name"] == name)),
            "no {name} in /metrics"
        );
    }
    // Counters say what the job reports say.
    let mut reclaimed_rows = 0u64;
    let mut swapped = 0u64;
    for kind in ["compact", "merge"] {
        let done: Vec<Value> = env.json(&[
            "job",
            "ls",
            "--kind",
            kind,
            "--state",
            "completed",
            "--json",
        ]);
        for job in done {
            let output = &job["output"];
            if ["compacted", "merged", "dropped"].contains(&output["outcome"].as_str().unwrap()) {
                reclaimed_rows += output["rows_before"].as_u64().unwrap()
                    - output["rows_after"].as_u64().unwrap();
                swapped += 1;
            }
        }
    }
    assert!(swapped > 0 && reclaimed_rows > 0);
    assert_eq!(
        samples_sum(
            &families,
            "minion_compaction_reclaimed_rows_total",
            &[("table", "orders")]
        ),
        reclaimed_rows as f64
    );
    assert_eq!(
        sample(
            &families,
            "minion_gc_deleted_objects_total",
            &[("table", "orders")]
        ),
        Some(deleted as f64)
    );
    assert!(
        samples_sum(&families, "minion_jobs_total", &[("outcome", "completed")])
            >= completed.len() as f64,
        "every completed job was counted by this worker"
    );
    for kind in ["compact", "merge", "plan", "prebuild"] {
        assert!(
            samples_sum(
                &families,
                "minion_job_duration_seconds_count",
                &[("kind", kind)]
            ) >= 1.0,
            "{kind}"
        );
    }
    assert_eq!(sample(&families, "minion_scheduler_leader", &[]), Some(1.0));
    assert!(
        sample(
            &families,
            "minion_scheduler_ticks_total",
            &[("schedule", "plan"), ("result", "submitted")]
        )
        .unwrap()
            >= 2.0
    );
    assert_eq!(sample(&families, "minion_worker_slots", &[]), Some(3.0));
    assert!(
        sample(
            &families,
            "minion_plan_skipped_total",
            &[("table", "orders"), ("reason", "no_invalid_rows")]
        )
        .unwrap()
            >= 1.0
    );
    // Gauges say what the catalog says.
    let online: usize = (0..4).map(|p| env.online("orders", p).len()).sum();
    assert_eq!(
        sample(
            &families,
            "minion_table_online_segments",
            &[("table", "orders")]
        ),
        Some(online as f64)
    );
    assert_eq!(
        sample(
            &families,
            "minion_table_snapshot_lag_segments",
            &[("table", "orders")]
        ),
        Some(0.0)
    );
    // The dead-row ratio is what `minion status` computes from the same catalog.
    let ratio = sample(
        &families,
        "minion_table_dead_row_ratio",
        &[("table", "orders")],
    )
    .unwrap();
    let status: Value = env.json(&["status", "--json"]);
    let expected = status["tables"][0]["dead_row_ratio"].as_f64().unwrap();
    assert!((ratio - expected).abs() < 1e-9, "{ratio} vs {expected}");
    assert!((0.0..1.0).contains(&ratio));
    assert_eq!(
        sample(
            &families,
            "minion_queue_jobs",
            &[("state", "discarded"), ("kind", "compact")]
        ),
        Some(0.0)
    );
    // Families carry their types and help.
    let family = |name: &str| families.iter().find(|f| f["name"] == name).unwrap().clone();
    assert_eq!(family("minion_jobs")["type"], "counter");
    assert_eq!(family("minion_job_duration_seconds")["type"], "histogram");
    assert_eq!(family("minion_table_dead_row_ratio")["type"], "gauge");
    assert!(!family("minion_queue_jobs")["help"]
        .as_str()
        .unwrap()
        .is_empty());

    sigterm(&worker);
    let deadline = Instant::now() + Duration::from_secs(20);
    while worker.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "worker did not stop\n{}", log());
        std::thread::sleep(Duration::from_millis(100));
    }
    // Stopped processes leave `minion status` at once.
    let status: Value = env.json(&["status", "--json"]);
    assert_eq!(status["processes"], json!([]), "{status}");
    assert!(status["leader"].is_null(), "{status}");
}

#[tokio::test(flavor = "multi_thread")]
async fn readiness_follows_the_database_and_ends_at_sigterm() {
    let cluster = crate::common::PrivateCluster::start("minion-ready-");
    let minion = |args: &[&str]| cluster.run(args);
    assert!(minion(&["migrate"]).status.success());
    let port = free_port();
    let log_path = cluster.path("worker.log");
    let mut worker = cluster
        .command()
        .args([
            "worker",
            "--poll-interval",
            "200ms",
            "--shutdown-timeout",
            "20s",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let ready = wait_status(port, "/readyz", 200, Duration::from_secs(20), &log);
    assert!(ready.contains("\"ready\":true"), "{ready}");

    assert!(cluster.stop(), "cluster was running");
    let down = wait_status(port, "/readyz", 503, Duration::from_secs(20), &log);
    let down: Value = serde_json::from_str(&down).unwrap();
    assert_eq!(down["catalog"]["ok"], false, "{down}");
    assert_eq!(down["store"]["ok"], true, "{down}");
    assert_eq!(down["shutting_down"], false, "{down}");
    // Alive all the same: the loops turn, failing claims and all.
    assert_eq!(http_get(port, "/healthz").unwrap().0, 200);

    cluster.restart();
    wait_status(port, "/readyz", 200, Duration::from_secs(30), &log);

    // A job keeps the worker draining after SIGTERM; it is unready from the signal on.
    let submitted = minion(&["job", "submit", "sleep", "--seconds", "4", "--json"]);
    assert!(submitted.status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let running = minion(&["job", "ls", "--state", "running", "--json"]);
        let running: Vec<Value> = serde_json::from_slice(&running.stdout).unwrap_or_default();
        if !running.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the job never started\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    sigterm(&worker);
    let stopping = wait_status(port, "/readyz", 503, Duration::from_secs(2), &log);
    assert!(stopping.contains("\"shutting_down\":true"), "{stopping}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while worker.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "worker did not stop\n{}", log());
        std::thread::sleep(Duration::from_millis(100));
    }
    let finished = minion(&["job", "ls", "--state", "completed", "--json"]);
    let finished: Vec<Value> = serde_json::from_slice(&finished.stdout).unwrap();
    assert_eq!(finished.len(), 1, "the job finished during the drain");
    assert!(
        !log().contains(&cluster.url),
        "the database URL is never logged"
    );
    cluster.stop();
}

#[test]
fn a_job_past_its_timeout_is_retried_then_discarded_as_timed_out() {
    let env = TestEnv::new(StoreKind::Local);
    env.ok(&["migrate"]);
    let kinds: Vec<Value> = env.json(&["job", "kinds", "--json"]);
    let prebuild = kinds.iter().find(|k| k["kind"] == "prebuild").unwrap();
    assert!(
        prebuild["timeout_seconds"].as_f64().unwrap() >= 3600.0,
        "{prebuild}"
    );
    let submitted: Value = env.json(&[
        "job",
        "submit",
        "sleep",
        "--seconds",
        "60",
        "--timeout",
        "1s",
        "--max-attempts",
        "2",
        "--json",
    ]);
    let id = submitted["id"].to_string();
    let mut worker = env.spawn(
        "worker",
        &[
            "worker",
            "--poll-interval",
            "100ms",
            "--retry-backoff",
            "100ms",
        ],
    );
    let job = env.wait_job_state(&id, "discarded");
    let errors = job["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 2, "{job}");
    for error in errors {
        let text = error["error"].as_str().unwrap();
        assert!(text.contains("timed out after 1s"), "{text}");
        assert_eq!(error["permanent"], false);
    }
    assert_eq!(job["timeout_seconds"], 1.0);
    sigterm(&worker);
    worker.wait().unwrap();
}

/// The planner's skip reasons and the unfinished-tasks rule on a table with dead rows.
#[test]
fn the_plan_counts_what_it_skips_and_waits_for_unfinished_tasks() {
    let env = TestEnv::orders(16_000, 2_000, 11, 1_000);
    let online: usize = (0..4).map(|p| env.online("orders", p).len()).sum();
    let plan = |extra: &[&str]| -> Value {
        let mut args = vec!["run", "plan", "--table", "orders", "--dry-run"];
        args.extend_from_slice(extra);
        env.json::<Value>(&args)["plan"].clone()
    };
    // Without snapshots nothing is judged: every partition wants a prebuild.
    let first = plan(&[]);
    assert_eq!(first["prebuild"], json!([0, 1, 2, 3]), "{first}");
    assert_eq!(
        first["skipped"]["not_covered_by_snapshot"], online,
        "{first}"
    );
    for partition in 0..4 {
        env.run_task(
            "prebuild",
            &json!({"table": "orders", "partition": partition}),
        );
    }

    let full = plan(&[]);
    let tasks = full["merge"].as_array().unwrap().len() + full["compact"].as_array().unwrap().len();
    assert!(tasks > 0, "{full}");
    let skipped_total = |plan: &Value| -> u64 {
        plan["skipped"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_u64().unwrap())
            .sum()
    };

    let young = plan(&["--buffer-period-ms", "3600000"]);
    assert_eq!(young["skipped"]["within_buffer_period"], online, "{young}");
    assert!(
        young["merge"].as_array().unwrap().is_empty()
            && young["compact"].as_array().unwrap().is_empty()
    );

    let strict = plan(&[
        "--invalid-count-threshold",
        "1000000000",
        "--min-segments-per-merge",
        "10",
        "--max-segments-per-merge",
        "10",
    ]);
    assert!(strict["compact"].as_array().unwrap().is_empty(), "{strict}");
    assert!(
        strict["skipped"]["below_invalid_count"].as_u64().unwrap() > 0,
        "{strict}"
    );
    assert_eq!(
        strict["settings"]["invalid_count_threshold"],
        1_000_000_000u64
    );

    let capped = plan(&["--max-tasks-per-table", "1"]);
    let kept =
        capped["merge"].as_array().unwrap().len() + capped["compact"].as_array().unwrap().len();
    assert_eq!(kept, 1, "{capped}");
    assert_eq!(
        capped["skipped"]["table_task_cap"],
        (tasks - 1) as u64,
        "{capped}"
    );

    // A compact job waiting in the queue: the next plan submits no compaction work...
    let segment = env.online("orders", 0)[0]["id"].to_string();
    env.ok(&[
        "job",
        "submit",
        "compact",
        "--table",
        "orders",
        "--segment",
        &segment,
    ]);
    let waiting = plan(&[]);
    assert!(
        waiting["merge"].as_array().unwrap().is_empty()
            && waiting["compact"].as_array().unwrap().is_empty(),
        "{waiting}"
    );
    assert_eq!(waiting["unfinished"]["compact"], 1, "{waiting}");
    assert_eq!(
        waiting["skipped"]["unfinished_tasks"], tasks as u64,
        "{waiting}"
    );
    assert!(skipped_total(&waiting) >= tasks as u64);
    // ...unless the rule is turned off; and `minion status` says why it waits.
    let eager = plan(&["--skip-while-unfinished", "false"]);
    assert_eq!(
        eager["merge"].as_array().unwrap().len() + eager["compact"].as_array().unwrap().len(),
        tasks.min(10)
    );
    let status: Value = env.json(&["status", "--json"]);
    assert_eq!(
        status["tables"][0]["next_plan"]["unfinished"]["compact"], 1,
        "{status}"
    );
    assert_eq!(
        status["queue"]["by_state"]["available"]["compact"], 1,
        "{status}"
    );
    // Overrides are checked: a bad one names the field.
    let err = env.fails(&[
        "run",
        "plan",
        "--table",
        "orders",
        "--invalid-ratio-threshold",
        "2",
    ]);
    assert!(err.contains("invalid_ratio_threshold"), "{err}");
}
