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
    /// Worker instances (each with its own claim loop, heartbeat and listener).
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Jobs run at once per worker.
    #[arg(long, default_value_t = 50)]
    pub concurrency: usize,
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

    // Phase 1: burn-down of pre-inserted jobs.
    queue
        .submit_bulk(
            NoopArgs::KIND,
            &NoopArgs::default().to_json(),
            &queue_name,
            args.jobs,
        )
        .await?;
    let shutdown = CancellationToken::new();
    let mut workers = Vec::new();
    let mut stats = Vec::new();
    for index in 0..args.workers {
        let options = WorkerOptions {
            id: format!("bench-{index}"),
            concurrency: args.concurrency,
            queues: vec![queue_name.clone()],
            poll_interval: Duration::from_millis(500),
            listen: !args.no_listen,
            ..WorkerOptions::default()
        };
        let worker = Worker::new(services.clone(), registry.clone(), options);
        stats.push(worker.stats());
        let shutdown = shutdown.clone();
        workers.push(tokio::spawn(async move { worker.run(shutdown).await }));
    }
    let started = Instant::now();
    wait_completed(&stats, args.jobs as u64).await;
    let burn_down = started.elapsed();
    let throughput = args.jobs as f64 / burn_down.as_secs_f64();
    queue.delete_queue(&queue_name).await?;

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

    let figures = json!({
        "benchmark": "queue",
        "jobs": args.jobs,
        "workers": args.workers,
        "concurrency_per_worker": args.concurrency,
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
        args.jobs,
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
