//! Key runs: one sorted file of (metadata key, comparison, docId, deleted) per segment.
//!
//! A segment's run is built once (reading only its key, comparison and delete columns), stored in
//! the object store beside the segment, and reused by every later prebuild, so a partition that
//! gained a few segments does not re-read the Parquet of the old ones. Building a run is an
//! external sort: at most `max_entries_in_memory` entries are sorted in memory, spilled to local
//! disk, and the spills merged; memory stays bounded however large the segment.
//!
//! File layout (little-endian): magic `MNKRUN01`, header length u32, header JSON, then entries
//! `[key length u16 when keys are unhashed] key | comparison (sortable) u64 | docId u32 | flags u8`,
//! sorted by (key, comparison, docId); then xxh3-64 of every preceding byte and magic `MNKREND1`.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::Xxh3;

mod build;
mod derive;
mod file;
mod reader;

pub use build::{build_run, scan_keys};
pub use derive::{derive_run, DeriveInput};
pub use file::{KeyRange, RangeReader, RunFile};
pub use reader::{MergedRuns, RunReader};

use super::record::FLAG_DELETED;
use crate::table::PrimaryKeyHash;

const MAGIC: &[u8; 8] = b"MNKRUN01";
const END_MAGIC: &[u8; 8] = b"MNKREND1";
const HASHED_KEY_LEN: usize = 16;
/// Bytes of one entry of a run with hashed keys: key, comparison, docId, flags.
const HASHED_RECORD_LEN: usize = HASHED_KEY_LEN + 13;
/// Bytes after the last entry: xxh3-64 and the end magic.
const FOOTER_LEN: u64 = 16;

/// One row of a segment whose keys are hashed: 32 bytes, no allocation, ordered like
/// [`RunEntry`] (key, comparison, docId). The fast path of building and resolving runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct HashedEntry {
    /// The 16-byte key read big-endian, so integer order is byte order.
    pub key: u128,
    pub comparison: u64,
    pub doc_id: u32,
    pub deleted: bool,
}

impl HashedEntry {
    fn encode(&self) -> [u8; HASHED_RECORD_LEN] {
        let mut record = [0u8; HASHED_RECORD_LEN];
        record[..16].copy_from_slice(&self.key.to_be_bytes());
        record[16..24].copy_from_slice(&self.comparison.to_le_bytes());
        record[24..28].copy_from_slice(&self.doc_id.to_le_bytes());
        record[28] = if self.deleted { FLAG_DELETED } else { 0 };
        record
    }

    fn decode(record: &[u8]) -> HashedEntry {
        debug_assert_eq!(record.len(), HASHED_RECORD_LEN);
        HashedEntry {
            key: u128::from_be_bytes(record[..16].try_into().expect("16 bytes")),
            comparison: u64::from_le_bytes(record[16..24].try_into().expect("8 bytes")),
            doc_id: u32::from_le_bytes(record[24..28].try_into().expect("4 bytes")),
            deleted: record[28] & FLAG_DELETED != 0,
        }
    }
}

/// One row of a segment, as prebuild sees it.
///
/// Ordered by key, then comparison, then docId. The key's first 16 bytes (big-endian, zero
/// padded) sit in `prefix`, so most comparisons are one integer comparison; for hashed keys the
/// prefix *is* the key and nothing is allocated. Unhashed keys keep their bytes in `rest`, which
/// decides between keys whose prefixes tie (zero padding preserves byte order otherwise).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunEntry {
    pub prefix: u128,
    /// The whole key when keys are unhashed; empty for hashed keys.
    pub rest: Box<[u8]>,
    /// Sortable comparison value (see `record`).
    pub comparison: u64,
    pub doc_id: u32,
    pub deleted: bool,
}

impl Ord for RunEntry {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.prefix
            .cmp(&other.prefix)
            .then_with(|| {
                // Hashed keys have no `rest`: skip the slice comparison in the hot loop.
                if self.rest.is_empty() && other.rest.is_empty() {
                    std::cmp::Ordering::Equal
                } else {
                    self.rest.cmp(&other.rest)
                }
            })
            .then(self.comparison.cmp(&other.comparison))
            .then(self.doc_id.cmp(&other.doc_id))
            .then(self.deleted.cmp(&other.deleted))
    }
}

