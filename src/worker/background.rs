//! The loops beside the job executors: batched heartbeats, the notification listener, the
//! rescuer of expired leases, the table's upkeep, and the batched completer.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::executor::Completion;
use super::{Shared, StopReason};
use crate::queue::{ProcessRole, CANCEL_CHANNEL, INSERT_CHANNEL};

/// Renews every running job's lease in one statement per interval. A job missing from the answer
/// lost its lease (it was rescued while we were cut off): it is stopped here. A job whose
/// cancellation was requested is stopped too (the polling path when a notification was missed).
pub(super) async fn heartbeat(shared: Arc<Shared>, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(shared.options.heartbeat_interval) => {}
        }
        shared.health.turned(super::HEARTBEAT_LOOP);
        let held: Vec<(i64, i32)> = shared
            .running
            .lock()
            .expect("running lock")
            .iter()
            .map(|(id, job)| (*id, job.attempt))
            .collect();
        let options = &shared.options;
        let seen = shared.queue.process_seen(
            &options.id,
            ProcessRole::Worker,
            options.concurrency,
            held.len(),
            &options.queues,
        );
        if let Err(err) = seen.await {
            tracing::debug!(error = %err, "cannot record this worker as seen");
        }
        if held.is_empty() {
            continue;
        }
        let answer = match shared.queue.heartbeat(&held, shared.options.lease).await {
            Ok(answer) => answer,
            Err(err) => {
                tracing::warn!(error = %err, jobs = held.len(), "heartbeat failed; leases run down until Postgres answers");
                continue;
            }
        };
        let still_held: HashSet<i64> = answer.iter().map(|(id, _)| *id).collect();
        let running = shared.running.lock().expect("running lock");
        for (id, attempt) in &held {
            let Some(job) = running.get(id).filter(|job| job.attempt == *attempt) else {
                continue;
            };
            if !still_held.contains(id) {
                tracing::warn!(job = id, "lease lost; stopping the job");
                job.stop(StopReason::LeaseLost);
            }
        }
        for (id, cancel_requested) in answer {
            if cancel_requested {
                if let Some(job) = running.get(&id) {
                    job.stop(StopReason::Cancelled);
                }
            }
        }
    }
}

/// Listens for inserts (wake up and claim) and cancellations (stop the job). Notifications are
/// only hints: after a reconnect the worker polls at once, and polling goes on regardless.
pub(super) async fn listener(shared: Arc<Shared>, stop: CancellationToken) {
    loop {
        let mut listener = match PgListener::connect_with(shared.queue.pool()).await {
            Ok(listener) => listener,
            Err(err) => {
                tracing::warn!(error = %err, "cannot open the notification listener; polling only for now");
                if sleep_or_stop(&stop, Duration::from_secs(1)).await {
                    return;
                }
                continue;
            }
        };
        if let Err(err) = listener.listen_all([INSERT_CHANNEL, CANCEL_CHANNEL]).await {
            tracing::warn!(error = %err, "LISTEN failed; retrying");
            if sleep_or_stop(&stop, Duration::from_secs(1)).await {
                return;
            }
            continue;
        }
        // Anything inserted while we were not listening is found by this poll.
        shared.wake.notify_one();
        loop {
            let notification = tokio::select! {
                _ = stop.cancelled() => return,
                notification = listener.try_recv() => notification,
            };
            match notification {
                Ok(Some(notification)) if notification.channel() == CANCEL_CHANNEL => {
                    let Ok(id) = notification.payload().parse::<i64>() else {
                        continue;
                    };
                    if let Some(job) = shared.running.lock().expect("running lock").get(&id) {
                        tracing::info!(job = id, "cancellation requested");
                        job.stop(StopReason::Cancelled);
                    }
                }
                Ok(Some(notification)) => {
                    if shared
                        .options
                        .queues
                        .iter()
                        .any(|q| q == notification.payload())
                    {
                        shared.wake.notify_one();
                    }
                }
                Ok(None) => {
                    tracing::warn!("notification connection lost; reconnecting");
                    shared.wake.notify_one();
                    break;
                }
                Err(err) => {
                    tracing::warn!(error = %err, "notification listener failed; reconnecting");
                    break;
                }
            }
        }
        if sleep_or_stop(&stop, Duration::from_millis(500)).await {
            return;
        }
    }
}

