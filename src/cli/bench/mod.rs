//! `minion bench ...`: benchmarks that print their figures and write them to a file. Each
//! compares against a baseline run in the same process or script (see BENCHMARKS.md).

mod compact;
mod console;
mod lineage;
mod prebuild;
mod queue;

use std::path::PathBuf;

use clap::Subcommand;

use super::ingest::{ingest_with, IngestArgs};
use super::Context;
use crate::table::TableConfig;

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Burn down pre-inserted noop jobs, then measure pickup latency of jobs submitted one by one.
    Queue(queue::QueueBenchArgs),
    /// Prebuild speed and memory against DuckDB, and bootstrap with vs without the snapshot.
    Prebuild(prebuild::PrebuildBenchArgs),
    /// Compaction throughput against DuckDB rewriting the same segments, and copy-through.
    Compact(compact::CompactBenchArgs),
    /// The console's page times on a seeded catalog (100k jobs, 10k segments by default).
    Console(console::ConsoleBenchArgs),
}

pub async fn run(context: &Context, command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Queue(args) => queue::run(context, args).await,
        BenchCommand::Prebuild(args) => prebuild::run(context, args).await,
        BenchCommand::Compact(args) => compact::run(context, args).await,
        BenchCommand::Console(args) => console::run(context, args).await,
    }
}

/// Writes a benchmark's figures as JSON to `path`, creating its directory.
fn write_figures(path: &std::path::Path, figures: &serde_json::Value) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, serde_json::to_string_pretty(figures)?)?;
    println!("figures written to {}", path.display());
    Ok(())
}

/// The directory of a local-directory store: the benchmarks' DuckDB baselines read the same
/// files, so they refuse other stores.
fn local_store_dir(context: &Context, bench: &str) -> anyhow::Result<PathBuf> {
    let store = &context.settings.store;
    anyhow::ensure!(
        !store.contains("://") || store.starts_with("file://"),
        "bench {bench} needs a local-directory store (the DuckDB baseline reads the same files)"
    );
    Ok(PathBuf::from(store.trim_start_matches("file://")))
}

/// Creates a one-partition copy of the example `orders` table under a fresh name (with
/// `metadata_ttl` in ms when given) and ingests a generated stream of `rows` over `keys` uniform
/// keys into it (one row per ms); shared by the benchmarks.
async fn bench_table(
    context: &Context,
    rows: u64,
    keys: u64,
    segment_rows: usize,
    metadata_ttl: Option<u64>,
) -> anyhow::Result<(String, TableConfig)> {
    let catalog = context.catalog().await?;
    let name = format!("bench_{:08x}", rand::random::<u32>());
    let mut text = include_str!("../../../examples/tables/orders.toml")
        .replace("name = \"orders\"", &format!("name = \"{name}\""))
        .replace("partitions = 4", "partitions = 1");
    if let Some(ttl) = metadata_ttl {
        text = text.replace("[ttl]\n", &format!("[ttl]\nmetadata_ttl = {ttl}\n"));
    }
    let table = TableConfig::from_toml(&text, "bench table")?;
    catalog.create_table(&table).await?;
    println!("table {name}");
    let ingest_args = IngestArgs {
        table: name.clone(),
        input: None,
        format: None,
        generate: Some(rows),
        keys,
        seed: 11,
        zipf: 0.0,
        out_of_order_ratio: 0.05,
        delete_ratio: 0.02,
        start_time_ms: 1_700_000_000_000,
        segment_rows,
        row_group_rows: 131_072,
        idempotency_key: None,
        reservation_lease: crate::ingest::DEFAULT_RESERVATION_LEASE,
        json: false,
    };
    ingest_with(context, &ingest_args).await?;
    Ok((name, table))
}
