//! Segments in the catalog: sequence allocation, registration and listing.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{Catalog, CatalogError};

const NEXT_SEQUENCES: &str = "UPDATE partitions SET next_sequence = next_sequence + $3 \
     WHERE table_name = $1 AND partition_id = $2 RETURNING next_sequence - $3";
const INSERT_RESERVATIONS: &str =
    "INSERT INTO sequence_reservations (table_name, partition_id, sequence) \
     SELECT $1, $2, generate_series($3::bigint, $3::bigint + $4 - 1)";
const DELETE_RESERVATION: &str = "DELETE FROM sequence_reservations \
     WHERE table_name = $1 AND partition_id = $2 AND sequence = $3";
const EXPIRE_RESERVATIONS: &str = "DELETE FROM sequence_reservations \
     WHERE table_name = $1 AND reserved_at < now() - make_interval(secs => $2)";
const INSERT_SEGMENT: &str =
    "INSERT INTO segments (table_name, partition_id, sequence, name, object_key, \
     row_count, byte_size, checksum, min_comparison, max_comparison, state) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'online') RETURNING id";
const SELECT_SEGMENTS: &str =
    "SELECT id, table_name, partition_id, sequence, name, object_key, row_count, \
     byte_size, checksum, min_comparison, max_comparison, state, replaces, replaced_by, created_at \
     FROM segments WHERE table_name = $1 AND ($2::int IS NULL OR partition_id = $2) \
     AND ($3::text IS NULL OR state = $3) ORDER BY partition_id, sequence, id";

const SELECT_SEGMENT: &str =
    "SELECT id, table_name, partition_id, sequence, name, object_key, row_count, \
     byte_size, checksum, min_comparison, max_comparison, state, replaces, replaced_by, created_at \
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

    fn parse(text: &str) -> SegmentState {
        match text {
            "online" => SegmentState::Online,
            "replaced" => SegmentState::Replaced,
            "dropped" => SegmentState::Dropped,
            other => unreachable!("segments.state check constraint allows no `{other}`"),
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
    #[sqlx(try_from = "String")]
    pub state: SegmentStateText,
    pub replaces: Vec<i64>,
    pub replaced_by: Option<i64>,
    pub created_at: DateTime<Utc>,
}

/// The state column as read back; a newtype so sqlx can decode it through `TryFrom<String>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct SegmentStateText(pub SegmentState);

impl From<String> for SegmentStateText {
    fn from(text: String) -> Self {
        SegmentStateText(SegmentState::parse(&text))
    }
}

impl Catalog {
    /// Reserves `count` consecutive sequence numbers of a partition and returns the first. The
    /// numbers stay reserved (blocking merges across them) until `register_segments` uses them or
    /// `release_sequences` gives them up; numbers never used leave harmless gaps.
    pub async fn reserve_sequences(
        &self,
        table: &str,
        partition: u32,
        count: i64,
    ) -> Result<i64, CatalogError> {
        debug_assert!(count > 0);
        let mut tx = self.pool.begin().await?;
        let row: Option<(i64,)> = sqlx::query_as(NEXT_SEQUENCES)
            .bind(table)
            .bind(partition as i32)
            .bind(count)
            .fetch_optional(&mut *tx)
            .await?;
        let Some((first,)) = row else {
            return Err(CatalogError::TableNotFound(format!(
                "{table} (partition {partition})"
            )));
        };
        sqlx::query(INSERT_RESERVATIONS)
            .bind(table)
            .bind(partition as i32)
            .bind(first)
            .bind(count)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(first)
    }

    /// Gives up reserved sequence numbers that will never be registered (a failed ingest).
    pub async fn release_sequences(
        &self,
        table: &str,
        reserved: &[(u32, i64)],
    ) -> Result<(), CatalogError> {
        for &(partition, sequence) in reserved {
            sqlx::query(DELETE_RESERVATION)
                .bind(table)
                .bind(partition as i32)
                .bind(sequence)
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    /// Drops reservations older than `max_age_seconds` (ingests that crashed); returns how many.
    pub async fn expire_reservations(
        &self,
        table: &str,
        max_age_seconds: f64,
    ) -> Result<u64, CatalogError> {
        let done = sqlx::query(EXPIRE_RESERVATIONS)
            .bind(table)
            .bind(max_age_seconds)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    /// Registers all segments online in one transaction: either every one is visible or none.
    /// Each segment's sequence must still be reserved: a reservation GC expired (the ingest ran
    /// longer than the reservation lifetime) may have let a merge span it, so it is refused.
    pub async fn register_segments(
        &self,
        segments: &[NewSegment],
    ) -> Result<Vec<i64>, CatalogError> {
        let mut tx = self.pool.begin().await?;
        let mut ids = Vec::with_capacity(segments.len());
        for segment in segments {
            let released = sqlx::query(DELETE_RESERVATION)
                .bind(&segment.table)
                .bind(segment.partition as i32)
                .bind(segment.sequence)
                .execute(&mut *tx)
                .await?;
            if released.rows_affected() != 1 {
                return Err(CatalogError::ReservationExpired {
                    table: segment.table.clone(),
                    partition: segment.partition,
                    sequence: segment.sequence,
                });
            }
            ids.push(insert_segment(&mut tx, segment).await?);
        }
        tx.commit().await?;
        Ok(ids)
    }

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
