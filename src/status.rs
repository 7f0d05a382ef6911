//! `minion status`: the one screen an operator reads first. Which processes are alive and what
//! they run, who leads the schedulers, the queue by state and kind, the job waiting longest, and
//! per table the dead-row ratio, the snapshot lag and what the next `plan` would do.
//!
//! Everything is read from the catalog; nothing is changed (the plan is a preview: it releases no
//! reservation and submits nothing).

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::catalog::TableStats;
use crate::compaction::SkipReason;
use crate::job::Services;
use crate::queue::{Depth, OldestAvailable, SeenProcess};
use crate::schedule::Leader;
use crate::table::CompactionOverrides;

/// Processes whose row is older than this are not shown (their heartbeat stopped).
pub const SEEN_WITHIN: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    pub at: DateTime<Utc>,
    pub processes: Vec<SeenProcess>,
    pub leader: Option<Leader>,
    pub queue: Depth,
    pub oldest_available: Vec<OldestAvailable>,
    pub tables: Vec<TableStatus>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TableStatus {
    #[serde(flatten)]
    pub stats: TableStats,
    pub next_plan: PlanPreview,
}

/// What `plan` would submit now.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PlanPreview {
    pub prebuild_partitions: Vec<u32>,
    pub merge_groups: usize,
    pub merge_segments: usize,
    pub compact_segments: usize,
    pub unfinished: BTreeMap<String, i64>,
    pub skipped: BTreeMap<SkipReason, u64>,
    /// Why no preview could be made (e.g. a snapshot that cannot be read).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

pub async fn gather(services: &Services) -> anyhow::Result<StatusReport> {
    let queue = &services.queue;
    let processes = queue.processes_seen(SEEN_WITHIN).await?;
    let leader = crate::schedule::leader(services.catalog.pool()).await?;
    let depth = queue.depth().await?;
    let oldest_available = queue.oldest_available().await?;
    let mut tables = Vec::new();
    for stats in services.catalog.table_stats(None).await? {
        let next_plan = preview(services, &stats.table).await;
        tables.push(TableStatus { stats, next_plan });
    }
    Ok(StatusReport {
        at: Utc::now(),
        processes,
        leader,
        queue: depth,
        oldest_available,
        tables,
    })
}

/// What `plan` would submit for `table` now, with the table's own settings (a preview: nothing
/// is submitted or released).
pub async fn preview(services: &Services, table: &str) -> PlanPreview {
    match crate::compaction::plan(services, table, &CompactionOverrides::default()).await {
        Ok(plan) => PlanPreview {
            prebuild_partitions: plan.prebuild,
            merge_groups: plan.merge.len(),
            merge_segments: plan.merge.iter().map(|g| g.segments.len()).sum(),
            compact_segments: plan.compact.len(),
            unfinished: plan.unfinished,
            skipped: plan.skipped,
            error: None,
        },
        Err(err) => PlanPreview {
            error: Some(format!("{err:#}")),
            ..PlanPreview::default()
        },
    }
}
