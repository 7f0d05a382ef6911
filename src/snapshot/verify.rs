//! `minion verify`: recompute a partition's state from its segments alone and compare it with the
//! newest snapshot, bitmap by bitmap and key by key. Key runs are rebuilt from the segments, not
//! taken from the store, so a damaged run cannot hide a difference.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::build::{resolve_to_files, PrebuildOptions};
use super::keyrun::build_run;
use super::manifest::Manifest;
use super::read::{fetch_key_files, load_bitmap, load_manifest, KeyLayers, SnapshotError};
use super::record::ComparisonKind;
use super::record::KeySet;
use super::resolve::{Resolution, Source, TtlSettings};
use super::sst::{sst_options, KeySetFiles, SstFile};
use crate::catalog::{Catalog, SegmentRow, SegmentState};
use crate::storage::{Expected, StorageError, Store};
use crate::table::TableConfig;

#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub partition: u32,
    pub snapshot_version: Option<i64>,
    pub segments: usize,
    pub keys_checked: u64,
    /// Online segments the snapshot does not cover yet (not a difference).
    pub uncovered_segments: usize,
    pub differences: Vec<String>,
}

pub async fn verify_partition(
    catalog: &Catalog,
    store: &Store,
    table_name: &str,
    partition: u32,
    options: &PrebuildOptions,
) -> anyhow::Result<Verdict> {
    let table = catalog.table(table_name).await?;
    let all_segments = catalog.segments(table_name, Some(partition), None).await?;
    let online = |s: &&SegmentRow| s.state == SegmentState::Online;
    let mut verdict = Verdict {
        partition,
        snapshot_version: None,
        segments: 0,
        keys_checked: 0,
        uncovered_segments: all_segments.iter().filter(online).count(),
        differences: Vec::new(),
    };
    let Some(snapshot) = catalog.latest_snapshot(table_name, partition).await? else {
        return Ok(verdict);
    };
    verdict.snapshot_version = Some(snapshot.version);
    let manifest = match load_manifest(store, &snapshot).await {
        Ok(manifest) => manifest,
        Err(err) if is_damage(&err) || is_lost_manifest(&err) => {
            verdict.differences.push(format!(
                "manifest {} is damaged or missing: {err}",
                snapshot.manifest_key
            ));
            return Ok(verdict);
        }
        Err(err) => return Err(err.into()),
    };
    verdict.segments = manifest.segments.len();
    verdict.uncovered_segments = all_segments
        .iter()
        .filter(online)
        .filter(|s| !manifest.segments.iter().any(|m| m.id == s.id))
        .count();

    let workdir = tempfile::Builder::new()
        .prefix("minion-verify-")
        .tempdir_in(&options.staging_dir)?;
    let work = workdir.path();
    let run_paths = rebuild_runs(
        store,
        &table,
        &manifest,
        &all_segments,
        work,
        options,
        &mut verdict,
    )
    .await?;
    if !verdict.differences.is_empty() {
        return Ok(verdict);
    }
    let (resolution, recomputed) = recompute(&table, &manifest, run_paths, work, options).await?;
    compare_bitmaps(store, &manifest, &resolution, &mut verdict).await?;

    // Key metadata: both sides ingested into scratch RocksDBs and walked in key order.
    let stored = match fetch_key_files(store, &manifest, work, "snapshot-").await {
        Ok(files) => files,
        Err(err) if is_damage(&err) => {
            verdict.differences.push(format!(
                "a key-metadata file does not match its checksum: {err}"
            ));
            return Ok(verdict);
        }
        Err(err) => return Err(err.into()),
    };
    let paths = |files: Vec<SstFile>| files.into_iter().map(|sst| sst.path).collect::<Vec<_>>();
    let KeySetFiles { hot, cold } = recomputed;
    let (work, version) = (work.to_path_buf(), manifest.sst_format_version);
    let (hot, cold) = (paths(hot), paths(cold));
    let compared = tokio::task::spawn_blocking(move || {
        let hot = compare_key_files(&work, version, KeySet::Hot, stored.hot, hot)?;
        let cold = compare_key_files(&work, version, KeySet::Cold, stored.cold, cold)?;
        anyhow::Ok([hot, cold])
    })
    .await??;
    for (keys_checked, key_differences) in compared {
        verdict.keys_checked += keys_checked;
        verdict.differences.extend(key_differences);
    }
    Ok(verdict)
}

/// A manifest that is gone or does not parse: the snapshot is damaged (a difference to report).
fn is_lost_manifest(err: &SnapshotError) -> bool {
    matches!(
        err,
        SnapshotError::Storage(StorageError::NotFound { .. }) | SnapshotError::Manifest(_)
    )
}

/// An object that is not what the catalog or manifest recorded (a difference to report, where
/// other errors end the verification).
fn is_damage(err: &SnapshotError) -> bool {
    matches!(
        err,
        SnapshotError::Storage(StorageError::ChecksumMismatch { .. })
    )
}

