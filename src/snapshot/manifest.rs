//! The snapshot manifest (DESIGN.md section 6): versioned JSON listing every file of a snapshot
//! with its size and checksum. Published manifests are immutable.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::record::ComparisonKind;
use crate::table::PrimaryKeyHash;

pub const FORMAT: u32 = 1;

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
    /// Keys in key metadata.
    pub key_count: u64,
    /// Keys with a valid row (key_count plus keys dropped from metadata by metadata_ttl).
    pub live_keys: u64,
    pub forgotten_deleted_keys: u64,
    pub valid_docs: u64,
    pub queryable_docs: u64,
    /// Largest comparison value over the covered rows (natural i64 or f64 bits) and as f64.
    pub largest_comparison: Option<u64>,
    pub largest_comparison_f64: Option<f64>,
    pub deleted_keys_ttl: Option<f64>,
    pub metadata_ttl: Option<f64>,
    /// Keys whose winner compares below this are not in key metadata.
    pub metadata_watermark: Option<f64>,
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest {key} is not valid JSON for a snapshot manifest: {message}")]
    Invalid { key: String, message: String },
    #[error("manifest {key} has format {found}, but this minion reads format {FORMAT}; upgrade minion (or rebuild the snapshot with `minion run prebuild`)")]
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
        if format != FORMAT as u64 {
            return Err(ManifestError::UnknownFormat {
                key: key.to_string(),
                found: format,
            });
        }
        serde_json::from_value(value).map_err(|err| invalid(err.to_string()))
    }
}
