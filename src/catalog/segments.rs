//! Segments in the catalog: sequence allocation, registration and listing.

use chrono::{DateTime, Utc};
use serde::Serialize;

use sqlx::types::Json;

use super::{Catalog, CatalogError, Lineage};

const INSERT_SEGMENT: &str =
    "INSERT INTO segments (table_name, partition_id, sequence, name, object_key, \
     row_count, byte_size, checksum, min_comparison, max_comparison, state, lineage) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'online', $11) RETURNING id";
const SELECT_SEGMENTS: &str =
    "SELECT id, table_name, partition_id, sequence, name, object_key, row_count, \
     byte_size, checksum, min_comparison, max_comparison, state, replaces, replaced_by, lineage, created_at \
     FROM segments WHERE table_name = $1 AND ($2::int IS NULL OR partition_id = $2) \
     AND ($3::text IS NULL OR state = $3) ORDER BY partition_id, sequence, id";

const SELECT_SEGMENT: &str =
    "SELECT id, table_name, partition_id, sequence, name, object_key, row_count, \
     byte_size, checksum, min_comparison, max_comparison, state, replaces, replaced_by, lineage, created_at \
     FROM segments WHERE id = $1";

/// Inserts one online segment inside the caller's transaction; returns its id.
pub(super) async fn insert_segment(
    conn: &mut sqlx::PgConnection,
    segment: &NewSegment,
) -> Result<i64, CatalogError> {
    let (id,): (i64,) = sqlx::query_as(INSERT_SEGMENT)
        .bind(&segment.table)
        .bind(segment.partition as i32)
        .bind(segment.sequence)
        .bind(&segment.name)
        .bind(&segment.object_key)
        .bind(segment.row_count as i64)
        .bind(segment.byte_size as i64)
        .bind(&segment.checksum)
        .bind(segment.min_comparison)
        .bind(segment.max_comparison)
        .bind(segment.lineage.clone().map(Json))
        .fetch_one(conn)
        .await?;
    Ok(id)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SegmentState {
    /// Served and covered by snapshots.
    Online,
    /// Replaced by a compacted or merged segment; kept until GC.
    Replaced,
    /// Removed without replacement (no valid rows left); kept until GC.
    Dropped,
}

impl SegmentState {
    pub fn as_str(self) -> &'static str {
        match self {
            SegmentState::Online => "online",
            SegmentState::Replaced => "replaced",
            SegmentState::Dropped => "dropped",
        }
    }

    fn parse(text: &str) -> Result<SegmentState, String> {
        match text {
            "online" => Ok(SegmentState::Online),
            "replaced" => Ok(SegmentState::Replaced),
            "dropped" => Ok(SegmentState::Dropped),
            other => Err(format!(
                "unknown segment state `{other}` in the catalog (this minion knows online, replaced, dropped); is a newer minion writing to it?"
            )),
        }
    }
}

/// A segment written to the store, ready to be registered.
#[derive(Debug, Clone, Serialize)]
pub struct NewSegment {
    pub table: String,
    pub partition: u32,
    pub sequence: i64,
    pub name: String,
    pub object_key: String,
    pub row_count: u64,
    pub byte_size: u64,
    pub checksum: String,
    pub min_comparison: Option<f64>,
    pub max_comparison: Option<f64>,
    /// For a compaction or merge output: how it was made (see `lineage`).
    pub lineage: Option<Lineage>,
}

impl NewSegment {
    /// The catalog entry for a file the segment writer produced, under its layout key; the
    /// caller uploads the file to `object_key` before registering the entry.
    pub fn for_written(
        table: &str,
        partition: u32,
        sequence: i64,
        name: String,
        written: &crate::segment::WrittenSegment,
    ) -> NewSegment {
        NewSegment {
            table: table.to_string(),
            partition,
            sequence,
            object_key: crate::storage::layout::segment_key(table, partition, &name),
            name,
            row_count: written.rows,
            byte_size: written.bytes,
            checksum: written.checksum.clone(),
            min_comparison: written.min_comparison,
            max_comparison: written.max_comparison,
            lineage: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct SegmentRow {
    pub id: i64,
    #[sqlx(rename = "table_name")]
    pub table: String,
    #[sqlx(rename = "partition_id")]
    pub partition: i32,
    pub sequence: i64,
    pub name: String,
    pub object_key: String,
    pub row_count: i64,
    pub byte_size: i64,
    pub checksum: String,
    pub min_comparison: Option<f64>,
    pub max_comparison: Option<f64>,
    pub state: SegmentState,
    pub replaces: Vec<i64>,
    pub replaced_by: Option<i64>,
    pub lineage: Option<Json<Lineage>>,
    pub created_at: DateTime<Utc>,
}

crate::queue::text_column_enum!(SegmentState, SegmentState::parse);

impl Catalog {
    /// One segment by id, whatever its state.
    pub async fn segment(&self, id: i64) -> Result<Option<SegmentRow>, CatalogError> {
        Ok(sqlx::query_as::<_, SegmentRow>(SELECT_SEGMENT)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// Segments of a table, optionally of one partition and one state, in sequence order.
    pub async fn segments(
        &self,
        table: &str,
        partition: Option<u32>,
        state: Option<SegmentState>,
    ) -> Result<Vec<SegmentRow>, CatalogError> {
        let rows = sqlx::query_as::<_, SegmentRow>(SELECT_SEGMENTS)
            .bind(table)
            .bind(partition.map(|p| p as i32))
            .bind(state.map(SegmentState::as_str))
            .fetch_all(&self.pool)
            .await?;
        Ok(rows)
    }
}
