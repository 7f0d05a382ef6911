//! Sequence reservations of ingests in flight, and the registration that turns them into online
//! segments (migrations 0005 and 0006).
//!
//! A merge gives its output the largest sequence of its inputs, which is only safe while no
//! segment can still appear with a sequence inside their range (`compaction::merge`). An ingest
//! therefore reserves each segment's sequence before writing it, and the reservation blocks merges
//! across it until the ingest registers the segment or gives up.
//!
//! Reservations belong to a live ingest: each is made under a [`ReservationLease`] that the ingest
//! renews while it runs. Once the lease has run out (the ingest was killed), the next `plan`,
//! `merge` or `gc` of the table deletes it. Expiry takes effect only by that deletion, so an
//! ingest that registers races a merge on the reservation row itself: whichever deletes it first
//! wins, and a registration that finds its row gone fails cleanly, registering nothing.

use std::time::Duration;

use serde::Serialize;

use super::segments::insert_segment;
use super::{Catalog, CatalogError, NewSegment};

const NEXT_SEQUENCES: &str = "UPDATE partitions SET next_sequence = next_sequence + $3 \
     WHERE table_name = $1 AND partition_id = $2 RETURNING next_sequence - $3";
const INSERT_RESERVATIONS: &str =
    "INSERT INTO sequence_reservations (table_name, partition_id, sequence, owner, expires_at) \
     SELECT $1, $2, generate_series($3::bigint, $3::bigint + $4 - 1), $5, \
            now() + $6::float8 * interval '1 second'";
const RENEW: &str = "UPDATE sequence_reservations \
     SET expires_at = now() + $2::float8 * interval '1 second' WHERE owner = $1";
const DELETE_OWN_RESERVATION: &str = "DELETE FROM sequence_reservations \
     WHERE table_name = $1 AND partition_id = $2 AND sequence = $3 AND owner = $4";
/// Reservations whose lease ran out, or (with $2) older than $2 seconds whatever their lease.
const EXPIRE: &str = "DELETE FROM sequence_reservations WHERE table_name = $1 \
     AND (expires_at < now() \
          OR ($2::float8 IS NOT NULL AND reserved_at < now() - make_interval(secs => $2)))";
/// Expired reservations of one partition strictly inside ($3, $4): what a merge over that range
/// must delete (in its own transaction) before it may ignore them.
pub(super) const EXPIRE_IN_RANGE: &str = "DELETE FROM sequence_reservations \
     WHERE table_name = $1 AND partition_id = $2 AND sequence > $3 AND sequence < $4 \
       AND expires_at < now()";
const OUTSTANDING: &str = "SELECT sequence FROM sequence_reservations \
     WHERE table_name = $1 AND partition_id = $2 ORDER BY sequence";
const INSERT_INGEST_KEY: &str = "INSERT INTO ingest_keys \
     (table_name, idempotency_key, segment_ids, row_count, byte_size, input_fingerprint) \
     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING RETURNING 1";
const SELECT_INGEST_KEY: &str = "SELECT table_name, idempotency_key, segment_ids, row_count, \
     byte_size, registered_at, input_fingerprint FROM ingest_keys \
     WHERE table_name = $1 AND idempotency_key = $2";

/// Who holds reservations, and for how long each renewal keeps them.
#[derive(Debug, Clone)]
pub struct ReservationLease {
    pub owner: String,
    pub lease: Duration,
}

impl ReservationLease {
    /// A fresh owner name (`ingest-{pid}-{random}`, unique across hosts by its random part) with
    /// `lease`.
    pub fn new(lease: Duration) -> ReservationLease {
        ReservationLease {
            owner: format!(
                "ingest-{}-{:08x}",
                std::process::id(),
                rand::random::<u32>()
            ),
            lease,
        }
    }
}

/// An ingest registered under an idempotency key.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct IngestRegistration {
    #[sqlx(rename = "table_name")]
    pub table: String,
    pub idempotency_key: String,
    pub segment_ids: Vec<i64>,
    pub row_count: i64,
    pub byte_size: i64,
    pub registered_at: chrono::DateTime<chrono::Utc>,
    /// SHA-256 of the input registered under the key (none for keys recorded before it was).
    pub input_fingerprint: Option<String>,
}

impl Catalog {
    /// Reserves `count` consecutive sequence numbers of a partition under `lease` and returns the
    /// first. They block merges across them until registered, released, or expired.
    pub async fn reserve_sequences(
        &self,
        lease: &ReservationLease,
        table: &str,
        partition: u32,
        count: i64,
    ) -> Result<i64, CatalogError> {
        debug_assert!(count > 0);
        let mut tx = self
            .write_tx(format!(
                "reserving sequences of {table} partition {partition}"
            ))
            .await?;
        let row: Option<(i64,)> = sqlx::query_as(NEXT_SEQUENCES)
            .bind(table)
            .bind(partition as i32)
            .bind(count)
            .fetch_optional(tx.conn())
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
            .bind(&lease.owner)
            .bind(lease.lease.as_secs_f64())
            .execute(tx.conn())
            .await?;
        tx.commit().await?;
        Ok(first)
    }

