//! What garbage collection may remove: retired segments past their grace period that no retained
//! snapshot covers, and superseded snapshots. Rows are deleted only after their objects.

use chrono::{DateTime, Utc};

use super::snapshots::SnapshotRow;
use super::{Catalog, CatalogError, SegmentRow};

const RETIRED_SEGMENTS: &str = "SELECT id, table_name, partition_id, sequence, name, object_key, row_count, \
     byte_size, checksum, min_comparison, max_comparison, state, replaces, replaced_by, lineage, created_at \
     FROM segments WHERE table_name = $1 AND state <> 'online' AND state_changed_at < $2 ORDER BY id";
/// Snapshots kept: each partition's latest, and any created at or after the cutoff (a reader
/// may have pinned it).
const SNAPSHOTS_BY_RETENTION: &str = "SELECT s.table_name, s.partition_id, s.version, s.manifest_key, \
     s.manifest_checksum, s.segment_ids, s.key_count, s.valid_docs, s.queryable_docs, s.largest_comparison, \
     s.job_id, s.created_at, (s.version = p.latest_snapshot OR s.created_at >= $2) AS retained \
     FROM snapshots s JOIN partitions p ON p.table_name = s.table_name AND p.partition_id = s.partition_id \
     WHERE s.table_name = $1 ORDER BY s.partition_id, s.version";
const DELETE_SEGMENT: &str = "DELETE FROM segments WHERE id = $1 AND state <> 'online'";
const DELETE_SNAPSHOT: &str = "DELETE FROM snapshots s USING partitions p \
     WHERE s.table_name = $1 AND s.partition_id = $2 AND s.version = $3 \
     AND p.table_name = s.table_name AND p.partition_id = s.partition_id \
     AND p.latest_snapshot IS DISTINCT FROM s.version";
const ALL_SEGMENT_KEYS: &str =
    "SELECT name, object_key, partition_id FROM segments WHERE table_name = $1";

#[derive(Debug, sqlx::FromRow)]
struct SnapshotWithRetention {
    #[sqlx(flatten)]
    snapshot: SnapshotRow,
    retained: bool,
}

impl Catalog {
    /// Segments retired (replaced or dropped) before `cutoff`.
    pub async fn retired_segments(
        &self,
        table: &str,
        cutoff: DateTime<Utc>,
    ) -> Result<Vec<SegmentRow>, CatalogError> {
        Ok(sqlx::query_as::<_, SegmentRow>(RETIRED_SEGMENTS)
            .bind(table)
            .bind(cutoff)
            .fetch_all(&self.pool)
            .await?)
    }

    /// Every snapshot of the table, split into (retained, superseded) for a cutoff.
    pub async fn snapshots_by_retention(
        &self,
        table: &str,
        cutoff: DateTime<Utc>,
    ) -> Result<(Vec<SnapshotRow>, Vec<SnapshotRow>), CatalogError> {
        let rows = sqlx::query_as::<_, SnapshotWithRetention>(SNAPSHOTS_BY_RETENTION)
            .bind(table)
            .bind(cutoff)
            .fetch_all(&self.pool)
            .await?;
        let (retained, superseded): (Vec<_>, Vec<_>) =
            rows.into_iter().partition(|row| row.retained);
        Ok((
            retained.into_iter().map(|r| r.snapshot).collect(),
            superseded.into_iter().map(|r| r.snapshot).collect(),
        ))
    }

    /// Removes a retired segment's row (after its objects are gone). Never an online one.
    /// A lost answer is learned (`commit`): `Ok(true)` means this call removed it.
    pub async fn delete_retired_segment(&self, id: i64) -> Result<bool, CatalogError> {
        let mut tx = self
            .write_tx(format!("deleting the row of segment {id}"))
            .await?;
        let deleted = sqlx::query(DELETE_SEGMENT)
            .bind(id)
            .execute(tx.conn())
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(deleted == 1)
    }

    /// Removes a snapshot's row (after its objects are gone). Never a partition's latest. A lost
    /// answer is learned (`commit`).
    pub async fn delete_snapshot(
        &self,
        table: &str,
        partition: i32,
        version: i64,
    ) -> Result<bool, CatalogError> {
        let what =
            format!("deleting the row of snapshot {version} of {table} partition {partition}");
        let mut tx = self.write_tx(what).await?;
        let deleted = sqlx::query(DELETE_SNAPSHOT)
            .bind(table)
            .bind(partition)
            .bind(version)
            .execute(tx.conn())
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(deleted == 1)
    }

    /// (name, object key, partition) of every segment row of a table, whatever its state.
    pub async fn segment_keys(
        &self,
        table: &str,
    ) -> Result<Vec<(String, String, i32)>, CatalogError> {
        Ok(sqlx::query_as(ALL_SEGMENT_KEYS)
            .bind(table)
            .fetch_all(&self.pool)
            .await?)
    }
}
