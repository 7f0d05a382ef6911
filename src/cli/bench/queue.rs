//! `minion bench queue`: queue throughput and pickup latency on the configured Postgres.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::write_figures;
use crate::cli::Context;
use crate::job::args::NoopArgs;
use crate::job::JobArgs;
use crate::tasks::Registry;
use crate::worker::{Worker, WorkerOptions};

#[derive(Debug, Args)]
pub struct QueueBenchArgs {
    /// Jobs pre-inserted for the burn-down.
    #[arg(long, default_value_t = 20_000)]
    pub jobs: i64,
    /// A sweep instead of `--jobs`: burn down each of these backlogs in turn (comma-separated,
    /// e.g. 20000,50000,200000,1000000) and compare their rates with the first.
    #[arg(long, value_delimiter = ',', num_args = 1..)]
    pub backlog: Vec<i64>,
    /// Worker instances (each with its own claim loop, heartbeat and listener).
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Jobs run at once per worker.
    #[arg(long, default_value_t = 50)]
    pub concurrency: usize,
    /// Claimed jobs held per worker beyond its concurrency (`minion worker --prefetch`).
    #[arg(long, default_value_t = 0)]
    pub prefetch: usize,
    /// The workers' `--vacuum-dead-tuples` (0: never vacuum during the run).
    #[arg(long, default_value_t = 20_000)]
    pub vacuum_dead_tuples: i64,
    /// Jobs submitted one at a time for the latency phase.
    #[arg(long, default_value_t = 500)]
    pub latency_jobs: usize,
    /// Submissions per second in the latency phase.
    #[arg(long, default_value_t = 200.0)]
    pub latency_rate: f64,
    /// Poll only, no LISTEN/NOTIFY.
    #[arg(long)]
    pub no_listen: bool,
    /// Where the figures are written as JSON.
    #[arg(long, default_value = "bench-results/queue.json")]
    pub output: PathBuf,
}

pub async fn run(context: &Context, args: QueueBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.jobs > 0 && args.workers > 0 && args.concurrency > 0,
        "counts must be positive"
    );
    context
        .max_connections
        .store((args.workers * 6 + 4) as u32, Ordering::Relaxed);
    let services = context.services().await?;
    let queue = services.queue.clone();
    let queue_name = format!("bench-{:08x}", rand::random::<u32>());
    let registry = Arc::new(Registry::standard());

    // Phase 1: burn-down of pre-inserted jobs, once per backlog size.
    let sizes = if args.backlog.is_empty() {
        vec![args.jobs]
    } else {
        args.backlog.clone()
    };
    anyhow::ensure!(
        sizes.iter().all(|&n| n > 0),
        "backlog sizes must be positive"
    );
    let mut sweep = Vec::new();
    for &size in &sizes {
        let burn = burn_down(&services, &registry, &args, &queue_name, size).await?;
        println!(
            "backlog {size}: burned down in {:.2}s = {:.0} jobs/s (first {} jobs: {:.0} jobs/s; {:.1} jobs per claim)",
            burn.seconds, burn.jobs_per_second, burn.window_jobs, burn.window_jobs_per_second, burn.jobs_per_claim
        );
        sweep.push(burn);
    }
    let (burn_down, throughput) = (
        Duration::from_secs_f64(sweep[0].seconds),
        sweep[0].jobs_per_second,
    );
    let shutdown = CancellationToken::new();
    let (workers, stats) = start_workers(&services, &registry, &args, &queue_name, &shutdown);

    // Phase 2: pickup latency with idle workers, jobs arriving one at a time.
    let interval = Duration::from_secs_f64(1.0 / args.latency_rate.max(1.0));
    let before = total_completed(&stats);
    for _ in 0..args.latency_jobs {
        let mut job = NoopArgs::default().to_job();
        job.queue = queue_name.clone();
        queue.submit(&job).await?;
        tokio::time::sleep(interval).await;
    }
    wait_completed(&stats, before + args.latency_jobs as u64).await;
    let latencies = queue.pickup_latencies_ms(&queue_name).await?;
    shutdown.cancel();
    for worker in workers {
        worker.await?;
    }
    queue.delete_queue(&queue_name).await?;

    let (first, first_window) = (sweep[0].jobs_per_second, sweep[0].window_jobs_per_second);
    let sweep: Vec<serde_json::Value> = sweep
        .iter()
        .map(|burn| {
            json!({
                "backlog": burn.backlog,
                "seconds": burn.seconds,
                "jobs_per_second": burn.jobs_per_second,
                "window_jobs": burn.window_jobs,
                "window_jobs_per_second": burn.window_jobs_per_second,
                "vs_first": burn.jobs_per_second / first,
                "window_vs_first": burn.window_jobs_per_second / first_window,
                "jobs_per_claim": burn.jobs_per_claim,
            })
        })
        .collect();
    let figures = json!({
        "benchmark": "queue",
        "jobs": sizes[0],
        "sweep": sweep,
        "workers": args.workers,
        "concurrency_per_worker": args.concurrency,
        "prefetch_per_worker": args.prefetch,
        "notifications": !args.no_listen,
        "burn_down_seconds": burn_down.as_secs_f64(),
        "jobs_per_second": throughput,
        "latency_jobs": latencies.len(),
        "latency_rate_per_second": args.latency_rate,
        "pickup_ms_p50": percentile(&latencies, 0.50),
        "pickup_ms_p95": percentile(&latencies, 0.95),
        "pickup_ms_p99": percentile(&latencies, 0.99),
        "pickup_ms_max": latencies.last().copied().unwrap_or(0.0),
    });
    println!(
        "queue: {} noop jobs burned down by {} workers x {} in {:.2}s = {:.0} jobs/s; pickup latency over {} jobs at {}/s: p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms",
        sizes[0],
        args.workers,
        args.concurrency,
        burn_down.as_secs_f64(),
        throughput,
        latencies.len(),
        args.latency_rate,
        figures["pickup_ms_p50"].as_f64().unwrap_or(0.0),
        figures["pickup_ms_p95"].as_f64().unwrap_or(0.0),
        figures["pickup_ms_p99"].as_f64().unwrap_or(0.0),
    );
    write_figures(&args.output, &figures)
}

