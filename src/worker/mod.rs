//! The worker pool (DESIGN.md section 7, Worker): runs up to N jobs at once from the queue,
//! renews their leases in one batched heartbeat, isolates panics, and shuts down gracefully:
//! on shutdown it stops claiming, lets running jobs finish within a deadline, then releases the
//! rest without burning their attempts.
//!
//! Prefetch (`--prefetch P`, off by default): the worker may hold up to P claimed jobs beyond its
//! N running ones, waiting for a slot, so that many short jobs cost few claim statements (the
//! claim's fixed cost, not its per-row cost, bounded throughput at ~25 jobs a claim). A waiting
//! job is an ordinary claimed job: `running` in the queue, leased to this worker, renewed by the
//! same heartbeat and fenced by the same (id, attempt), so nothing about delivery changes. What
//! changes: its attempt is counted from the claim (a crash rescues it as a failed attempt, like a
//! crash mid-run); on shutdown waiting jobs are released at once, their attempts given back; a
//! cancellation or a lost lease ends a waiting job before it starts. The buffer is refilled when
//! it is half empty, in one claim of all free room. Keep it off for long jobs (compaction): a
//! worker would hold jobs another idle worker could run.

mod background;
mod executor;
mod held;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, Notify, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use held::{RunningJob, StopReason};

use crate::job::Services;
use crate::queue::{ProcessRole, Queue};
use crate::tasks::Registry;
use crate::telemetry::Health;

/// Names of the worker's loops as `/healthz` reports them.
const CLAIM_LOOP: &str = "worker_claim";
const HEARTBEAT_LOOP: &str = "worker_heartbeat";

/// A claim slower than both of these makes the worker check the table's statistics at once. An
/// ordered index scan claims a job in about 20 µs (550 in 11 ms); a plan made from statistics
/// older than a bulk submission sorts the queue's whole backlog on every claim (about 50 ms at
/// 200k jobs, whatever it claims). The floor keeps small claims, whose fixed cost dominates,
/// from counting as slow.
const SLOW_CLAIM: Duration = Duration::from_millis(20);
const SLOW_CLAIM_PER_JOB: Duration = Duration::from_micros(50);

#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// Recorded in `attempted_by`; unique per process.
    pub id: String,
    pub concurrency: usize,
    /// Claimed jobs held beyond `concurrency`, waiting for a slot (see the module docs).
    pub prefetch: usize,
    pub queues: Vec<String>,
    /// How long a claimed job is ours without a heartbeat.
    pub lease: Duration,
    pub heartbeat_interval: Duration,
    /// Fallback polling when no notification arrives.
    pub poll_interval: Duration,
    /// How long running jobs may take to finish after a shutdown signal before they are released.
    pub shutdown_timeout: Duration,
    /// First retry delay; doubles per attempt.
    pub retry_backoff: Duration,
    pub rescue_interval: Duration,
    /// LISTEN for insert and cancel notifications (else poll only).
    pub listen: bool,
    /// Vacuum the jobs table once it holds this many dead tuples (checked every rescue
    /// interval; one worker at a time); 0 turns it off.
    pub vacuum_dead_tuples: i64,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        WorkerOptions {
            id: default_worker_id(),
            concurrency: 4,
            prefetch: 0,
            queues: vec!["default".into()],
            lease: Duration::from_secs(30),
            heartbeat_interval: Duration::from_secs(10),
            poll_interval: Duration::from_secs(1),
            shutdown_timeout: Duration::from_secs(30),
            retry_backoff: Duration::from_secs(1),
            rescue_interval: Duration::from_secs(5),
            listen: true,
            vacuum_dead_tuples: 20_000,
        }
    }
}

/// `host-pid-random`: tells operators which process held a job.
pub fn default_worker_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "host".into());
    format!(
        "{host}-{}-{:04x}",
        std::process::id(),
        rand::random::<u16>()
    )
}

/// Counters a worker keeps, for logs and the benchmark.
#[derive(Debug, Default)]
pub struct WorkerStats {
    /// Claim statements that returned at least one job.
    pub claims: AtomicU64,
    pub claimed: AtomicU64,
    pub completed: AtomicU64,
    pub failed: AtomicU64,
    pub released: AtomicU64,
}

/// What the parts of a worker share.
struct Shared {
    queue: Queue,
    registry: Arc<Registry>,
    services: Arc<Services>,
    options: WorkerOptions,
    running: Mutex<HashMap<i64, Arc<RunningJob>>>,
    /// Woken by notifications and rescues: there may be work.
    wake: Notify,
    /// Woken by a slow claim: check the table's statistics now.
    slow_claim: Notify,
    /// Woken when a job ends: a slot is free.
    slot_freed: Notify,
    stats: Arc<WorkerStats>,
    health: Arc<Health>,
}

pub struct Worker {
    shared: Arc<Shared>,
}

