//! `minion demo`: the pipeline end to end on the example `orders` table: create the table, ingest a
//! generated upsert stream, prebuild every partition through the queue with a worker pool, and
//! bootstrap a partition with and without its snapshot.

use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::ingest::{ingest_with, IngestArgs};
use super::segment::print_segments;
use super::Context;
use crate::catalog::tables::Created;
use crate::catalog::SegmentState;
use crate::loader::{bootstrap, BootstrapOptions};
use crate::queue::{JobState, NewJob};
use crate::table::TableConfig;
use crate::tasks::{prebuild, Registry};
use crate::worker::{Worker, WorkerOptions};

const ORDERS_TOML: &str = include_str!("../../examples/tables/orders.toml");

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Rows of the generated upsert stream.
    #[arg(long, default_value_t = 400_000)]
    pub rows: u64,
    /// Distinct keys.
    #[arg(long, default_value_t = 50_000)]
    pub keys: u64,
    #[arg(long, default_value_t = 50_000)]
    pub segment_rows: usize,
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
}

pub async fn run(context: &Context, args: DemoArgs) -> anyhow::Result<()> {
    println!("== minion demo: store {}", context.settings.store);
    let table = TableConfig::from_toml(ORDERS_TOML, "examples/tables/orders.toml")?;
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
    let ingest_args = IngestArgs {
        table: table.name.clone(),
        input: None,
        format: None,
        generate: Some(args.rows),
        keys: args.keys,
        seed: args.seed,
        zipf: 0.99,
        out_of_order_ratio: 0.05,
        delete_ratio: 0.02,
        start_time_ms: chrono::Utc::now().timestamp_millis(),
        segment_rows: args.segment_rows,
        row_group_rows: 16_384,
        json: false,
    };
    ingest_with(context, &ingest_args).await?;
    println!("3. online segments of `orders`:");
    let segments = catalog
        .segments(&table.name, None, Some(SegmentState::Online))
        .await?;
    print_segments(&segments);
    prebuild_through_the_queue(context, &table).await?;
    bootstrap_both_ways(context, &table).await
}

/// Step 4: one prebuild job per partition, run by an in-process worker pool.
async fn prebuild_through_the_queue(context: &Context, table: &TableConfig) -> anyhow::Result<()> {
    println!("4. prebuilding every partition through the queue (worker pool of 2):");
    let services = context.services().await?;
    let mut job_ids = Vec::new();
    for partition in 0..table.partitions {
        let mut job = NewJob::new(
            "prebuild",
            json!({"table": table.name, "partition": partition}),
        );
        job.unique_key = Some(prebuild::unique_key(&table.name, partition));
        job_ids.push(services.queue.submit(&job).await?.id());
    }
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
    let mut finished = Vec::new();
    while finished.len() < job_ids.len() {
        finished.clear();
        for id in &job_ids {
            let job = services.queue.get(*id).await?;
            if JobState::parse(&job.state).is_some_and(JobState::is_finished) {
                finished.push(job);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    shutdown.cancel();
    running.await?;
    for job in &finished {
        let output = job.output.clone().unwrap_or_default();
        println!(
            "   job {} {}: partition {} -> {} (version {}, {} keys, {} valid docs)",
            job.id,
            job.state,
            output["partition"],
            output["outcome"],
            output["version"],
            output["key_count"],
            output["valid_docs"]
        );
        anyhow::ensure!(
            job.state == "completed",
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
    let store = context.store()?;
    for use_snapshot in [true, false] {
        let options = BootstrapOptions {
            use_snapshot,
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
