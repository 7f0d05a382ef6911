//! `minion worker`: the worker pool process.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use tokio_util::sync::CancellationToken;

use super::schedule::ScheduleFlags;
use super::service::{signal_shutdown, ListenArgs};
use super::Context;
use crate::schedule::Scheduler;
use crate::tasks::Registry;
use crate::telemetry::Health;
use crate::worker::{default_worker_id, Worker, WorkerOptions};

/// The most jobs a worker may hold beyond its concurrency (`--prefetch`).
const MAX_PREFETCH: usize = 10_000;

#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// Jobs run at once by this process.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Claimed jobs held beyond --concurrency, waiting for a slot: fewer claim statements for
    /// many short jobs. Each is leased and heartbeated like a running one; released at shutdown.
    /// Leave at 0 for long jobs (a worker would hold jobs an idle worker could run).
    #[arg(long, default_value_t = 0)]
    pub prefetch: usize,
    /// Queues to take jobs from (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "default")]
    pub queues: Vec<String>,
    /// After SIGTERM/SIGINT, how long running jobs may take before they are released.
    #[arg(long, default_value = "30s", value_parser = crate::job::args::parse_duration, allow_hyphen_values = true)]
    pub shutdown_timeout: Duration,
    /// Lease of a claimed job; renewed by heartbeats every third of it.
    #[arg(long, default_value = "30s", value_parser = crate::job::args::parse_duration, allow_hyphen_values = true)]
    pub lease: Duration,
    /// Polling interval when no notification arrives.
    #[arg(long, default_value = "1s", value_parser = crate::job::args::parse_duration, allow_hyphen_values = true)]
    pub poll_interval: Duration,
    /// First retry delay of a failed job; doubles per attempt.
    #[arg(long, default_value = "1s", value_parser = crate::job::args::parse_duration, allow_hyphen_values = true)]
    pub retry_backoff: Duration,
    /// How often expired leases are looked for.
    #[arg(long, default_value = "5s", value_parser = crate::job::args::parse_duration, allow_hyphen_values = true)]
    pub rescue_interval: Duration,
    /// Poll only; do not LISTEN for notifications.
    #[arg(long)]
    pub no_listen: bool,
    /// Vacuum the jobs table once it holds this many dead tuples (one worker at a time; the
    /// queue does not rely on autovacuum); 0 turns it off.
    #[arg(long, default_value_t = 20_000)]
    pub vacuum_dead_tuples: i64,
    /// Worker id recorded on claimed jobs (default: host-pid-random).
    #[arg(long)]
    pub id: Option<String>,
    /// Also run the scheduler in this process (one instance leads among all schedulers).
    #[arg(long)]
    pub scheduler: bool,
    #[command(flatten)]
    pub schedule: ScheduleFlags,
    #[command(flatten)]
    pub listen: ListenArgs,
}

impl WorkerArgs {
    pub fn options(&self) -> anyhow::Result<WorkerOptions> {
        anyhow::ensure!(self.concurrency >= 1, "--concurrency must be at least 1");
        anyhow::ensure!(
            self.lease >= Duration::from_millis(300),
            "--lease must be at least 300ms"
        );
        anyhow::ensure!(!self.queues.is_empty(), "--queues needs at least one queue");
        anyhow::ensure!(
            self.poll_interval >= Duration::from_millis(10),
            "--poll-interval must be at least 10ms (it is how often an idle worker asks the catalog)"
        );
        anyhow::ensure!(
            self.rescue_interval >= Duration::from_millis(100),
            "--rescue-interval must be at least 100ms"
        );
        anyhow::ensure!(
            self.prefetch <= MAX_PREFETCH,
            "--prefetch {} is more than {MAX_PREFETCH}: each prefetched job is leased and renewed by \
             this worker; a few times --concurrency is enough (BENCHMARKS.md: 500 per worker \
             already took over 300 jobs a claim)",
            self.prefetch
        );
        Ok(WorkerOptions {
            id: self.id.clone().unwrap_or_else(default_worker_id),
            concurrency: self.concurrency,
            prefetch: self.prefetch,
            queues: self.queues.clone(),
            lease: self.lease,
            heartbeat_interval: self.lease / 3,
            poll_interval: self.poll_interval,
            shutdown_timeout: self.shutdown_timeout,
            retry_backoff: self.retry_backoff,
            rescue_interval: self.rescue_interval,
            listen: !self.no_listen,
            vacuum_dead_tuples: self.vacuum_dead_tuples,
        })
    }
}

pub async fn run(context: &Context, args: WorkerArgs) -> anyhow::Result<()> {
    let options = args.options()?;
    // Schedules are checked before anything starts: a bad file fails the start.
    let scheduler = match args.scheduler {
        true => Some(
            args.schedule
                .scheduler_parts(format!("{}-scheduler", options.id), options.poll_interval)?,
        ),
        false => None,
    };
    // Staging directories of processes that were killed (a pod's emptyDir outlives them).
    let root = context.settings.staging_root.clone();
    match tokio::task::spawn_blocking(move || crate::staging::sweep(&root)).await? {
        Ok(swept) if !swept.removed.is_empty() => {
            tracing::info!(
                removed = swept.removed.len(),
                live = swept.live,
                "removed staging directories of processes that are gone"
            )
        }
        Ok(_) => {}
        Err(err) => {
            tracing::warn!(error = %format!("{err:#}"), "cannot sweep the staging directory")
        }
    }
    context
        .max_connections
        .store(options.concurrency as u32 + 6, Ordering::Relaxed);
    let services = context.services().await?;
    let health = Health::new();
    args.listen
        .start(context, health.clone(), &args.schedule.jobs.dir)
        .await?;
    let worker = Worker::new(services.clone(), Arc::new(Registry::standard()), options)
        .with_health(health.clone());
    let shutdown = CancellationToken::new();
    tokio::spawn(signal_shutdown(shutdown.clone(), health.clone()));
    let scheduler = scheduler.map(|(schedules, options)| {
        let scheduler = Scheduler::new(services.catalog.clone(), schedules, options)
            .with_health(health.clone());
        let shutdown = shutdown.clone();
        tokio::spawn(async move { scheduler.run(shutdown).await })
    });
    worker.run(shutdown).await;
    if let Some(scheduler) = scheduler {
        scheduler.await?;
    }
    Ok(())
}
