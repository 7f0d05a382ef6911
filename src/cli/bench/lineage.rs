//! The scenario of issue 14 in `minion bench prebuild --compact-fraction F`: after the prebuild,
//! compact a share of the segments and merge a few more, then measure a restart before the
//! follow-up prebuild (the snapshot mapped through lineage, against the slow path in the same
//! run) and the follow-up prebuild itself (against the from-scratch prebuild of the same run).

use crate::binding::Access;
use std::time::Instant;

use anyhow::Context as _;
use serde_json::{json, Value};

use super::prebuild::prebuild_child;
use crate::catalog::SegmentState;
use crate::cli::Context;
use crate::compaction::{compact, merge};
use crate::loader::{bootstrap, BootstrapOptions, BootstrapReport};
use crate::snapshot::read::load_manifest;

pub(super) struct Scenario {
    pub compact_fraction: f64,
    pub merge_segments: usize,
    pub skip_slow_path: bool,
    pub from_scratch_prebuild_seconds: f64,
}

pub(super) async fn after_compaction(
    context: &Context,
    table: &str,
    scenario: &Scenario,
) -> anyhow::Result<Value> {
    let catalog = context.catalog().await?;
    let services = context.services().await?;
    let online = catalog
        .segments(table, Some(0), Some(SegmentState::Online))
        .await?;
    let to_compact = ((online.len() as f64 * scenario.compact_fraction).round() as usize).max(1);
    anyhow::ensure!(
        online.len() >= to_compact + scenario.merge_segments.max(2),
        "{} segments are too few to compact {to_compact} and merge {}; ingest more",
        online.len(),
        scenario.merge_segments
    );
    let started = Instant::now();
    let mut outputs = 0;
    for segment in &online[..to_compact] {
        let report = compact(&services, table, segment.id, None, &Default::default()).await?;
        anyhow::ensure!(report.outcome.swapped(), "compact: {}", report.outcome);
        outputs += usize::from(report.new_segment_id.is_some());
    }
    let merged: Vec<i64> = online[to_compact..to_compact + scenario.merge_segments]
        .iter()
        .map(|s| s.id)
        .collect();
    let report = merge(&services, table, 0, &merged, None, &Default::default()).await?;
    anyhow::ensure!(report.outcome.swapped(), "merge: {}", report.outcome);
    outputs += report.new_segment_ids.len();
    let compaction_seconds = started.elapsed().as_secs_f64();
    println!(
        "compacted {to_compact} and merged {} segments into {outputs} outputs in {compaction_seconds:.1}s",
        merged.len()
    );

    // A restart before the follow-up prebuild: mapped through lineage, and the slow path.
    let work = tempfile::Builder::new()
        .prefix("minion-bench-lineage-")
        .tempdir_in(&context.settings.staging_dir)?;
    let store = context.store(Access::Write).await?;
    let load = |use_snapshot: bool, dir: &'static str| {
        let options = BootstrapOptions {
            use_snapshot,
            use_lineage: true,
            sst_format_version: context.settings.prebuild.sst_format_version,
            staging_dir: context.settings.staging_dir.clone(),
        };
        let (store, dir) = (store.clone(), work.path().join(dir));
        async move {
            let loaded = bootstrap(catalog, &store, table, 0, &dir, &options).await?;
            anyhow::Ok(loaded.report)
        }
    };
    let mapped: BootstrapReport = load(true, "mapped").await?;
    anyhow::ensure!(
        mapped.mapped_segments == outputs && mapped.uncovered_segments == 0,
        "expected every output mapped through lineage: {mapped:?}"
    );
    let slow_seconds = if scenario.skip_slow_path {
        f64::NAN
    } else {
        let slow = load(false, "slow").await?;
        same_load("the slow path", &slow, &mapped)?;
        slow.seconds
    };

    // The follow-up prebuild, in a child process like the from-scratch one.
    let (follow_up_seconds, follow_up_rss_kib) = prebuild_child(context, table).await?;
    let newest = catalog
        .latest_snapshot(table, 0)
        .await?
        .context("the follow-up prebuild published no snapshot")?;
    let manifest = load_manifest(&store, &newest).await?;
    let moved_keys: u64 = manifest
        .key_files
        .iter()
        .filter(|f| f.layer + 1 == manifest.key_layers())
        .map(|f| f.entries)
        .sum();
    // And a restart after it, from the layered snapshot.
    let layered = load(true, "layered").await?;
    same_load("the layered snapshot", &layered, &mapped)?;
    println!(
        "follow-up prebuild: {} key layers, {moved_keys} entries in the top one, in {follow_up_seconds:.2}s",
        manifest.key_layers()
    );
    Ok(json!({
        "compacted_segments": to_compact,
        "merged_segments": merged.len(),
        "outputs": outputs,
        "compaction_seconds": compaction_seconds,
        "bootstrap_mapped_seconds": mapped.seconds,
        "bootstrap_slow_path_seconds": slow_seconds,
        "bootstrap_mapped_speedup": slow_seconds / mapped.seconds,
        "follow_up_prebuild_seconds": follow_up_seconds,
        "follow_up_prebuild_peak_rss_mib": follow_up_rss_kib as f64 / 1024.0,
        "from_scratch_prebuild_seconds": scenario.from_scratch_prebuild_seconds,
        "follow_up_prebuild_speedup": scenario.from_scratch_prebuild_seconds / follow_up_seconds,
        "follow_up_key_layers": manifest.key_layers(),
        "follow_up_top_layer_entries": moved_keys,
        "bootstrap_layered_seconds": layered.seconds,
    }))
}

/// `load` found as many keys and valid docs as the mapped load.
fn same_load(what: &str, load: &BootstrapReport, mapped: &BootstrapReport) -> anyhow::Result<()> {
    anyhow::ensure!(
        load.keys == mapped.keys && load.valid_docs == mapped.valid_docs,
        "{what} loads {} keys and {} valid docs, the mapped load {} and {}",
        load.keys,
        load.valid_docs,
        mapped.keys,
        mapped.valid_docs
    );
    Ok(())
}