/// One burn-down: its rate over all jobs and over the first `window_jobs` (the same count at
/// every size, so claims at a large backlog are compared with claims at a small one).
struct BurnDown {
    backlog: i64,
    seconds: f64,
    jobs_per_second: f64,
    window_jobs: u64,
    window_jobs_per_second: f64,
    /// Jobs per claim statement that returned any.
    jobs_per_claim: f64,
}

/// Jobs whose rate is compared across backlog sizes.
const WINDOW_JOBS: u64 = 20_000;

async fn burn_down(
    services: &Arc<crate::job::Services>,
    registry: &Arc<Registry>,
    args: &QueueBenchArgs,
    queue_name: &str,
    size: i64,
) -> anyhow::Result<BurnDown> {
    let queue = &services.queue;
    queue
        .submit_bulk(
            NoopArgs::KIND,
            &NoopArgs::default().to_json(),
            queue_name,
            size,
        )
        .await?;
    let shutdown = CancellationToken::new();
    let (workers, stats) = start_workers(services, registry, args, queue_name, &shutdown);
    let started = Instant::now();
    let window_jobs = WINDOW_JOBS.min(size as u64);
    wait_completed(&stats, window_jobs).await;
    let window = started.elapsed().as_secs_f64();
    wait_completed(&stats, size as u64).await;
    let seconds = started.elapsed().as_secs_f64();
    let claims: u64 = stats.iter().map(|s| s.claims.load(Ordering::Relaxed)).sum();
    shutdown.cancel();
    for worker in workers {
        worker.await?;
    }
    queue.delete_queue(queue_name).await?;
    Ok(BurnDown {
        backlog: size,
        seconds,
        jobs_per_second: size as f64 / seconds,
        window_jobs,
        window_jobs_per_second: window_jobs as f64 / window,
        jobs_per_claim: size as f64 / claims.max(1) as f64,
    })
}

type Workers = (
    Vec<tokio::task::JoinHandle<()>>,
    Vec<Arc<crate::worker::WorkerStats>>,
);

fn start_workers(
    services: &Arc<crate::job::Services>,
    registry: &Arc<Registry>,
    args: &QueueBenchArgs,
    queue_name: &str,
    shutdown: &CancellationToken,
) -> Workers {
    let mut workers = Vec::new();
    let mut stats = Vec::new();
    for index in 0..args.workers {
        let options = WorkerOptions {
            id: format!("bench-{index}"),
            concurrency: args.concurrency,
            prefetch: args.prefetch,
            vacuum_dead_tuples: args.vacuum_dead_tuples,
            queues: vec![queue_name.to_string()],
            poll_interval: Duration::from_millis(500),
            listen: !args.no_listen,
            ..WorkerOptions::default()
        };
        let worker = Worker::new(services.clone(), registry.clone(), options);
        stats.push(worker.stats());
        let shutdown = shutdown.clone();
        workers.push(tokio::spawn(async move { worker.run(shutdown).await }));
    }
    (workers, stats)
}

fn total_completed(stats: &[Arc<crate::worker::WorkerStats>]) -> u64 {
    stats
        .iter()
        .map(|s| s.completed.load(Ordering::Relaxed))
        .sum()
}

async fn wait_completed(stats: &[Arc<crate::worker::WorkerStats>], target: u64) {
    while total_completed(stats) < target {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn percentile(sorted: &[f64], quantile: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() as f64 - 1.0) * quantile).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}
