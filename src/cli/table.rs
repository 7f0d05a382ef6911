//! `minion table create|ls|show`.

use std::path::PathBuf;

use clap::Subcommand;

use super::output::{print_json, print_table};
use super::Context;
use crate::catalog::tables::Created;
use crate::table::TableConfig;

#[derive(Debug, Subcommand)]
pub enum TableCommand {
    /// Create a table from its TOML declaration (idempotent for an identical declaration).
    Create {
        /// The table's TOML declaration (see examples/tables/).
        #[arg(long)]
        file: PathBuf,
    },
    /// List tables.
    Ls {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one table's declaration.
    Show {
        /// The table name.
        name: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(context: &Context, command: TableCommand) -> anyhow::Result<()> {
    match command {
        TableCommand::Create { file } => {
            // Validate before touching the database: a bad file never reaches the catalog.
            let table = TableConfig::from_file(&file)?;
            let catalog = context.catalog().await?;
            match catalog.create_table(&table).await? {
                Created::New => println!(
                    "created table {} ({} partitions)",
                    table.name, table.partitions
                ),
                Created::AlreadyIdentical => {
                    println!("table {} already exists with this definition", table.name)
                }
            }
            Ok(())
        }
        TableCommand::Ls { json } => {
            let tables = context.catalog().await?.tables().await?;
            if json {
                return print_json(&tables);
            }
            let rows: Vec<Vec<String>> = tables
                .iter()
                .map(|t| {
                    vec![
                        t.name.clone(),
                        t.partitions.to_string(),
                        t.primary_key.join(","),
                        t.comparison.clone(),
                        t.delete_column.clone().unwrap_or_else(|| "-".into()),
                        t.columns.len().to_string(),
                    ]
                })
                .collect();
            print_table(
                &[
                    "NAME",
                    "PARTITIONS",
                    "PRIMARY KEY",
                    "COMPARISON",
                    "DELETE",
                    "COLUMNS",
                ],
                &rows,
            );
            Ok(())
        }
        TableCommand::Show { name, json } => {
            let table = context.catalog().await?.table(&name).await?;
            if json {
                return print_json(&table);
            }
            print!("{}", toml::to_string_pretty(&table)?);
            Ok(())
        }
    }
}
