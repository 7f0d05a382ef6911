//! The scheduler (DESIGN.md section 7): submits the jobs of `jobs/*.toml` on their cron ticks.
//!
//! One instance acts at a time ([`leader`]). A tick is submitted in one transaction that locks the
//! schedule's row in `schedule_runs`, moves its `last_tick` forward and inserts the tick's jobs
//! under unique keys made of the schedule and the tick time, so two leaders, a restart or a
//! retried commit can never submit one tick twice. After downtime only the newest missed tick
//! runs (missed ticks run once, not once per tick). A new schedule starts at its next tick.

pub mod leader;
pub mod sampler;
pub mod spec;
mod sql;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::catalog::Catalog;
use crate::queue::{ProcessRole, Queue};
use crate::tasks::Registry;
use crate::telemetry::{metrics, Health};
use leader::{LeaderLease, LEASE_NAME};
pub use spec::{load_dir, Schedule, SpecError};

#[derive(Debug, Clone)]
pub struct SchedulerOptions {
    /// This instance's name, recorded in the lease and with each tick it submits.
    pub id: String,
    /// How long a leader's lease lasts without renewal.
    pub lease: Duration,
    /// How often ticks are looked for (and, while following, the lease tried).
    pub poll_interval: Duration,
    /// How often the leader samples the queue and table gauges from the catalog.
    pub sample_interval: Duration,
}

impl Default for SchedulerOptions {
    fn default() -> Self {
        SchedulerOptions {
            id: crate::worker::default_worker_id(),
            lease: Duration::from_secs(15),
            poll_interval: Duration::from_secs(1),
            sample_interval: Duration::from_secs(15),
        }
    }
}

/// What one submitted tick did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TickOutcome {
    /// The tick's jobs were submitted; `missed` earlier ticks (the scheduler was down) were
    /// folded into this one.
    Submitted { jobs: Vec<i64>, missed: u64 },
    /// Another leader, or an earlier try, got there first.
    AlreadyDone,
    /// A new schedule: recorded, it runs from its next tick.
    Started,
}

pub struct Scheduler {
    catalog: Catalog,
    registry: Registry,
    schedules: Vec<Schedule>,
    options: SchedulerOptions,
    health: Arc<Health>,
}

/// The scheduler's loop as `/healthz` reports it.
const LOOP: &str = "scheduler";
/// How often the scheduler refreshes its row in `workers`.
const SEEN_INTERVAL: Duration = Duration::from_secs(10);

impl Scheduler {
    pub fn new(catalog: Catalog, schedules: Vec<Schedule>, options: SchedulerOptions) -> Scheduler {
        Scheduler {
            catalog,
            registry: Registry::standard(),
            schedules,
            options,
            health: Health::new(),
        }
    }

    /// Reports the scheduler's loop to `health` (shared with the HTTP listener).
    pub fn with_health(mut self, health: Arc<Health>) -> Scheduler {
        self.health = health;
        self
    }

    fn pool(&self) -> &PgPool {
        self.catalog.pool()
    }

