//! `minion demo`: the pipeline end to end on the example `orders` table. For now: create the table,
//! ingest a generated upsert stream, and list what was written.

use clap::Args;

use super::ingest::{ingest_with, IngestArgs};
use super::segment::print_segments;
use super::Context;
use crate::catalog::tables::Created;
use crate::catalog::SegmentState;
use crate::table::TableConfig;

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
    Ok(())
}
