//! Replacing segments (compaction, merge) in one transaction guarded by the inputs' expected
//! state and checksum: two jobs racing on one input, exactly one wins and the loser changes nothing.

use serde::Serialize;

use super::reservations::EXPIRE_IN_RANGE;
use super::segments::insert_segment;
use super::{Catalog, CatalogError, NewSegment};
use crate::queue::{NewJob, Queue};

const LOCK_INPUTS: &str =
    "SELECT id, checksum, state FROM segments WHERE id = ANY($1) ORDER BY id FOR UPDATE";
const RETIRE_INPUTS: &str =
    "UPDATE segments SET state = $2, state_changed_at = now() WHERE id = ANY($1)";
const LINK_INPUTS: &str = "UPDATE segments SET replaced_by = $2 WHERE id = ANY($1)";
const SET_LINEAGE: &str = "UPDATE segments SET replaces = $2 WHERE id = $1";
/// Adds what the swap reclaimed to the inputs' partition: their rows and bytes less the outputs'
/// ($2 rows, $3 bytes). For the console and `minion status` (migration 0010).
const COUNT_RECLAIMED: &str = "
    UPDATE partitions p SET reclaimed_rows = p.reclaimed_rows + i.rows - $2,
                            reclaimed_bytes = p.reclaimed_bytes + i.bytes - $3
    FROM (SELECT table_name, partition_id, sum(row_count)::bigint AS rows,
                 sum(byte_size)::bigint AS bytes
          FROM segments WHERE id = ANY($1) GROUP BY table_name, partition_id) i
    WHERE p.table_name = i.table_name AND p.partition_id = i.partition_id";
/// A sequence strictly inside (low, high) held by an online segment that is neither an input nor
/// covered by the snapshot the merge used, or reserved by an ingest not yet registered. One
/// statement, so a registration committing meanwhile is seen either as reservation or segment.
const SEQUENCE_IN_GAP: &str = "SELECT sequence FROM segments \
     WHERE table_name = $1 AND partition_id = $2 AND state = 'online' \
       AND sequence > $3 AND sequence < $4 AND NOT (id = ANY($5)) AND NOT (id = ANY($6)) \
     UNION ALL \
     SELECT sequence FROM sequence_reservations \
     WHERE table_name = $1 AND partition_id = $2 AND sequence > $3 AND sequence < $4 \
     LIMIT 1";

/// What a merge needs to hold for its output sequence to keep every tie-break (see
/// `compaction::merge`): no sequence inside (low, high) may belong to a segment outside the
/// inputs that the snapshot did not cover, now or later.
#[derive(Debug, Clone)]
pub struct SequenceGuard {
    pub table: String,
    pub partition: u32,
    pub low: i64,
    pub high: i64,
    /// Segments covered by the snapshot whose bitmaps drove the merge.
    pub covered: Vec<i64>,
}

/// Which precondition of a replacement held or failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum ReplaceOutcome {
    /// Inputs retired; `outputs` are the new segments' ids (none: the inputs were dropped).
    Replaced { outputs: Vec<i64> },
    /// An input is no longer online with the expected checksum: nothing was changed.
    InputChanged {
        segment_id: i64,
        state: Option<String>,
    },
    /// The sequence guard failed: `sequence` lies inside the inputs' range but belongs to an
    /// uncovered segment or an unregistered ingest. Nothing was changed.
    SequenceGap { sequence: i64 },
}

