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
    serde_json::from_value(config).map_err(|err| CatalogError::Corrupt {
        name: name.to_string(),
        message: err.to_string(),
    })
}
