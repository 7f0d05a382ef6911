//! `gc` (DESIGN.md section 7, issue 5): deletes the objects of retired segments and superseded
//! snapshots once no retained snapshot refers to them and their grace period has passed, then
//! their catalog rows; then sweeps objects under the table's prefix that no catalog row knows and
//! that are older than the grace period (uploads of crashed or losing jobs).
//!
//! Retained snapshots: each partition's latest, plus every snapshot younger than the grace period
//! (a reader may have pinned it). The grace period must be longer than the longest time between a
//! job's upload and its catalog registration (job leases and timeouts), or the sweep could delete
//! an object an in-flight job is about to register.

use std::collections::HashSet;
use std::time::Duration;

use chrono::Utc;
use serde::Serialize;

use crate::catalog::Catalog;
use crate::storage::{layout, Store};

#[derive(Debug, Clone, Serialize, Default)]
pub struct GcReport {
    pub table: String,
    pub segments_collected: u64,
    pub snapshots_collected: u64,
    pub orphans_deleted: u64,
    pub objects_deleted: u64,
    /// Bytes of the objects deleted (segment key runs are counted as objects, not bytes).
    pub bytes_deleted: u64,
    /// Unknown objects younger than the grace period, left for a later run.
    pub orphans_too_young: u64,
    /// Sequence reservations of ingests that are gone (lease run out) or older than the
    /// reservation TTL, now deleted.
    pub reservations_expired: u64,
}

/// Collects `table_name`'s garbage. Takes exactly what it touches: the catalog and the store.
pub async fn gc(
    catalog: &Catalog,
    store: &Store,
    table_name: &str,
    grace: Duration,
    reservation_ttl: Duration,
) -> anyhow::Result<GcReport> {
    catalog.table(table_name).await?;
    let cutoff = Utc::now() - chrono::Duration::from_std(grace)?;
    let mut report = GcReport {
        table: table_name.to_string(),
        ..GcReport::default()
    };

    report.reservations_expired = catalog
        .expire_reservations(table_name, Some(reservation_ttl.as_secs_f64()))
        .await?;
    let (retained, superseded) = catalog.snapshots_by_retention(table_name, cutoff).await?;
    let covered: HashSet<i64> = retained
        .iter()
        .flat_map(|s| s.segment_ids.iter().copied())
        .collect();
    for snapshot in &superseded {
        let prefix = snapshot_dir(&snapshot.manifest_key);
        let (objects, bytes) = delete_prefix(store, &prefix).await?;
        report.objects_deleted += objects;
        report.bytes_deleted += bytes;
        crate::faults::pause_point("gc:after_snapshot_objects").await;
        if catalog
            .delete_snapshot(table_name, snapshot.partition, snapshot.version)
            .await?
        {
            report.snapshots_collected += 1;
        }
    }
    for segment in catalog.retired_segments(table_name, cutoff).await? {
        if covered.contains(&segment.id) {
            continue;
        }
        let run = layout::keyrun_key(table_name, segment.partition as u32, &segment.name);
        store.delete(&segment.object_key).await?;
        store.delete(&run).await?;
        report.objects_deleted += 2;
        report.bytes_deleted += segment.byte_size as u64;
        crate::faults::pause_point("gc:after_segment_objects").await;
        if catalog.delete_retired_segment(segment.id).await? {
            report.segments_collected += 1;
        }
    }

    // The sweep: everything the catalog (as of now) does not know, past the grace period.
    let mut known: HashSet<String> = HashSet::new();
    for (name, object_key, partition) in catalog.segment_keys(table_name).await? {
        known.insert(object_key);
        known.insert(layout::keyrun_key(table_name, partition as u32, &name));
    }
    let (retained_now, superseded_now) = catalog.snapshots_by_retention(table_name, cutoff).await?;
    let snapshot_dirs: Vec<String> = retained_now
        .iter()
        .chain(superseded_now.iter())
        .map(|s| snapshot_dir(&s.manifest_key))
        .collect();
    for object in store.list(&layout::table_prefix(table_name)).await? {
        let key = object.location.to_string();
        if known.contains(&key)
            || snapshot_dirs
                .iter()
                .any(|dir| key.starts_with(dir.as_str()))
        {
            continue;
        }
        if object.last_modified >= cutoff {
            report.orphans_too_young += 1;
            continue;
        }
        store.delete(&key).await?;
        report.orphans_deleted += 1;
        report.objects_deleted += 1;
        report.bytes_deleted += object.size;
    }
    Ok(report)
}

/// The directory of a snapshot, from its manifest key (`.../snapshots/{dir}/manifest.json`).
fn snapshot_dir(manifest_key: &str) -> String {
    match manifest_key.rsplit_once('/') {
        Some((dir, _)) => format!("{dir}/"),
        None => manifest_key.to_string(),
    }
}

/// Deletes every object under `prefix`; returns how many and their bytes.
async fn delete_prefix(store: &Store, prefix: &str) -> anyhow::Result<(u64, u64)> {
    let objects = store.list(prefix).await?;
    let mut bytes = 0;
    for object in &objects {
        store.delete(object.location.as_ref()).await?;
        bytes += object.size;
    }
    Ok((objects.len() as u64, bytes))
}
