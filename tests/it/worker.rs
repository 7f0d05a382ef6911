//! The worker process: crashes, graceful shutdown, cancellation, panics, a Postgres restart, and
//! the job CLI's handling of bad input.

use std::process::Child;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use upsert_minion::queue::{JobRow, NewJob, Queue};

use crate::common::{sigterm, typed, StoreKind, TestEnv};
use crate::queue::migrated_queue;

/// Polls job `id` until `done` holds, or fails the test with the row after `timeout`.
async fn wait_for(
    queue: &Queue,
    id: i64,
    timeout: Duration,
    done: impl Fn(&JobRow) -> bool,
) -> JobRow {
    let deadline = Instant::now() + timeout;
    loop {
        let row = queue.get(id).await.unwrap();
        if done(&row) {
            return row;
        }
        assert!(
            Instant::now() < deadline,
            "job {id} did not get there in {timeout:?}: {row:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn submit(queue: &Queue, kind: &str, args: Value) -> i64 {
    queue.submit(&NewJob::new(kind, args)).await.unwrap().id()
}

fn wait_exit(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "process did not exit within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

const FAST: &[&str] = &[
    "--lease",
    "2s",
    "--rescue-interval",
    "300ms",
    "--retry-backoff",
    "100ms",
    "--poll-interval",
    "200ms",
];

fn worker_args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["worker"];
    args.extend_from_slice(FAST);
    args.extend_from_slice(extra);
    args
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_worker_jobs_are_rescued_and_completed_once() {
    let env = TestEnv::new(StoreKind::Local);
    let queue = migrated_queue(&env).await;
    let ids = [
        submit(&queue, "sleep", json!({"seconds": 1.5})).await,
        submit(&queue, "sleep", json!({"seconds": 1.5})).await,
        submit(&queue, "sleep", json!({"seconds": 1.5})).await,
    ];
    let mut doomed = env.spawn(
        "doomed",
        &worker_args(&["--concurrency", "3", "--id", "doomed"]),
    );
    for id in ids {
        wait_for(&queue, id, Duration::from_secs(20), |r| {
            r.state == "running"
        })
        .await;
    }
    doomed.kill().unwrap();
    doomed.wait().unwrap();

    let mut rescuer = env.spawn(
        "rescuer",
        &worker_args(&["--concurrency", "3", "--id", "rescuer"]),
    );
    for id in ids {
        let row = wait_for(&queue, id, Duration::from_secs(30), |r| {
            r.state == "completed"
        })
        .await;
        assert_eq!(row.attempt, 2, "the killed attempt counts");
        assert_eq!(row.attempted_by.as_deref(), Some("rescuer"));
        assert_eq!(
            row.output,
            Some(json!({"slept_seconds": 1.5, "attempt": 2}))
        );
        let errors = row.errors.as_array().unwrap();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0]["error"]
                .as_str()
                .unwrap()
                .contains("lease expired (worker doomed"),
            "{errors:?}"
        );
    }
    sigterm(&rescuer);
    assert!(wait_exit(&mut rescuer, Duration::from_secs(20)).success());
}

#[tokio::test(flavor = "multi_thread")]
async fn graceful_shutdown_releases_jobs_without_burning_attempts() {
    let env = TestEnv::new(StoreKind::Local);
    let queue = migrated_queue(&env).await;
    let quick = submit(&queue, "sleep", json!({"seconds": 0.5})).await;
    let slow = submit(&queue, "sleep", json!({"seconds": 60})).await;
    let mut worker = env.spawn(
        "worker",
        &[
            "worker",
            "--concurrency",
            "2",
            "--shutdown-timeout",
            "2s",
            "--poll-interval",
            "200ms",
        ],
    );
    wait_for(&queue, slow, Duration::from_secs(20), |r| {
        r.state == "running"
    })
    .await;
    wait_for(&queue, quick, Duration::from_secs(20), |r| {
        r.state == "running"
    })
    .await;
    sigterm(&worker);
    let status = wait_exit(&mut worker, Duration::from_secs(15));
    assert!(status.success(), "{}", env.log("worker"));
    // The quick job finished within the deadline; the slow one was handed back untouched.
    assert_eq!(queue.get(quick).await.unwrap().state, "completed");
    let row = queue.get(slow).await.unwrap();
    assert_eq!(
        (row.state.as_str(), row.attempt),
        ("available", 0),
        "{row:#?}"
    );
    assert!(row.errors.as_array().unwrap().is_empty());
    assert!(env.log("worker").contains("releasing running jobs"));
}

async fn cancel_reaches_a_running_job(listen: bool) {
    let env = TestEnv::new(StoreKind::Local);
    let queue = migrated_queue(&env).await;
    let id = submit(&queue, "sleep", json!({"seconds": 120})).await;
    let mut args = worker_args(&["--concurrency", "1"]);
    if !listen {
        args.push("--no-listen");
    }
    let mut worker = env.spawn("worker", &args);
    wait_for(&queue, id, Duration::from_secs(20), |r| {
        r.state == "running"
    })
    .await;
    let started = Instant::now();
    let out = env.ok(&["job", "cancel", &id.to_string()]);
    assert!(out.contains("told to cancel"), "{out}");
    let row = wait_for(&queue, id, Duration::from_secs(10), |r| {
        r.state == "cancelled"
    })
    .await;
    assert!(row.errors[0]["error"]
        .as_str()
        .unwrap()
        .contains("cancelled while running"));
    if listen {
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "the notification is immediate: {:?}",
            started.elapsed()
        );
    }
    // The worker goes on with other work.
    let next = submit(&queue, "noop", json!({})).await;
    wait_for(&queue, next, Duration::from_secs(10), |r| {
        r.state == "completed"
    })
    .await;
    sigterm(&worker);
    wait_exit(&mut worker, Duration::from_secs(15));
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_reaches_a_running_job_by_notification() {
    cancel_reaches_a_running_job(true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_reaches_a_running_job_by_heartbeat_without_notifications() {
    cancel_reaches_a_running_job(false).await;
}

/// `--prefetch` (issue 15): jobs claimed beyond the running slots wait here leased like running
/// ones (their leases outlive the wait only through heartbeats), start in claim order, are refilled
/// when half the buffer is gone, end cancelled without running when cancelled while waiting, and
/// are given back at once on shutdown with their attempts uncounted.
#[tokio::test(flavor = "multi_thread")]
async fn prefetched_jobs_wait_leased_run_in_turn_and_are_released_at_shutdown() {
    let env = TestEnv::new(StoreKind::Local);
    let queue = migrated_queue(&env).await;
    let first = submit(&queue, "sleep", json!({"seconds": 5})).await;
    let second = submit(&queue, "sleep", json!({"seconds": 0.1})).await;
    let third = submit(&queue, "sleep", json!({"seconds": 0.1})).await;
    let long = submit(&queue, "sleep", json!({"seconds": 120})).await;
    let later = submit(&queue, "sleep", json!({"seconds": 0.1})).await;
    let mut worker = env.spawn(
        "worker",
        &worker_args(&[
            "--concurrency",
            "1",
            "--prefetch",
            "3",
            "--shutdown-timeout",
            "2s",
            "--id",
            "prefetcher",
        ]),
    );
    // Room for 1 running + 3 waiting: the first four are claimed, the fifth is not.
    for id in [first, second, third, long] {
        wait_for(&queue, id, Duration::from_secs(20), |r| {
            r.state == "running"
        })
        .await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let row = queue.get(later).await.unwrap();
    assert_eq!(row.state, "available", "the buffer was full: {row:#?}");

    // The second waited about 5 s for the first with a 2 s lease: kept by heartbeats.
    let second_row = wait_for(&queue, second, Duration::from_secs(30), |r| {
        r.state == "completed"
    })
    .await;
    let first_row = queue.get(first).await.unwrap();
    assert_eq!(first_row.state, "completed", "one slot: in claim order");
    assert!(
        second_row.attempted_at.unwrap() < first_row.finalized_at.unwrap(),
        "the second was claimed (prefetched) before the first ended"
    );
    for row in [&first_row, &second_row] {
        assert_eq!(row.attempt, 1, "never rescued: {row:#?}");
        assert!(row.errors.as_array().unwrap().is_empty(), "{row:#?}");
        assert_eq!(row.attempted_by.as_deref(), Some("prefetcher"));
    }
    wait_for(&queue, third, Duration::from_secs(20), |r| {
        r.state == "completed"
    })
    .await;

    // With the long job running and the buffer down to half, the fifth is claimed and waits;
    // cancelled there, it ends without running.
    wait_for(&queue, later, Duration::from_secs(20), |r| {
        r.state == "running"
    })
    .await;
    let out = env.ok(&["job", "cancel", &later.to_string()]);
    assert!(out.contains("told to cancel"), "{out}");
    let row = wait_for(&queue, later, Duration::from_secs(10), |r| {
        r.state == "cancelled"
    })
    .await;
    assert!(
        row.errors[0]["error"]
            .as_str()
            .unwrap()
            .contains("cancelled before it started"),
        "{row:#?}"
    );
    assert_eq!(row.output, None, "it never ran");

    // A job claimed into the buffer at shutdown is given back at once; the running one after
    // the shutdown timeout; neither attempt counts.
    let waiting = submit(&queue, "noop", json!({})).await;
    wait_for(&queue, waiting, Duration::from_secs(20), |r| {
        r.state == "running"
    })
    .await;
    sigterm(&worker);
    let status = wait_exit(&mut worker, Duration::from_secs(15));
    assert!(status.success(), "{}", env.log("worker"));
    for id in [waiting, long] {
        let row = queue.get(id).await.unwrap();
        assert_eq!(
            (row.state.as_str(), row.attempt),
            ("available", 0),
            "{row:#?}"
        );
        assert!(row.errors.as_array().unwrap().is_empty(), "{row:#?}");
    }
    let log = env.log("worker");
    assert!(
        log.contains("releasing prefetched jobs that had not started"),
        "{log}"
    );
    assert!(log.contains("releasing running jobs"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn failures_retry_panics_are_isolated_and_attempts_run_out() {
    let env = TestEnv::new(StoreKind::Local);
    let queue = migrated_queue(&env).await;
    let mut worker = env.spawn("worker", &worker_args(&["--concurrency", "4"]));
    let mut flaky = NewJob::new("fail", json!({"succeed_on_attempt": 3}));
    flaky.max_attempts = 5;
    let flaky = queue.submit(&flaky).await.unwrap().id();
    let mut doomed = NewJob::new("fail", json!({"message": "always"}));
    doomed.max_attempts = 3;
    let doomed = queue.submit(&doomed).await.unwrap().id();
    let permanent = submit(&queue, "fail", json!({"permanent": true})).await;
    let mut panicky = NewJob::new("fail", json!({"panic": true}));
    panicky.max_attempts = 2;
    let panicky = queue.submit(&panicky).await.unwrap().id();

    let row = wait_for(&queue, flaky, Duration::from_secs(30), |r| {
        r.state == "completed"
    })
    .await;
    assert_eq!((row.attempt, row.errors.as_array().unwrap().len()), (3, 2));
    let row = wait_for(&queue, doomed, Duration::from_secs(30), |r| {
        r.state == "discarded"
    })
    .await;
    let errors: Vec<&str> = row
        .errors
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["error"].as_str().unwrap())
        .collect();
    assert_eq!(
        errors,
        [
            "always (attempt 1)",
            "always (attempt 2)",
            "always (attempt 3)"
        ]
    );
    let row = wait_for(&queue, permanent, Duration::from_secs(30), |r| {
        r.state == "discarded"
    })
    .await;
    assert_eq!(row.attempt, 1, "permanent errors are not retried");
    let row = wait_for(&queue, panicky, Duration::from_secs(30), |r| {
        r.state == "discarded"
    })
    .await;
    assert!(
        row.errors[0]["error"]
            .as_str()
            .unwrap()
            .contains("task panicked"),
        "{row:#?}"
    );

    // The worker survived all of it.
    let after = submit(&queue, "noop", json!({})).await;
    wait_for(&queue, after, Duration::from_secs(10), |r| {
        r.state == "completed"
    })
    .await;
    assert!(worker.try_wait().unwrap().is_none(), "worker still running");
    sigterm(&worker);
    wait_exit(&mut worker, Duration::from_secs(15));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_worker_carries_on_across_a_postgres_restart() {
    // A private cluster we may stop and start.
    let cluster = crate::common::PrivateCluster::start("minion-restart-");
    let url = cluster.url.clone();
    assert!(cluster.run(&["migrate"]).status.success());
    let log = std::fs::File::create(cluster.path("worker.log")).unwrap();
    let mut worker = cluster
        .command()
        .args(worker_args(&["--concurrency", "2"]))
        .stderr(log)
        .spawn()
        .unwrap();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .connect(&url)
        .await
        .unwrap();
    let queue = Queue::new(pool);
    let before = submit(&queue, "noop", json!({})).await;
    wait_for(&queue, before, Duration::from_secs(20), |r| {
        r.state == "completed"
    })
    .await;
    queue.pool().close().await;

    assert!(cluster.stop(), "cluster was running");
    std::thread::sleep(Duration::from_secs(2));
    cluster.restart();

    let pool = sqlx::postgres::PgPoolOptions::new()
        .connect(&url)
        .await
        .unwrap();
    let queue = Queue::new(pool);
    let after = submit(&queue, "sleep", json!({"seconds": 0.2})).await;
    let row = wait_for(&queue, after, Duration::from_secs(30), |r| {
        r.state == "completed"
    })
    .await;
    assert_eq!(row.attempt, 1);
    assert!(
        worker.try_wait().unwrap().is_none(),
        "the worker survived the restart"
    );
    sigterm(&worker);
    wait_exit(&mut worker, Duration::from_secs(15));
    cluster.stop();
}

#[tokio::test]
async fn job_cli_rejects_bad_input_and_enqueues_nothing() {
    let env = TestEnv::new(StoreKind::Local);
    let queue = migrated_queue(&env).await;
    let cases: [(&[&str], &str); 6] = [
        (
            &["job", "submit", "frobnicate"],
            "unknown job kind `frobnicate`; known kinds: compact, fail, gc, merge, noop, plan, prebuild, prune, sleep",
        ),
        (
            &["job", "submit", "sleep", "--args", "{seconds: 1}"],
            "not valid JSON",
        ),
        (
            &["job", "submit", "sleep", "--args", "[1]"],
            "must be a JSON object",
        ),
        (
            &["job", "submit", "sleep", "--seconds=-1"],
            "must be a duration of 0 or more",
        ),
        (
            &["job", "submit", "sleep", "--args", r#"{"secs": 1}"#],
            "unknown field `secs`",
        ),
        (
            &["job", "submit", "noop", "--max-attempts", "0"],
            "--max-attempts must be at least 1",
        ),
    ];
    for (args, expected) in cases {
        let err = env.fails(args);
        assert!(err.contains(expected), "{args:?}: {err}");
    }
    let err = env.fails(&["job", "submit", "noop", "--in=-5s"]);
    assert!(err.contains("-5s"), "{err}");
    assert!(
        queue.count_by_state().await.unwrap().is_empty(),
        "nothing was enqueued"
    );
    let err = env.fails(&["job", "show", "999"]);
    assert!(err.contains("job 999 does not exist"), "{err}");
    let err = env.fails(&["worker", "--prefetch", "20000"]);
    assert!(err.contains("--prefetch 20000 is more than 10000"), "{err}");
    let err = env.fails(&typed("run sleep", &json!({"seconds": -3})));
    assert!(err.contains("must be a duration of 0 or more"), "{err}");
}

#[tokio::test]
async fn job_cli_round_trip() {
    let env = TestEnv::new(StoreKind::Local);
    let queue = migrated_queue(&env).await;
    let out = env.ok(&[
        "job",
        "submit",
        "sleep",
        "--seconds",
        "0.1",
        "--unique-key",
        "k1",
        "--priority",
        "3",
        "--json",
    ]);
    let submitted: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(submitted["outcome"], "new");
    let id = submitted["id"].as_i64().unwrap();
    let again: Value = serde_json::from_str(&env.ok(&[
        "job",
        "submit",
        "sleep",
        "--seconds",
        "0.1",
        "--unique-key",
        "k1",
        "--json",
    ]))
    .unwrap();
    assert_eq!(again, json!({"outcome": "existing", "id": id}));
    let delayed = env.ok(&["job", "submit", "noop", "--in", "1h"]);
    assert!(delayed.contains("submitted job"), "{delayed}");
    let listed: Vec<Value> =
        serde_json::from_str(&env.ok(&["job", "ls", "--state", "scheduled", "--json"])).unwrap();
    assert_eq!(listed.len(), 1);
    let listed = env.ok(&["job", "ls"]);
    assert!(
        listed.contains("sleep") && listed.contains("k1"),
        "{listed}"
    );

    // Run the queue down with a worker, then look at, retry and prune jobs.
    let mut worker = env.spawn("worker", &worker_args(&["--concurrency", "2"]));
    wait_for(&queue, id, Duration::from_secs(20), |r| {
        r.state == "completed"
    })
    .await;
    let fail: Value = serde_json::from_str(&env.ok(&[
        "job",
        "submit",
        "fail",
        "--permanent",
        "--message",
        "bad segment",
        "--json",
    ]))
    .unwrap();
    let fail_id = fail["id"].as_i64().unwrap();
    wait_for(&queue, fail_id, Duration::from_secs(20), |r| {
        r.state == "discarded"
    })
    .await;
    let shown = env.ok(&["job", "show", &fail_id.to_string()]);
    assert!(
        shown.contains("bad segment (attempt 1) (permanent)"),
        "{shown}"
    );
    env.ok(&["job", "retry", &fail_id.to_string()]);
    wait_for(&queue, fail_id, Duration::from_secs(20), |r| {
        r.state == "discarded" && r.errors.as_array().unwrap().len() == 2
    })
    .await;
    sigterm(&worker);
    wait_exit(&mut worker, Duration::from_secs(15));
    let log = env.log("worker");
    assert!(
        log.contains("worker started") && !log.contains('\x1b'),
        "plain logs, no colour codes, when stderr is not a terminal:\n{log}"
    );
    let pruned = env.ok(&["job", "prune", "--older-than", "0s"]);
    assert!(pruned.contains("pruned 2 finished jobs"), "{pruned}");

    let inline = env.ok(&typed("run sleep", &json!({"seconds": 0.05})));
    assert!(inline.contains("slept_seconds"), "{inline}");
    let err = env.fails(&typed("run fail", &json!({"message": "inline failure"})));
    assert!(err.contains("inline failure"), "{err}");
}

/// The help an operator reads names every kind and every flag of a kind.
#[test]
fn help_names_every_kind_and_flag() {
    let help = |args: &[&str]| {
        let output = crate::common::minion_command().args(args).output().unwrap();
        assert!(output.status.success(), "{args:?}");
        String::from_utf8(output.stdout).unwrap()
    };
    let kinds = [
        "prebuild", "compact", "merge", "plan", "gc", "prune", "noop", "sleep", "fail",
    ];
    for command in [&["run", "--help"][..], &["job", "submit", "--help"]] {
        let text = help(command);
        for kind in kinds {
            assert!(
                text.contains(&format!("  {kind} ")),
                "{command:?}: {kind}\n{text}"
            );
        }
        assert!(text.contains("Global options:"), "{text}");
    }
    let submit = help(&["job", "submit", "--help"]);
    for flag in [
        "--priority",
        "--in",
        "--at",
        "--unique-key",
        "--max-attempts",
        "--queue",
    ] {
        assert!(submit.contains(flag), "{flag}\n{submit}");
    }
    let flags: [(&str, &[&str]); 5] = [
        ("compact", &["--table", "--segment", "--args"]),
        ("merge", &["--table", "--partition", "--segments", "--args"]),
        ("prebuild", &["--table", "--partition"]),
        ("gc", &["--table", "--grace", "--reservation-ttl"]),
        ("plan", &["--table", "--dry-run"]),
    ];
    for (kind, flags) in flags {
        let text = help(&["run", kind, "--help"]);
        for flag in flags {
            assert!(text.contains(flag), "{kind} {flag}\n{text}");
        }
        // Own options first, global ones after under their heading.
        let own = text.find("Options:").unwrap();
        let global = text.find("Global options:").unwrap();
        assert!(own < global, "{text}");
    }
    let kinds_listed = {
        let output = crate::common::minion_command()
            .args(["job", "kinds", "--help"])
            .output()
            .unwrap();
        String::from_utf8(output.stdout).unwrap()
    };
    assert!(kinds_listed.contains("--json"), "{kinds_listed}");
}