/// Returns jobs whose lease expired (their worker died or was cut off) to the queue.
pub(super) async fn rescuer(shared: Arc<Shared>, stop: CancellationToken) {
    loop {
        if sleep_or_stop(&stop, shared.options.rescue_interval).await {
            return;
        }
        match shared
            .queue
            .rescue_expired(1000, shared.options.retry_backoff)
            .await
        {
            Ok(rescued) if !rescued.is_empty() => {
                let jobs: Vec<String> = rescued
                    .iter()
                    .map(|(id, state)| format!("{id} ({state})"))
                    .collect();
                tracing::warn!(jobs = %jobs.join(", "), "rescued jobs whose lease expired");
                shared.wake.notify_one();
            }
            Ok(_) => {}
            Err(err) => tracing::warn!(error = %err, "rescuer cannot reach Postgres"),
        }
    }
}

/// Keeps the jobs table lean and its statistics fresh (`Queue::vacuum_if_bloated`): at every
/// rescue interval, and at once (at most once a second) when a claim was slow, which is how a
/// plan made from statistics older than a bulk submission shows itself.
pub(super) async fn maintainer(shared: Arc<Shared>, stop: CancellationToken) {
    let threshold = shared.options.vacuum_dead_tuples;
    if threshold <= 0 {
        return;
    }
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(shared.options.rescue_interval) => {}
            _ = shared.slow_claim.notified() => {}
        }
        match shared.queue.vacuum_if_bloated(threshold).await {
            Ok(Some((dead, changed))) => {
                tracing::debug!(dead, changed, "vacuumed or analyzed the jobs table")
            }
            Ok(None) => {}
            Err(err) => {
                tracing::warn!(error = %err, "cannot vacuum the jobs table (does this role own it?)")
            }
        }
        if sleep_or_stop(&stop, Duration::from_secs(1)).await {
            return;
        }
    }
}

/// Completes finished jobs in batches: one statement for everything that finished within a few
/// milliseconds of each other. Runs until every sender is gone and the channel is drained.
pub(super) async fn completer(
    shared: Arc<Shared>,
    mut completions: mpsc::UnboundedReceiver<Completion>,
) {
    const MAX_BATCH: usize = 500;
    let mut batch: Vec<(i64, i32, serde_json::Value)> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = completions.recv().await {
        batch.push((first.id, first.attempt, first.output));
        while batch.len() < MAX_BATCH {
            match completions.try_recv() {
                Ok(next) => batch.push((next.id, next.attempt, next.output)),
                Err(_) => break,
            }
        }
        let mut delay = Duration::from_millis(100);
        let mut answer_lost = false;
        let give_up_at = tokio::time::Instant::now() + shared.options.lease;
        loop {
            if tokio::time::Instant::now() >= give_up_at {
                // Our leases have run out by now: the jobs will be rescued and run again.
                tracing::error!(
                    jobs = batch.len(),
                    "cannot record completions within a lease; giving up on them"
                );
                break;
            }
            match shared.queue.complete_many(&batch).await {
                Ok(mut completed) => {
                    if completed.len() < batch.len() && answer_lost {
                        // An earlier try may have committed without our hearing: ask.
                        completed.extend(completed_before(&shared, &batch, &completed).await);
                    }
                    shared
                        .stats
                        .completed
                        .fetch_add(completed.len() as u64, Ordering::Relaxed);
                    if completed.len() < batch.len() {
                        let lost: Vec<i64> = batch
                            .iter()
                            .map(|b| b.0)
                            .filter(|id| !completed.contains(id))
                            .collect();
                        tracing::warn!(jobs = %ids(&lost), "results dropped: these jobs lost their lease before completing");
                    }
                    break;
                }
                Err(err) => {
                    answer_lost = true;
                    tracing::warn!(error = %err, jobs = batch.len(), "cannot record completions; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
        batch.clear();
    }
}

/// Jobs of `batch` missing from `answered` that are completed under the attempt we completed:
/// an earlier try of the batch committed and its answer was lost.
async fn completed_before(
    shared: &Shared,
    batch: &[(i64, i32, serde_json::Value)],
    answered: &[i64],
) -> Vec<i64> {
    let mut learned = Vec::new();
    for (id, attempt, _) in batch.iter().filter(|b| !answered.contains(&b.0)) {
        match shared.queue.attempt_state(*id, *attempt).await {
            Ok(Some(crate::queue::JobState::Completed)) => learned.push(*id),
            Ok(_) => {}
            Err(err) => {
                tracing::warn!(job = id, error = %err, "cannot learn whether the job's completion committed")
            }
        }
    }
    if !learned.is_empty() {
        tracing::info!(jobs = %ids(&learned), "completions whose answer was lost had committed");
    }
    learned
}

/// Sleeps for `duration`; returns true if `stop` fired first.
async fn sleep_or_stop(stop: &CancellationToken, duration: Duration) -> bool {
    tokio::select! {
        _ = stop.cancelled() => true,
        _ = tokio::time::sleep(duration) => false,
    }
}

/// Job ids as a person reads them: `3, 4, 5`.
fn ids(ids: &[i64]) -> String {
    ids.iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}