impl Worker {
    pub fn new(services: Arc<Services>, registry: Arc<Registry>, options: WorkerOptions) -> Worker {
        debug_assert!(
            options.heartbeat_interval < options.lease,
            "heartbeats must come before the lease ends"
        );
        Worker {
            shared: Arc::new(Shared {
                queue: services.queue.clone(),
                registry,
                services,
                options,
                running: Mutex::new(HashMap::new()),
                wake: Notify::new(),
                slow_claim: Notify::new(),
                slot_freed: Notify::new(),
                stats: Arc::new(WorkerStats::default()),
                health: Health::new(),
            }),
        }
    }

    /// Reports this worker's loops and shutdown to `health` (shared with the HTTP listener and,
    /// in `minion worker --scheduler`, the scheduler).
    pub fn with_health(mut self, health: Arc<Health>) -> Worker {
        Arc::get_mut(&mut self.shared)
            .expect("set before the worker runs")
            .health = health;
        self
    }

    pub fn stats(&self) -> Arc<WorkerStats> {
        self.shared.stats.clone()
    }

    /// Runs until `shutdown` is cancelled, then drains as described in the module docs.
    pub async fn run(&self, shutdown: CancellationToken) {
        let shared = &self.shared;
        let options = &shared.options;
        tracing::info!(worker = %options.id, concurrency = options.concurrency, queues = %options.queues.join(","), "worker started");
        crate::telemetry::metrics()
            .worker_slots
            .set(options.concurrency as i64);
        shared.health.register(
            CLAIM_LOOP,
            (options.poll_interval * 5).max(Duration::from_secs(60)),
        );
        shared.health.register(
            HEARTBEAT_LOOP,
            options.heartbeat_interval * 3 + Duration::from_secs(30),
        );
        self.announce().await;
        let stop_background = CancellationToken::new();
        let (completions, completions_rx) = mpsc::unbounded_channel();
        let mut background = JoinSet::new();
        background.spawn(background::heartbeat(
            shared.clone(),
            stop_background.clone(),
        ));
        background.spawn(background::rescuer(shared.clone(), stop_background.clone()));
        background.spawn(background::maintainer(
            shared.clone(),
            stop_background.clone(),
        ));
        if options.listen {
            background.spawn(background::listener(
                shared.clone(),
                stop_background.clone(),
            ));
        }
        let completer = tokio::spawn(background::completer(shared.clone(), completions_rx));

        let mut jobs = JoinSet::new();
        self.claim_until(&shutdown, &completions, &mut jobs).await;
        shared.health.begin_shutdown();
        shared.health.finished(CLAIM_LOOP);
        tracing::info!(worker = %options.id, running = jobs.len(), "shutting down: no new claims");
        self.drain(jobs).await;

        // Completions still queued are written before the background tasks stop.
        drop(completions);
        let _ = completer.await;
        stop_background.cancel();
        while background.join_next().await.is_some() {}
        shared.health.finished(HEARTBEAT_LOOP);
        if let Err(err) = shared.queue.process_stopped(&options.id).await {
            tracing::debug!(error = %err, "cannot record the stop; the worker leaves `minion status` when its row ages");
        }
        tracing::info!(worker = %options.id, "worker stopped");
    }

    /// Records this worker in the `workers` table (then refreshed by the heartbeat).
    async fn announce(&self) {
        let shared = &self.shared;
        let running = shared.running.lock().expect("running lock").len();
        if let Err(err) = shared
            .queue
            .process_seen(
                &shared.options.id,
                ProcessRole::Worker,
                shared.options.concurrency,
                running,
                &shared.options.queues,
            )
            .await
        {
            tracing::debug!(error = %err, "cannot record this worker as seen");
        }
    }