impl PartialOrd for RunEntry {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl RunEntry {
    pub fn new(key: &[u8], comparison: u64, doc_id: u32, deleted: bool, hashed: bool) -> RunEntry {
        let mut padded = [0u8; 16];
        let head = key.len().min(16);
        padded[..head].copy_from_slice(&key[..head]);
        debug_assert!(!hashed || key.len() == HASHED_KEY_LEN);
        RunEntry {
            prefix: u128::from_be_bytes(padded),
            rest: if hashed { Box::default() } else { key.into() },
            comparison,
            doc_id,
            deleted,
        }
    }

    /// Calls `f` with the metadata key's bytes (without allocating for hashed keys).
    pub fn with_key<R>(&self, f: impl FnOnce(&[u8]) -> R) -> R {
        if self.rest.is_empty() {
            f(&self.prefix.to_be_bytes())
        } else {
            f(&self.rest)
        }
    }

    pub fn same_key(&self, other: &RunEntry) -> bool {
        self.prefix == other.prefix && self.rest == other.rest
    }
}

impl From<HashedEntry> for RunEntry {
    fn from(entry: HashedEntry) -> RunEntry {
        RunEntry {
            prefix: entry.key,
            rest: Box::default(),
            comparison: entry.comparison,
            doc_id: entry.doc_id,
            deleted: entry.deleted,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunHeader {
    pub format: u32,
    /// `xxh3_128` (fixed 16-byte keys) or `none` (length-prefixed keys).
    pub primary_key_hash: PrimaryKeyHash,
    /// SHA-256 of the segment the run was built from; empty for local spill files.
    pub segment_checksum: String,
    pub entries: u64,
    /// Largest sortable comparison value in the run.
    pub max_comparison: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("key run {path} is corrupt or truncated: {message}; delete it and prebuild again (it is rebuilt from the segment)")]
    Corrupt { path: String, message: String },
    #[error("key run file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Segment(#[from] crate::segment::SegmentError),
}

impl crate::error::Permanence for RunError {
    /// A corrupt run or unreadable segment stays so; local I/O may pass.
    fn is_permanent(&self) -> bool {
        match self {
            RunError::Corrupt { .. } => true,
            RunError::Segment(err) => err.is_permanent(),
            RunError::Io { .. } => false,
        }
    }
}

impl RunError {
    /// A failed read of a run file: running out of bytes means the file is truncated.
    fn reading(path: &str, err: std::io::Error) -> RunError {
        match err.kind() {
            std::io::ErrorKind::UnexpectedEof => RunError::Corrupt {
                path: path.to_string(),
                message: "file ends early".into(),
            },
            _ => RunError::Io {
                path: path.to_string(),
                source: err,
            },
        }
    }
}

/// Writes entries in sorted order; the caller guarantees the order (checked in debug builds).
pub struct RunWriter {
    path: PathBuf,
    out: File,
    /// Bytes not yet hashed and written: hashing 29-byte pieces one by one is slow.
    pending: Vec<u8>,
    hasher: Xxh3,
    hashed_keys: bool,
    written: u64,
    expected: u64,
    #[cfg(debug_assertions)]
    last: Option<RunEntry>,
}

impl RunWriter {
    pub fn create(path: &Path, header: &RunHeader) -> Result<RunWriter, RunError> {
        let io = |source| RunError::Io {
            path: path.display().to_string(),
            source,
        };
        let file = File::create(path).map_err(io)?;
        let mut writer = RunWriter {
            path: path.to_path_buf(),
            out: file,
            pending: Vec::with_capacity(Self::BUFFER),
            hasher: Xxh3::new(),
            hashed_keys: header.primary_key_hash == PrimaryKeyHash::Xxh3_128,
            written: 0,
            expected: header.entries,
            #[cfg(debug_assertions)]
            last: None,
        };
        let header_json = serde_json::to_vec(header).expect("run header serializes");
        writer.put(MAGIC)?;
        writer.put(&(header_json.len() as u32).to_le_bytes())?;
        writer.put(&header_json)?;
        Ok(writer)
    }

    const BUFFER: usize = 1 << 20;

    fn put(&mut self, bytes: &[u8]) -> Result<(), RunError> {
        self.pending.extend_from_slice(bytes);
        if self.pending.len() >= Self::BUFFER {
            self.flush_pending()?;
        }
        Ok(())
    }

    fn flush_pending(&mut self) -> Result<(), RunError> {
        self.hasher.update(&self.pending);
        self.out
            .write_all(&self.pending)
            .map_err(|source| RunError::Io {
                path: self.path.display().to_string(),
                source,
            })?;
        self.pending.clear();
        Ok(())
    }

    /// Writes an entry of a run with hashed keys, without building a [`RunEntry`].
    pub fn write_hashed(&mut self, entry: &HashedEntry) -> Result<(), RunError> {
        debug_assert!(self.hashed_keys);
        self.put(&entry.encode())?;
        self.written += 1;
        Ok(())
    }

    pub fn write(&mut self, entry: &RunEntry) -> Result<(), RunError> {
        #[cfg(debug_assertions)]
        {
            debug_assert!(
                self.last.as_ref().is_none_or(|last| last <= entry),
                "run entries out of order"
            );
            self.last = Some(entry.clone());
        }
        // The fixed tail (comparison, docId, flags) is laid out as in a hashed record, whose
        // first 16 bytes are the key: the prefix, for hashed keys.
        let record = HashedEntry {
            key: entry.prefix,
            comparison: entry.comparison,
            doc_id: entry.doc_id,
            deleted: entry.deleted,
        }
        .encode();
        if self.hashed_keys {
            debug_assert!(entry.rest.is_empty());
            self.put(&record)?;
        } else {
            let len = u16::try_from(entry.rest.len()).map_err(|_| RunError::Corrupt {
                path: self.path.display().to_string(),
                message: format!(
                    "a primary key of {} bytes is longer than 65535",
                    entry.rest.len()
                ),
            })?;
            self.put(&len.to_le_bytes())?;
            self.put(&entry.rest)?;
            self.put(&record[HASHED_KEY_LEN..])?;
        }
        self.written += 1;
        Ok(())
    }

    pub fn finish(mut self) -> Result<u64, RunError> {
        debug_assert_eq!(self.written, self.expected, "header entry count must match");
        self.flush_pending()?;
        let digest = self.hasher.digest();
        let io = |source| RunError::Io {
            path: self.path.display().to_string(),
            source,
        };
        self.out.write_all(&digest.to_le_bytes()).map_err(io)?;
        self.out.write_all(END_MAGIC).map_err(io)?;
        self.out.flush().map_err(io)?;
        Ok(self.written)
    }
}

/// Reads and checks the magic and header through `take`; returns the header and the offset of
/// the first entry.
fn read_header(
    mut take: impl FnMut(&mut [u8]) -> Result<(), RunError>,
    path: &str,
) -> Result<(RunHeader, u64), RunError> {
    let corrupt = |message: String| RunError::Corrupt {
        path: path.to_string(),
        message,
    };
    let mut magic = [0u8; 8];
    take(&mut magic)?;
    if &magic != MAGIC {
        return Err(corrupt("not a key run (bad magic)".into()));
    }
    let mut len = [0u8; 4];
    take(&mut len)?;
    let len = u32::from_le_bytes(len) as usize;
    if len > 1 << 20 {
        return Err(corrupt("header length is implausible".into()));
    }
    let mut header = vec![0u8; len];
    take(&mut header)?;
    let header: RunHeader =
        serde_json::from_slice(&header).map_err(|err| corrupt(format!("bad header: {err}")))?;
    if header.format != 1 {
        return Err(corrupt(format!("unknown format {}", header.format)));
    }
    Ok((header, (MAGIC.len() + 4 + len) as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_order_agrees_with_byte_order() {
        let keys: [&[u8]; 6] = [
            b"a",
            b"a\0",
            b"a\0\x01",
            b"ab",
            b"abcdefghijklmnopq",
            b"abcdefghijklmnopr",
        ];
        let entries: Vec<RunEntry> = keys
            .iter()
            .map(|k| RunEntry::new(k, 0, 0, false, false))
            .collect();
        for (a, b) in entries.iter().zip(entries.iter().skip(1)) {
            assert!(a < b, "{a:?} < {b:?}");
            assert!(!a.same_key(b));
        }
        for (entry, key) in entries.iter().zip(keys) {
            entry.with_key(|bytes| assert_eq!(bytes, key));
        }
    }
}
