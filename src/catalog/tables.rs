//! Table declarations in the catalog.

use super::{Catalog, CatalogError};
use crate::table::TableConfig;

const INSERT_TABLE: &str =
    "INSERT INTO tables (name, config) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING";
const INSERT_PARTITIONS: &str =
    "INSERT INTO partitions (table_name, partition_id) SELECT $1, generate_series(0, $2 - 1)";
const SELECT_TABLE: &str = "SELECT config FROM tables WHERE name = $1";
const SELECT_TABLES: &str = "SELECT config FROM tables ORDER BY name";

/// What `create_table` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    New,
    /// The same definition was already there: creating is idempotent.
    AlreadyIdentical,
}

impl Catalog {
    /// Creates the table and its partitions in one transaction. Creating an identical table again
    /// succeeds; a different definition under the same name is refused.
    pub async fn create_table(&self, table: &TableConfig) -> Result<Created, CatalogError> {
        let config = serde_json::to_value(table).expect("table config serializes");
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query(INSERT_TABLE)
            .bind(&table.name)
            .bind(&config)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if inserted == 0 {
            tx.rollback().await?;
            let existing = self.table(&table.name).await?;
            if existing == *table {
                return Ok(Created::AlreadyIdentical);
            }
            return Err(CatalogError::TableConflict(table.name.clone()));
        }
        sqlx::query(INSERT_PARTITIONS)
            .bind(&table.name)
            .bind(table.partitions as i32)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Created::New)
    }

    pub async fn table(&self, name: &str) -> Result<TableConfig, CatalogError> {
        let row: Option<(serde_json::Value,)> = sqlx::query_as(SELECT_TABLE)
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        let Some((config,)) = row else {
            return Err(CatalogError::TableNotFound(name.to_string()));
        };
        decode_table(name, config)
    }

    pub async fn tables(&self) -> Result<Vec<TableConfig>, CatalogError> {
        let rows: Vec<(serde_json::Value,)> =
            sqlx::query_as(SELECT_TABLES).fetch_all(&self.pool).await?;
        rows.into_iter()
            .map(|(config,)| decode_table("?", config))
            .collect()
    }
}

fn decode_table(name: &str, config: serde_json::Value) -> Result<TableConfig, CatalogError> {
    serde_json::from_value::<TableConfig>(config)
        .map(TableConfig::normalized)
        .map_err(|err| CatalogError::Corrupt {
            name: name.to_string(),
            message: err.to_string(),
        })
}

/// What dropping a table removes from the catalog.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, sqlx::FromRow)]
pub struct TableFootprint {
    pub partitions: i64,
    pub segments: i64,
    pub segment_bytes: i64,
    pub snapshots: i64,
    /// Jobs of the table waiting to run (deleted with it).
    pub waiting_jobs: i64,
    /// Jobs of the table running now (a drop waits for them).
    pub running_jobs: i64,
}

const TABLE_FOOTPRINT: &str = "SELECT \
       (SELECT count(*) FROM partitions WHERE table_name = $1) AS partitions, \
       (SELECT count(*) FROM segments WHERE table_name = $1) AS segments, \
       (SELECT coalesce(sum(byte_size), 0)::bigint FROM segments WHERE table_name = $1) AS segment_bytes, \
       (SELECT count(*) FROM snapshots WHERE table_name = $1) AS snapshots, \
       (SELECT count(*) FROM jobs WHERE args->>'table' = $1 \
          AND state IN ('available', 'scheduled', 'retryable')) AS waiting_jobs, \
       (SELECT count(*) FROM jobs WHERE args->>'table' = $1 AND state = 'running') AS running_jobs";
/// Jobs of a table that have not started: they would only fail on a table that is gone.
const DELETE_WAITING_JOBS: &str = "DELETE FROM jobs WHERE args->>'table' = $1 \
     AND state IN ('available', 'scheduled', 'retryable')";
/// Partitions, segments, snapshots, reservations and idempotency keys go with it (ON DELETE
/// CASCADE).
const DELETE_TABLE: &str = "DELETE FROM tables WHERE name = $1";

impl Catalog {
    /// What the catalog holds of table `name` (zeros for a table it does not know).
    pub async fn table_footprint(&self, name: &str) -> Result<TableFootprint, CatalogError> {
        Ok(sqlx::query_as(TABLE_FOOTPRINT)
            .bind(name)
            .fetch_one(&self.pool)
            .await?)
    }

    /// Deletes table `name` and everything the catalog holds of it, with its waiting jobs, in one
    /// transaction; refused while one of its jobs runs. Returns what was deleted.
    pub async fn drop_table(&self, name: &str) -> Result<TableFootprint, CatalogError> {
        self.table(name).await?;
        let mut tx = self.write_tx(format!("dropping table {name}")).await?;
        // Locks the table's row first: a concurrent ingest or swap waits, then finds it gone.
        sqlx::query("SELECT 1 FROM tables WHERE name = $1 FOR UPDATE")
            .bind(name)
            .execute(tx.conn())
            .await?;
        let footprint: TableFootprint = sqlx::query_as(TABLE_FOOTPRINT)
            .bind(name)
            .fetch_one(tx.conn())
            .await?;
        if footprint.running_jobs > 0 {
            return Err(CatalogError::TableBusy {
                name: name.to_string(),
                running: footprint.running_jobs,
            });
        }
        sqlx::query(DELETE_WAITING_JOBS)
            .bind(name)
            .execute(tx.conn())
            .await?;
        sqlx::query(DELETE_TABLE)
            .bind(name)
            .execute(tx.conn())
            .await?;
        tx.commit().await?;
        Ok(footprint)
    }
}
