//! `minion verify`: recompute a partition's state from its segments alone and compare it with the
//! newest snapshot, bitmap by bitmap and key by key. Key runs are rebuilt from the segments, not
//! taken from the store, so a damaged run cannot hide a difference.

use std::path::Path;

use serde::Serialize;

use super::build::{resolve_to_files, PrebuildOptions};
use super::keyrun::build_run;
use super::manifest::Manifest;
use super::record::ComparisonKind;
use super::resolve::{Source, TtlSettings};
use super::sst::sst_options;
use crate::catalog::Catalog;
use crate::loader::parse_bitmap;
use crate::storage::{sha256_hex, StorageError, Store};

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
    let online = all_segments
        .iter()
        .filter(|s| s.state.0 == crate::catalog::SegmentState::Online)
        .count();
    let mut verdict = Verdict {
        partition,
        snapshot_version: None,
        segments: 0,
        keys_checked: 0,
        uncovered_segments: online,
        differences: Vec::new(),
    };
    let Some(snapshot) = catalog.latest_snapshot(table_name, partition).await? else {
        return Ok(verdict);
    };
    verdict.snapshot_version = Some(snapshot.version);
    let manifest_bytes = store.get(&snapshot.manifest_key).await?;
    if sha256_hex(&manifest_bytes) != snapshot.manifest_checksum {
        verdict.differences.push(format!(
            "manifest {} does not match its catalog checksum",
            snapshot.manifest_key
        ));
        return Ok(verdict);
    }
    let manifest = Manifest::parse(&snapshot.manifest_key, &manifest_bytes)?;
    verdict.segments = manifest.segments.len();
    verdict.uncovered_segments = all_segments
        .iter()
        .filter(|s| {
            s.state.0 == crate::catalog::SegmentState::Online
                && !manifest.segments.iter().any(|m| m.id == s.id)
        })
        .count();

    let workdir = tempfile::Builder::new()
        .prefix("minion-verify-")
        .tempdir_in(&options.staging_dir)?;
    let mut run_paths = Vec::new();
    let mut sources = Vec::new();
    for covered in &manifest.segments {
        let Some(row) = all_segments.iter().find(|s| s.id == covered.id) else {
            verdict.differences.push(format!(
                "segment {} of the snapshot is gone from the catalog",
                covered.name
            ));
            continue;
        };
        let local = workdir.path().join(format!("{}.parquet", covered.id));
        match store
            .download_verified(&row.object_key, &local, &covered.checksum)
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
        let run = workdir.path().join(format!("{}.run", covered.id));
        let (table_owned, run_owned, work, limit, checksum_owned) = (
            table.clone(),
            run.clone(),
            workdir.path().to_path_buf(),
            options.max_run_entries,
            covered.checksum.clone(),
        );
        tokio::task::spawn_blocking(move || {
            build_run(
                &local,
                &checksum_owned,
                &table_owned,
                &run_owned,
                &work,
                limit,
            )
        })
        .await??;
        run_paths.push(run);
        sources.push(Source {
            segment_id: covered.id as u64,
            sequence: covered.sequence,
            rows: covered.rows,
        });
    }
    if !verdict.differences.is_empty() {
        return Ok(verdict);
    }
    let kind = ComparisonKind::of_table(&table);
    let ttl = TtlSettings::of(&table);
    let recomputed_dir = workdir.path().join("recomputed");
    std::fs::create_dir_all(&recomputed_dir)?;
    let (resolution, recomputed_files) = {
        let (dir, version, options) = (
            recomputed_dir.clone(),
            manifest.sst_format_version,
            options.clone(),
        );
        let sources = sources.clone();
        tokio::task::spawn_blocking(move || {
            resolve_to_files(&run_paths, &sources, kind, ttl, &dir, version, &options)
        })
        .await??
    };
    for (index, covered) in manifest.segments.iter().enumerate() {
        for (name, file, recomputed) in [
            ("validDocIds", &covered.valid, &resolution.valid[index]),
            (
                "queryableDocIds",
                &covered.queryable,
                &resolution.queryable[index],
            ),
        ] {
            let bytes = store.get(&file.key).await?;
            if sha256_hex(&bytes) != file.checksum {
                verdict.differences.push(format!(
                    "{name} of segment {}: object {} does not match its checksum",
                    covered.name, file.key
                ));
                continue;
            }
            let stored = parse_bitmap(&file.key, &bytes, covered.rows)?;
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

    // Key metadata: both sides ingested into scratch RocksDBs and walked in key order.
    let mut snapshot_files = Vec::new();
    for (index, file) in manifest.key_files.iter().enumerate() {
        let local = workdir.path().join(format!("snapshot-{index}.sst"));
        match store
            .download_verified(&file.file.key, &local, &file.file.checksum)
            .await
        {
            Ok(()) => {}
            Err(StorageError::ChecksumMismatch { .. }) => {
                verdict.differences.push(format!(
                    "key-metadata file {} does not match its checksum",
                    file.file.key
                ));
                return Ok(verdict);
            }
            Err(err) => return Err(err.into()),
        }
        snapshot_files.push(local);
    }
    let recomputed_paths: Vec<_> = recomputed_files.into_iter().map(|sst| sst.path).collect();
    let (keys_checked, key_differences) = {
        let work = workdir.path().to_path_buf();
        let version = manifest.sst_format_version;
        tokio::task::spawn_blocking(move || {
            compare_key_files(&work, version, snapshot_files, recomputed_paths)
        })
        .await??
    };
    verdict.keys_checked = keys_checked;
    verdict.differences.extend(key_differences);
    Ok(verdict)
}

/// One RocksDB entry as the iterator yields it.
type KeyValue = (Box<[u8]>, Box<[u8]>);

fn compare_key_files(
    work: &Path,
    format_version: i32,
    snapshot: Vec<std::path::PathBuf>,
    recomputed: Vec<std::path::PathBuf>,
) -> anyhow::Result<(u64, Vec<String>)> {
    let open = |name: &str, files: Vec<std::path::PathBuf>| -> anyhow::Result<rocksdb::DB> {
        let mut options = sst_options(format_version);
        options.create_if_missing(true);
        let db = rocksdb::DB::open(&options, work.join(name))?;
        if !files.is_empty() {
            db.ingest_external_file(files)?;
        }
        Ok(db)
    };
    let stored = open("db-snapshot", snapshot)?;
    let fresh = open("db-recomputed", recomputed)?;
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
        differences.push(format!(
            "key metadata: {mismatches} entries differ, e.g. {}",
            examples.join("; ")
        ));
    }
    Ok((checked, differences))
}
