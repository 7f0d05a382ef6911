//! Figures about every table, read in one statement: online segments, rows and bytes per
//! partition, and how the newest snapshot stands (its age, the online segments it does not cover,
//! the valid share of the rows it covers). For `minion status` and the leader's table gauges.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{Catalog, CatalogError};

/// Per partition. `covered_rows` counts every row of the segments the newest snapshot covers
/// (whether or not they have been replaced since), `valid_docs` those of them still valid then.
/// The snapshot's ids are unnested and joined by primary key (a lookup per covered segment);
/// `id = ANY(segment_ids)` would compare every segment with every id. Uncovered segments are the
/// online ones less the covered ones still online (a snapshot covers only its partition's).
const PARTITION_STATS: &str = "
    SELECT p.table_name, p.partition_id,
           coalesce(o.segments, 0) AS online_segments,
           coalesce(o.rows, 0)::bigint AS online_rows,
           coalesce(o.bytes, 0)::bigint AS online_bytes,
           s.version AS snapshot_version,
           s.created_at AS snapshot_created_at,
           coalesce(s.valid_docs, 0) AS snapshot_valid_docs,
           p.reclaimed_rows, p.reclaimed_bytes,
           coalesce(c.rows, 0)::bigint AS covered_rows,
           coalesce(o.segments, 0) - coalesce(c.online, 0) AS uncovered_segments
    FROM partitions p
    LEFT JOIN LATERAL (
        SELECT count(*) AS segments, sum(row_count) AS rows, sum(byte_size) AS bytes
        FROM segments g
        WHERE g.table_name = p.table_name AND g.partition_id = p.partition_id
          AND g.state = 'online'
    ) o ON true
    LEFT JOIN snapshots s ON s.table_name = p.table_name AND s.partition_id = p.partition_id
                         AND s.version = p.latest_snapshot
    LEFT JOIN LATERAL (
        SELECT sum(g.row_count) AS rows, count(*) FILTER (WHERE g.state = 'online') AS online
        FROM unnest(s.segment_ids) AS u(id) JOIN segments g ON g.id = u.id
    ) c ON true
    WHERE $1::text IS NULL OR p.table_name = $1
    ORDER BY p.table_name, p.partition_id";

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct PartitionStats {
    pub table_name: String,
    pub partition_id: i32,
    pub online_segments: i64,
    pub online_rows: i64,
    pub online_bytes: i64,
    pub snapshot_version: Option<i64>,
    pub snapshot_created_at: Option<DateTime<Utc>>,
    pub snapshot_valid_docs: i64,
    pub covered_rows: i64,
    /// Online segments the newest snapshot does not cover (the snapshot lag).
    pub uncovered_segments: i64,
    /// Rows and bytes compactions and merges have reclaimed (since migration 0010).
    pub reclaimed_rows: i64,
    pub reclaimed_bytes: i64,
}

/// A table's figures, summed over its partitions.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TableStats {
    pub table: String,
    pub partitions: u32,
    pub online_segments: i64,
    pub online_rows: i64,
    pub online_bytes: i64,
    /// Share of the rows covered by the newest snapshots that are superseded or deleted; `None`
    /// while no partition has a snapshot.
    pub dead_row_ratio: Option<f64>,
    /// Online segments not covered by their partition's newest snapshot.
    pub snapshot_lag_segments: i64,
    /// Partitions with online segments but no snapshot.
    pub partitions_without_snapshot: u32,
    /// Age of the oldest among the partitions' newest snapshots.
    pub snapshot_age_seconds: Option<f64>,
    /// Rows and bytes compactions and merges have reclaimed so far (input rows and bytes less
    /// the outputs', counted in each swap's transaction since migration 0010).
    pub reclaimed_rows: i64,
    pub reclaimed_bytes: i64,
}

impl Catalog {
    /// Per partition figures of `table`, or of every table.
    pub async fn partition_stats(
        &self,
        table: Option<&str>,
    ) -> Result<Vec<PartitionStats>, CatalogError> {
        Ok(sqlx::query_as::<_, PartitionStats>(PARTITION_STATS)
            .bind(table)
            .fetch_all(&self.pool)
            .await?)
    }

