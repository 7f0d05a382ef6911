//! The follow-up prebuild of a compaction or merge (issue 14): when the only changes since the
//! previous snapshot are replacements its lineage proves (`lineage`), the new snapshot is the
//! previous one mapped onto the outputs, with no run merged and no Parquet read: key metadata
//! rewritten entry by entry, bitmaps moved, every other figure carried over.
//!
//! Why that equals a from-scratch prebuild of the new segments: the outputs hold exactly the rows
//! the previous snapshot held valid in their inputs, so every key keeps its winner (at its new
//! place) and every rank between rows is unchanged (`compaction` argues the latter; a merge's
//! output sequence keeps every tie-break). One thing can change: a deleted key's tombstone is
//! forgotten by `deleted_keys_ttl` only while it is the key's last row, and the rows compaction
//! dropped may have been its older versions. So if the previous snapshot kept any tombstone older
//! than its TTL cutoff, this path gives way to the full resolution. The previous snapshot's
//! `forgotten_deleted_keys` is carried over as it was counted then.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use rocksdb::{IngestExternalFileOptions, DB};

use super::build::PrebuildOptions;
use super::lineage::{EntryFate, LineagePlan};
use super::manifest::Manifest;
use super::read::{fetch_key_files, load_all_bitmaps, SegmentBitmaps};
use super::record::{ComparisonKind, KeyRecord};
use super::resolve::Resolution;
use super::sst::{sst_options, SstFile, SstSplitter};
use crate::catalog::SegmentRow;
use crate::storage::Store;
use crate::table::TableConfig;

/// The resolution and key-metadata files of the new snapshot, mapped from `previous`; `None`
/// when the partition changed in a way the mapping does not cover (then resolve the runs).
pub(super) async fn map_previous(
    store: &Store,
    table: &TableConfig,
    previous: &Manifest,
    segments: &[SegmentRow],
    workdir: &Path,
    options: &PrebuildOptions,
) -> anyhow::Result<Option<(Resolution, Vec<SstFile>)>> {
    let plan = LineagePlan::new(previous, segments, true);
    let covered_or_mapped = segments.iter().all(|s| {
        previous.segments.iter().any(|c| c.id == s.id) || plan.mapped_outputs.contains(&s.id)
    });
    // A tombstone left out of key metadata by `metadata_ttl` could not be checked (see above).
    let unseen_tombstones =
        table.ttl.deleted_keys_ttl.is_some() && previous.metadata_watermark.is_some();
    if plan.moves.is_empty()
        || unseen_tombstones
        || !plan.refused.is_empty()
        || !plan.dropped.is_empty()
        || !covered_or_mapped
    {
        return Ok(None);
    }
    let mut bitmaps: BTreeMap<i64, SegmentBitmaps> = load_all_bitmaps(store, previous)
        .await?
        .into_iter()
        .collect();
    let dir = workdir.join("previous");
    std::fs::create_dir_all(&dir)?;
    let ssts = fetch_key_files(store, previous, &dir, "")
        .await
        .context("a key-metadata file of the previous snapshot")?;
    let kind = ComparisonKind::of_table(table);
    let deleted_cutoff = table
        .ttl
        .deleted_keys_ttl
        .zip(previous.largest_comparison_f64)
        .map(|(ttl, largest)| largest - ttl);
    let (out, format_version, max_entries) = (
        workdir.to_path_buf(),
        options.sst_format_version,
        options.sst_max_entries,
    );
    let (plan_ref, bitmaps_ref) = (plan.clone(), std::mem::take(&mut bitmaps));
    let mapped = tokio::task::spawn_blocking(move || {
        let files = rewrite_keys(
            ssts,
            &plan_ref,
            &bitmaps_ref,
            &out,
            format_version,
            max_entries,
            |record| {
                deleted_cutoff.is_some_and(|cutoff| {
                    record.deleted
                        && kind.to_f64(kind.sortable_from_natural(record.comparison)) < cutoff
                })
            },
        )?;
        anyhow::Ok((files, bitmaps_ref))
    })
    .await??;
    let (Some(files), mut bitmaps) = mapped else {
        tracing::info!(
            "the previous snapshot keeps a tombstone past deleted_keys_ttl; resolving the runs instead of mapping it"
        );
        return Ok(None);
    };
    plan.map_bitmaps(&mut bitmaps);
    let (valid, queryable) = segments
        .iter()
        .map(|s| {
            let b = bitmaps.remove(&s.id).unwrap_or_default();
            (b.valid, b.queryable)
        })
        .unzip();
    let resolution = Resolution {
        valid,
        queryable,
        metadata_keys: previous.key_count,
        live_keys: previous.live_keys,
        forgotten_keys: previous.forgotten_deleted_keys,
        largest_comparison: previous
            .largest_comparison
            .map(|natural| kind.sortable_from_natural(natural)),
        metadata_watermark: previous.metadata_watermark,
    };
    Ok(Some((resolution, files)))
}

/// Ingests the previous snapshot's SST files into a scratch RocksDB and writes every entry, in key
/// order and mapped through `plan`, to new SST files in `out`. `None` if `stop` holds for an
/// entry.
fn rewrite_keys(
    ssts: Vec<PathBuf>,
    plan: &LineagePlan,
    bitmaps: &BTreeMap<i64, SegmentBitmaps>,
    out: &Path,
    format_version: i32,
    max_entries: u64,
    stop: impl Fn(&KeyRecord) -> bool,
) -> anyhow::Result<Option<Vec<SstFile>>> {
    let options = sst_options(format_version);
    let scratch = out.join("previous-db");
    let db = {
        let mut open = sst_options(format_version);
        open.create_if_missing(true);
        DB::open(&open, &scratch)
            .with_context(|| format!("cannot open a RocksDB at {}", scratch.display()))?
    };
    if !ssts.is_empty() {
        let mut ingest = IngestExternalFileOptions::default();
        ingest.set_move_files(true);
        db.ingest_external_file_opts(&ingest, ssts)
            .context("RocksDB refused the previous snapshot's key-metadata files")?;
    }
    let mut splitter = SstSplitter::new(&options, out, "mapped", max_entries);
    for item in db.iterator(rocksdb::IteratorMode::Start) {
        let (key, value) = item?;
        let record = KeyRecord::decode(&value).context("malformed key-metadata record")?;
        if stop(&record) {
            return Ok(None);
        }
        match plan.entry_fate(&record, bitmaps) {
            EntryFate::Keep => splitter.put(&key, &value)?,
            EntryFate::Move(moved) => splitter.put(&key, &moved.encode())?,
            EntryFate::Drop => anyhow::bail!("the mapping plan drops no entry"),
        }
    }
    let files = splitter.finish()?;
    drop(db);
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(Some(files))
}
