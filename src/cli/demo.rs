//! `minion demo`: the pipeline end to end on the example `orders` table: create the table, ingest a
//! generated upsert stream, prebuild every partition through the queue with a worker pool,
//! bootstrap a partition with and without its snapshot, then plan and run compaction and merge
//! through the queue, collect garbage and verify every partition, with rows and bytes before and
//! after.

use crate::binding::Access;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use tokio_util::sync::CancellationToken;

use super::ingest::{ingest_with, IngestArgs};
use super::segment::print_segments;
use super::Context;
use crate::catalog::tables::Created;
use crate::catalog::SegmentState;
use crate::job::args::{PlanArgs, PrebuildArgs};
use crate::job::{JobArgs, Services};
use crate::loader::{bootstrap, BootstrapOptions};
use crate::queue::JobState;
use crate::table::TableConfig;
use crate::tasks::Registry;
use crate::worker::{Worker, WorkerOptions};

pub(super) const ORDERS_TOML: &str = include_str!("../../examples/tables/orders.toml");

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Rows of the generated upsert stream.
    #[arg(long, default_value_t = 400_000)]
    pub rows: u64,
    /// Distinct keys.
    #[arg(long, default_value_t = 50_000)]
    pub keys: u64,
    /// Rows per segment of the first ingest.
    #[arg(long, default_value_t = 50_000)]
    pub segment_rows: usize,
    /// Random seed of the synthetic stream.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Rows of the second, small ingest.
    #[arg(long, default_value_t = 20_000)]
    pub update_rows: u64,
    /// Rows per segment of the late burst of updates (small: merge material).
    #[arg(long, default_value_t = 2_000)]
    pub update_segment_rows: usize,
}

fn generated(
    table: &TableConfig,
    rows: u64,
    keys: u64,
    seed: u64,
    segment_rows: usize,
) -> IngestArgs {
    IngestArgs {
        table: table.name.clone(),
        input: None,
        format: None,
        generate: Some(rows),
        keys,
        seed,
        zipf: 0.99,
        out_of_order_ratio: 0.05,
        delete_ratio: 0.02,
        start_time_ms: chrono::Utc::now().timestamp_millis(),
        segment_rows,
        row_group_rows: 16_384,
        idempotency_key: None,
        reservation_lease: crate::ingest::DEFAULT_RESERVATION_LEASE,
        json: false,
    }
}

pub async fn run(context: &Context, args: DemoArgs) -> anyhow::Result<()> {
    println!("== minion demo: store {}", context.settings.store);
    let mut table = TableConfig::from_toml(ORDERS_TOML, "examples/tables/orders.toml")?;
    // Demo-sized segments: merge what holds under 5,000 valid rows, compact the rest.
    table.compaction.target_segment_rows = 10_000;
    // The demo sets up what it needs, on any database: migrating is idempotent.
    context.catalog_unmigrated().await?.migrate().await?;
    let catalog = context.catalog().await?;
    match catalog.create_table(&table).await? {
        Created::New => println!(
            "1. created table `orders` ({} partitions)",
            table.partitions
        ),
        Created::AlreadyIdentical => println!("1. table `orders` exists already; appending to it"),
    }
    println!(
        "2. ingesting a generated upsert stream: {} rows over {} keys",
        args.rows, args.keys
    );
    ingest_with(
        context,
        &generated(&table, args.rows, args.keys, args.seed, args.segment_rows),
    )
    .await?;
    println!(
        "   then a late burst of {} updates in small segments of {} rows (merge material)",
        args.update_rows, args.update_segment_rows
    );
    ingest_with(
        context,
        &generated(
            &table,
            args.update_rows,
            args.keys,
            args.seed + 1,
            args.update_segment_rows,
        ),
    )
    .await?;
    println!("3. online segments of `orders`:");
    let segments = catalog
        .segments(&table.name, None, Some(SegmentState::Online))
        .await?;
    print_segments(&segments);
    prebuild_through_the_queue(context, &table).await?;
    bootstrap_both_ways(context, &table).await?;
    compact_and_merge(context, &table).await?;
    schedule_a_few_ticks(context).await
}

/// The schedule the demo runs in step 9: what jobs/plan.toml does every 5 minutes, every 2 s.
const DEMO_SCHEDULE: &str = r#"
[[schedule]]
name = "demo-plan"
cron = "*/2 * * * * *"
kind = "plan"
tables = ["orders"]
"#;

