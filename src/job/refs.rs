//! What a job's arguments name in the catalog, checked at submit time, so that an invalid job is
//! never enqueued: a prebuild of a partition the table does not have, a job for an unknown
//! table, a compaction of a segment that does not exist or is no longer online. A job checked
//! here can still fail when it runs (the catalog moves on); it is not queued to fail for sure.

use crate::catalog::{Catalog, SegmentState};

/// One thing a job's arguments name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatalogRef {
    Table(String),
    Partition {
        table: String,
        partition: u32,
    },
    /// Online segments of one table (and, when given, one partition).
    Segments {
        table: String,
        partition: Option<u32>,
        ids: Vec<i64>,
    },
}

/// Checks every reference against the catalog; the error names the thing and what to do.
pub async fn check_refs(catalog: &Catalog, refs: &[CatalogRef]) -> anyhow::Result<()> {
    for reference in refs {
        match reference {
            CatalogRef::Table(table) => {
                catalog.table(table).await?;
            }
            CatalogRef::Partition { table, partition } => {
                check_partition(catalog, table, *partition).await?;
            }
            CatalogRef::Segments {
                table,
                partition,
                ids,
            } => {
                if let Some(partition) = partition {
                    check_partition(catalog, table, *partition).await?;
                } else {
                    catalog.table(table).await?;
                }
                for &id in ids {
                    check_segment(catalog, table, *partition, id).await?;
                }
            }
        }
    }
    Ok(())
}

async fn check_partition(catalog: &Catalog, table: &str, partition: u32) -> anyhow::Result<()> {
    let config = catalog.table(table).await?;
    anyhow::ensure!(
        partition < config.partitions,
        "table {table} has partitions 0 to {}, not {partition}; nothing was submitted",
        config.partitions - 1
    );
    Ok(())
}

async fn check_segment(
    catalog: &Catalog,
    table: &str,
    partition: Option<u32>,
    id: i64,
) -> anyhow::Result<()> {
    let list = format!("see `minion segment ls --table {table} --state online`");
    let Some(segment) = catalog.segment(id).await? else {
        anyhow::bail!("segment {id} does not exist ({list}); nothing was submitted");
    };
    anyhow::ensure!(
        segment.table == table,
        "segment {id} belongs to table {}, not {table} ({list}); nothing was submitted",
        segment.table
    );
    if let Some(partition) = partition {
        anyhow::ensure!(
            segment.partition as u32 == partition,
            "segment {id} is in partition {}, not {partition} ({list}); nothing was submitted",
            segment.partition
        );
    }
    anyhow::ensure!(
        segment.state == SegmentState::Online,
        "segment {id} of table {table} is {}, not online: it was replaced or dropped already ({list}); nothing was submitted",
        segment.state.as_str()
    );
    Ok(())
}