    /// The claim loop: claims as many jobs as there is room for (free slots plus the prefetch
    /// buffer), starts an executor for each (it waits for a slot; slots go in claim order), and
    /// waits for a notification, a finished job or the poll interval; until `shutdown`. Then
    /// gives up the jobs still waiting, so they are released at once.
    async fn claim_until(
        &self,
        shutdown: &CancellationToken,
        completions: &mpsc::UnboundedSender<executor::Completion>,
        jobs: &mut JoinSet<()>,
    ) {
        let shared = &self.shared;
        let options = &shared.options;
        let slots = Arc::new(Semaphore::new(options.concurrency.max(1)));
        let room = Arc::new(Semaphore::new(
            options.concurrency.max(1) + options.prefetch,
        ));
        let mut claim_failures = 0u32;
        while !shutdown.is_cancelled() {
            shared.health.turned(CLAIM_LOOP);
            let free = self.claimable(&room, &slots);
            let mut filled_all = false;
            if free > 0 {
                let began = std::time::Instant::now();
                match shared
                    .queue
                    .claim(&options.queues, free, &options.id, options.lease)
                    .await
                {
                    Ok(claimed) => {
                        claim_failures = 0;
                        let took = began.elapsed();
                        if took >= SLOW_CLAIM.max(SLOW_CLAIM_PER_JOB * claimed.len() as u32) {
                            shared.slow_claim.notify_one();
                        }
                        filled_all = claimed.len() == free;
                        shared
                            .stats
                            .claimed
                            .fetch_add(claimed.len() as u64, Ordering::Relaxed);
                        if !claimed.is_empty() {
                            shared.stats.claims.fetch_add(1, Ordering::Relaxed);
                        }
                        for job in claimed {
                            let place = room
                                .clone()
                                .try_acquire_owned()
                                .expect("room for every claimed job");
                            // Held from here: the heartbeat renews it, a shutdown gives it up.
                            let running = RunningJob::held(job.attempt);
                            shared
                                .running
                                .lock()
                                .expect("running lock")
                                .insert(job.id, running.clone());
                            let slot = executor::queue_for_slot(&slots).await;
                            jobs.spawn(executor::execute(
                                shared.clone(),
                                job,
                                running,
                                completions.clone(),
                                place,
                                slot,
                            ));
                        }
                    }
                    Err(err) => {
                        claim_failures += 1;
                        let delay = Duration::from_millis(200 * u64::from(claim_failures.min(25)));
                        tracing::warn!(error = %err, retry_in = %humantime::format_duration(delay), "cannot claim jobs; is Postgres up?");
                        tokio::select! {
                            _ = shutdown.cancelled() => break,
                            _ = tokio::time::sleep(delay) => continue,
                        }
                    }
                }
            }
            // Reap finished executors so the set does not grow.
            while jobs.try_join_next().is_some() {}
            if filled_all && self.claimable(&room, &slots) > 0 {
                continue;
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = shared.wake.notified() => {}
                _ = shared.slot_freed.notified() => {}
                _ = tokio::time::sleep(options.poll_interval) => {}
            }
        }
        self.give_up_waiting();
    }

    fn claimable(&self, room: &Semaphore, slots: &Semaphore) -> usize {
        let options = &self.shared.options;
        claimable(
            options.concurrency.max(1),
            options.prefetch,
            room.available_permits(),
            slots.available_permits(),
        )
    }

    /// Stops every held job that has not started, so its executor releases it (giving its
    /// attempt back) instead of running it during the shutdown.
    fn give_up_waiting(&self) {
        let held: Vec<Arc<RunningJob>> = self
            .shared
            .running
            .lock()
            .expect("running lock")
            .values()
            .cloned()
            .collect();
        let given_up = held
            .iter()
            .filter(|job| job.give_up_waiting(StopReason::Shutdown))
            .count();
        if given_up > 0 {
            tracing::info!(
                count = given_up,
                "shutting down: releasing prefetched jobs that had not started"
            );
        }
    }

    /// Lets running jobs finish within the shutdown timeout, then releases the rest (their
    /// attempts are given back) and waits for them to stop.
    async fn drain(&self, mut jobs: JoinSet<()>) {
        let shared = &self.shared;
        let drained = tokio::time::timeout(shared.options.shutdown_timeout, async {
            while jobs.join_next().await.is_some() {}
        })
        .await;
        if drained.is_ok() {
            return;
        }
        let running: Vec<Arc<RunningJob>> = shared
            .running
            .lock()
            .expect("running lock")
            .values()
            .cloned()
            .collect();
        tracing::warn!(
            count = running.len(),
            "shutdown timeout reached: releasing running jobs"
        );
        for job in running {
            job.stop(StopReason::Shutdown);
        }
        while jobs.join_next().await.is_some() {}
    }
}

/// How many jobs to claim now, given the free room (held jobs below concurrency + prefetch) and
/// free slots: all free room, once the prefetched jobs waiting for a slot are down to half the
/// prefetch; with no prefetch, the free slots whenever there are any.
fn claimable(concurrency: usize, prefetch: usize, free_room: usize, free_slots: usize) -> usize {
    let held = concurrency + prefetch - free_room;
    let running = concurrency - free_slots;
    let waiting = held.saturating_sub(running);
    match prefetch == 0 || waiting <= prefetch / 2 {
        true => free_room,
        false => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::claimable;

    #[test]
    fn without_prefetch_every_free_slot_is_claimed_at_once() {
        assert_eq!(claimable(4, 0, 4, 4), 4);
        assert_eq!(claimable(4, 0, 1, 1), 1);
        assert_eq!(claimable(4, 0, 0, 0), 0);
        // Claimed jobs whose executors have not taken their slot yet still count as held.
        assert_eq!(claimable(4, 0, 2, 4), 2);
    }

    #[test]
    fn prefetch_refills_the_whole_room_once_half_the_buffer_is_gone() {
        // Idle: everything (slots and buffer) in one claim.
        assert_eq!(claimable(50, 100, 150, 50), 150);
        // Full: all slots busy, 100 waiting.
        assert_eq!(claimable(50, 100, 0, 0), 0);
        // 51 waiting (more than half): not yet.
        assert_eq!(claimable(50, 100, 49, 0), 0);
        // 50 waiting: refill the 50 free places.
        assert_eq!(claimable(50, 100, 50, 0), 50);
        // Slots free but not yet taken by the waiting jobs: waiting counts against the buffer.
        assert_eq!(claimable(50, 100, 30, 20), 0);
    }
}
