//! The job queue in Postgres (DESIGN.md section 7, Queue): claim in one statement with
//! `FOR UPDATE SKIP LOCKED`, per-job leases renewed by heartbeat, every transition out of `running`
//! fenced by (id, attempt), retries with jittered exponential backoff stored in the row, unique
//! keys, delayed jobs, priorities, cancellation and pruning. The SQL is in [`sql`].

mod browse;
mod maintenance;
mod model;
pub mod sql;
mod stats;

pub use browse::{DepthSample, Failure, JobFilter, JobSummary, DEPTH_RETENTION};
pub(crate) use model::text_column_enum;
pub use model::{CancelOutcome, ClaimedJob, JobRow, JobState, NewJob, QueueError, Submitted};
pub use stats::{Depth, OldestAvailable, ProcessRole, SeenProcess};

use std::time::Duration;

use chrono::Utc;
use serde_json::Value;
use sqlx::{PgConnection, PgPool};

/// Notification channel that wakes idle workers when jobs are inserted.
pub const INSERT_CHANNEL: &str = "minion_jobs";
/// Notification channel that tells a worker to cancel a running job (payload: job id).
pub const CANCEL_CHANNEL: &str = "minion_job_cancel";

/// A handle on the queue tables. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Queue {
    pool: PgPool,
}

impl Queue {
    pub fn new(pool: PgPool) -> Queue {
        Queue { pool }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Inserts a job (or finds the unfinished job holding its unique key) and wakes workers.
    ///
    /// A job with a unique key is its own identity: when the connection fails (the answer to the
    /// commit may be lost), submitting again learns the outcome (it finds the job if the first
    /// try committed and has not finished yet; if it has, the job runs once more, which jobs
    /// with unique keys are idempotent for), so it is retried for a few seconds. Without a key a
    /// retry could submit twice, so the error is returned.
    pub async fn submit(&self, job: &NewJob) -> Result<Submitted, QueueError> {
        let mut delay = Duration::from_millis(100);
        let give_up = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            match self.submit_once(job).await {
                Err(err)
                    if job.unique_key.is_some()
                        && err.is_connection()
                        && tokio::time::Instant::now() + delay < give_up =>
                {
                    tracing::debug!(error = %err, key = ?job.unique_key, "submission failed on the connection; submitting again under its unique key");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
                result => return result,
            }
        }
    }

    async fn submit_once(&self, job: &NewJob) -> Result<Submitted, QueueError> {
        let mut tx = self.pool.begin().await?;
        let submitted = Self::submit_in(&mut tx, job).await?;
        tx.commit().await?;
        Ok(submitted)
    }

    /// Inserts a job inside the caller's transaction, so that enqueueing follow-up work commits
    /// or rolls back with the change that calls for it.
    pub async fn submit_in(conn: &mut PgConnection, job: &NewJob) -> Result<Submitted, QueueError> {
        let scheduled_at = job.scheduled_at.unwrap_or_else(Utc::now);
        let state = if job.scheduled_at.is_some_and(|at| at > Utc::now()) {
            JobState::Scheduled
        } else {
            JobState::Available
        };
        // A holder of the unique key can finish between our insert and our look-up; try again.
        for _ in 0..5 {
            let inserted: Option<(i64,)> = sqlx::query_as(sql::INSERT)
                .bind(&job.kind)
                .bind(&job.args)
                .bind(&job.queue)
                .bind(job.priority)
                .bind(state.as_str())
                .bind(job.max_attempts)
                .bind(scheduled_at)
                .bind(&job.unique_key)
                .bind(job.timeout.map(|t| t.as_secs_f64()))
                .fetch_optional(&mut *conn)
                .await?;
            if let Some((id,)) = inserted {
                sqlx::query(sql::NOTIFY_INSERT)
                    .bind(&job.queue)
                    .execute(&mut *conn)
                    .await?;
                return Ok(Submitted::New(id));
            }
            let holder: Option<(i64,)> = sqlx::query_as(sql::SELECT_UNIQUE_HOLDER)
                .bind(&job.unique_key)
                .bind(job.timeout.map(|t| t.as_secs_f64()))
                .fetch_optional(&mut *conn)
                .await?;
            if let Some((id,)) = holder {
                return Ok(Submitted::Existing(id));
            }
        }
        Err(QueueError::Database(sqlx::Error::Protocol(format!(
            "unique key `{}` kept changing hands while submitting",
            job.unique_key.as_deref().unwrap_or_default()
        ))))
    }

    /// Inserts `count` identical jobs in one statement, then wakes workers.
    pub async fn submit_bulk(
        &self,
        kind: &str,
        args: &Value,
        queue: &str,
        count: i64,
    ) -> Result<u64, QueueError> {
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query(sql::INSERT_BULK)
            .bind(kind)
            .bind(args)
            .bind(queue)
            .bind(count)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        sqlx::query(sql::NOTIFY_INSERT)
            .bind(queue)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(inserted)
    }

    /// Deletes every job of `queue` (benchmark clean-up).
    pub async fn delete_queue(&self, queue: &str) -> Result<u64, QueueError> {
        Ok(sqlx::query(sql::DELETE_QUEUE)
            .bind(queue)
            .execute(&self.pool)
            .await?
            .rows_affected())
    }

    /// Sorted pickup latencies of the completed jobs of `queue`, in milliseconds.
    pub async fn pickup_latencies_ms(&self, queue: &str) -> Result<Vec<f64>, QueueError> {
        let rows: Vec<(f64,)> = sqlx::query_as(sql::PICKUP_LATENCIES)
            .bind(queue)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(|(ms,)| ms).collect())
    }

