//! Running one claimed job and recording how it ended, fenced by (id, attempt).

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use serde_json::Value;
use tokio::sync::{mpsc, AcquireError, OwnedSemaphorePermit, Semaphore};
use tracing::Instrument;

use super::{RunningJob, Shared, StopReason};
use crate::job::{JobContext, JobError};
use crate::queue::{backoff, ClaimedJob, JobState};

/// A successful result waiting for the batched completer.
pub(super) struct Completion {
    pub id: i64,
    pub attempt: i32,
    pub output: Value,
}

enum Outcome {
    Done(Value),
    Failed(JobError),
    Panicked(String),
    Stopped(StopReason),
}

/// How an attempt ended, as `minion_jobs_total`'s `outcome` label says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    Completed,
    Retried,
    Discarded,
    Cancelled,
    Released,
    LeaseLost,
    /// The end could not be recorded (the database was gone); the lease will expire.
    Unrecorded,
}

impl Ended {
    fn as_str(self) -> &'static str {
        match self {
            Ended::Completed => "completed",
            Ended::Retried => "retried",
            Ended::Discarded => "discarded",
            Ended::Cancelled => "cancelled",
            Ended::Released => "released",
            Ended::LeaseLost => "lease_lost",
            Ended::Unrecorded => "unrecorded",
        }
    }

    fn of_state(state: JobState) -> Ended {
        match state {
            JobState::Discarded => Ended::Discarded,
            JobState::Cancelled => Ended::Cancelled,
            JobState::Completed => Ended::Completed,
            _ => Ended::Retried,
        }
    }
}

/// A place in the line for a slot (see `queue_for_slot`).
pub(super) type SlotWait =
    Pin<Box<dyn Future<Output = Result<OwnedSemaphorePermit, AcquireError>> + Send>>;

/// Joins the line for a slot now, from the claim loop, so that jobs get slots in the order they
/// were claimed (priority, then schedule). Tokio's semaphore serves waiters first come, first
/// served, but a waiter joins the line when its future is first polled; executors polling their
/// own would join in whatever order the runtime ran them. The future is polled once here (the
/// claim loop's waker may be woken once, harmlessly) and then awaited by the executor; boxed, so
/// the queued waiter does not move.
pub(super) async fn queue_for_slot(slots: &Arc<Semaphore>) -> SlotWait {
    let mut wait: SlotWait = Box::pin(slots.clone().acquire_owned());
    if let std::task::Poll::Ready(slot) = futures::poll!(wait.as_mut()) {
        return Box::pin(std::future::ready(slot));
    }
    wait
}

/// Runs one held job (already in `shared.running`): waits for its slot (a prefetched job may
/// wait), runs it unless it was stopped first, and records how it ended. `place` is the job's place
/// in the worker's room, given back when the ending is recorded; the slot is held while it runs.
pub(super) async fn execute(
    shared: Arc<Shared>,
    job: ClaimedJob,
    running: Arc<RunningJob>,
    completions: mpsc::UnboundedSender<Completion>,
    place: OwnedSemaphorePermit,
    slot: SlotWait,
) {
    let span = tracing::info_span!("job", id = job.id, kind = %job.kind, attempt = job.attempt);
    let claimed = std::time::Instant::now();
    let slot = tokio::select! {
        biased;
        _ = running.cancel.cancelled() => None,
        slot = slot => Some(slot.expect("the slots are never closed")),
    };
    let started = slot.is_some() && running.start();
    let metrics = crate::telemetry::metrics();
    if started {
        metrics.job_attempts.with_label_values(&[&job.kind]).inc();
        metrics.worker_running_jobs.inc();
        observe_pickup(&job, claimed.elapsed());
    }
    let began = std::time::Instant::now();
    async {
        let outcome = match started {
            true => run_task(&shared, &job, &running).await,
            false => Outcome::Stopped(running.stop_reason()),
        };
        let ended = record(&shared, &job, outcome, started, &completions).await;
        metrics
            .jobs
            .with_label_values(&[&job.kind, ended.as_str()])
            .inc();
        if !started {
            return;
        }
        metrics
            .job_duration
            .with_label_values(&[&job.kind])
            .observe(began.elapsed().as_secs_f64());
        match ended {
            Ended::Retried => metrics.job_retries.with_label_values(&[&job.kind]).inc(),
            Ended::Discarded => metrics.job_discards.with_label_values(&[&job.kind]).inc(),
            Ended::LeaseLost => metrics
                .job_lease_losses
                .with_label_values(&[&job.kind])
                .inc(),
            _ => {}
        }
    }
    .instrument(span)
    .await;
    if started {
        metrics.worker_running_jobs.dec();
    }
    shared.running.lock().expect("running lock").remove(&job.id);
    drop(slot);
    drop(place);
    shared.slot_freed.notify_one();
}

