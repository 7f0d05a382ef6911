//! The queue and table gauges, sampled from the catalog by the scheduler leader only, at an
//! interval: N workers scraping themselves do not multiply catalog load, and two schedulers do
//! not both read (the follower's gauges are cleared, so a sum over processes counts once). The
//! depth is also recorded in `queue_samples`, the console's history of the last hour.

use chrono::Utc;

use crate::catalog::Catalog;
use crate::queue::{JobState, Queue};
use crate::telemetry::metrics;

/// The states `minion_queue_jobs` reports (see `queue::sql::DEPTH`).
const STATES: [JobState; 5] = [
    JobState::Available,
    JobState::Scheduled,
    JobState::Running,
    JobState::Retryable,
    JobState::Discarded,
];

/// Reads the figures and sets the gauges. Series of tables, kinds and queues that vanished are
/// dropped (the vectors are reset before they are filled); every known kind and state, and every
/// queue in `queues`, gets a series even at zero, so alerts see 0 rather than nothing.
pub async fn sample(
    catalog: &Catalog,
    queue: &Queue,
    kinds: &[&str],
    queues: &[String],
) -> anyhow::Result<()> {
    let tables = catalog.table_stats(None).await?;
    let depth = queue.depth().await?;
    let oldest = queue.oldest_available().await?;
    let m = metrics();
    clear();
    for state in STATES {
        for kind in kinds {
            m.queue_jobs
                .with_label_values(&[state.as_str(), kind])
                .set(0);
        }
    }
    for name in queues {
        m.queue_oldest_available_age
            .with_label_values(&[name.as_str()])
            .set(0.0);
    }
    for (state, kinds) in &depth.by_state {
        for (kind, count) in kinds {
            m.queue_jobs
                .with_label_values(&[state.as_str(), kind.as_str()])
                .set(*count);
        }
    }
    for waiting in &oldest {
        m.queue_oldest_available_age
            .with_label_values(&[&waiting.queue])
            .set(waiting.waiting_seconds);
    }
    for table in &tables {
        let label = [table.table.as_str()];
        m.table_online_segments
            .with_label_values(&label)
            .set(table.online_segments);
        m.table_online_rows
            .with_label_values(&label)
            .set(table.online_rows);
        m.table_online_bytes
            .with_label_values(&label)
            .set(table.online_bytes);
        m.table_snapshot_lag_segments
            .with_label_values(&label)
            .set(table.snapshot_lag_segments);
        if let Some(ratio) = table.dead_row_ratio {
            m.table_dead_row_ratio.with_label_values(&label).set(ratio);
        }
        if let Some(age) = table.snapshot_age_seconds {
            m.table_snapshot_age.with_label_values(&label).set(age);
        }
    }
    m.sample_timestamp
        .set(Utc::now().timestamp_millis() as f64 / 1000.0);
    // Kept for the console's chart of the last hour (the gauges keep only now); after the
    // gauges, so a failure here leaves them set.
    queue.record_depth(Utc::now(), &depth).await?;
    Ok(())
}

/// Drops every sampled series (a follower exports none).
pub fn clear() {
    let m = metrics();
    m.queue_jobs.reset();
    m.queue_oldest_available_age.reset();
    m.table_online_segments.reset();
    m.table_online_rows.reset();
    m.table_online_bytes.reset();
    m.table_snapshot_lag_segments.reset();
    m.table_dead_row_ratio.reset();
    m.table_snapshot_age.reset();
}