impl Catalog {
    /// Retires `inputs` (id, expected checksum) and registers `outputs` online (each with the
    /// inputs its rows came from, for lineage), in one
    /// transaction, only if every input is still online with its expected checksum. Inputs become
    /// `replaced` (with lineage both ways) or, without outputs, `dropped`. `follow_up` (typically
    /// the partition's prebuild) is enqueued in the same transaction. With a `guard`, also only if
    /// no foreign sequence lies inside the guarded range.
    pub async fn replace_segments(
        &self,
        inputs: &[(i64, String)],
        outputs: &[(NewSegment, Vec<i64>)],
        guard: Option<&SequenceGuard>,
        follow_up: Option<&NewJob>,
    ) -> Result<ReplaceOutcome, CatalogError> {
        debug_assert!(!inputs.is_empty());
        let ids: Vec<i64> = inputs.iter().map(|(id, _)| *id).collect();
        let what = format!(
            "replacing segments {}",
            ids.iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        );
        let mut tx = self.write_tx(what).await?;
        let rows: Vec<(i64, String, String)> = sqlx::query_as(LOCK_INPUTS)
            .bind(&ids)
            .fetch_all(tx.conn())
            .await?;
        for (id, checksum) in inputs {
            let row = rows.iter().find(|(row_id, _, _)| row_id == id);
            let still = row.is_some_and(|(_, row_checksum, state)| {
                row_checksum == checksum && state == "online"
            });
            if !still {
                return Ok(ReplaceOutcome::InputChanged {
                    segment_id: *id,
                    state: row.map(|(_, _, state)| state.clone()),
                });
            }
        }
        if let Some(guard) = guard {
            if let Some(sequence) = sequence_in_gap(tx.conn(), guard, &ids).await? {
                return Ok(ReplaceOutcome::SequenceGap { sequence });
            }
        }
        // Retire first: outputs may reuse an input's sequence, unique among online segments.
        // Inputs whose rows went into an output are `replaced`; the others (no valid row left)
        // are `dropped`.
        let (replaced, dropped): (Vec<i64>, Vec<i64>) = ids
            .iter()
            .partition(|id| outputs.iter().any(|(_, sources)| sources.contains(id)));
        sqlx::query(COUNT_RECLAIMED)
            .bind(&ids)
            .bind(outputs.iter().map(|(o, _)| o.row_count as i64).sum::<i64>())
            .bind(outputs.iter().map(|(o, _)| o.byte_size as i64).sum::<i64>())
            .execute(tx.conn())
            .await?;
        for (retired, state) in [(&replaced, "replaced"), (&dropped, "dropped")] {
            if retired.is_empty() {
                continue;
            }
            sqlx::query(RETIRE_INPUTS)
                .bind(retired)
                .bind(state)
                .execute(tx.conn())
                .await?;
        }
        let mut output_ids = Vec::with_capacity(outputs.len());
        for (output, sources) in outputs {
            debug_assert!(sources.iter().all(|source| ids.contains(source)));
            let id = insert_segment(tx.conn(), output).await?;
            sqlx::query(SET_LINEAGE)
                .bind(id)
                .bind(sources)
                .execute(tx.conn())
                .await?;
            sqlx::query(LINK_INPUTS)
                .bind(sources)
                .bind(id)
                .execute(tx.conn())
                .await?;
            output_ids.push(id);
        }
        if let Some(job) = follow_up {
            Queue::submit_in(tx.conn(), job)
                .await
                .map_err(|err| match err {
                    crate::queue::QueueError::Database(inner) => CatalogError::Database(inner),
                    other => CatalogError::Database(sqlx::Error::Protocol(other.to_string())),
                })?;
        }
        tx.commit().await?;
        Ok(ReplaceOutcome::Replaced {
            outputs: output_ids,
        })
    }

    /// The guard checked ahead of the swap, so a merge that would be refused does no work: a
    /// foreign sequence inside the guarded range, if any (expired reservations there are deleted
    /// first). The swap checks again; this answer only saves work.
    pub async fn sequence_gap(
        &self,
        guard: &SequenceGuard,
        inputs: &[i64],
    ) -> Result<Option<i64>, CatalogError> {
        let mut tx = self.pool.begin().await?;
        let found = sequence_in_gap(&mut tx, guard, inputs).await?;
        tx.commit().await?;
        Ok(found)
    }
}

/// Deletes expired reservations inside the guarded range (expiry takes effect only by deletion,
/// see `reservations`), then looks for a foreign sequence there.
async fn sequence_in_gap(
    conn: &mut sqlx::PgConnection,
    guard: &SequenceGuard,
    inputs: &[i64],
) -> Result<Option<i64>, CatalogError> {
    sqlx::query(EXPIRE_IN_RANGE)
        .bind(&guard.table)
        .bind(guard.partition as i32)
        .bind(guard.low)
        .bind(guard.high)
        .execute(&mut *conn)
        .await?;
    let foreign: Option<(i64,)> = sqlx::query_as(SEQUENCE_IN_GAP)
        .bind(&guard.table)
        .bind(guard.partition as i32)
        .bind(guard.low)
        .bind(guard.high)
        .bind(inputs)
        .bind(&guard.covered)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(foreign.map(|(sequence,)| sequence))
}