    /// Extends every reservation of `lease.owner` by its lease; returns how many it holds.
    pub async fn renew_reservations(&self, lease: &ReservationLease) -> Result<u64, CatalogError> {
        Ok(sqlx::query(RENEW)
            .bind(&lease.owner)
            .bind(lease.lease.as_secs_f64())
            .execute(&self.pool)
            .await?
            .rows_affected())
    }

    /// Gives up reserved sequence numbers that will never be registered (a failed ingest).
    pub async fn release_sequences(
        &self,
        lease: &ReservationLease,
        table: &str,
        reserved: &[(u32, i64)],
    ) -> Result<(), CatalogError> {
        for &(partition, sequence) in reserved {
            sqlx::query(DELETE_OWN_RESERVATION)
                .bind(table)
                .bind(partition as i32)
                .bind(sequence)
                .bind(&lease.owner)
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    /// Deletes the table's reservations whose lease ran out (their ingest is gone), and with
    /// `max_age_seconds` any older than that however alive; returns how many.
    pub async fn expire_reservations(
        &self,
        table: &str,
        max_age_seconds: Option<f64>,
    ) -> Result<u64, CatalogError> {
        let done = sqlx::query(EXPIRE)
            .bind(table)
            .bind(max_age_seconds)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    /// Sequences of a partition reserved by ingests still in flight (expired ones may be listed
    /// until someone deletes them: callers that want them gone call `expire_reservations` first).
    pub async fn outstanding_reservations(
        &self,
        table: &str,
        partition: u32,
    ) -> Result<Vec<i64>, CatalogError> {
        let rows: Vec<(i64,)> = sqlx::query_as(OUTSTANDING)
            .bind(table)
            .bind(partition as i32)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(|(sequence,)| sequence).collect())
    }

    /// Registers all segments online in one transaction: either every one is visible or none.
    /// Each segment's sequence must still be reserved by `lease.owner`: a reservation that expired
    /// and was deleted may have let a merge span it, so the registration is refused. With an
    /// idempotency key (and the input's fingerprint), the key is recorded in the same transaction;
    /// if it is already recorded,
    /// nothing is registered ([`CatalogError::AlreadyRegistered`]).
    ///
    /// [`CatalogError::OutcomeUnknown`] means the commit's answer was lost and could not be
    /// learned: the segments may be registered. Every other error means they are not.
    pub async fn register_segments(
        &self,
        lease: &ReservationLease,
        segments: &[NewSegment],
        idempotency_key: Option<(&str, Option<&str>)>,
    ) -> Result<Vec<i64>, CatalogError> {
        let what = format!("registering {} segment(s)", segments.len());
        let mut tx = self.write_tx(what).await?;
        let mut ids = Vec::with_capacity(segments.len());
        for segment in segments {
            let released = sqlx::query(DELETE_OWN_RESERVATION)
                .bind(&segment.table)
                .bind(segment.partition as i32)
                .bind(segment.sequence)
                .bind(&lease.owner)
                .execute(tx.conn())
                .await?;
            if released.rows_affected() != 1 {
                return Err(CatalogError::ReservationExpired {
                    table: segment.table.clone(),
                    partition: segment.partition,
                    sequence: segment.sequence,
                });
            }
            ids.push(insert_segment(tx.conn(), segment).await?);
        }
        if let (Some((key, fingerprint)), Some(first)) = (idempotency_key, segments.first()) {
            let recorded: Option<(i32,)> = sqlx::query_as(INSERT_INGEST_KEY)
                .bind(&first.table)
                .bind(key)
                .bind(&ids)
                .bind(segments.iter().map(|s| s.row_count as i64).sum::<i64>())
                .bind(segments.iter().map(|s| s.byte_size as i64).sum::<i64>())
                .bind(fingerprint)
                .fetch_optional(tx.conn())
                .await?;
            if recorded.is_none() {
                return Err(CatalogError::AlreadyRegistered {
                    table: first.table.clone(),
                    key: key.to_string(),
                });
            }
        }
        tx.commit().await?;
        Ok(ids)
    }

    /// The ingest registered under `key`, if any.
    pub async fn ingest_registration(
        &self,
        table: &str,
        key: &str,
    ) -> Result<Option<IngestRegistration>, CatalogError> {
        Ok(sqlx::query_as(SELECT_INGEST_KEY)
            .bind(table)
            .bind(key)
            .fetch_optional(&self.pool)
            .await?)
    }
}
