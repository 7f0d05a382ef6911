//! Reading what a snapshot and the catalog recorded, each object checked against its recorded
//! size and checksum (`Store::get_verified`, `Store::download_verified`) and each bitmap against
//! the rows of its segment. The loader, compaction, `verify` and `scan` read through here.

use std::path::{Path, PathBuf};

use futures::{StreamExt, TryStreamExt};
use roaring::RoaringBitmap;
use rocksdb::{ColumnFamily, IngestExternalFileOptions, DB};

use super::manifest::{FileEntry, KeyFile, Manifest, ManifestError, ManifestSegment};
use crate::catalog::{SegmentRow, SnapshotRow};
use crate::error::Permanence;
use crate::storage::{layout, Expected, StorageError, Store};

/// Snapshot files fetched at once: on S3 each is a round trip.
const DOWNLOADS_AT_ONCE: usize = 8;

/// What can go wrong reading a snapshot's objects.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(
        "bitmap {key} is corrupt or truncated: {message}; rebuild the snapshot with a prebuild"
    )]
    BadBitmap { key: String, message: String },
    #[error("key run {key} was built from other content than segment {segment} (checksum {checksum}); delete the run object and prebuild again")]
    RunMismatch {
        key: String,
        segment: String,
        checksum: String,
    },
}

impl Permanence for SnapshotError {
    fn is_permanent(&self) -> bool {
        match self {
            SnapshotError::Storage(err) => err.is_permanent(),
            SnapshotError::Manifest(_)
            | SnapshotError::BadBitmap { .. }
            | SnapshotError::RunMismatch { .. } => true,
        }
    }
}

/// A segment's content as the catalog records it.
pub fn expected_segment(segment: &SegmentRow) -> Expected<'_> {
    Expected::new(&segment.checksum, segment.byte_size as u64)
}

fn expected_file(file: &FileEntry) -> Expected<'_> {
    Expected::new(&file.checksum, file.size)
}

/// Fetches a snapshot's manifest and checks it against the catalog's checksum.
pub async fn load_manifest(
    store: &Store,
    snapshot: &SnapshotRow,
) -> Result<Manifest, SnapshotError> {
    let bytes = store
        .get_verified(
            &snapshot.manifest_key,
            Expected::checksum(&snapshot.manifest_checksum),
        )
        .await?;
    Ok(Manifest::parse(&snapshot.manifest_key, &bytes)?)
}

/// Fetches a bitmap listed in a manifest, checks it and that it fits `rows` rows.
pub async fn load_bitmap(
    store: &Store,
    file: &FileEntry,
    rows: u64,
) -> Result<RoaringBitmap, SnapshotError> {
    let bytes = store.get_verified(&file.key, expected_file(file)).await?;
    parse_bitmap(&file.key, &bytes, rows)
}

/// The validDocIds and queryableDocIds of one segment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SegmentBitmaps {
    pub valid: RoaringBitmap,
    pub queryable: RoaringBitmap,
}

/// Every covered segment's bitmaps, by segment id, several fetched at a time.
pub async fn load_all_bitmaps(
    store: &Store,
    manifest: &Manifest,
) -> Result<Vec<(i64, SegmentBitmaps)>, SnapshotError> {
    // By index: a stream of borrowed entries trips the compiler's higher-ranked lifetime check
    // inside a task's `Send` future (the prebuild's).
    futures::stream::iter(0..manifest.segments.len())
        .map(|index| async move {
            let covered = &manifest.segments[index];
            let valid = load_bitmap(store, &covered.valid, covered.rows).await?;
            let queryable = load_bitmap(store, &covered.queryable, covered.rows).await?;
            Ok((covered.id, SegmentBitmaps { valid, queryable }))
        })
        .buffered(DOWNLOADS_AT_ONCE)
        .try_collect()
        .await
}

/// Deserializes a portable Roaring bitmap and checks it fits a segment of `rows` rows.
pub fn parse_bitmap(key: &str, bytes: &[u8], rows: u64) -> Result<RoaringBitmap, SnapshotError> {
    let bad = |message: String| SnapshotError::BadBitmap {
        key: key.to_string(),
        message,
    };
    let bitmap = RoaringBitmap::deserialize_from(bytes).map_err(|err| bad(err.to_string()))?;
    match bitmap.max() {
        Some(max) if max as u64 >= rows => Err(bad(format!(
            "it marks docId {max} but the segment has only {rows} rows"
        ))),
        _ => Ok(bitmap),
    }
}

