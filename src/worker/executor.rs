//! Running one claimed job and recording how it ended, fenced by (id, attempt).

use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use serde_json::Value;
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{RunningJob, Shared, StopReason};
use crate::job::{JobContext, JobError};
use crate::queue::{backoff, ClaimedJob};

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

pub(super) async fn execute(
    shared: Arc<Shared>,
    job: ClaimedJob,
    completions: mpsc::UnboundedSender<Completion>,
    permit: OwnedSemaphorePermit,
) {
    let span = tracing::info_span!("job", id = job.id, kind = %job.kind, attempt = job.attempt);
    let running = Arc::new(RunningJob {
        attempt: job.attempt,
        cancel: CancellationToken::new(),
        reason: Mutex::new(None),
    });
    shared
        .running
        .lock()
        .expect("running lock")
        .insert(job.id, running.clone());
    async {
        let outcome = run_task(&shared, &job, &running).await;
        record(&shared, &job, outcome, &completions).await;
    }
    .instrument(span)
    .await;
    shared.running.lock().expect("running lock").remove(&job.id);
    drop(permit);
    shared.slot_freed.notify_one();
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
    tracing::debug!("job started");
    let work = AssertUnwindSafe(task.run(&context, job.args.clone())).catch_unwind();
    tokio::select! {
        result = work => match result {
            Ok(Ok(output)) => Outcome::Done(output),
            Ok(Err(err)) => {
                // A task that noticed its cancellation reports the stop, not a failure.
                match *running.reason.lock().expect("reason lock") {
                    Some(reason) => Outcome::Stopped(reason),
                    None => Outcome::Failed(err),
                }
            }
            Err(panic) => Outcome::Panicked(panic_message(&panic)),
        },
        _ = running.cancel.cancelled() => {
            Outcome::Stopped(running.reason.lock().expect("reason lock").unwrap_or(StopReason::Shutdown))
        }
    }
}

async fn record(
    shared: &Shared,
    job: &ClaimedJob,
    outcome: Outcome,
    completions: &mpsc::UnboundedSender<Completion>,
) {
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
            }
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
                    tracing::warn!(error = %message, permanent, new_state = state.as_str(), "job failed")
                }
                Ok(None) => match queue.attempt_state(job.id, job.attempt).await {
                    // A retried call whose first try committed unheard finds the job moved on.
                    Ok(Some(state)) if state != crate::queue::JobState::Running => {
                        tracing::warn!(error = %message, permanent, new_state = state.as_str(), "job failed")
                    }
                    _ => {
                        tracing::warn!(error = %message, "job failed after losing its lease; nothing recorded")
                    }
                },
                Err(db) => {
                    tracing::error!(error = %message, db_error = %db, "job failed and the failure could not be recorded; its lease will expire")
                }
            }
        }
        Outcome::Panicked(message) => {
            stats.failed.fetch_add(1, Ordering::Relaxed);
            let message = format!("task panicked: {message}");
            let delay = backoff(shared.options.retry_backoff, job.attempt);
            match with_db_retries(|| queue.fail(job.id, job.attempt, &message, false, delay)).await
            {
                Ok(_) => {
                    tracing::error!(error = %message, "job panicked; recorded as a failed attempt")
                }
                Err(db) => {
                    tracing::error!(error = %message, db_error = %db, "job panicked and could not be recorded")
                }
            }
        }
        Outcome::Stopped(StopReason::Cancelled) => {
            match with_db_retries(|| {
                queue.finish_cancelled(job.id, job.attempt, "cancelled while running")
            })
            .await
            {
                Ok(true) => tracing::info!("job cancelled"),
                Ok(false) => tracing::warn!("job cancelled after losing its lease"),
                Err(db) => tracing::error!(db_error = %db, "cannot record the cancellation"),
            }
        }
        Outcome::Stopped(StopReason::Shutdown) => {
            match with_db_retries(|| queue.release(job.id, job.attempt)).await {
                Ok(released) => {
                    stats.released.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(
                        released,
                        "job released at shutdown; its attempt is not counted"
                    )
                }
                Err(db) => {
                    tracing::error!(db_error = %db, "cannot release the job; its lease will expire")
                }
            }
        }
        Outcome::Stopped(StopReason::LeaseLost) => {
            tracing::warn!("job stopped: its lease was lost (another worker may run it)");
        }
    }
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
