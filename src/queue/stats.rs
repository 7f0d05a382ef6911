//! What the queue tells an operator: depth by state and kind, the oldest waiting job, unfinished
//! jobs of a table, and the processes working it (each refreshes its `workers` row with its
//! heartbeat). Read by `minion status`, the leader's metric sampler and the planner.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{sql, JobState, Queue, QueueError};

/// Jobs by state and kind (unfinished states and `discarded`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Depth {
    pub by_state: BTreeMap<JobState, BTreeMap<String, i64>>,
}

impl Depth {
    pub fn total(&self, state: JobState) -> i64 {
        self.by_state
            .get(&state)
            .map(|kinds| kinds.values().sum())
            .unwrap_or(0)
    }
}

/// The oldest runnable job of a queue.
#[derive(Debug, Clone, Serialize)]
pub struct OldestAvailable {
    pub queue: String,
    pub id: i64,
    pub kind: String,
    /// Since when it could run.
    pub runnable_since: DateTime<Utc>,
    pub waiting_seconds: f64,
}

/// What a process in the `workers` table does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProcessRole {
    Worker,
    Scheduler,
}

impl ProcessRole {
    pub fn as_str(self) -> &'static str {
        match self {
            ProcessRole::Worker => "worker",
            ProcessRole::Scheduler => "scheduler",
        }
    }

    fn from_column(text: &str) -> Result<ProcessRole, String> {
        match text {
            "worker" => Ok(ProcessRole::Worker),
            "scheduler" => Ok(ProcessRole::Scheduler),
            other => Err(format!(
                "unknown process role `{other}` in the workers table; is a newer minion writing to this catalog? Upgrade this one"
            )),
        }
    }
}

super::text_column_enum!(ProcessRole, ProcessRole::from_column);

/// A process seen recently, with the jobs it runs.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct SeenProcess {
    pub id: String,
    pub role: ProcessRole,
    pub version: String,
    pub started_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    pub concurrency: i32,
    pub queues: Vec<String>,
    pub running_jobs: Vec<i64>,
}

impl Queue {
    /// Jobs by state and kind.
    pub async fn depth(&self) -> Result<Depth, QueueError> {
        let rows: Vec<(JobState, String, i64)> =
            sqlx::query_as(sql::DEPTH).fetch_all(&self.pool).await?;
        let mut depth = Depth::default();
        for (state, kind, count) in rows {
            depth.by_state.entry(state).or_default().insert(kind, count);
        }
        Ok(depth)
    }

    /// Per queue, the runnable job that has waited longest.
    pub async fn oldest_available(&self) -> Result<Vec<OldestAvailable>, QueueError> {
        let rows: Vec<(String, i64, String, DateTime<Utc>)> = sqlx::query_as(sql::OLDEST_AVAILABLE)
            .fetch_all(&self.pool)
            .await?;
        let now = Utc::now();
        Ok(rows
            .into_iter()
            .map(|(queue, id, kind, since)| OldestAvailable {
                queue,
                id,
                kind,
                runnable_since: since,
                waiting_seconds: ((now - since).num_milliseconds().max(0) as f64) / 1000.0,
            })
            .collect())
    }

    /// Unfinished jobs of `table` among `kinds`, by kind.
    pub async fn unfinished_for_table(
        &self,
        table: &str,
        kinds: &[&str],
    ) -> Result<BTreeMap<String, i64>, QueueError> {
        let kinds: Vec<String> = kinds.iter().map(|k| k.to_string()).collect();
        let rows: Vec<(String, i64)> = sqlx::query_as(sql::UNFINISHED_FOR_TABLE)
            .bind(table)
            .bind(&kinds)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().collect())
    }

    /// Records that this process is alive (called with every heartbeat).
    pub async fn process_seen(
        &self,
        id: &str,
        role: ProcessRole,
        concurrency: usize,
        running: usize,
        queues: &[String],
    ) -> Result<(), QueueError> {
        sqlx::query(sql::WORKER_SEEN)
            .bind(id)
            .bind(role.as_str())
            .bind(env!("CARGO_PKG_VERSION"))
            .bind(concurrency as i32)
            .bind(running as i32)
            .bind(queues)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Records a clean stop, so the process leaves `minion status` at once.
    pub async fn process_stopped(&self, id: &str) -> Result<(), QueueError> {
        sqlx::query(sql::WORKER_STOPPED)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Processes seen within `within` that have not stopped.
    pub async fn processes_seen(&self, within: Duration) -> Result<Vec<SeenProcess>, QueueError> {
        Ok(sqlx::query_as::<_, SeenProcess>(sql::WORKERS_RECENT)
            .bind(within.as_secs_f64())
            .fetch_all(&self.pool)
            .await?)
    }

    /// Forgets processes not seen for `older_than`; returns how many.
    pub async fn prune_processes(&self, older_than: Duration) -> Result<u64, QueueError> {
        let cutoff =
            Utc::now() - chrono::Duration::from_std(older_than).unwrap_or(chrono::Duration::MAX);
        Ok(sqlx::query(sql::WORKERS_PRUNE)
            .bind(cutoff)
            .execute(&self.pool)
            .await?
            .rows_affected())
    }
}
