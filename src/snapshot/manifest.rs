//! The snapshot manifest (DESIGN.md section 6): versioned JSON listing every file of a snapshot
//! with its size and checksum. Published manifests are immutable.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::record::ComparisonKind;
use crate::table::PrimaryKeyHash;

/// Key metadata in one layer: what every minion reads.
pub const FORMAT: u32 = 1;
/// Key metadata in layers (a layered follow-up prebuild, `snapshot::layers`): written only when a
/// snapshot has more than one layer, so older readers never ingest overlapping files as one.
pub const LAYERED_FORMAT: u32 = 2;
/// A cold key set beside the hot one (`metadata_ttl`, issue 25), layered or not: written only
/// when the snapshot has cold key files, so a reader that knows no cold set refuses it instead
/// of resolving late rows of cold keys as new keys.
pub const COLD_FORMAT: u32 = 3;

/// One object of the snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileEntry {
    pub key: String,
    pub size: u64,
    /// SHA-256, hex.
    pub checksum: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestSegment {
    pub id: i64,
    pub name: String,
    pub sequence: i64,
    /// The segment's SHA-256 when the snapshot was built: a loader refuses the entry if the
    /// segment now differs.
    pub checksum: String,
    pub rows: u64,
    pub valid: FileEntry,
    pub queryable: FileEntry,
    pub valid_docs: u64,
    pub queryable_docs: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyFile {
    #[serde(flatten)]
    pub file: FileEntry,
    pub entries: u64,
    /// The layer the file belongs to (0 unless the snapshot is layered). Files of one layer do not
    /// overlap; a layer's entries replace those of lower layers with the same key, so a loader
    /// ingests the layers in order.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub layer: u32,
}

fn is_zero(layer: &u32) -> bool {
    *layer == 0
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub table: String,
    pub partition: u32,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub job_id: Option<i64>,
    pub primary_key_hash: PrimaryKeyHash,
    pub comparison_kind: ComparisonKind,
    pub sst_format_version: i32,
    pub segments: Vec<ManifestSegment>,
    pub key_files: Vec<KeyFile>,
    /// The cold key set (format 3): keys whose winner compares below `metadata_watermark`, in
    /// the same record format and layers as `key_files`, which a loader consults only when the
    /// hot set misses. Absent when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cold_key_files: Vec<KeyFile>,
    /// Keys in the hot key metadata (`key_files`).
    pub key_count: u64,
    /// Keys with a valid row: key_count plus the cold keys (before format 3: keys dropped from
    /// metadata by metadata_ttl, in no file).
    pub live_keys: u64,
    pub forgotten_deleted_keys: u64,
    /// Deleted keys past `deleted_keys_ttl` kept because older rows of the key remain (absent in
    /// manifests written before it was counted): a layered follow-up needs 0, since compaction
    /// dropping those rows makes such a key forgettable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expired_tombstones_kept: Option<u64>,
    pub valid_docs: u64,
    pub queryable_docs: u64,
    /// Largest comparison value over the covered rows (natural i64 or f64 bits) and as f64.
    pub largest_comparison: Option<u64>,
    pub largest_comparison_f64: Option<f64>,
    pub deleted_keys_ttl: Option<f64>,
    pub metadata_ttl: Option<f64>,
    /// Keys whose winner compares below this are in the cold key set, not the hot one.
    pub metadata_watermark: Option<f64>,
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest {key} is not valid JSON for a snapshot manifest: {message}")]
    Invalid { key: String, message: String },
    #[error("manifest {key} has format {found}, but this minion reads formats {FORMAT} to {COLD_FORMAT}; upgrade minion, or rebuild the snapshot with `minion run prebuild --table TABLE --partition N --force`")]
    UnknownFormat { key: String, found: u64 },
}

impl crate::error::Permanence for ManifestError {
    /// A published manifest never changes: reading it again gives the same answer.
    fn is_permanent(&self) -> bool {
        true
    }
}

impl Manifest {
    pub fn parse(key: &str, bytes: &[u8]) -> Result<Manifest, ManifestError> {
        let invalid = |message: String| ManifestError::Invalid {
            key: key.to_string(),
            message,
        };
        let value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|err| invalid(err.to_string()))?;
        let format = value
            .get("format")
            .and_then(|f| f.as_u64())
            .ok_or_else(|| invalid("no `format` field".into()))?;
        if !(FORMAT as u64..=COLD_FORMAT as u64).contains(&format) {
            return Err(ManifestError::UnknownFormat {
                key: key.to_string(),
                found: format,
            });
        }
        let manifest: Manifest =
            serde_json::from_value(value).map_err(|err| invalid(err.to_string()))?;
        for files in [&manifest.key_files, &manifest.cold_key_files] {
            let layers = files.iter().map(|f| f.layer);
            if !layers.clone().zip(layers.skip(1)).all(|(a, b)| a <= b) {
                return Err(invalid(
                    "its key files are not listed in layer order".into(),
                ));
            }
        }
        if manifest.format < COLD_FORMAT && !manifest.cold_key_files.is_empty() {
            return Err(invalid(format!(
                "format {} has no cold key set, but it lists cold key files",
                manifest.format
            )));
        }
        if manifest.format == FORMAT && manifest.key_layers() > 1 {
            return Err(invalid(format!(
                "format {FORMAT} has one key layer, but its key files have layers up to {}",
                manifest.key_layers() - 1
            )));
        }
        Ok(manifest)
    }

    /// How many key-metadata layers the snapshot has (1 unless a layered follow-up made it; 0
    /// with no key files), over both key sets.
    pub fn key_layers(&self) -> u32 {
        let top = |files: &[KeyFile]| files.last().map_or(0, |f| f.layer + 1);
        top(&self.key_files).max(top(&self.cold_key_files))
    }

    /// The format a manifest with these key files is written in: the oldest that holds them.
    pub fn format_for(key_files: &[KeyFile], cold_key_files: &[KeyFile]) -> u32 {
        if !cold_key_files.is_empty() {
            COLD_FORMAT
        } else if key_files.iter().any(|f| f.layer > 0) {
            LAYERED_FORMAT
        } else {
            FORMAT
        }
    }

    /// Keys in the cold key set (with a valid row, out of the hot key metadata).
    pub fn cold_key_count(&self) -> u64 {
        self.live_keys.saturating_sub(self.key_count)
    }

    /// Whether keys left the hot key metadata without a cold key set to find them in: a
    /// snapshot written before cold key sets existed. Late rows of those keys cannot be resolved
    /// against it, so loaders do not use it and prebuilds do not layer on it.
    pub fn lacks_cold_keys(&self) -> bool {
        self.cold_key_count() > 0 && self.cold_key_files.is_empty()
    }

    /// Why the snapshot cannot be used, if it [lacks its cold key set](Self::lacks_cold_keys).
    pub fn missing_cold_keys(&self) -> Option<String> {
        self.lacks_cold_keys().then(|| {
            format!(
                "snapshot {} predates cold key sets: {} keys left its key metadata by metadata_ttl and no file holds them",
                self.version,
                self.cold_key_count()
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest_json(format: u32, layers: &[u32]) -> Vec<u8> {
        let key_files: Vec<_> = layers
            .iter()
            .enumerate()
            .map(|(i, layer)| {
                serde_json::json!({"key": format!("k/{i}.sst"), "size": 1, "checksum": "c",
                    "entries": 1, "layer": layer})
            })
            .collect();
        serde_json::to_vec(&serde_json::json!({
            "format": format, "table": "t", "partition": 0, "version": 3,
            "created_at": "2026-11-29T00:00:00Z", "job_id": null,
            "primary_key_hash": "xxh3_128", "comparison_kind": "integer",
            "sst_format_version": 5, "segments": [], "key_files": key_files,
            "key_count": 1, "live_keys": 1, "forgotten_deleted_keys": 0, "valid_docs": 1,
            "queryable_docs": 1, "largest_comparison": null, "largest_comparison_f64": null,
            "deleted_keys_ttl": null, "metadata_ttl": null, "metadata_watermark": null
        }))
        .unwrap()
    }

    #[test]
    fn layered_manifests_name_their_format_and_list_layers_in_order() {
        let one = Manifest::parse("m", &manifest_json(FORMAT, &[0, 0])).unwrap();
        assert_eq!(one.key_layers(), 1);
        // A single-layer manifest is written exactly as before layers existed.
        let text = serde_json::to_string(&one).unwrap();
        assert!(!text.contains("layer"), "{text}");
        assert_eq!(Manifest::format_for(&one.key_files, &[]), FORMAT);

        let layered = Manifest::parse("m", &manifest_json(LAYERED_FORMAT, &[0, 0, 1, 2])).unwrap();
        assert_eq!(layered.key_layers(), 3);
        assert_eq!(
            Manifest::format_for(&layered.key_files, &[]),
            LAYERED_FORMAT
        );

        let err = Manifest::parse("m", &manifest_json(FORMAT, &[0, 1])).unwrap_err();
        assert!(
            err.to_string().contains("format 1 has one key layer"),
            "{err}"
        );
        let err = Manifest::parse("m", &manifest_json(LAYERED_FORMAT, &[1, 0])).unwrap_err();
        assert!(
            err.to_string().contains("not listed in layer order"),
            "{err}"
        );
        let err = Manifest::parse("m", &manifest_json(4, &[0])).unwrap_err();
        assert!(err.to_string().contains("reads formats 1 to 3"), "{err}");
    }

    #[test]
    fn cold_key_files_need_format_3() {
        let mut value: serde_json::Value =
            serde_json::from_slice(&manifest_json(FORMAT, &[0])).unwrap();
        value["cold_key_files"] = serde_json::json!([
            {"key": "c/0.sst", "size": 1, "checksum": "c", "entries": 4}
        ]);
        value["live_keys"] = serde_json::json!(5);
        let err = Manifest::parse("m", &serde_json::to_vec(&value).unwrap()).unwrap_err();
        assert!(err.to_string().contains("has no cold key set"), "{err}");
        value["format"] = serde_json::json!(COLD_FORMAT);
        let cold = Manifest::parse("m", &serde_json::to_vec(&value).unwrap()).unwrap();
        assert_eq!(cold.cold_key_count(), 4);
        assert!(!cold.lacks_cold_keys());
        assert_eq!(
            Manifest::format_for(&cold.key_files, &cold.cold_key_files),
            COLD_FORMAT
        );
        // Written before cold key sets: keys left the metadata and nothing holds them.
        let old = Manifest {
            cold_key_files: Vec::new(),
            format: FORMAT,
            ..cold
        };
        assert!(old.lacks_cold_keys());
    }
}