    /// Per table figures of `table`, or of every table, in name order.
    pub async fn table_stats(&self, table: Option<&str>) -> Result<Vec<TableStats>, CatalogError> {
        Ok(summarize(&self.partition_stats(table).await?, Utc::now()))
    }
}

/// Sums partition figures into table figures.
pub fn summarize(partitions: &[PartitionStats], now: DateTime<Utc>) -> Vec<TableStats> {
    let mut tables: Vec<TableStats> = Vec::new();
    let mut covered: Vec<(i64, i64)> = Vec::new();
    for p in partitions {
        if tables.last().is_none_or(|t| t.table != p.table_name) {
            tables.push(TableStats {
                table: p.table_name.clone(),
                ..TableStats::default()
            });
            covered.push((0, 0));
        }
        let table = tables.last_mut().expect("pushed above");
        let (rows, valid) = covered.last_mut().expect("pushed above");
        table.partitions += 1;
        table.online_segments += p.online_segments;
        table.online_rows += p.online_rows;
        table.online_bytes += p.online_bytes;
        table.snapshot_lag_segments += p.uncovered_segments;
        table.reclaimed_rows += p.reclaimed_rows;
        table.reclaimed_bytes += p.reclaimed_bytes;
        match p.snapshot_created_at {
            Some(created) => {
                *rows += p.covered_rows;
                *valid += p.snapshot_valid_docs;
                let age = (now - created).num_milliseconds().max(0) as f64 / 1000.0;
                table.snapshot_age_seconds =
                    Some(table.snapshot_age_seconds.unwrap_or(0.0).max(age));
            }
            None if p.online_segments > 0 => table.partitions_without_snapshot += 1,
            None => {}
        }
    }
    for (table, (rows, valid)) in tables.iter_mut().zip(covered) {
        if rows > 0 {
            table.dead_row_ratio = Some(1.0 - valid as f64 / rows as f64);
        } else if table.snapshot_age_seconds.is_some() {
            table.dead_row_ratio = Some(0.0);
        }
    }
    tables
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partition(
        table: &str,
        id: i32,
        snapshot: Option<(i64, i64)>,
        uncovered: i64,
    ) -> PartitionStats {
        PartitionStats {
            table_name: table.into(),
            partition_id: id,
            online_segments: 3,
            online_rows: 300,
            online_bytes: 3000,
            snapshot_version: snapshot.map(|_| 1),
            snapshot_created_at: snapshot.map(|_| Utc::now() - chrono::Duration::seconds(10)),
            snapshot_valid_docs: snapshot.map_or(0, |s| s.1),
            covered_rows: snapshot.map_or(0, |s| s.0),
            uncovered_segments: uncovered,
            reclaimed_rows: 7,
            reclaimed_bytes: 70,
        }
    }

    #[test]
    fn tables_sum_their_partitions() {
        let stats = summarize(
            &[
                partition("a", 0, Some((200, 50)), 1),
                partition("a", 1, Some((200, 150)), 0),
                partition("a", 2, None, 3),
                partition("b", 0, None, 3),
            ],
            Utc::now(),
        );
        assert_eq!(stats.len(), 2);
        let a = &stats[0];
        assert_eq!(
            (a.partitions, a.online_segments, a.online_rows),
            (3, 9, 900)
        );
        assert_eq!(a.snapshot_lag_segments, 4);
        assert_eq!((a.reclaimed_rows, a.reclaimed_bytes), (21, 210));
        assert_eq!(a.partitions_without_snapshot, 1);
        assert!((a.dead_row_ratio.unwrap() - 0.5).abs() < 1e-9);
        assert!(a.snapshot_age_seconds.unwrap() >= 10.0);
        let b = &stats[1];
        assert_eq!(b.dead_row_ratio, None);
        assert_eq!(b.snapshot_age_seconds, None);
    }
}
