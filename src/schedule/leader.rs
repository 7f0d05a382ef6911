//! Leader election for the scheduler, River's design in one small file: a lease row taken by
//! `INSERT ... ON CONFLICT` when free or expired, renewed well before it ends, given up on
//! shutdown so another instance takes over at once. Expiry is in the database's clock.
//!
//! A leader that cannot renew steps down on its own clock before the lease can have ended in the
//! database's: the local deadline counts from the moment the election or renewal was *sent*, and
//! keeps a fifth of the lease in reserve. Submissions are also guarded per tick
//! (`schedule_runs`), so even two leaders could not submit one tick twice.

use std::time::Duration;

use sqlx::PgPool;
use tokio::time::Instant;

use super::sql;

/// The one lease every scheduler of a catalog competes for.
pub const LEASE_NAME: &str = "scheduler";

pub struct LeaderLease {
    pool: PgPool,
    id: String,
    lease: Duration,
    /// While leading: until when, on our clock, we may act as leader.
    valid_until: Option<Instant>,
}

impl LeaderLease {
    pub fn new(pool: PgPool, id: String, lease: Duration) -> LeaderLease {
        LeaderLease {
            pool,
            id,
            lease,
            valid_until: None,
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Whether we lead now (a lease we could not renew in time counts as lost).
    pub fn is_leader(&self) -> bool {
        self.valid_until.is_some_and(|until| Instant::now() < until)
    }

    /// Takes the lease if it is free or expired, or extends it if it is ours. Returns whether we
    /// lead. A database error leaves the local deadline as it was (it runs out on its own).
    pub async fn acquire_or_renew(&mut self) -> Result<bool, sqlx::Error> {
        let sent = Instant::now();
        let millis = self.lease.as_millis() as i64;
        let statement = if self.valid_until.is_some() {
            sql::RENEW
        } else {
            sql::ELECT
        };
        let row: Option<(String,)> = sqlx::query_as(statement)
            .bind(LEASE_NAME)
            .bind(&self.id)
            .bind(millis)
            .fetch_optional(&self.pool)
            .await?;
        self.valid_until = row.map(|_| sent + self.lease - self.lease / 5);
        Ok(self.valid_until.is_some())
    }

    /// How often to renew: a third of the lease, so two renewals can fail before it runs out.
    pub fn renew_interval(&self) -> Duration {
        self.lease / 3
    }

    /// Gives the lease up (on shutdown). Best effort: an unreleased lease expires by itself.
    pub async fn resign(&mut self) {
        if self.valid_until.take().is_none() {
            return;
        }
        if let Err(err) = sqlx::query(sql::RESIGN)
            .bind(LEASE_NAME)
            .bind(&self.id)
            .execute(&self.pool)
            .await
        {
            tracing::warn!(error = %err, "could not resign the scheduler lease; it expires by itself");
        }
    }
}
