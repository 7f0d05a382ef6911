//! Every metric this process exports, in one registry, following Prometheus naming: base units
//! as suffixes (`_seconds`, `_bytes`), `_total` on counters, labels for what varies (README,
//! "Metrics", lists them with their meaning).
//!
//! Counters and histograms are recorded where the event happens (the worker, the tasks, the
//! scheduler), so each process exports what it did and Prometheus sums over processes. Gauges
//! about the queue and the tables are sampled from the catalog by the scheduler leader only
//! (`schedule::sampler`), so N workers do not multiply catalog load.

use std::sync::LazyLock;

use prometheus::{
    Encoder, Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    // Jobs, recorded by the worker that ran them.
    pub jobs: IntCounterVec,
    pub job_duration: HistogramVec,
    pub job_attempts: IntCounterVec,
    pub job_retries: IntCounterVec,
    pub job_discards: IntCounterVec,
    pub job_lease_losses: IntCounterVec,
    pub job_timeouts: IntCounterVec,
    pub job_pickup_latency: HistogramVec,
    pub worker_running_jobs: IntGauge,
    pub worker_slots: IntGauge,
    // Work done, recorded by the tasks.
    pub reclaimed_rows: IntCounterVec,
    pub reclaimed_bytes: IntCounterVec,
    pub gc_objects: IntCounterVec,
    pub gc_bytes: IntCounterVec,
    pub plan_skipped: IntCounterVec,
    // The scheduler.
    pub scheduler_leader: IntGauge,
    pub scheduler_ticks: IntCounterVec,
    // Sampled from the catalog by the leader.
    pub queue_jobs: IntGaugeVec,
    pub queue_oldest_available_age: GaugeVec,
    pub table_online_segments: IntGaugeVec,
    pub table_online_rows: IntGaugeVec,
    pub table_online_bytes: IntGaugeVec,
    pub table_dead_row_ratio: GaugeVec,
    pub table_snapshot_lag_segments: IntGaugeVec,
    pub table_snapshot_age: GaugeVec,
    pub sample_timestamp: Gauge,
    pub build_info: IntGaugeVec,
}

/// Buckets for job durations: 10 ms to about 3 hours.
const DURATION_BUCKETS: &[f64] = &[
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0,
    10800.0,
];
/// Buckets for pickup latency: 1 ms to 5 minutes.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let metric = IntCounterVec::new(Opts::new(name, help), labels).expect("valid counter");
    registry
        .register(Box::new(metric.clone()))
        .expect("unique metric");
    metric
}

fn int_gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let metric = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid gauge");
    registry
        .register(Box::new(metric.clone()))
        .expect("unique metric");
    metric
}

fn gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    let metric = GaugeVec::new(Opts::new(name, help), labels).expect("valid gauge");
    registry
        .register(Box::new(metric.clone()))
        .expect("unique metric");
    metric
}

fn histogram(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: &[f64],
) -> HistogramVec {
    let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
    let metric = HistogramVec::new(opts, labels).expect("valid histogram");
    registry
        .register(Box::new(metric.clone()))
        .expect("unique metric");
    metric
}