/// Step 9: the scheduler and a worker pool side by side for a few ticks, as a cluster runs them
/// (`minion scheduler` and `minion worker`), then `minion status` while both are up.
async fn schedule_a_few_ticks(context: &Context) -> anyhow::Result<()> {
    println!("9. running the scheduler beside the workers for a few ticks (plan every 2 seconds):");
    let services = context.services().await?;
    let registry = Registry::standard();
    let schedules = crate::schedule::spec::parse(
        std::path::Path::new("demo schedule"),
        DEMO_SCHEDULE,
        &registry,
    )?;
    let options = crate::schedule::SchedulerOptions {
        id: "demo-scheduler".into(),
        lease: Duration::from_secs(6),
        poll_interval: Duration::from_millis(200),
        sample_interval: Duration::from_secs(1),
    };
    let scheduler =
        crate::schedule::Scheduler::new(services.catalog.clone(), schedules.clone(), options);
    let worker = Worker::new(
        services.clone(),
        Arc::new(registry),
        WorkerOptions {
            id: "demo-worker".into(),
            concurrency: 2,
            poll_interval: Duration::from_millis(200),
            ..WorkerOptions::default()
        },
    );
    let shutdown = CancellationToken::new();
    let scheduler = {
        let shutdown = shutdown.clone();
        tokio::spawn(async move { scheduler.run(shutdown).await })
    };
    let worker = {
        let shutdown = shutdown.clone();
        tokio::spawn(async move { worker.run(shutdown).await })
    };
    tokio::time::sleep(Duration::from_secs(7)).await;
    let (runs, _) = crate::schedule::status(services.catalog.pool(), &schedules).await?;
    for run in &runs {
        println!(
            "   schedule `{}` ({}): last tick {}, its jobs {:?}",
            run.name,
            run.cron,
            run.last_tick
                .map_or("-".into(), |t| t.format("%H:%M:%S").to_string()),
            run.last_job_ids
        );
    }
    println!("10. `minion status` while they run:");
    let report = crate::status::gather(&services).await?;
    super::status::print_report(&report);
    shutdown.cancel();
    worker.await?;
    scheduler.await?;
    println!(
        "\nTo look around in the browser: `minion scheduler --listen 127.0.0.1:9090 --console`, then open http://127.0.0.1:9090/"
    );
    Ok(())
}

/// Steps 6 to 8: plan, compact and merge through the queue, collect garbage, verify.
async fn compact_and_merge(context: &Context, table: &TableConfig) -> anyhow::Result<()> {
    let services = context.services().await?;
    let before = footprint(context, table).await?;
    println!(
        "6. compacting and merging through the queue: `plan` submits the jobs the [compaction] settings call for"
    );
    let plan_job = PlanArgs {
        table: table.name.clone(),
        submit: true,
        job_attempts: None,
        compaction: Default::default(),
    }
    .to_job();
    let plan_id = services.queue.submit(&plan_job).await?.id();
    run_worker_until_idle(services.clone()).await?;
    let plan = services.queue.get(plan_id).await?;
    let output = plan.output.clone().unwrap_or_default();
    println!(
        "   plan: {} merge groups, {} compactions, {} prebuilds",
        output["plan"]["merge"].as_array().map_or(0, Vec::len),
        output["plan"]["compact"].as_array().map_or(0, Vec::len),
        output["plan"]["prebuild"].as_array().map_or(0, Vec::len)
    );
    let jobs = services.queue.list(None, None, 100_000).await?;
    let mut outcomes: std::collections::BTreeMap<String, usize> = Default::default();
    for job in jobs.iter().filter(|job| job.id > plan_id) {
        anyhow::ensure!(
            job.state == JobState::Completed,
            "{} job {} ended {}: {}",
            job.kind,
            job.id,
            job.state,
            job.errors
        );
        let outcome = job.output.as_ref().map_or(String::new(), |o| {
            o["outcome"].as_str().unwrap_or("published").to_string()
        });
        *outcomes
            .entry(format!("{} {}", job.kind, outcome))
            .or_default() += 1;
    }
    for (what, count) in &outcomes {
        println!("   {count:>3} x {what}");
    }
    println!("7. collecting garbage (grace 0: nothing else reads this demo table)");
    let gc = crate::gc::gc(
        &services.catalog,
        &services.store,
        &table.name,
        Duration::ZERO,
        Duration::from_secs(86400),
    )
    .await?;
    println!(
        "   {} segments and {} snapshots collected, {} objects deleted",
        gc.segments_collected, gc.snapshots_collected, gc.objects_deleted
    );
    let after = footprint(context, table).await?;
    println!(
        "   online rows {} -> {} ({:.1}%), bytes {} -> {} ({:.1}%), segments {} -> {}",
        before.rows,
        after.rows,
        100.0 * after.rows as f64 / before.rows.max(1) as f64,
        before.bytes,
        after.bytes,
        100.0 * after.bytes as f64 / before.bytes.max(1) as f64,
        before.segments,
        after.segments
    );
    println!("8. verifying every partition from scratch against its newest snapshot:");
    let catalog = context.catalog().await?;
    let store = context.store(Access::Write).await?;
    for partition in 0..table.partitions {
        let verdict = crate::snapshot::verify::verify_partition(
            catalog,
            &store,
            &table.name,
            partition,
            &context.settings.prebuild,
        )
        .await?;
        anyhow::ensure!(
            verdict.differences.is_empty() && verdict.uncovered_segments == 0,
            "partition {partition} differs from its snapshot ({} segments not covered): {}",
            verdict.uncovered_segments,
            verdict.differences.join("; ")
        );
        println!(
            "   partition {partition}: snapshot {} matches ({} segments, {} keys)",
            verdict.snapshot_version.unwrap_or_default(),
            verdict.segments,
            verdict.keys_checked
        );
    }
    Ok(())
}

