//! The queue keeps its own table lean instead of relying on autovacuum (which some servers run
//! off, and which lags a fast queue): every finished job leaves a dead tuple version behind, and
//! dead entries in `jobs_claim_idx` make each claim walk past them. Workers check the dead-tuple
//! count at their rescue interval; past a threshold, one of them (a session advisory lock picks
//! it) runs `VACUUM (ANALYZE, INDEX_CLEANUP ON, TRUNCATE OFF) jobs`, which does not block claims
//! or completions; past the same count of changed rows, `ANALYZE jobs`, so the planner knows each
//! queue's backlog (the claim's plan depends on it).

use super::{sql, Queue, QueueError};

/// Advisory lock key of the queue's vacuum (any constant unique to this purpose).
const VACUUM_LOCK: i64 = 0x6d69_6e69_6f6e_7661; // "minionva"

impl Queue {
    /// Vacuums `jobs` when it holds at least `min_dead` dead tuples (or analyzes it when that
    /// many rows changed since its last statistics) and no other process is doing so for the
    /// queue; returns the dead tuples and changed rows it found when it acted.
    pub async fn vacuum_if_bloated(&self, min_dead: i64) -> Result<Option<(i64, i64)>, QueueError> {
        let mut conn = self.pool.acquire().await?;
        let (dead, changed): (i64, i64) = sqlx::query_as(sql::DEAD_TUPLES)
            .fetch_one(&mut *conn)
            .await?;
        let statement = if dead >= min_dead {
            sql::VACUUM
        } else if changed >= min_dead {
            sql::ANALYZE
        } else {
            return Ok(None);
        };
        let (locked,): (bool,) = sqlx::query_as("SELECT pg_try_advisory_lock($1)")
            .bind(VACUUM_LOCK)
            .fetch_one(&mut *conn)
            .await?;
        if !locked {
            return Ok(None);
        }
        // Simple-query protocol: VACUUM refuses to run inside a transaction block. On another
        // connection of the pool; the lock stays with this one.
        let vacuumed = sqlx::raw_sql(statement).execute(&self.pool).await;
        let unlocked = sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(VACUUM_LOCK)
            .execute(&mut *conn)
            .await;
        vacuumed?;
        unlocked?;
        Ok(Some((dead, changed)))
    }
}
