//! `minion segment ls|show`.

use clap::Subcommand;

use super::output::{human_bytes, print_json, print_table};
use super::Context;
use crate::catalog::{SegmentRow, SegmentState};

#[derive(Debug, Subcommand)]
pub enum SegmentCommand {
    /// List a table's segments in partition and sequence order.
    Ls {
        /// The table.
        #[arg(long)]
        table: String,
        /// Only this partition.
        #[arg(long)]
        partition: Option<u32>,
        /// Only segments in this state (online, replaced, dropped).
        #[arg(long, value_parser = parse_state)]
        state: Option<SegmentState>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

fn parse_state(text: &str) -> Result<SegmentState, String> {
    match text {
        "online" => Ok(SegmentState::Online),
        "replaced" => Ok(SegmentState::Replaced),
        "dropped" => Ok(SegmentState::Dropped),
        other => Err(format!(
            "unknown state `{other}`; use online, replaced or dropped"
        )),
    }
}

pub async fn run(context: &Context, command: SegmentCommand) -> anyhow::Result<()> {
    match command {
        SegmentCommand::Ls {
            table,
            partition,
            state,
            json,
        } => {
            let catalog = context.catalog().await?;
            // Fails clearly for an unknown table instead of listing nothing.
            let config = catalog.table(&table).await?;
            if let Some(partition) = partition {
                anyhow::ensure!(
                    partition < config.partitions,
                    "table {table} has partitions 0 to {}, not {partition}",
                    config.partitions - 1
                );
            }
            let segments = catalog.segments(&table, partition, state).await?;
            if json {
                return print_json(&segments);
            }
            print_segments(&segments);
            Ok(())
        }
    }
}

pub fn print_segments(segments: &[SegmentRow]) {
    let rows: Vec<Vec<String>> = segments
        .iter()
        .map(|s| {
            vec![
                s.id.to_string(),
                s.partition.to_string(),
                s.sequence.to_string(),
                s.state.as_str().to_string(),
                s.row_count.to_string(),
                human_bytes(s.byte_size as u64),
                s.name.clone(),
            ]
        })
        .collect();
    print_table(
        &["ID", "PARTITION", "SEQ", "STATE", "ROWS", "SIZE", "NAME"],
        &rows,
    );
    let total_rows: i64 = segments.iter().map(|s| s.row_count).sum();
    let total_bytes: i64 = segments.iter().map(|s| s.byte_size).sum();
    println!(
        "{} segments, {} rows, {}",
        segments.len(),
        total_rows,
        human_bytes(total_bytes as u64)
    );
}