    /// Claims up to `limit` runnable jobs of `queues` for `worker`, each with a lease of `lease`.
    pub async fn claim(
        &self,
        queues: &[String],
        limit: usize,
        worker: &str,
        lease: Duration,
    ) -> Result<Vec<ClaimedJob>, QueueError> {
        // Unnamed statement: planned with this call's values (see `sql::CLAIM`).
        let jobs = sqlx::query_as::<_, ClaimedJob>(sql::CLAIM)
            .persistent(false)
            .bind(queues)
            .bind(limit as i64)
            .bind(worker)
            .bind(millis(lease))
            .fetch_all(&self.pool)
            .await?;
        Ok(jobs)
    }

    /// Renews the leases of jobs this worker holds. Returns, for each job still held, whether
    /// cancellation was requested; a job missing from the answer was lost (rescued elsewhere).
    pub async fn heartbeat(
        &self,
        held: &[(i64, i32)],
        lease: Duration,
    ) -> Result<Vec<(i64, bool)>, QueueError> {
        if held.is_empty() {
            return Ok(Vec::new());
        }
        let (ids, attempts): (Vec<i64>, Vec<i32>) = held.iter().copied().unzip();
        let rows: Vec<(i64, bool)> = sqlx::query_as(sql::HEARTBEAT)
            .bind(&ids)
            .bind(&attempts)
            .bind(millis(lease))
            .fetch_all(&self.pool)
            .await?;
        Ok(rows)
    }

