//! The queue's statements against real Postgres: claims never overlap, fencing, backoff, unique
//! keys, priorities, delays, cancellation, retry and pruning.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::json;
use upsert_minion::queue::{backoff, CancelOutcome, JobState, NewJob, Queue, Submitted};

use crate::common::{StoreKind, TestEnv};

pub async fn migrated_queue(env: &TestEnv) -> Queue {
    env.ok(&["migrate"]);
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(20)
        .connect(&env.db.url)
        .await
        .unwrap();
    Queue::new(pool)
}

/// Submits a noop job; its id.
async fn submit_noop(queue: &Queue) -> i64 {
    queue
        .submit(&NewJob::new("noop", json!({})))
        .await
        .unwrap()
        .id()
}

const LEASE: Duration = Duration::from_secs(30);
fn queues() -> Vec<String> {
    vec!["default".to_string()]
}

async fn expire_lease(queue: &Queue, id: i64) {
    sqlx::query("UPDATE jobs SET lease_expires_at = now() - interval '1 second' WHERE id = $1")
        .bind(id)
        .execute(queue.pool())
        .await
        .unwrap();
}

async fn make_runnable(queue: &Queue, id: i64) {
    sqlx::query("UPDATE jobs SET scheduled_at = now() WHERE id = $1")
        .bind(id)
        .execute(queue.pool())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_claimers_never_share_a_job() {
    let env = TestEnv::new(StoreKind::Local);
    let queue = migrated_queue(&env).await;
    const JOBS: i64 = 3000;
    queue
        .submit_bulk("noop", &json!({}), "default", JOBS)
        .await
        .unwrap();
    let mut claimers = Vec::new();
    for claimer in 0..12 {
        let queue = queue.clone();
        claimers.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let limit = 1 + (claimer * 7 + mine.len()) % 25;
                let jobs = queue
                    .claim(&queues(), limit, &format!("c{claimer}"), LEASE)
                    .await
                    .unwrap();
                if jobs.is_empty() {
                    return mine;
                }
                let done: Vec<_> = jobs
                    .iter()
                    .map(|j| (j.id, j.attempt, json!(claimer)))
                    .collect();
                assert_eq!(
                    queue.complete_many(&done).await.unwrap().len(),
                    jobs.len(),
                    "we hold what we claimed"
                );
                mine.extend(jobs.iter().map(|j| j.id));
            }
        }));
    }
    let mut seen = HashSet::new();
    for claimer in claimers {
        for id in claimer.await.unwrap() {
            assert!(seen.insert(id), "job {id} was claimed twice");
        }
    }
    assert_eq!(seen.len() as i64, JOBS);
    let counts = queue.count_by_state().await.unwrap();
    assert_eq!(counts, vec![(JobState::Completed, JOBS)]);
}

