//! Layered follow-up prebuilds (issue 14): when compaction or merge replaced covered segments
//! and nothing else changed, the new snapshot is the previous one carried through the lineage.
//!
//! Which key-metadata entries change is known (`lineage`): exactly the winners that lay in the
//! replaced inputs, which are now the rows of the mapped outputs (all valid), listed with their
//! output docIds by the outputs' key runs. So the new snapshot keeps the previous snapshot's SST
//! files as they are, copied inside the store (a hard link on a local directory, a server-side
//! copy on S3), and adds one layer with the outputs' entries. A loader ingests the layers in
//! order, so those entries replace the stale ones below with the same key. The bitmaps are the
//! previous ones, moved onto the outputs. The cost is that of the keys that moved, not of the
//! partition.
//!
//! Exact by the same argument as a restart before the follow-up (`loader::keys`, which the
//! property tests hold equal to the slow path), made once and published; `verify` compares the
//! result with a from-scratch rebuild like any other snapshot. Nothing changes but locations:
//! no key is added or dropped and no comparison value is new, so the counts, the largest
//! comparison and the TTL watermarks carry over.
//!
//! Otherwise the prebuild builds from the runs (`build`), and its report says why:
//! - an online segment the snapshot does not cover that is not a mapped output (a new ingest, a
//!   replacement not proven), or a covered segment gone without one;
//! - the snapshot was built with other settings (key hash, comparison, SST format, TTLs), or
//!   before cold key sets, with keys out of key metadata and nothing holding them;
//! - the table has `deleted_keys_ttl` and the snapshot keeps tombstones past it beside older rows
//!   of their keys (`expired_tombstones_kept`): such a tombstone is forgotten once it is its key's
//!   only row, and compaction dropping those rows can make that true for keys that did not move.
//!   With none kept, no key's fate changes: winners, lone tombstones (already forgotten) and the
//!   cutoff (from the largest comparison) stay as they were;
//! - one more layer would pass `max_key_layers` ([`MAX_KEY_LAYERS`] by default), or the files
//!   would hold more than twice the keys (entries shadowed by higher layers): the full build
//!   compacts them away;
//! - an output has no key run in the store.

use std::collections::HashMap;
use std::path::Path;

use futures::{StreamExt, TryStreamExt};

use super::build::{key_folder, upload_bitmap, upload_key_files, PrebuildOptions};
use super::keyrun::{MergedRuns, RunEntry};
use super::lineage::LineagePlan;
use super::manifest::{FileEntry, KeyFile, Manifest, ManifestSegment};
use super::read::{load_bitmap, load_manifest, SegmentBitmaps};
use super::record::{ComparisonKind, KeyRecord, KeySet};
use super::runs::StoredRun;
use super::sst::{sst_options, KeySetFiles, SetSplitters, SstFile};
use crate::catalog::{SegmentRow, SnapshotRow};
use crate::storage::Store;
use crate::table::TableConfig;

/// Most key-metadata layers a snapshot may have by default (`[prebuild] max_key_layers`); the
/// follow-up of a snapshot with that many builds in full.
pub const MAX_KEY_LAYERS: u32 = 4;

/// Objects copied or uploaded at once.
const AT_ONCE: usize = 8;

/// A layered snapshot, written under its prefix except for the manifest.
pub(super) struct Layered {
    pub manifest: Manifest,
    pub moved_keys: u64,
    /// Seconds fetching the outputs' key runs and writing the new layer.
    pub runs_seconds: f64,
    pub layer_seconds: f64,
}

/// Where the new snapshot goes.
pub(super) struct Target<'a> {
    pub prefix: &'a str,
    pub version: i64,
    pub job_id: Option<i64>,
    pub workdir: &'a Path,
}