/// Pickup latency: from runnable to started, i.e. until the claim (database clock) plus the time
/// a prefetched job waited here for a slot.
fn observe_pickup(job: &ClaimedJob, waited_here: Duration) {
    let Some(claimed_at) = job.attempted_at else {
        return;
    };
    let until_claim = (claimed_at - job.scheduled_at)
        .num_microseconds()
        .unwrap_or(0)
        .max(0);
    crate::telemetry::metrics()
        .job_pickup_latency
        .with_label_values(&[&job.queue])
        .observe(until_claim as f64 / 1e6 + waited_here.as_secs_f64());
}

async fn run_task(shared: &Shared, job: &ClaimedJob, running: &RunningJob) -> Outcome {
    // Arguments are parsed once, by the task itself: invalid ones fail it permanently.
    let task = match shared.registry.get(&job.kind) {
        Ok(task) => task.clone(),
        Err(err) => return Outcome::Failed(JobError::permanent(err)),
    };
    let context = JobContext {
        job_id: job.id,
        attempt: job.attempt,
        cancel: running.cancel.clone(),
        services: shared.services.clone(),
    };
    let timeout = job
        .timeout_seconds
        .map(Duration::from_secs_f64)
        .unwrap_or_else(|| task.timeout());
    tracing::debug!(timeout_seconds = timeout.as_secs_f64(), "job started");
    let work = AssertUnwindSafe(task.run(&context, job.args.clone())).catch_unwind();
    tokio::select! {
        // The work future is dropped (its awaits stop); the token tells blocking helpers.
        _ = tokio::time::sleep(timeout) => {
            running.cancel.cancel();
            crate::telemetry::metrics().job_timeouts.with_label_values(&[&job.kind]).inc();
            Outcome::Failed(timed_out(timeout))
        }
        result = work => match result {
            Ok(Ok(output)) => Outcome::Done(output),
            Ok(Err(err)) => {
                // A task that noticed its cancellation reports the stop, not a failure.
                match running.stopped_for() {
                    Some(reason) => Outcome::Stopped(reason),
                    None => Outcome::Failed(err),
                }
            }
            Err(panic) => Outcome::Panicked(panic_message(&panic)),
        },
        _ = running.cancel.cancelled() => Outcome::Stopped(running.stop_reason()),
    }
}