    /// Runs until `shutdown`, leading when it can; resigns the lease on the way out.
    pub async fn run(&self, shutdown: CancellationToken) {
        let options = &self.options;
        let mut lease = LeaderLease::new(self.pool().clone(), options.id.clone(), options.lease);
        tracing::info!(scheduler = %options.id, schedules = self.schedules.len(), "scheduler started");
        // The newest tick known to be done per schedule: saves a transaction per poll.
        let mut done: HashMap<String, DateTime<Utc>> = HashMap::new();
        let mut next_lease_check = tokio::time::Instant::now();
        let mut next_sample = tokio::time::Instant::now();
        let mut next_seen = tokio::time::Instant::now();
        let mut was_leader = false;
        let queue = Queue::new(self.pool().clone());
        // What the sampler reports even at zero: every kind, and the queues schedules use.
        let kinds = self.registry.kinds();
        let mut queues: Vec<String> = self.schedules.iter().map(|s| s.queue.clone()).collect();
        queues.push("default".into());
        queues.sort();
        queues.dedup();
        self.health.register(
            LOOP,
            (options.poll_interval * 5 + options.lease).max(Duration::from_secs(60)),
        );
        while !shutdown.is_cancelled() {
            self.health.turned(LOOP);
            let now = tokio::time::Instant::now();
            if now >= next_seen {
                next_seen = now + SEEN_INTERVAL;
                if let Err(err) = queue
                    .process_seen(&options.id, ProcessRole::Scheduler, 0, 0, &[])
                    .await
                {
                    tracing::debug!(error = %err, "cannot record this scheduler as seen");
                }
            }
            if tokio::time::Instant::now() >= next_lease_check {
                let interval = if lease.is_leader() {
                    lease.renew_interval()
                } else {
                    options.poll_interval
                };
                if let Err(err) = lease.acquire_or_renew().await {
                    tracing::warn!(error = %err, "cannot reach the catalog for the scheduler lease");
                }
                next_lease_check = tokio::time::Instant::now() + interval;
            }
            let leading = lease.is_leader();
            if leading != was_leader {
                if leading {
                    tracing::info!(scheduler = %options.id, "leading: submitting scheduled jobs");
                } else {
                    tracing::warn!(scheduler = %options.id, "no longer leading (lease lost or not renewed in time)");
                }
                done.clear();
                was_leader = leading;
                metrics().scheduler_leader.set(i64::from(leading));
                if !leading {
                    sampler::clear();
                }
                next_sample = tokio::time::Instant::now();
            }
            if leading {
                self.submit_due(&lease, &mut done).await;
                if tokio::time::Instant::now() >= next_sample {
                    next_sample = tokio::time::Instant::now() + options.sample_interval;
                    let sampled = sampler::sample(&self.catalog, &queue, &kinds, &queues);
                    if let Err(err) = sampled.await {
                        tracing::warn!(error = %format!("{err:#}"), "cannot sample the queue and table gauges");
                    }
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(options.poll_interval) => {}
            }
        }
        self.health.begin_shutdown();
        self.health.finished(LOOP);
        lease.resign().await;
        metrics().scheduler_leader.set(0);
        sampler::clear();
        if let Err(err) = queue.process_stopped(&options.id).await {
            tracing::debug!(error = %err, "cannot record the scheduler's stop");
        }
        tracing::info!(scheduler = %options.id, "scheduler stopped");
    }

    async fn submit_due(&self, lease: &LeaderLease, done: &mut HashMap<String, DateTime<Utc>>) {
        let now = Utc::now();
        for schedule in &self.schedules {
            let Some(tick) = schedule.due(now) else {
                continue;
            };
            if done.get(&schedule.name).is_some_and(|last| *last >= tick) {
                continue;
            }
            // The lease may have run out while earlier schedules were submitted.
            if !lease.is_leader() {
                return;
            }
            match self.submit_tick(schedule, tick, lease.id()).await {
                Ok(outcome) => {
                    let ticks = &metrics().scheduler_ticks;
                    match &outcome {
                        TickOutcome::Submitted { jobs, missed } => {
                            tracing::info!(schedule = %schedule.name, tick = %tick.to_rfc3339(), jobs = jobs.len(), missed, "scheduled jobs submitted");
                            ticks
                                .with_label_values(&[&schedule.name, "submitted"])
                                .inc();
                            ticks
                                .with_label_values(&[&schedule.name, "missed"])
                                .inc_by(*missed);
                        }
                        TickOutcome::AlreadyDone => ticks
                            .with_label_values(&[&schedule.name, "already_submitted"])
                            .inc(),
                        TickOutcome::Started => {}
                    }
                    done.insert(schedule.name.clone(), tick);
                }
                // Retried at the next poll: the tick's row lock and `last_tick` make that safe
                // whether or not this try committed.
                Err(err) => {
                    tracing::warn!(schedule = %schedule.name, error = %format!("{err:#}"), "cannot submit a scheduled tick; trying again")
                }
            }
        }
    }

    /// Submits one tick of `schedule` unless it (or a newer one) was submitted already.
    pub async fn submit_tick(
        &self,
        schedule: &Schedule,
        tick: DateTime<Utc>,
        by: &str,
    ) -> anyhow::Result<TickOutcome> {
        let mut tx = self.pool().begin().await?;
        let last: Option<(DateTime<Utc>,)> = sqlx::query_as(sql::LOCK_RUN)
            .bind(&schedule.name)
            .fetch_optional(&mut *tx)
            .await?;
        let outcome = match last {
            None => {
                sqlx::query(sql::START_RUN)
                    .bind(&schedule.name)
                    .bind(tick)
                    .bind(by)
                    .execute(&mut *tx)
                    .await?;
                TickOutcome::Started
            }
            Some((last,)) if last >= tick => TickOutcome::AlreadyDone,
            Some((last,)) => {
                let mut ids = Vec::new();
                for job in self.jobs_of(schedule, tick).await? {
                    ids.push(Queue::submit_in(&mut tx, &job).await?.id());
                }
                sqlx::query(sql::ADVANCE)
                    .bind(&schedule.name)
                    .bind(tick)
                    .bind(by)
                    .bind(&ids)
                    .execute(&mut *tx)
                    .await?;
                TickOutcome::Submitted {
                    jobs: ids,
                    missed: missed_between(schedule, last, tick),
                }
            }
        };
        tx.commit().await?;
        Ok(outcome)
    }

    /// The jobs of one tick: one, or one per selected table.
    async fn jobs_of(
        &self,
        schedule: &Schedule,
        tick: DateTime<Utc>,
    ) -> anyhow::Result<Vec<crate::queue::NewJob>> {
        if !schedule.per_table() {
            return Ok(vec![schedule.job(&self.registry, tick, None)?]);
        }
        let mut jobs = Vec::new();
        for table in self.catalog.tables().await? {
            if schedule.selects(&table.name) {
                jobs.push(schedule.job(&self.registry, tick, Some(&table.name))?);
            }
        }
        Ok(jobs)
    }
}

/// Ticks of `schedule` after `last` and before `tick` (capped: it is a figure, not a loop).
fn missed_between(schedule: &Schedule, last: DateTime<Utc>, tick: DateTime<Utc>) -> u64 {
    let mut missed = 0;
    let mut at = last;
    while missed < 100_000 {
        match schedule.next_after(at) {
            Some(next) if next < tick => {
                missed += 1;
                at = next;
            }
            _ => break,
        }
    }
    missed
}

/// A schedule as `minion schedule ls` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ScheduleStatus {
    pub name: String,
    pub cron: String,
    pub time_zone: String,
    pub kind: String,
    pub tables: Vec<String>,
    pub next_run: Option<DateTime<Utc>>,
    pub last_tick: Option<DateTime<Utc>>,
    pub last_job_ids: Vec<i64>,
    pub submitted_by: Option<String>,
    pub source: String,
}