/// Builds the layered follow-up of `previous` for the partition's online `segments`, or says
/// why it does not apply (`Ok(Err(reason))`: build in full).
pub(super) async fn follow_up(
    store: &Store,
    table: &TableConfig,
    previous: &SnapshotRow,
    segments: &[SegmentRow],
    target: Target<'_>,
    options: &PrebuildOptions,
) -> anyhow::Result<Result<Layered, String>> {
    let manifest = match load_manifest(store, previous).await {
        Ok(manifest) => manifest,
        Err(err) => {
            return Ok(Err(format!(
                "snapshot {} unreadable: {err}",
                previous.version
            )))
        }
    };
    let plan = match applies(&manifest, table, segments, options) {
        Ok(plan) => plan,
        Err(reason) => return Ok(Err(reason)),
    };
    let started = std::time::Instant::now();
    let place = (table.name.as_str(), manifest.partition);
    let outputs = segments
        .iter()
        .filter(|s| plan.mapped_outputs.contains(&s.id))
        .map(|s| (s.id, s.name.clone(), s.checksum.clone()));
    let runs = match StoredRun::fetch_all(store, place, outputs, target.workdir).await? {
        Ok(runs) => runs,
        Err(missing) => return Ok(Err(format!("output {missing} has no key run"))),
    };
    let stored: u64 = (manifest.key_files.iter())
        .chain(&manifest.cold_key_files)
        .map(|f| f.entries)
        .sum();
    let moving = runs.iter().try_fold(0u64, |sum, run| {
        anyhow::Ok(sum + run.open()?.header.entries)
    })?;
    // Hot and cold keys alike: every live key is in one of the two sets.
    if stored + moving > 2 * manifest.live_keys.max(1) {
        return Ok(Err(format!(
            "its files would hold {} entries for {} keys (more than twice: entries shadowed by higher layers)",
            stored + moving,
            manifest.live_keys
        )));
    }
    let runs_seconds = started.elapsed().as_secs_f64();

    let started = std::time::Instant::now();
    let (kind, watermark, dir) = (
        manifest.comparison_kind,
        manifest.metadata_watermark,
        target.workdir.to_path_buf(),
    );
    let (format_version, max_entries) = (options.sst_format_version, options.sst_max_entries);
    let (files, moved_keys) = tokio::task::spawn_blocking(move || {
        let sst = sst_options(format_version);
        let mut splitter = SetSplitters::new(&sst, &dir, "layer", max_entries);
        let moved = for_each_moved(&runs, kind, watermark, |set, key, record| {
            splitter.put(set, key, &record)
        })?;
        anyhow::Ok((splitter.finish()?, moved))
    })
    .await??;
    let (key_files, cold_key_files) = key_files(store, &manifest, files, target.prefix).await?;
    let segments = segment_entries(store, &manifest, &plan, segments, target.prefix).await?;
    let manifest = Manifest {
        format: Manifest::format_for(&key_files, &cold_key_files),
        version: target.version,
        created_at: chrono::Utc::now(),
        job_id: target.job_id,
        valid_docs: segments.iter().map(|s| s.valid_docs).sum(),
        queryable_docs: segments.iter().map(|s| s.queryable_docs).sum(),
        segments,
        key_files,
        cold_key_files,
        ..manifest
    };
    Ok(Ok(Layered {
        manifest,
        moved_keys,
        runs_seconds,
        layer_seconds: started.elapsed().as_secs_f64(),
    }))
}

