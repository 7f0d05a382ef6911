//! `minion table create|ls|show|drop`.

use std::path::PathBuf;

use clap::Subcommand;

use super::output::human_bytes;
use super::output::{print_json, print_table};
use super::Context;
use crate::binding::Access;
use crate::catalog::tables::Created;
use crate::catalog::CatalogError;
use crate::storage::layout;
use crate::table::{validate_identifier, TableConfig};

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
    /// Delete a table and all its data: its catalog rows (partitions, segments, snapshots,
    /// idempotency keys), its waiting jobs, and every object under tables/NAME/ in the store.
    /// Without --yes, says what would be deleted and deletes nothing.
    Drop {
        /// The table name.
        name: String,
        /// Really delete (there is no undo).
        #[arg(long)]
        yes: bool,
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
        TableCommand::Drop { name, yes } => drop_table(context, &name, yes).await,
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

/// `minion table drop`: the catalog rows in one transaction, then the objects. Rerunning after a
/// failure finishes the job: with the rows gone, only the objects left are deleted.
async fn drop_table(context: &Context, name: &str, yes: bool) -> anyhow::Result<()> {
    validate_identifier(name).map_err(|why| anyhow::anyhow!("table name `{name}`: {why}"))?;
    let catalog = context.catalog().await?;
    let known = match catalog.table(name).await {
        Ok(_) => true,
        Err(CatalogError::TableNotFound(_)) => false,
        Err(err) => return Err(err.into()),
    };
    let store = context.store(Access::Write).await?;
    let prefix = layout::table_prefix(name);
    let objects = store.list(&prefix).await?;
    let object_bytes: u64 = objects.iter().map(|o| o.size).sum();
    if !known && objects.is_empty() {
        return Err(CatalogError::TableNotFound(name.to_string()).into());
    }
    let footprint = catalog.table_footprint(name).await?;
    let what = format!(
        "table {name}: {} partitions, {} segments ({}), {} snapshots, {} waiting jobs in the catalog; {} objects ({}) under {prefix} in store {}",
        footprint.partitions,
        footprint.segments,
        human_bytes(footprint.segment_bytes as u64),
        footprint.snapshots,
        footprint.waiting_jobs,
        objects.len(),
        human_bytes(object_bytes),
        store.url()
    );
    if !yes {
        anyhow::bail!("dropping would delete {what}. Nothing was deleted; run `minion table drop {name} --yes` to delete all of it (there is no undo)");
    }
    if known {
        catalog.drop_table(name).await?;
    }
    for (deleted, object) in objects.iter().enumerate() {
        store.delete(object.location.as_ref()).await.map_err(|err| {
            anyhow::anyhow!("table {name} is gone from the catalog, but deleting its objects stopped after {deleted} of {}: {err}. Run `minion table drop {name} --yes` again to delete the rest", objects.len())
        })?;
    }
    println!("dropped {what}");
    Ok(())
}