/// A snapshot's key-metadata (SST) files of one key set on local disk, by layer, lowest first.
#[derive(Debug, Default)]
pub struct KeyLayers(Vec<Vec<PathBuf>>);

impl KeyLayers {
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(Vec::is_empty)
    }

    /// Ingests the files into `db` (into column family `cf`, or the default one), one layer at a
    /// time, so a higher layer's entries get newer sequence numbers and replace those below with
    /// the same key.
    pub fn ingest_into(
        self,
        db: &DB,
        cf: Option<&ColumnFamily>,
        move_files: bool,
    ) -> Result<(), rocksdb::Error> {
        let mut options = IngestExternalFileOptions::default();
        options.set_move_files(move_files);
        for layer in self.0.into_iter().filter(|files| !files.is_empty()) {
            match cf {
                Some(cf) => db.ingest_external_file_cf_opts(cf, &options, layer)?,
                None => db.ingest_external_file_opts(&options, layer)?,
            }
        }
        Ok(())
    }

    fn from_files(files: Vec<(u32, PathBuf)>) -> KeyLayers {
        let mut layers = KeyLayers::default();
        for (layer, path) in files {
            layers
                .0
                .resize_with(layers.0.len().max(layer as usize + 1), Vec::new);
            layers.0[layer as usize].push(path);
        }
        layers
    }
}

/// Both key sets of a snapshot on local disk.
#[derive(Debug, Default)]
pub struct SnapshotKeys {
    pub hot: KeyLayers,
    pub cold: KeyLayers,
}

/// Downloads the snapshot's key-metadata (SST) files of both key sets into `dir`, checked, by
/// layer and in key order within a layer.
pub async fn fetch_key_files(
    store: &Store,
    manifest: &Manifest,
    dir: &Path,
    prefix: &str,
) -> Result<SnapshotKeys, SnapshotError> {
    let hot = fetch_layers(store, &manifest.key_files, dir, prefix).await?;
    let cold = fetch_layers(
        store,
        &manifest.cold_key_files,
        dir,
        &format!("{prefix}cold-"),
    )
    .await?;
    Ok(SnapshotKeys { hot, cold })
}

async fn fetch_layers(
    store: &Store,
    key_files: &[KeyFile],
    dir: &Path,
    prefix: &str,
) -> Result<KeyLayers, SnapshotError> {
    let files: Vec<(u32, PathBuf)> = futures::stream::iter(0..key_files.len())
        .map(|index| async move {
            let file = &key_files[index];
            let local = dir.join(format!("{prefix}{index}.sst"));
            store
                .download_verified(&file.file.key, &local, expected_file(&file.file))
                .await?;
            Ok::<_, SnapshotError>((file.layer, local))
        })
        .buffered(DOWNLOADS_AT_ONCE)
        .try_collect()
        .await?;
    Ok(KeyLayers::from_files(files))
}

/// Downloads a segment to `local`, checked against the catalog's size and checksum. The error
/// names the segment.
pub async fn fetch_segment(
    store: &Store,
    segment: &SegmentRow,
    local: &Path,
) -> anyhow::Result<()> {
    use anyhow::Context;
    store
        .download_verified(&segment.object_key, local, expected_segment(segment))
        .await
        .with_context(|| format!("segment {}", segment.name))
}

/// Downloads a segment as a snapshot covers it (by the manifest's name and checksum, whatever
/// the catalog says now).
pub async fn fetch_covered_segment(
    store: &Store,
    manifest: &Manifest,
    segment: &ManifestSegment,
    local: &Path,
) -> anyhow::Result<()> {
    use anyhow::Context;
    let key = layout::segment_key(&manifest.table, manifest.partition, &segment.name);
    store
        .download_verified(&key, local, Expected::checksum(&segment.checksum))
        .await
        .with_context(|| {
            format!(
                "segment {} as snapshot {} covers it",
                segment.name, manifest.version
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bitmap_must_fit_its_segment() {
        let mut bitmap = RoaringBitmap::new();
        bitmap.insert(9);
        let mut bytes = Vec::new();
        bitmap.serialize_into(&mut bytes).unwrap();
        assert_eq!(parse_bitmap("k", &bytes, 10).unwrap(), bitmap);
        let err = parse_bitmap("k", &bytes, 9).unwrap_err();
        assert!(
            err.is_permanent() && err.to_string().contains("docId 9"),
            "{err}"
        );
        assert!(matches!(
            parse_bitmap("k", b"junk", 9),
            Err(SnapshotError::BadBitmap { .. })
        ));
    }
}