async fn record(
    shared: &Shared,
    job: &ClaimedJob,
    outcome: Outcome,
    started: bool,
    completions: &mpsc::UnboundedSender<Completion>,
) -> Ended {
    let queue = &shared.queue;
    let stats = &shared.stats;
    match outcome {
        Outcome::Done(output) => {
            let completion = Completion {
                id: job.id,
                attempt: job.attempt,
                output,
            };
            if completions.send(completion).is_err() {
                tracing::error!(
                    "completer gone; the job's lease will expire and it will run again"
                );
                return Ended::Unrecorded;
            }
            Ended::Completed
        }
        Outcome::Failed(err) => {
            stats.failed.fetch_add(1, Ordering::Relaxed);
            let permanent = err.is_permanent();
            let delay = backoff(shared.options.retry_backoff, job.attempt);
            let message = err.to_string();
            let result =
                with_db_retries(|| queue.fail(job.id, job.attempt, &message, permanent, delay))
                    .await;
            match result {
                Ok(Some(state)) => {
                    tracing::warn!(error = %message, permanent, new_state = state.as_str(), "job failed");
                    Ended::of_state(state)
                }
                Ok(None) => match queue.attempt_state(job.id, job.attempt).await {
                    // A retried call whose first try committed unheard finds the job moved on.
                    Ok(Some(state)) if state != JobState::Running => {
                        tracing::warn!(error = %message, permanent, new_state = state.as_str(), "job failed");
                        Ended::of_state(state)
                    }
                    _ => {
                        tracing::warn!(error = %message, "job failed after losing its lease; nothing recorded");
                        Ended::LeaseLost
                    }
                },
                Err(db) => {
                    tracing::error!(error = %message, db_error = %db, "job failed and the failure could not be recorded; its lease will expire");
                    Ended::Unrecorded
                }
            }
        }
        Outcome::Panicked(message) => {
            stats.failed.fetch_add(1, Ordering::Relaxed);
            let message = format!("task panicked: {message}");
            let delay = backoff(shared.options.retry_backoff, job.attempt);
            match with_db_retries(|| queue.fail(job.id, job.attempt, &message, false, delay)).await
            {
                Ok(state) => {
                    tracing::error!(error = %message, "job panicked; recorded as a failed attempt");
                    state.map_or(Ended::LeaseLost, Ended::of_state)
                }
                Err(db) => {
                    tracing::error!(error = %message, db_error = %db, "job panicked and could not be recorded");
                    Ended::Unrecorded
                }
            }
        }
        Outcome::Stopped(StopReason::Cancelled) => {
            let why = match started {
                true => "cancelled while running",
                false => "cancelled before it started (it was prefetched)",
            };
            match with_db_retries(|| queue.finish_cancelled(job.id, job.attempt, why)).await {
                Ok(true) => {
                    tracing::info!("job cancelled");
                    Ended::Cancelled
                }
                Ok(false) => {
                    tracing::warn!("job cancelled after losing its lease");
                    Ended::LeaseLost
                }
                Err(db) => {
                    tracing::error!(db_error = %db, "cannot record the cancellation");
                    Ended::Unrecorded
                }
            }
        }
        Outcome::Stopped(StopReason::Shutdown) => {
            match with_db_retries(|| queue.release(job.id, job.attempt)).await {
                Ok(released) => {
                    stats.released.fetch_add(1, Ordering::Relaxed);
                    match started {
                        true => tracing::info!(
                            released,
                            "job released at shutdown; its attempt is not counted"
                        ),
                        // One line for all of them comes from the claim loop.
                        false => tracing::debug!(released, "prefetched job released at shutdown"),
                    }
                    Ended::Released
                }
                Err(db) => {
                    tracing::error!(db_error = %db, "cannot release the job; its lease will expire");
                    Ended::Unrecorded
                }
            }
        }
        Outcome::Stopped(StopReason::LeaseLost) => {
            tracing::warn!("job stopped: its lease was lost (another worker may run it)");
            Ended::LeaseLost
        }
    }
}

/// The failure of an attempt that ran past its timeout: retried like any failure.
fn timed_out(timeout: Duration) -> JobError {
    let shown = humantime::format_duration(Duration::from_millis(timeout.as_millis() as u64));
    JobError::Retryable(anyhow::anyhow!(
        "timed out after {shown} and was cancelled; it is retried like any failure (if the job is only slow, raise its timeout: `--timeout` on submission, `timeout` in its schedule)"
    ))
}

/// Retries a queue call a few times across short database outages.
async fn with_db_retries<T, F, Fut>(mut call: F) -> Result<T, crate::queue::QueueError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, crate::queue::QueueError>>,
{
    let mut delay = Duration::from_millis(100);
    for _ in 0..6 {
        match call().await {
            Ok(value) => return Ok(value),
            Err(err) => {
                tracing::debug!(error = %err, "queue call failed, retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
    }
    call().await
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(text) = panic.downcast_ref::<&str>() {
        text.to_string()
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text.clone()
    } else {
        "non-string panic payload".into()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use tokio::sync::Semaphore;

    use super::queue_for_slot;

    /// Waiters spawned in reverse still get the slot in the order they queued for it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn slots_go_in_the_order_jobs_queued_for_them() {
        let slots = Arc::new(Semaphore::new(1));
        let busy = slots.clone().try_acquire_owned().expect("the only slot");
        let mut waits = Vec::new();
        for id in 0..8 {
            waits.push((id, queue_for_slot(&slots).await));
        }
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (id, wait) in waits.into_iter().rev() {
            let order = order.clone();
            tasks.push(tokio::spawn(async move {
                let slot = wait.await.expect("open");
                order.lock().unwrap().push(id);
                tokio::time::sleep(Duration::from_millis(2)).await;
                drop(slot);
            }));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(busy);
        for task in tasks {
            task.await.expect("task");
        }
        assert_eq!(*order.lock().unwrap(), (0..8).collect::<Vec<_>>());
    }
}