/// Rebuilds every covered segment's key run from the segment itself, in manifest order. A
/// segment that is gone or differs from what the snapshot was built from is a difference.
async fn rebuild_runs(
    store: &Store,
    table: &TableConfig,
    manifest: &Manifest,
    all_segments: &[SegmentRow],
    work: &Path,
    options: &PrebuildOptions,
    verdict: &mut Verdict,
) -> anyhow::Result<Vec<PathBuf>> {
    let mut run_paths = Vec::new();
    for covered in &manifest.segments {
        let Some(row) = all_segments.iter().find(|s| s.id == covered.id) else {
            verdict.differences.push(format!(
                "segment {} of the snapshot is gone from the catalog",
                covered.name
            ));
            continue;
        };
        let local = work.join(format!("{}.parquet", covered.id));
        match store
            .download_verified(
                &row.object_key,
                &local,
                Expected::checksum(&covered.checksum),
            )
            .await
        {
            Ok(()) => {}
            Err(StorageError::ChecksumMismatch { actual, .. }) => {
                verdict.differences.push(format!(
                    "segment {} has checksum {actual}, the snapshot was built from {}",
                    covered.name, covered.checksum
                ));
                continue;
            }
            Err(err) => return Err(err.into()),
        }
        let run = work.join(format!("{}.run", covered.id));
        let (table, run_owned, work, limit, checksum) = (
            table.clone(),
            run.clone(),
            work.to_path_buf(),
            options.max_run_entries,
            covered.checksum.clone(),
        );
        tokio::task::spawn_blocking(move || {
            build_run(&local, &checksum, &table, &run_owned, &work, limit)
        })
        .await??;
        run_paths.push(run);
    }
    Ok(run_paths)
}

/// Resolves the rebuilt runs as a prebuild would, into `work/recomputed`.
async fn recompute(
    table: &TableConfig,
    manifest: &Manifest,
    run_paths: Vec<PathBuf>,
    work: &Path,
    options: &PrebuildOptions,
) -> anyhow::Result<(Resolution, KeySetFiles)> {
    let sources: Vec<Source> = manifest
        .segments
        .iter()
        .map(|covered| Source {
            segment_id: covered.id as u64,
            sequence: covered.sequence,
            rows: covered.rows,
        })
        .collect();
    let kind = ComparisonKind::of_table(table);
    let ttl = TtlSettings::of(table);
    let dir = work.join("recomputed");
    std::fs::create_dir_all(&dir)?;
    let (version, options) = (manifest.sst_format_version, options.clone());
    tokio::task::spawn_blocking(move || {
        resolve_to_files(&run_paths, &sources, kind, ttl, &dir, version, &options)
    })
    .await?
}

/// Compares every stored bitmap with the recomputed one.
async fn compare_bitmaps(
    store: &Store,
    manifest: &Manifest,
    resolution: &Resolution,
    verdict: &mut Verdict,
) -> anyhow::Result<()> {
    for (index, covered) in manifest.segments.iter().enumerate() {
        for (name, file, recomputed) in [
            ("validDocIds", &covered.valid, &resolution.valid[index]),
            (
                "queryableDocIds",
                &covered.queryable,
                &resolution.queryable[index],
            ),
        ] {
            let stored = match load_bitmap(store, file, covered.rows).await {
                Ok(stored) => stored,
                Err(err) if is_damage(&err) => {
                    verdict.differences.push(format!(
                        "{name} of segment {}: object {} does not match its checksum",
                        covered.name, file.key
                    ));
                    continue;
                }
                Err(err) => return Err(err.into()),
            };
            if &stored != recomputed {
                let differing = (&stored ^ recomputed).len();
                verdict.differences.push(format!(
                    "{name} of segment {}: {differing} docIds differ (snapshot {}, recomputed {})",
                    covered.name,
                    stored.len(),
                    recomputed.len()
                ));
            }
        }
    }
    Ok(())
}

/// One RocksDB entry as the iterator yields it.
type KeyValue = (Box<[u8]>, Box<[u8]>);

/// Compares one key set of the snapshot with the recomputed one, entry by entry.
fn compare_key_files(
    work: &Path,
    format_version: i32,
    set: KeySet,
    snapshot: KeyLayers,
    recomputed: Vec<std::path::PathBuf>,
) -> anyhow::Result<(u64, Vec<String>)> {
    let open = |name: &str| -> anyhow::Result<rocksdb::DB> {
        let mut options = sst_options(format_version);
        options.create_if_missing(true);
        Ok(rocksdb::DB::open(
            &options,
            work.join(format!("{name}-{set:?}")),
        )?)
    };
    let stored = open("db-snapshot")?;
    snapshot.ingest_into(&stored, None, false)?;
    let fresh = open("db-recomputed")?;
    if !recomputed.is_empty() {
        fresh.ingest_external_file(recomputed)?;
    }
    let mut left = stored.iterator(rocksdb::IteratorMode::Start);
    let mut right = fresh.iterator(rocksdb::IteratorMode::Start);
    let mut checked = 0u64;
    let mut mismatches = 0u64;
    let mut examples = Vec::new();
    loop {
        let (a, b) = (left.next().transpose()?, right.next().transpose()?);
        if a.is_none() && b.is_none() {
            break;
        }
        checked += 1;
        if a != b {
            mismatches += 1;
            if examples.len() < 3 {
                let describe = |entry: &Option<KeyValue>| match entry {
                    Some((key, value)) => format!("{}={}", hex::encode(key), hex::encode(value)),
                    None => "nothing".into(),
                };
                examples.push(format!(
                    "snapshot {} vs recomputed {}",
                    describe(&a),
                    describe(&b)
                ));
            }
            // After a mismatch the two walks may be out of step; counting stops being exact.
            if mismatches > 1000 {
                break;
            }
        }
    }
    let mut differences = Vec::new();
    if mismatches > 0 {
        let name = match set {
            KeySet::Hot => "key metadata",
            KeySet::Cold => "cold key set",
        };
        differences.push(format!(
            "{name}: {mismatches} entries differ, e.g. {}",
            examples.join("; ")
        ));
    }
    Ok((checked, differences))
}