/// The lineage plan, if a layered follow-up of `manifest` gives exactly the snapshot of
/// `segments`; otherwise why not.
fn applies(
    manifest: &Manifest,
    table: &TableConfig,
    segments: &[SegmentRow],
    options: &PrebuildOptions,
) -> Result<LineagePlan, String> {
    let version = manifest.version;
    if manifest.primary_key_hash != table.primary_key_hash
        || manifest.comparison_kind != ComparisonKind::of_table(table)
        || manifest.deleted_keys_ttl != table.ttl.deleted_keys_ttl
        || manifest.metadata_ttl != table.ttl.metadata_ttl
    {
        return Err(format!(
            "the table's key hash, comparison or TTLs changed since snapshot {version}"
        ));
    }
    if let Some(why) = manifest.missing_cold_keys() {
        return Err(why);
    }
    if table.ttl.deleted_keys_ttl.is_some() && manifest.expired_tombstones_kept != Some(0) {
        // A tombstone past the TTL is forgotten only while it is its key's only row: compaction
        // dropping an older version of such a key, anywhere in the partition, makes it
        // forgettable, which only resolving every key finds.
        return Err(match manifest.expired_tombstones_kept {
            Some(kept) => format!("snapshot {version} keeps {kept} tombstones past deleted_keys_ttl beside older rows of their keys; compaction may have made them forgettable"),
            None => format!("snapshot {version} does not say how many tombstones past deleted_keys_ttl it keeps"),
        });
    }
    if manifest.sst_format_version != options.sst_format_version {
        return Err(format!(
            "snapshot {version} has SST format version {}, this prebuild writes {}",
            manifest.sst_format_version, options.sst_format_version
        ));
    }
    if manifest.key_layers() >= options.max_key_layers {
        return Err(format!(
            "snapshot {version} has {} key layers, the most allowed ([prebuild] max_key_layers = {})",
            manifest.key_layers(),
            options.max_key_layers
        ));
    }
    let plan = LineagePlan::new(manifest, segments, true);
    if let Some(refused) = plan.refused.first() {
        return Err(format!(
            "segment {} is not mapped: {}",
            refused.segment, refused.reason
        ));
    }
    if !plan.dropped.is_empty() {
        return Err(format!(
            "covered segments {:?} are gone without a mapped replacement",
            plan.dropped
        ));
    }
    let covered: HashMap<i64, &ManifestSegment> =
        manifest.segments.iter().map(|s| (s.id, s)).collect();
    for segment in segments {
        match covered.get(&segment.id) {
            Some(entry) if entry.checksum != segment.checksum => {
                return Err(format!(
                    "segment {} changed since snapshot {version}",
                    segment.name
                ))
            }
            Some(_) => {}
            None if plan.mapped_outputs.contains(&segment.id) => {}
            None => {
                return Err(format!(
                    "segment {} is new since snapshot {version}",
                    segment.name
                ))
            }
        }
    }
    Ok(plan)
}

/// Calls `put` with the record of every mapped output's row, in key order: the entries whose
/// winner moved (all of them valid), each with its key set by the snapshot's `metadata_ttl`
/// watermark (a key keeps its set: its winner and the watermark stay). Returns how many there
/// were.
pub fn for_each_moved(
    outputs: &[StoredRun],
    kind: ComparisonKind,
    watermark: Option<f64>,
    mut put: impl FnMut(KeySet, &[u8], KeyRecord) -> anyhow::Result<()>,
) -> anyhow::Result<u64> {
    let readers = outputs
        .iter()
        .map(StoredRun::open)
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut merged = MergedRuns::new(readers)?;
    let mut moved = 0;
    while let Some((index, entry)) = merged.next_entry()? {
        let set = key_set(kind, watermark, &entry);
        let record = KeyRecord {
            segment_id: outputs[index].segment_id as u64,
            doc_id: entry.doc_id,
            comparison: kind.natural_from_sortable(entry.comparison),
            deleted: entry.deleted,
        };
        entry.with_key(|key| put(set, key, record))?;
        moved += 1;
    }
    Ok(moved)
}

/// The key set of a winner `entry` against the `metadata_ttl` watermark.
pub fn key_set(kind: ComparisonKind, watermark: Option<f64>, entry: &RunEntry) -> KeySet {
    KeySet::for_value(kind.to_f64(entry.comparison), watermark)
}

/// The previous snapshot's key files of both sets copied under `prefix`, then `layer` as one
/// layer above; returns the hot and the cold files.
async fn key_files(
    store: &Store,
    manifest: &Manifest,
    layer: KeySetFiles,
    prefix: &str,
) -> anyhow::Result<(Vec<KeyFile>, Vec<KeyFile>)> {
    let top = manifest.key_layers();
    let hot = copy_and_add(
        store,
        &manifest.key_files,
        KeySet::Hot,
        layer.hot,
        (prefix, top),
    );
    let cold = copy_and_add(
        store,
        &manifest.cold_key_files,
        KeySet::Cold,
        layer.cold,
        (prefix, top),
    );
    futures::try_join!(hot, cold)
}