/// Who leads, and since when.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Leader {
    pub leader_id: String,
    pub elected_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// Who leads the schedulers now, if anyone.
pub async fn leader(pool: &PgPool) -> Result<Option<Leader>, sqlx::Error> {
    sqlx::query_as(sql::LEADER)
        .bind(LEASE_NAME)
        .fetch_optional(pool)
        .await
}

/// The schedules with their last and next runs, and the current leader.
pub async fn status(
    pool: &PgPool,
    schedules: &[Schedule],
) -> anyhow::Result<(Vec<ScheduleStatus>, Option<Leader>)> {
    type Run = (
        String,
        DateTime<Utc>,
        Vec<i64>,
        Option<String>,
        DateTime<Utc>,
    );
    let runs: Vec<Run> = sqlx::query_as(sql::RUNS).fetch_all(pool).await?;
    let leader = leader(pool).await?;
    let now = Utc::now();
    let statuses = schedules
        .iter()
        .map(|schedule| {
            let run = runs.iter().find(|run| run.0 == schedule.name);
            ScheduleStatus {
                name: schedule.name.clone(),
                cron: schedule.cron_text.clone(),
                time_zone: schedule.time_zone.name().to_string(),
                kind: schedule.kind.clone(),
                tables: schedule.tables.clone(),
                next_run: schedule.next_after(now),
                last_tick: run.map(|run| run.1),
                last_job_ids: run.map(|run| run.2.clone()).unwrap_or_default(),
                submitted_by: run.and_then(|run| run.3.clone()),
                source: schedule.source.display().to_string(),
            }
        })
        .collect();
    Ok((statuses, leader))
}
