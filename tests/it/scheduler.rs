//! The scheduler against a real Postgres: one leader at a time, every tick submitted once,
//! takeover within the lease when the leader is killed, missed ticks run once, and `schedule ls`.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::common::{sigterm, StoreKind, TestEnv};

const LEASE: &str = "3s";

fn every_second(env: &TestEnv) -> String {
    let dir = env.path("jobs");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("tick.toml"),
        "[[schedule]]\nname = \"tick\"\ncron = \"* * * * * *\"\nkind = \"noop\"\nmax_attempts = 3\n",
    )
    .unwrap();
    dir.to_str().unwrap().to_string()
}

fn scheduler(env: &TestEnv, jobs: &str, id: &str) -> std::process::Child {
    env.spawn(
        id,
        &[
            "scheduler",
            "--jobs",
            jobs,
            "--leader-lease",
            LEASE,
            "--poll-interval",
            "100ms",
            "--id",
            id,
        ],
    )
}

/// Every submitted tick of schedule `tick` with how many jobs it has.
fn ticks(env: &TestEnv) -> BTreeMap<DateTime<Utc>, i64> {
    env.with_catalog(async |catalog| {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT unique_key, count(*) FROM jobs WHERE unique_key LIKE 'schedule:tick:%' GROUP BY unique_key",
        )
        .fetch_all(catalog.pool())
        .await
        .unwrap();
        rows.into_iter()
            .map(|(key, count)| {
                let tick = key.trim_start_matches("schedule:tick:");
                (DateTime::parse_from_rfc3339(tick).unwrap().to_utc(), count)
            })
            .collect()
    })
}

fn leader(env: &TestEnv, jobs: &str) -> Option<String> {
    let status: Value = env.json(&["schedule", "ls", "--jobs", jobs, "--json"]);
    status["leader"]["leader_id"].as_str().map(str::to_string)
}

fn wait_for_leader(env: &TestEnv, jobs: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(id) = leader(env, jobs) {
            return id;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no scheduler took the lead"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn two_schedulers_submit_each_tick_once_and_the_survivor_takes_over() {
    let env = TestEnv::new(StoreKind::Local);
    env.ok(&["migrate"]);
    let jobs = every_second(&env);
    // A worker finishes the noop jobs, so a second submission of a tick could not hide behind
    // the unique key of an unfinished job.
    let mut worker = env.spawn("worker", &["worker", "--poll-interval", "100ms"]);
    let a = scheduler(&env, &jobs, "sched-a");
    let b = scheduler(&env, &jobs, "sched-b");
    let first = wait_for_leader(&env, &jobs);
    std::thread::sleep(Duration::from_secs(4));

    let (mut killed, mut survivor, survivor_id) = if first == "sched-a" {
        (a, b, "sched-b")
    } else {
        (b, a, "sched-a")
    };
    killed.kill().unwrap(); // SIGKILL: no resignation, the lease must run out
    killed.wait().unwrap();
    let killed_at = Utc::now();
    std::thread::sleep(Duration::from_secs(7));
    assert_eq!(leader(&env, &jobs).as_deref(), Some(survivor_id));
    sigterm(&survivor);
    survivor.wait().unwrap();
    // Resigned on SIGTERM: nobody leads.
    assert_eq!(leader(&env, &jobs), None);
    sigterm(&worker);
    worker.wait().unwrap();

    let ticks = ticks(&env);
    assert!(ticks.len() >= 6, "{ticks:?}");
    for (tick, count) in &ticks {
        assert_eq!(*count, 1, "tick {tick} submitted {count} times");
        assert_eq!(
            tick.timestamp_subsec_nanos(),
            0,
            "ticks are whole seconds: {tick}"
        );
    }
    // The survivor submitted a tick within the lease (3 s) of the kill, plus a poll and a tick.
    let takeover = ticks
        .keys()
        .find(|tick| **tick > killed_at)
        .expect("ticks after the kill");
    let waited = (*takeover - killed_at).num_milliseconds();
    assert!(waited <= 5_000, "first tick {waited} ms after the kill");
    // Before the kill and after the takeover, ticks came every second.
    let gaps: Vec<i64> = ticks
        .keys()
        .zip(ticks.keys().skip(1))
        .map(|(a, b)| (*b - *a).num_seconds())
        .collect();
    assert!(gaps.iter().all(|gap| *gap >= 1), "{gaps:?}");
    assert!(gaps.iter().filter(|gap| **gap > 1).count() <= 1, "{gaps:?}");
}

#[test]
fn missed_ticks_run_once_on_return() {
    let env = TestEnv::new(StoreKind::Local);
    env.ok(&["migrate"]);
    let jobs = every_second(&env);
    // The schedule last ran 30 ticks ago: the scheduler was down.
    let last = Utc::now() - chrono::Duration::seconds(30);
    env.with_catalog(async |catalog| {
        sqlx::query("INSERT INTO schedule_runs (schedule, last_tick) VALUES ('tick', $1)")
            .bind(last)
            .execute(catalog.pool())
            .await
            .unwrap();
    });
    let started = Utc::now();
    let mut one = scheduler(&env, &jobs, "sched");
    wait_for_leader(&env, &jobs);
    std::thread::sleep(Duration::from_millis(2500));
    sigterm(&one);
    one.wait().unwrap();
    let ticks = ticks(&env);
    let oldest = *ticks.keys().next().expect("a tick");
    assert!(
        oldest >= started - chrono::Duration::seconds(2),
        "no missed tick is run late: oldest {oldest}, started {started}"
    );
    let caught_up = ticks.keys().filter(|tick| **tick <= started).count();
    assert!(caught_up <= 1, "missed ticks run once: {ticks:?}");
    assert!(ticks.len() <= 5, "{ticks:?}");
}

#[test]
fn schedule_ls_shows_schedules_and_the_leader() {
    let env = TestEnv::new(StoreKind::Local);
    env.ok(&["migrate"]);
    let jobs = every_second(&env);
    let status: Value = env.json(&["schedule", "ls", "--jobs", &jobs, "--json"]);
    assert_eq!(status["schedules"][0]["name"], "tick");
    assert!(status["schedules"][0]["next_run"].is_string());
    assert!(status["schedules"][0]["last_tick"].is_null());
    assert!(status["leader"].is_null());
    let mut one = scheduler(&env, &jobs, "sched-ls");
    wait_for_leader(&env, &jobs);
    std::thread::sleep(Duration::from_millis(2500));
    let text = env.ok(&["schedule", "ls", "--jobs", &jobs]);
    assert!(
        text.contains("tick") && text.contains("leader: sched-ls"),
        "{text}"
    );
    let status: Value = env.json(&["schedule", "ls", "--jobs", &jobs, "--json"]);
    assert!(status["schedules"][0]["last_tick"].is_string(), "{status}");
    assert!(
        !status["schedules"][0]["last_job_ids"]
            .as_array()
            .unwrap()
            .is_empty(),
        "{status}"
    );
    sigterm(&one);
    one.wait().unwrap();

    // A bad schedule file is refused with the file, the schedule and the field.
    std::fs::write(
        std::path::Path::new(&jobs).join("bad.toml"),
        "[[schedule]]\nname = \"bad\"\ncron = \"61 * * * *\"\nkind = \"noop\"\n",
    )
    .unwrap();
    let err = env.fails(&["scheduler", "--jobs", &jobs]);
    assert!(
        err.contains("bad.toml") && err.contains("schedule `bad`") && err.contains("`cron`"),
        "{err}"
    );
}