    /// Completes a batch of (id, attempt, output). Returns the ids that were still held; the
    /// others had lost their lease and their results are dropped.
    pub async fn complete_many(&self, done: &[(i64, i32, Value)]) -> Result<Vec<i64>, QueueError> {
        if done.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<i64> = done.iter().map(|d| d.0).collect();
        let attempts: Vec<i32> = done.iter().map(|d| d.1).collect();
        let outputs: Vec<Value> = done.iter().map(|d| d.2.clone()).collect();
        let rows: Vec<(i64,)> = sqlx::query_as(sql::COMPLETE_MANY)
            .bind(&ids)
            .bind(&attempts)
            .bind(&outputs)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(|(id,)| id).collect())
    }

    /// Records a failed attempt. Returns the new state, or `None` if the lease was lost.
    pub async fn fail(
        &self,
        id: i64,
        attempt: i32,
        error: &str,
        permanent: bool,
        backoff: Duration,
    ) -> Result<Option<JobState>, QueueError> {
        let row: Option<(JobState,)> = sqlx::query_as(sql::FAIL)
            .bind(id)
            .bind(attempt)
            .bind(error)
            .bind(millis(backoff))
            .bind(permanent)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|(state,)| state))
    }

    /// The state of job `id` if its attempt is still `attempt`, else `None`. After a transition
    /// whose answer was lost, this tells whether it happened: only the attempt's holder moves it
    /// out of `running` (a rescue moves it too, but to `retryable` with "lease expired" recorded).
    pub async fn attempt_state(
        &self,
        id: i64,
        attempt: i32,
    ) -> Result<Option<JobState>, QueueError> {
        let row: Option<(JobState,)> = sqlx::query_as(sql::ATTEMPT_STATE)
            .bind(id)
            .bind(attempt)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|(state,)| state))
    }

    /// Ends a running job as cancelled. Returns false if the lease was lost.
    pub async fn finish_cancelled(
        &self,
        id: i64,
        attempt: i32,
        reason: &str,
    ) -> Result<bool, QueueError> {
        let row: Option<(i64,)> = sqlx::query_as(sql::FINISH_CANCELLED)
            .bind(id)
            .bind(attempt)
            .bind(reason)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }

    /// Gives a running job back without burning its attempt. Returns false if the lease was lost.
    pub async fn release(&self, id: i64, attempt: i32) -> Result<bool, QueueError> {
        let row: Option<(i64,)> = sqlx::query_as(sql::RELEASE)
            .bind(id)
            .bind(attempt)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }

    /// Returns up to `limit` jobs whose lease expired to the queue (or discards them when out of
    /// attempts). Safe to run from every worker at once.
    pub async fn rescue_expired(
        &self,
        limit: usize,
        backoff: Duration,
    ) -> Result<Vec<(i64, JobState)>, QueueError> {
        let rows: Vec<(i64, JobState)> = sqlx::query_as(sql::RESCUE_EXPIRED)
            .bind(limit as i64)
            .bind(millis(backoff))
            .fetch_all(&self.pool)
            .await?;
        Ok(rows)
    }

    pub async fn cancel(&self, id: i64) -> Result<CancelOutcome, QueueError> {
        let mut tx = self.pool.begin().await?;
        let row: Option<(JobState,)> = sqlx::query_as(sql::CANCEL)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        let outcome = match row.map(|(state,)| state) {
            None => CancelOutcome::NotCancellable,
            Some(JobState::Running) => {
                sqlx::query(sql::NOTIFY_CANCEL)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                CancelOutcome::Requested
            }
            Some(_) => CancelOutcome::Cancelled,
        };
        tx.commit().await?;
        Ok(outcome)
    }

    /// Makes a finished (discarded, cancelled or completed) job run again. Returns false if it
    /// had not finished.
    pub async fn retry(&self, id: i64) -> Result<bool, QueueError> {
        let mut tx = self.pool.begin().await?;
        let row: Option<(i64,)> = sqlx::query_as(sql::RETRY)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        if row.is_some() {
            let (queue,): (String,) = sqlx::query_as("SELECT queue FROM jobs WHERE id = $1")
                .bind(id)
                .fetch_one(&mut *tx)
                .await?;
            sqlx::query(sql::NOTIFY_INSERT)
                .bind(queue)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(row.is_some())
    }

    /// Deletes finished jobs finalized more than `older_than` ago, `batch` rows per statement so
    /// no statement holds many locks. Returns how many were deleted.
    pub async fn prune(&self, older_than: Duration, batch: usize) -> Result<u64, QueueError> {
        let cutoff =
            Utc::now() - chrono::Duration::from_std(older_than).unwrap_or(chrono::Duration::MAX);
        let mut total = 0;
        loop {
            let deleted = sqlx::query(sql::PRUNE_BATCH)
                .bind(cutoff)
                .bind(batch.max(1) as i64)
                .execute(&self.pool)
                .await?
                .rows_affected();
            total += deleted;
            if deleted < batch.max(1) as u64 {
                return Ok(total);
            }
        }
    }

    pub async fn get(&self, id: i64) -> Result<JobRow, QueueError> {
        sqlx::query_as::<_, JobRow>(sql::SELECT_ONE)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(QueueError::NotFound(id))
    }

    pub async fn list(
        &self,
        state: Option<JobState>,
        kind: Option<&str>,
        limit: i64,
    ) -> Result<Vec<JobRow>, QueueError> {
        let rows = sqlx::query_as::<_, JobRow>(sql::SELECT_MANY)
            .bind(state.map(JobState::as_str))
            .bind(kind)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows)
    }

    pub async fn count_by_state(&self) -> Result<Vec<(JobState, i64)>, QueueError> {
        Ok(sqlx::query_as(sql::COUNT_BY_STATE)
            .fetch_all(&self.pool)
            .await?)
    }
}

/// Retry delay after `attempt` failed: `base` doubled per attempt, capped at one hour, with
/// ±25% jitter so jobs that failed together do not retry together.
pub fn backoff(base: Duration, attempt: i32) -> Duration {
    let exponent = attempt.clamp(1, 20) as u32 - 1;
    let nominal = base
        .saturating_mul(1u32 << exponent.min(20))
        .min(Duration::from_secs(3600));
    let jitter = 0.75 + rand::random::<f64>() * 0.5;
    nominal.mul_f64(jitter)
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_a_cap() {
        let base = Duration::from_secs(1);
        for attempt in 1..=5 {
            let delay = backoff(base, attempt);
            let nominal = Duration::from_secs(1 << (attempt - 1));
            assert!(
                delay >= nominal.mul_f64(0.75) && delay <= nominal.mul_f64(1.25),
                "{attempt}: {delay:?}"
            );
        }
        assert!(backoff(base, 40) <= Duration::from_secs(4500));
    }

    #[test]
    fn states_round_trip() {
        for state in JobState::ALL {
            assert_eq!(JobState::parse(state.as_str()), Some(state));
        }
    }
}