/// One key set's files of the previous snapshot copied under `prefix`, and `layer` uploaded as
/// layer `top` above them.
async fn copy_and_add(
    store: &Store,
    previous: &[KeyFile],
    set: KeySet,
    layer: Vec<SstFile>,
    (prefix, top): (&str, u32),
) -> anyhow::Result<Vec<KeyFile>> {
    let folder = key_folder(set);
    // By index: a stream of borrowed entries trips the compiler's higher-ranked lifetime check
    // inside a task's `Send` future (as in `read::load_all_bitmaps`).
    let kept = futures::stream::iter(0..previous.len())
        .map(|index| async move {
            let file = &previous[index];
            let key = format!("{prefix}{folder}/{index}.sst");
            store.copy_to_new(&file.file.key, &key).await?;
            anyhow::Ok(KeyFile {
                file: FileEntry {
                    key,
                    ..file.file.clone()
                },
                ..file.clone()
            })
        })
        .buffered(AT_ONCE);
    let mut files: Vec<KeyFile> = kept.try_collect().await?;
    let first = previous.len();
    files.extend(upload_key_files(store, prefix, set, layer, (first, top)).await?);
    Ok(files)
}

/// The manifest entries of `segments`: a covered segment's bitmaps copied under `prefix`, an
/// output's moved from its inputs' and uploaded.
async fn segment_entries(
    store: &Store,
    manifest: &Manifest,
    plan: &LineagePlan,
    segments: &[SegmentRow],
    prefix: &str,
) -> anyhow::Result<Vec<ManifestSegment>> {
    let mut moved = std::collections::BTreeMap::new();
    for input in manifest
        .segments
        .iter()
        .filter(|s| plan.moves.contains_key(&s.id))
    {
        let valid = load_bitmap(store, &input.valid, input.rows).await?;
        let queryable = load_bitmap(store, &input.queryable, input.rows).await?;
        moved.insert(input.id, SegmentBitmaps { valid, queryable });
    }
    plan.map_bitmaps(&mut moved);
    let covered: HashMap<i64, &ManifestSegment> =
        manifest.segments.iter().map(|s| (s.id, s)).collect();
    let moved = &moved;
    let covered = &covered;
    futures::stream::iter(0..segments.len())
        .map(|index| async move {
            let segment = &segments[index];
            let (valid_key, queryable_key) = (
                format!("{prefix}valid/{}.roaring", segment.id),
                format!("{prefix}queryable/{}.roaring", segment.id),
            );
            if let Some(entry) = covered.get(&segment.id) {
                store.copy_to_new(&entry.valid.key, &valid_key).await?;
                store
                    .copy_to_new(&entry.queryable.key, &queryable_key)
                    .await?;
                let valid = FileEntry {
                    key: valid_key,
                    ..entry.valid.clone()
                };
                let queryable = FileEntry {
                    key: queryable_key,
                    ..entry.queryable.clone()
                };
                return anyhow::Ok(ManifestSegment {
                    valid,
                    queryable,
                    ..(*entry).clone()
                });
            }
            let bitmaps = &moved[&segment.id];
            Ok(ManifestSegment {
                id: segment.id,
                name: segment.name.clone(),
                sequence: segment.sequence,
                checksum: segment.checksum.clone(),
                rows: segment.row_count as u64,
                valid: upload_bitmap(store, &valid_key, &bitmaps.valid).await?,
                queryable: upload_bitmap(store, &queryable_key, &bitmaps.queryable).await?,
                valid_docs: bitmaps.valid.len(),
                queryable_docs: bitmaps.queryable.len(),
            })
        })
        .buffered(AT_ONCE)
        .try_collect()
        .await
}