/// Fencing under load (issue 15): claimers that sometimes stall past their lease while a rescuer
/// hands their jobs to others. Every job is completed exactly once, by its last attempt; every
/// stale completion is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fencing_holds_under_load_while_leases_run_out() {
    let env = TestEnv::new(StoreKind::Local);
    let queue = migrated_queue(&env).await;
    const JOBS: i64 = 2000;
    const SHORT_LEASE: Duration = Duration::from_millis(300);
    queue
        .submit_bulk("noop", &json!({}), "default", JOBS)
        .await
        .unwrap();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let rescuer = {
        let (queue, done) = (queue.clone(), done.clone());
        tokio::spawn(async move {
            let mut rescued = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                rescued += queue
                    .rescue_expired(1000, Duration::from_millis(1))
                    .await
                    .unwrap()
                    .len();
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            rescued
        })
    };
    let mut claimers = Vec::new();
    for claimer in 0..8u64 {
        let queue = queue.clone();
        claimers.push(tokio::spawn(async move {
            let (mut accepted, mut refused) = (Vec::new(), 0usize);
            let mut idle_since = std::time::Instant::now();
            loop {
                let jobs = queue
                    .claim(&queues(), 10, &format!("c{claimer}"), SHORT_LEASE)
                    .await
                    .unwrap();
                if jobs.is_empty() {
                    // Done once nothing was claimable for a while (rescued jobs come back).
                    if idle_since.elapsed() > Duration::from_secs(2) {
                        return (accepted, refused);
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
                idle_since = std::time::Instant::now();
                // One batch in eight stalls past its lease before completing.
                if (jobs[0].id as u64 + claimer) % 8 == 0 && jobs[0].attempt == 1 {
                    tokio::time::sleep(SHORT_LEASE * 2).await;
                }
                let done: Vec<_> = jobs
                    .iter()
                    .map(|j| (j.id, j.attempt, json!([claimer, j.attempt])))
                    .collect();
                let ok = queue.complete_many(&done).await.unwrap();
                refused += jobs.len() - ok.len();
                accepted.extend(
                    jobs.iter()
                        .filter(|j| ok.contains(&j.id))
                        .map(|j| (j.id, j.attempt, claimer)),
                );
            }
        }));
    }
    let mut accepted = Vec::new();
    let mut refused = 0;
    for claimer in claimers {
        let (mine, stale) = claimer.await.unwrap();
        accepted.extend(mine);
        refused += stale;
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let rescued = rescuer.await.unwrap();
    let ids: HashSet<i64> = accepted.iter().map(|(id, _, _)| *id).collect();
    assert_eq!(ids.len(), accepted.len(), "a job was completed twice");
    assert_eq!(ids.len() as i64, JOBS, "every job was completed");
    assert!(
        rescued > 0 && refused > 0,
        "the run never exercised fencing: {rescued} rescued, {refused} refused"
    );
    assert_eq!(
        queue.count_by_state().await.unwrap(),
        vec![(JobState::Completed, JOBS)]
    );
    // Each job's row holds the output of the attempt that was accepted, and that attempt is
    // its last.
    for (id, attempt, claimer) in accepted.iter().step_by(7) {
        let row = queue.get(*id).await.unwrap();
        assert_eq!(row.attempt, *attempt, "job {id}");
        assert_eq!(row.output, Some(json!([claimer, attempt])), "job {id}");
    }
}

#[tokio::test]
async fn a_stale_worker_cannot_finish_a_rescued_job() {
    let env = TestEnv::new(StoreKind::Local);
    let queue = migrated_queue(&env).await;
    let id = submit_noop(&queue).await;
    let stale = queue
        .claim(&queues(), 1, "stale", LEASE)
        .await
        .unwrap()
        .remove(0);
    assert_eq!((stale.id, stale.attempt), (id, 1));

    expire_lease(&queue, id).await;
    let rescued = queue
        .rescue_expired(10, Duration::from_millis(1))
        .await
        .unwrap();
    assert_eq!(rescued, vec![(id, JobState::Retryable)]);
    make_runnable(&queue, id).await;
    let fresh = queue
        .claim(&queues(), 1, "fresh", LEASE)
        .await
        .unwrap()
        .remove(0);
    assert_eq!(fresh.attempt, 2);

    // Every way out of `running` is closed to the stale attempt.
    assert!(queue
        .complete_many(&[(id, 1, json!("stale"))])
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        queue
            .fail(id, 1, "stale", false, Duration::ZERO)
            .await
            .unwrap(),
        None
    );
    assert!(!queue.release(id, 1).await.unwrap());
    assert!(!queue.finish_cancelled(id, 1, "stale").await.unwrap());
    assert!(queue.heartbeat(&[(id, 1)], LEASE).await.unwrap().is_empty());

    assert_eq!(
        queue
            .complete_many(&[(id, 2, json!("fresh"))])
            .await
            .unwrap(),
        vec![id]
    );
    let row = queue.get(id).await.unwrap();
    assert_eq!(row.state, "completed");
    assert_eq!(row.output, Some(json!("fresh")));
    let errors = row.errors.as_array().unwrap();
    assert_eq!(errors.len(), 1);
    assert!(errors[0]["error"]
        .as_str()
        .unwrap()
        .contains("lease expired"));
}

#[tokio::test]
async fn rescue_past_max_attempts_discards_with_the_reason() {
    let env = TestEnv::new(StoreKind::Local);
    let queue = migrated_queue(&env).await;
    let mut job = NewJob::new("noop", json!({}));
    job.max_attempts = 1;
    let id = queue.submit(&job).await.unwrap().id();
    queue.claim(&queues(), 1, "w", LEASE).await.unwrap();
    expire_lease(&queue, id).await;
    assert_eq!(
        queue.rescue_expired(10, Duration::ZERO).await.unwrap(),
        vec![(id, JobState::Discarded)]
    );
    let row = queue.get(id).await.unwrap();
    assert!(row.finalized_at.is_some());
    assert!(row.errors[0]["error"]
        .as_str()
        .unwrap()
        .contains("lease expired"));
}

#[tokio::test]
async fn backoff_grows_and_is_stored_in_the_row() {
    let env = TestEnv::new(StoreKind::Local);
    let queue = migrated_queue(&env).await;
    let mut job = NewJob::new("noop", json!({}));
    job.max_attempts = 4;
    let id = queue.submit(&job).await.unwrap().id();
    let base = Duration::from_secs(10);
    let mut delays = Vec::new();
    for attempt in 1..=4 {
        let claimed = queue.claim(&queues(), 1, "w", LEASE).await.unwrap();
        assert_eq!(claimed[0].attempt, attempt);
        let state = queue
            .fail(
                id,
                attempt,
                &format!("boom {attempt}"),
                false,
                backoff(base, attempt),
            )
            .await
            .unwrap();
        let row = queue.get(id).await.unwrap();
        if attempt < 4 {
            assert_eq!(state, Some(JobState::Retryable));
            let last_error_at: chrono::DateTime<chrono::Utc> = row.errors[attempt as usize - 1]
                ["at"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap();
            let stored = (row.scheduled_at - last_error_at).to_std().unwrap();
            let nominal = base * (1 << (attempt - 1));
            assert!(
                stored >= nominal.mul_f64(0.74) && stored <= nominal.mul_f64(1.26),
                "attempt {attempt}: {stored:?}"
            );
            delays.push(stored);
            // Not runnable before its time...
            assert!(queue
                .claim(&queues(), 1, "w", LEASE)
                .await
                .unwrap()
                .is_empty());
            make_runnable(&queue, id).await;
        } else {
            assert_eq!(state, Some(JobState::Discarded), "max attempts reached");
            assert_eq!(
                row.errors.as_array().unwrap().len(),
                4,
                "every attempt's error is kept"
            );
            assert_eq!(row.errors[3]["error"], "boom 4");
        }
    }
    assert!(delays.windows(2).all(|w| w[1] > w[0]), "{delays:?}");
}

#[tokio::test]
async fn permanent_failures_are_discarded_at_once() {
    let env = TestEnv::new(StoreKind::Local);
    let queue = migrated_queue(&env).await;
    let id = submit_noop(&queue).await;
    queue.claim(&queues(), 1, "w", LEASE).await.unwrap();
    let state = queue
        .fail(id, 1, "corrupt input", true, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(state, Some(JobState::Discarded));
    let row = queue.get(id).await.unwrap();
    assert_eq!(row.errors[0]["permanent"], true);
    // An operator can run it again.
    assert!(queue.retry(id).await.unwrap());
    let row = queue.get(id).await.unwrap();
    assert_eq!((row.state.as_str(), row.attempt), ("available", 0));
    assert!(
        !queue.retry(id).await.unwrap(),
        "an unfinished job cannot be retried"
    );
}

#[tokio::test]
async fn unique_keys_dedupe_until_the_holder_finishes() {
    let env = TestEnv::new(StoreKind::Local);
    let queue = migrated_queue(&env).await;
    let mut job = NewJob::new("noop", json!({}));
    job.unique_key = Some("prebuild:orders:3".into());
    let first = queue.submit(&job).await.unwrap();
    let Submitted::New(id) = first else {
        panic!("{first:?}")
    };
    assert_eq!(queue.submit(&job).await.unwrap(), Submitted::Existing(id));
    // Still deduped while it runs.
    queue.claim(&queues(), 1, "w", LEASE).await.unwrap();
    assert_eq!(queue.submit(&job).await.unwrap(), Submitted::Existing(id));
    queue.complete_many(&[(id, 1, json!(null))]).await.unwrap();
    let again = queue.submit(&job).await.unwrap();
    assert!(
        matches!(again, Submitted::New(new) if new != id),
        "{again:?}"
    );

    // Many submitters at once still make one job.
    let mut submitters = Vec::new();
    for _ in 0..10 {
        let (queue, mut job) = (queue.clone(), job.clone());
        job.unique_key = Some("race".into());
        submitters.push(tokio::spawn(async move {
            queue.submit(&job).await.unwrap().id()
        }));
    }
    let mut ids = HashSet::new();
    for submitter in submitters {
        ids.insert(submitter.await.unwrap());
    }
    assert_eq!(ids.len(), 1);
}

#[tokio::test]
async fn priorities_and_delays_order_claims() {
    let env = TestEnv::new(StoreKind::Local);
    let queue = migrated_queue(&env).await;
    let low = submit_noop(&queue).await;
    let mut urgent = NewJob::new("noop", json!({}));
    urgent.priority = 10;
    let high = queue.submit(&urgent).await.unwrap().id();
    let mut later = NewJob::new("noop", json!({}));
    later.scheduled_at = Some(chrono::Utc::now() + chrono::Duration::hours(1));
    let delayed = queue.submit(&later).await.unwrap().id();
    assert_eq!(queue.get(delayed).await.unwrap().state, "scheduled");
    let mut other_queue = NewJob::new("noop", json!({}));
    other_queue.queue = "other".into();
    queue.submit(&other_queue).await.unwrap();

    let claimed: Vec<i64> = queue
        .claim(&queues(), 10, "w", LEASE)
        .await
        .unwrap()
        .iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(
        claimed,
        vec![high, low],
        "priority first; delayed and other-queue jobs wait"
    );
}

#[tokio::test]
async fn cancel_and_prune() {
    let env = TestEnv::new(StoreKind::Local);
    let queue = migrated_queue(&env).await;
    let waiting = submit_noop(&queue).await;
    assert_eq!(
        queue.cancel(waiting).await.unwrap(),
        CancelOutcome::Cancelled
    );
    assert_eq!(queue.get(waiting).await.unwrap().state, "cancelled");
    assert_eq!(
        queue.cancel(waiting).await.unwrap(),
        CancelOutcome::NotCancellable
    );

    let running = submit_noop(&queue).await;
    queue.claim(&queues(), 1, "w", LEASE).await.unwrap();
    assert_eq!(
        queue.cancel(running).await.unwrap(),
        CancelOutcome::Requested
    );
    let beat = queue.heartbeat(&[(running, 1)], LEASE).await.unwrap();
    assert_eq!(
        beat,
        vec![(running, true)],
        "the heartbeat carries the request to the worker"
    );
    assert!(queue
        .finish_cancelled(running, 1, "cancelled while running")
        .await
        .unwrap());

    // Pruning: 25 old finished jobs go in batches of 7; recent and unfinished ones stay.
    queue
        .submit_bulk("noop", &json!({}), "default", 25)
        .await
        .unwrap();
    let claimed = queue.claim(&queues(), 25, "w", LEASE).await.unwrap();
    let done: Vec<_> = claimed
        .iter()
        .map(|j| (j.id, j.attempt, json!(null)))
        .collect();
    queue.complete_many(&done).await.unwrap();
    sqlx::query(
        "UPDATE jobs SET finalized_at = now() - interval '10 days' WHERE state = 'completed'",
    )
    .execute(queue.pool())
    .await
    .unwrap();
    let unfinished = submit_noop(&queue).await;
    assert_eq!(
        queue
            .prune(Duration::from_secs(7 * 86400), 7)
            .await
            .unwrap(),
        25
    );
    assert!(queue.get(unfinished).await.is_ok());
    assert!(
        queue.get(waiting).await.is_ok(),
        "recently cancelled jobs are kept"
    );
}

/// A newer minion may add a job state; this one says so clearly instead of panicking or
/// treating the job as absent.
#[tokio::test]
async fn a_job_in_a_state_this_minion_does_not_know_is_a_clear_error() {
    let env = TestEnv::new(StoreKind::Local);
    let queue = migrated_queue(&env).await;
    let id = submit_noop(&queue).await;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .connect(&env.db.url)
        .await
        .unwrap();
    sqlx::query("ALTER TYPE job_state ADD VALUE 'paused'")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("UPDATE jobs SET state = 'paused' WHERE id = $1")
        .bind(id)
        .execute(&pool)
        .await
        .unwrap();
    let err = queue.get(id).await.unwrap_err().to_string();
    assert!(
        err.contains("unknown job state `paused`") && err.contains("newer minion"),
        "{err}"
    );
    for args in [vec!["job", "show", &id.to_string()], vec!["job", "ls"]] {
        let err = env.fails(&args);
        assert!(err.contains("unknown job state `paused`"), "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

/// The console's depth history: samples sum over kinds per state, an empty queue still makes a
/// sample, and samples past the retention go in hourly batches (then the table is vacuumed).
#[tokio::test]
async fn depth_samples_sum_by_state_and_expire_in_batches() {
    use chrono::{Duration as Span, Utc};
    use upsert_minion::queue::{Depth, DEPTH_RETENTION};
    let env = TestEnv::new(StoreKind::Local);
    let queue = migrated_queue(&env).await;
    let now = Utc::now();
    let mut depth = Depth::default();
    let available = depth.by_state.entry(JobState::Available).or_default();
    available.insert("compact".into(), 3);
    available.insert("merge".into(), 4);
    depth
        .by_state
        .entry(JobState::Discarded)
        .or_default()
        .insert("gc".into(), 1);
    let retention = Span::from_std(DEPTH_RETENTION).unwrap();
    // A sample just inside the retention, one just outside it (kept: not an hour past yet).
    queue
        .record_depth(now - retention + Span::minutes(5), &depth)
        .await
        .unwrap();
    queue
        .record_depth(now - retention - Span::minutes(5), &depth)
        .await
        .unwrap();
    queue.record_depth(now, &Depth::default()).await.unwrap();
    let history = queue.depth_history(now - Span::days(2)).await.unwrap();
    assert_eq!(history.len(), 3);
    assert_eq!(history[1].by_state.get(&JobState::Available), Some(&7));
    assert_eq!(history[1].by_state.get(&JobState::Discarded), Some(&1));
    assert_eq!(history[2].by_state.get(&JobState::Available), Some(&0));
    // One more than an hour past the retention: everything past it goes at the next sample.
    queue
        .record_depth(now - retention - Span::minutes(90), &depth)
        .await
        .unwrap();
    queue
        .record_depth(now + Span::seconds(1), &depth)
        .await
        .unwrap();
    let history = queue.depth_history(now - Span::days(2)).await.unwrap();
    let times: Vec<_> = history.iter().map(|s| s.at).collect();
    assert_eq!(history.len(), 3, "{times:?}");
    assert!(history.iter().all(|s| s.at >= now - retention), "{times:?}");
}