struct Footprint {
    segments: usize,
    rows: u64,
    bytes: u64,
}

async fn footprint(context: &Context, table: &TableConfig) -> anyhow::Result<Footprint> {
    let online = context
        .catalog()
        .await?
        .segments(&table.name, None, Some(SegmentState::Online))
        .await?;
    Ok(Footprint {
        segments: online.len(),
        rows: online.iter().map(|s| s.row_count as u64).sum(),
        bytes: online.iter().map(|s| s.byte_size as u64).sum(),
    })
}

/// Runs an in-process worker pool of 2 until no job is waiting or running.
async fn run_worker_until_idle(services: Arc<Services>) -> anyhow::Result<()> {
    let options = WorkerOptions {
        concurrency: 2,
        poll_interval: Duration::from_millis(200),
        ..WorkerOptions::default()
    };
    let worker = Worker::new(services.clone(), Arc::new(Registry::standard()), options);
    let shutdown = CancellationToken::new();
    let running = {
        let shutdown = shutdown.clone();
        tokio::spawn(async move { worker.run(shutdown).await })
    };
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let busy: i64 = services
            .queue
            .count_by_state()
            .await?
            .iter()
            .filter(|(state, _)| !state.is_finished())
            .map(|(_, count)| count)
            .sum();
        if busy == 0 {
            break;
        }
    }
    shutdown.cancel();
    running.await?;
    Ok(())
}

/// Step 4: one prebuild job per partition, run by an in-process worker pool.
async fn prebuild_through_the_queue(context: &Context, table: &TableConfig) -> anyhow::Result<()> {
    println!("4. prebuilding every partition through the queue (worker pool of 2):");
    let services = context.services().await?;
    let mut job_ids = Vec::new();
    for partition in 0..table.partitions {
        let job = PrebuildArgs {
            table: table.name.clone(),
            partition,
            force: false,
        }
        .to_job();
        job_ids.push(services.queue.submit(&job).await?.id());
    }
    run_worker_until_idle(services.clone()).await?;
    let mut finished = Vec::new();
    for id in &job_ids {
        finished.push(services.queue.get(*id).await?);
    }
    for job in &finished {
        let output = job.output.clone().unwrap_or_default();
        println!(
            "   job {} {}: partition {} -> {} (version {}, {} keys, {} valid docs)",
            job.id,
            job.state,
            output["partition"],
            output["outcome"].as_str().unwrap_or("?"),
            output["version"],
            output["key_count"],
            output["valid_docs"]
        );
        anyhow::ensure!(
            job.state == JobState::Completed,
            "prebuild job {} ended {}: {}",
            job.id,
            job.state,
            job.errors
        );
    }
    Ok(())
}

/// Step 5: load partition 0 as a restarting server would, from its snapshot and without.
async fn bootstrap_both_ways(context: &Context, table: &TableConfig) -> anyhow::Result<()> {
    println!("5. bootstrapping partition 0 as a restarting server would:");
    let catalog = context.catalog().await?;
    let work = tempfile::Builder::new()
        .prefix("minion-demo-")
        .tempdir_in(&context.settings.staging_dir)?;
    let store = context.store(Access::Write).await?;
    for use_snapshot in [true, false] {
        let options = BootstrapOptions {
            use_snapshot,
            use_lineage: true,
            sst_format_version: context.settings.prebuild.sst_format_version,
            staging_dir: context.settings.staging_dir.clone(),
        };
        let dir = work
            .path()
            .join(if use_snapshot { "with" } else { "without" });
        let loaded = bootstrap(catalog, &store, &table.name, 0, &dir, &options).await?;
        let report = &loaded.report;
        let label = if use_snapshot {
            "from snapshot:"
        } else {
            "without snapshot:"
        };
        println!(
            "   {label:<17} {} keys, {} valid docs in {:.3}s",
            report.keys, report.valid_docs, report.seconds
        );
    }
    Ok(())
}
