//! What the operator console reads from the queue: pages of jobs under a filter, the recent
//! failures, the depth history the scheduler leader records, and the prebuild reports a table's
//! history is drawn from. Each read is bounded (a page, a limit, a time window) and walks an
//! index, so the console stays fast on a catalog with many jobs.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use super::{sql, Depth, JobState, Queue, QueueError};

/// How long depth samples are kept.
pub const DEPTH_RETENTION: Duration = Duration::from_secs(24 * 3600);

/// Which jobs a list shows; every field narrows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobFilter {
    pub state: Option<JobState>,
    pub kind: Option<String>,
    pub table: Option<String>,
}

/// A job as a list shows it (no arguments, errors or output: the job page has them).
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct JobSummary {
    pub id: i64,
    pub kind: String,
    pub queue: String,
    pub state: JobState,
    pub attempt: i32,
    pub max_attempts: i32,
    pub table_name: Option<String>,
    pub scheduled_at: DateTime<Utc>,
    pub attempted_at: Option<DateTime<Utc>>,
    pub attempted_by: Option<String>,
    pub finalized_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub error_count: i32,
}

/// A retryable or discarded job and its last error.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Failure {
    pub id: i64,
    pub kind: String,
    pub state: JobState,
    pub attempt: i32,
    pub table_name: Option<String>,
    pub failed_at: DateTime<Utc>,
    pub last_error: Option<String>,
}

/// Queue depth per state at one sample.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DepthSample {
    pub at: DateTime<Utc>,
    pub by_state: BTreeMap<JobState, i64>,
}

impl Queue {
    /// Up to `limit` jobs matching `filter` with ids below `before` (all when `None`), newest
    /// first.
    pub async fn job_page(
        &self,
        filter: &JobFilter,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<JobSummary>, QueueError> {
        Ok(sqlx::query_as::<_, JobSummary>(sql::JOB_PAGE)
            .bind(filter.state.map(JobState::as_str))
            .bind(filter.kind.as_deref())
            .bind(filter.table.as_deref())
            .bind(before)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?)
    }

    /// The `limit` most recent failures (retryable and discarded jobs).
    pub async fn recent_failures(&self, limit: i64) -> Result<Vec<Failure>, QueueError> {
        Ok(sqlx::query_as::<_, Failure>(sql::RECENT_FAILURES)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?)
    }

    /// Keeps `depth`, taken at `at`, for the console's history. Once the oldest sample is an
    /// hour past [`DEPTH_RETENTION`], forgets everything older than that and vacuums the table,
    /// so it stays small without autovacuum (pruning in hourly batches keeps vacuums rare).
    /// Called by the scheduler leader with each gauge sample.
    pub async fn record_depth(&self, at: DateTime<Utc>, depth: &Depth) -> Result<(), QueueError> {
        let mut states = Vec::new();
        let mut kinds = Vec::new();
        let mut counts = Vec::new();
        for (state, by_kind) in &depth.by_state {
            for (kind, count) in by_kind {
                states.push(state.as_str());
                kinds.push(kind.as_str());
                counts.push(*count);
            }
        }
        if states.is_empty() {
            // An empty queue still makes a sample (a zero, not a gap in the chart).
            states.push(JobState::Available.as_str());
            kinds.push("");
            counts.push(0);
        }
        sqlx::query(sql::RECORD_DEPTH)
            .bind(at)
            .bind(&states)
            .bind(&kinds)
            .bind(&counts)
            .execute(&self.pool)
            .await?;
        let cutoff = at - chrono::Duration::from_std(DEPTH_RETENTION).expect("a day fits");
        let (oldest,): (Option<DateTime<Utc>>,) = sqlx::query_as(sql::OLDEST_DEPTH)
            .fetch_one(&self.pool)
            .await?;
        if oldest.is_some_and(|oldest| oldest < cutoff - chrono::Duration::hours(1)) {
            sqlx::query(sql::PRUNE_DEPTH)
                .bind(cutoff)
                .execute(&self.pool)
                .await?;
            // Simple-query protocol: VACUUM refuses to run inside a transaction block.
            sqlx::raw_sql(sql::VACUUM_DEPTH).execute(&self.pool).await?;
        }
        Ok(())
    }

    /// The depth samples taken since `since`, oldest first, summed over kinds. A state missing
    /// from a sample had no jobs then.
    pub async fn depth_history(
        &self,
        since: DateTime<Utc>,
    ) -> Result<Vec<DepthSample>, QueueError> {
        let rows: Vec<(DateTime<Utc>, JobState, i64)> = sqlx::query_as(sql::DEPTH_HISTORY)
            .bind(since)
            .fetch_all(&self.pool)
            .await?;
        let mut samples: Vec<DepthSample> = Vec::new();
        for (at, state, jobs) in rows {
            if samples.last().is_none_or(|s| s.at != at) {
                samples.push(DepthSample {
                    at,
                    by_state: BTreeMap::new(),
                });
            }
            samples
                .last_mut()
                .expect("pushed above")
                .by_state
                .insert(state, jobs);
        }
        Ok(samples)
    }

    /// The outputs of the `limit` newest completed prebuilds of `table`, newest first.
    pub async fn prebuild_reports(
        &self,
        table: &str,
        limit: i64,
    ) -> Result<Vec<(DateTime<Utc>, Value)>, QueueError> {
        Ok(sqlx::query_as(sql::PREBUILD_REPORTS)
            .bind(table)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?)
    }
}
