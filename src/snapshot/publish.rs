//! Publishing a built snapshot: the manifest uploaded last, then a compare-and-swap on the
//! partition's newest version, guarded by the checksums of the segments it covers.

use std::time::Instant;

use bytes::Bytes;

use super::build::{Inputs, PrebuildOutcome, PrebuildReport};
use super::manifest::Manifest;
use crate::catalog::{Catalog, NewSnapshot, PublishOutcome, SegmentRow};
use crate::storage::{sha256_hex, Store};

/// Publishes `manifest` and completes the report.
pub(super) async fn finish(
    catalog: &Catalog,
    store: &Store,
    mut report: PrebuildReport,
    manifest: &Manifest,
    prefix: &str,
    inputs: Inputs,
    started: Instant,
) -> anyhow::Result<PrebuildReport> {
    let expected = inputs.previous.as_ref().map(|s| s.version);
    report.outcome = publish(catalog, store, manifest, prefix, &inputs.segments, expected).await?;
    if report.outcome == PrebuildOutcome::Published {
        report.version = Some(manifest.version);
        report.key_count = manifest.key_count;
        report.valid_docs = manifest.valid_docs;
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Uploads the manifest, then publishes the snapshot by compare-and-swap on the partition's
/// newest version (`expected`), guarded by the checksums of the segments it covers.
async fn publish(
    catalog: &Catalog,
    store: &Store,
    manifest: &Manifest,
    prefix: &str,
    segments: &[SegmentRow],
    expected: Option<i64>,
) -> anyhow::Result<PrebuildOutcome> {
    let manifest_bytes = serde_json::to_vec_pretty(manifest)?;
    let manifest_key = format!("{prefix}manifest.json");
    store
        .put_once(&manifest_key, Bytes::from(manifest_bytes.clone()))
        .await?;
    let new = NewSnapshot {
        table: manifest.table.clone(),
        partition: manifest.partition,
        version: manifest.version,
        manifest_key,
        manifest_checksum: sha256_hex(&manifest_bytes),
        segments: segments
            .iter()
            .map(|s| (s.id, s.checksum.clone()))
            .collect(),
        key_count: manifest.key_count as i64,
        valid_docs: manifest.valid_docs as i64,
        queryable_docs: manifest.queryable_docs as i64,
        largest_comparison: manifest.largest_comparison_f64,
        job_id: manifest.job_id,
    };
    crate::faults::pause_point("prebuild:before_publish").await;
    Ok(match catalog.publish_snapshot(&new, expected).await? {
        PublishOutcome::Published => PrebuildOutcome::Published,
        PublishOutcome::Superseded { current } => {
            tracing::info!(
                current = current.unwrap_or_default(),
                "a newer snapshot was published meanwhile; this one is dropped (its objects are garbage)"
            );
            PrebuildOutcome::Superseded
        }
        PublishOutcome::SegmentChanged { segment_id } => {
            // The partition moved on (compaction, merge): a new build starts from the new set.
            tracing::info!(
                segment_id,
                "a covered segment changed while the snapshot was built; not published"
            );
            PrebuildOutcome::SegmentChanged
        }
    })
}
