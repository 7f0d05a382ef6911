//! Snapshots in the catalog: publish by compare-and-swap, and look-ups.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{Catalog, CatalogError};

const LOCK_PARTITION: &str =
    "SELECT latest_snapshot FROM partitions WHERE table_name = $1 AND partition_id = $2 FOR UPDATE";
const LOCK_SEGMENTS: &str = "SELECT id, checksum, state FROM segments WHERE id = ANY($1) FOR SHARE";
const INSERT_SNAPSHOT: &str = "INSERT INTO snapshots (table_name, partition_id, version, manifest_key, \
     manifest_checksum, segment_ids, key_count, valid_docs, queryable_docs, largest_comparison, job_id) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)";
const MOVE_POINTER: &str =
    "UPDATE partitions SET latest_snapshot = $3 WHERE table_name = $1 AND partition_id = $2";
const SELECT_COLUMNS: &str = "SELECT table_name, partition_id, version, manifest_key, manifest_checksum, \
     segment_ids, key_count, valid_docs, queryable_docs, largest_comparison, job_id, created_at FROM snapshots";

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct SnapshotRow {
    #[sqlx(rename = "table_name")]
    pub table: String,
    #[sqlx(rename = "partition_id")]
    pub partition: i32,
    pub version: i64,
    pub manifest_key: String,
    pub manifest_checksum: String,
    pub segment_ids: Vec<i64>,
    pub key_count: i64,
    pub valid_docs: i64,
    pub queryable_docs: i64,
    pub largest_comparison: Option<f64>,
    pub job_id: Option<i64>,
    pub created_at: DateTime<Utc>,
}

/// A snapshot to publish; `segments` are the covered (id, checksum) pairs it was built from.
#[derive(Debug, Clone)]
pub struct NewSnapshot {
    pub table: String,
    pub partition: u32,
    pub version: i64,
    pub manifest_key: String,
    pub manifest_checksum: String,
    pub segments: Vec<(i64, String)>,
    pub key_count: i64,
    pub valid_docs: i64,
    pub queryable_docs: i64,
    pub largest_comparison: Option<f64>,
    pub job_id: Option<i64>,
}

/// Which precondition of a publish held or failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum PublishOutcome {
    Published,
    /// Another snapshot was published since this one was started from `expected`.
    Superseded {
        current: Option<i64>,
    },
    /// A covered segment is no longer online with the checksum the snapshot was built from.
    SegmentChanged {
        segment_id: i64,
    },
}

impl Catalog {
    /// Publishes `snapshot` if the partition's latest version is still `expected` and every
    /// covered segment is still online with the same checksum; one transaction, nothing written
    /// otherwise.
    pub async fn publish_snapshot(
        &self,
        snapshot: &NewSnapshot,
        expected: Option<i64>,
    ) -> Result<PublishOutcome, CatalogError> {
        debug_assert_eq!(snapshot.version, expected.unwrap_or(0) + 1);
        let what = format!(
            "publishing snapshot {} of {} partition {}",
            snapshot.version, snapshot.table, snapshot.partition
        );
        let mut tx = self.write_tx(what).await?;
        let current: Option<(Option<i64>,)> = sqlx::query_as(LOCK_PARTITION)
            .bind(&snapshot.table)
            .bind(snapshot.partition as i32)
            .fetch_optional(tx.conn())
            .await?;
        let Some((current,)) = current else {
            return Err(CatalogError::TableNotFound(format!(
                "{} (partition {})",
                snapshot.table, snapshot.partition
            )));
        };
        if current != expected {
            return Ok(PublishOutcome::Superseded { current });
        }
        let ids: Vec<i64> = snapshot.segments.iter().map(|(id, _)| *id).collect();
        let rows: Vec<(i64, String, String)> = sqlx::query_as(LOCK_SEGMENTS)
            .bind(&ids)
            .fetch_all(tx.conn())
            .await?;
        for (id, checksum) in &snapshot.segments {
            let still = rows.iter().any(|(row_id, row_checksum, state)| {
                row_id == id && row_checksum == checksum && state == "online"
            });
            if !still {
                return Ok(PublishOutcome::SegmentChanged { segment_id: *id });
            }
        }
        sqlx::query(INSERT_SNAPSHOT)
            .bind(&snapshot.table)
            .bind(snapshot.partition as i32)
            .bind(snapshot.version)
            .bind(&snapshot.manifest_key)
            .bind(&snapshot.manifest_checksum)
            .bind(&ids)
            .bind(snapshot.key_count)
            .bind(snapshot.valid_docs)
            .bind(snapshot.queryable_docs)
            .bind(snapshot.largest_comparison)
            .bind(snapshot.job_id)
            .execute(tx.conn())
            .await?;
        sqlx::query(MOVE_POINTER)
            .bind(&snapshot.table)
            .bind(snapshot.partition as i32)
            .bind(snapshot.version)
            .execute(tx.conn())
            .await?;
        tx.commit().await?;
        Ok(PublishOutcome::Published)
    }

    /// The newest published snapshot of a partition.
    pub async fn latest_snapshot(
        &self,
        table: &str,
        partition: u32,
    ) -> Result<Option<SnapshotRow>, CatalogError> {
        let query = format!(
            "{SELECT_COLUMNS} WHERE (table_name, partition_id, version) = \
             (SELECT table_name, partition_id, latest_snapshot FROM partitions WHERE table_name = $1 AND partition_id = $2)"
        );
        Ok(sqlx::query_as::<_, SnapshotRow>(&query)
            .bind(table)
            .bind(partition as i32)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// Snapshots of a table (optionally one partition), newest first per partition.
    pub async fn snapshots(
        &self,
        table: &str,
        partition: Option<u32>,
    ) -> Result<Vec<SnapshotRow>, CatalogError> {
        let query = format!(
            "{SELECT_COLUMNS} WHERE table_name = $1 AND ($2::int IS NULL OR partition_id = $2) \
             ORDER BY partition_id, version DESC"
        );
        Ok(sqlx::query_as::<_, SnapshotRow>(&query)
            .bind(table)
            .bind(partition.map(|p| p as i32))
            .fetch_all(&self.pool)
            .await?)
    }

    pub async fn snapshot(
        &self,
        table: &str,
        partition: u32,
        version: i64,
    ) -> Result<Option<SnapshotRow>, CatalogError> {
        let query = format!(
            "{SELECT_COLUMNS} WHERE table_name = $1 AND partition_id = $2 AND version = $3"
        );
        Ok(sqlx::query_as::<_, SnapshotRow>(&query)
            .bind(table)
            .bind(partition as i32)
            .bind(version)
            .fetch_optional(&self.pool)
            .await?)
    }
}