impl Metrics {
    fn new() -> Metrics {
        let r = Registry::new();
        let worker_running_jobs = IntGauge::new(
            "minion_worker_running_jobs",
            "Jobs this worker is running now.",
        )
        .expect("valid gauge");
        r.register(Box::new(worker_running_jobs.clone()))
            .expect("unique metric");
        let worker_slots = IntGauge::new(
            "minion_worker_slots",
            "Jobs this worker may run at once (--concurrency).",
        )
        .expect("valid gauge");
        r.register(Box::new(worker_slots.clone()))
            .expect("unique metric");
        let scheduler_leader = IntGauge::new(
            "minion_scheduler_leader",
            "1 while this scheduler holds the leader lease, else 0.",
        )
        .expect("valid gauge");
        r.register(Box::new(scheduler_leader.clone()))
            .expect("unique metric");
        let sample_timestamp = Gauge::new(
            "minion_catalog_sample_timestamp_seconds",
            "When the leader last sampled the queue and table gauges (Unix time).",
        )
        .expect("valid gauge");
        r.register(Box::new(sample_timestamp.clone()))
            .expect("unique metric");
        let build_info = int_gauge(
            &r,
            "minion_build_info",
            "Always 1; the version of this binary and of its catalog migrations.",
            &["version", "migration"],
        );
        Metrics {
            jobs: counter(&r, "minion_jobs_total",
                "Job attempts that ended, by kind and outcome (completed, retried, discarded, cancelled, released, lease_lost).",
                &["kind", "outcome"]),
            job_duration: histogram(&r, "minion_job_duration_seconds",
                "Time from claim to the end of an attempt, by kind.", &["kind"], DURATION_BUCKETS),
            job_attempts: counter(&r, "minion_job_attempts_total",
                "Attempts started (jobs claimed), by kind.", &["kind"]),
            job_retries: counter(&r, "minion_job_retries_total",
                "Failed attempts that will be retried, by kind.", &["kind"]),
            job_discards: counter(&r, "minion_job_discards_total",
                "Jobs discarded after a permanent error or their last attempt, by kind.", &["kind"]),
            job_lease_losses: counter(&r, "minion_job_lease_losses_total",
                "Attempts stopped because their lease was lost (another worker may run them), by kind.", &["kind"]),
            job_timeouts: counter(&r, "minion_job_timeouts_total",
                "Attempts cancelled for running past their timeout, by kind.", &["kind"]),
            job_pickup_latency: histogram(&r, "minion_job_pickup_latency_seconds",
                "Time from a job becoming runnable to its start (its claim, plus a prefetched job's wait for a slot), by queue.", &["queue"], LATENCY_BUCKETS),
            worker_running_jobs,
            worker_slots,
            reclaimed_rows: counter(&r, "minion_compaction_reclaimed_rows_total",
                "Superseded rows removed from the table by compact and merge, by table and kind.", &["table", "kind"]),
            reclaimed_bytes: counter(&r, "minion_compaction_reclaimed_bytes_total",
                "Segment bytes saved by compact and merge (inputs minus output), by table and kind.", &["table", "kind"]),
            gc_objects: counter(&r, "minion_gc_deleted_objects_total",
                "Objects deleted from the store by gc, by table.", &["table"]),
            gc_bytes: counter(&r, "minion_gc_deleted_bytes_total",
                "Bytes of segment objects deleted from the store by gc, by table.", &["table"]),
            plan_skipped: counter(&r, "minion_plan_skipped_total",
                "Candidates a plan did not turn into a job, by table and reason.", &["table", "reason"]),
            scheduler_leader,
            scheduler_ticks: counter(&r, "minion_scheduler_ticks_total",
                "Schedule ticks by result: submitted; already_submitted (by another leader or an earlier try); missed (collapsed into one run after downtime).",
                &["schedule", "result"]),
            queue_jobs: int_gauge(&r, "minion_queue_jobs",
                "Jobs in the queue by state and kind (sampled by the leader).", &["state", "kind"]),
            queue_oldest_available_age: gauge(&r, "minion_queue_oldest_available_age_seconds",
                "Age of the oldest runnable job waiting to be claimed, by queue; 0 when none waits (sampled).", &["queue"]),
            table_online_segments: int_gauge(&r, "minion_table_online_segments",
                "Online segments of a table (sampled).", &["table"]),
            table_online_rows: int_gauge(&r, "minion_table_online_rows",
                "Rows in the online segments of a table, valid or not (sampled).", &["table"]),
            table_online_bytes: int_gauge(&r, "minion_table_online_bytes",
                "Bytes of the online segments of a table (sampled).", &["table"]),
            table_dead_row_ratio: gauge(&r, "minion_table_dead_row_ratio",
                "Fraction of rows in snapshot-covered online segments that are superseded or deleted (sampled).", &["table"]),
            table_snapshot_lag_segments: int_gauge(&r, "minion_table_snapshot_lag_segments",
                "Online segments not covered by their partition's newest snapshot (sampled).", &["table"]),
            table_snapshot_age: gauge(&r, "minion_table_snapshot_age_seconds",
                "Age of the oldest among the newest snapshots of a table's partitions (sampled).", &["table"]),
            sample_timestamp,
            build_info,
            registry: r,
        }
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buffer)
            .expect("text encoding into memory");
        String::from_utf8(buffer).expect("exposition is UTF-8")
    }
}

/// This process's metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);
    &METRICS
}
