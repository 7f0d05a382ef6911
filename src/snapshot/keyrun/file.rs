//! Random access to a finished key run, for resolving a partition in key ranges on several
//! threads at once. Entries of a run with hashed keys have a fixed width, so the slice holding a
//! key range is found by binary search with positioned reads; no index is stored.
//!
//! The streaming [`super::RunReader`] checks the checksum as it reaches the end; a slice cannot,
//! so a run that did not come from this process (one downloaded from the store) is verified whole
//! once, when it is opened.

use std::fs::File;
use std::io::{BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;

use xxhash_rust::xxh3::Xxh3;

use super::{
    read_header, HashedEntry, RunError, RunHeader, END_MAGIC, FOOTER_LEN, HASHED_KEY_LEN,
    HASHED_RECORD_LEN,
};
use crate::table::PrimaryKeyHash;

/// Keys `k` with `start <= k < end`; `end: None` reaches the largest key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyRange {
    pub start: u128,
    pub end: Option<u128>,
}

impl KeyRange {
    /// Range `index` of `count` equal ranges of the 128-bit key space. Hashed keys are uniform,
    /// so equal ranges hold about equal numbers of entries.
    pub fn nth_of(index: usize, count: usize) -> KeyRange {
        debug_assert!(index < count);
        let step = u128::MAX / count as u128;
        KeyRange {
            start: step * index as u128,
            end: (index + 1 < count).then(|| step * (index as u128 + 1)),
        }
    }
}

/// A finished run opened for positioned reads; shareable between threads.
#[derive(Debug)]
pub struct RunFile {
    path: String,
    file: File,
    pub header: RunHeader,
    data_offset: u64,
}

impl RunFile {
    /// Opens a run and checks its framing (magic, header, length). With `verify`, also reads
    /// the whole file once and checks its checksum: do so for every run this process did not
    /// write itself.
    pub fn open(path: &Path, verify: bool) -> Result<RunFile, RunError> {
        let shown = path.display().to_string();
        let io = |source| RunError::Io {
            path: shown.clone(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        let length = file.metadata().map_err(io)?.len();
        let (header, data_offset) = {
            let mut input = BufReader::with_capacity(64 * 1024, &file);
            let take = |buffer: &mut [u8]| {
                input
                    .read_exact(buffer)
                    .map_err(|err| RunError::reading(&shown, err))
            };
            read_header(take, &shown)?
        };
        let run = RunFile {
            path: shown,
            file,
            header,
            data_offset,
        };
        if run.hashed() {
            let expected = data_offset + run.header.entries * HASHED_RECORD_LEN as u64 + FOOTER_LEN;
            if length != expected {
                return Err(run.corrupt(&format!(
                    "{length} bytes where {} entries take {expected}",
                    run.header.entries
                )));
            }
        }
        if verify {
            run.verify_checksum(length)?;
        }
        Ok(run)
    }

    fn hashed(&self) -> bool {
        self.header.primary_key_hash == PrimaryKeyHash::Xxh3_128
    }

    fn corrupt(&self, message: &str) -> RunError {
        RunError::Corrupt {
            path: self.path.clone(),
            message: message.to_string(),
        }
    }

    fn verify_checksum(&self, length: u64) -> Result<(), RunError> {
        if length < self.data_offset + FOOTER_LEN {
            return Err(self.corrupt("file ends early"));
        }
        let body = length - FOOTER_LEN;
        let mut hasher = Xxh3::new();
        let mut buffer = vec![0u8; 1 << 20];
        let mut offset = 0u64;
        while offset < body {
            let take = (body - offset).min(buffer.len() as u64) as usize;
            self.read_at(&mut buffer[..take], offset)?;
            hasher.update(&buffer[..take]);
            offset += take as u64;
        }
        let mut footer = [0u8; FOOTER_LEN as usize];
        self.read_at(&mut footer, body)?;
        if u64::from_le_bytes(footer[..8].try_into().expect("8 bytes")) != hasher.digest() {
            return Err(self.corrupt("checksum mismatch"));
        }
        if &footer[8..] != END_MAGIC {
            return Err(self.corrupt("bad end magic"));
        }
        Ok(())
    }

    fn read_at(&self, buffer: &mut [u8], offset: u64) -> Result<(), RunError> {
        self.file
            .read_exact_at(buffer, offset)
            .map_err(|err| RunError::reading(&self.path, err))
    }

    fn key_at(&self, index: u64) -> Result<u128, RunError> {
        let mut key = [0u8; HASHED_KEY_LEN];
        self.read_at(
            &mut key,
            self.data_offset + index * HASHED_RECORD_LEN as u64,
        )?;
        Ok(u128::from_be_bytes(key))
    }

    /// Index of the first entry whose key is at least `key`.
    fn lower_bound(&self, key: u128) -> Result<u64, RunError> {
        let (mut low, mut high) = (0u64, self.header.entries);
        while low < high {
            let middle = low + (high - low) / 2;
            if self.key_at(middle)? < key {
                low = middle + 1;
            } else {
                high = middle;
            }
        }
        Ok(low)
    }

    /// A reader over the entries whose keys fall in `range`, in run order.
    pub fn slice(&self, range: KeyRange) -> Result<RangeReader<'_>, RunError> {
        if !self.hashed() {
            return Err(self.corrupt("key ranges need a run with hashed keys"));
        }
        let start = self.lower_bound(range.start)?;
        let end = match range.end {
            Some(end) => self.lower_bound(end)?,
            None => self.header.entries,
        };
        Ok(RangeReader {
            run: self,
            next: start,
            end,
            buffer: Vec::new(),
            position: 0,
        })
    }
}

/// Entries of one key range of a run, read in blocks.
pub struct RangeReader<'a> {
    run: &'a RunFile,
    /// Index of the first entry not yet in `buffer`.
    next: u64,
    end: u64,
    buffer: Vec<u8>,
    position: usize,
}

impl RangeReader<'_> {
    /// Entries read per block (about 116 KiB).
    const BLOCK_ENTRIES: u64 = 4096;

    pub fn next_entry(&mut self) -> Result<Option<HashedEntry>, RunError> {
        if self.position == self.buffer.len() {
            let count = (self.end - self.next).min(Self::BLOCK_ENTRIES);
            if count == 0 {
                return Ok(None);
            }
            self.buffer.resize(count as usize * HASHED_RECORD_LEN, 0);
            let offset = self.run.data_offset + self.next * HASHED_RECORD_LEN as u64;
            self.run.read_at(&mut self.buffer, offset)?;
            self.next += count;
            self.position = 0;
        }
        let record = &self.buffer[self.position..self.position + HASHED_RECORD_LEN];
        self.position += HASHED_RECORD_LEN;
        Ok(Some(HashedEntry::decode(record)))
    }
}

#[cfg(test)]
mod tests {
    use super::super::RunWriter;
    use super::*;

    #[test]
    fn ranges_cover_the_key_space_without_overlap() {
        for count in [1usize, 2, 3, 8] {
            let ranges: Vec<KeyRange> = (0..count).map(|i| KeyRange::nth_of(i, count)).collect();
            assert_eq!(ranges[0].start, 0);
            assert_eq!(ranges[count - 1].end, None);
            for pair in ranges.windows(2) {
                assert_eq!(pair[0].end, Some(pair[1].start));
            }
        }
    }

    #[test]
    fn slices_partition_a_run_and_damage_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.run");
        let mut entries: Vec<HashedEntry> = (0..10_000u32)
            .map(|i| HashedEntry {
                key: u128::from(i / 3).wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835),
                comparison: u64::from(i % 7),
                doc_id: i,
                deleted: i % 11 == 0,
            })
            .collect();
        entries.sort_unstable();
        let header = RunHeader {
            format: 1,
            primary_key_hash: PrimaryKeyHash::Xxh3_128,
            segment_checksum: "abc".into(),
            entries: entries.len() as u64,
            max_comparison: Some(6),
        };
        let mut writer = RunWriter::create(&path, &header).unwrap();
        entries.iter().for_each(|e| writer.write_hashed(e).unwrap());
        writer.finish().unwrap();

        let run = RunFile::open(&path, true).unwrap();
        let mut back = Vec::new();
        for index in 0..5 {
            let range = KeyRange::nth_of(index, 5);
            let mut reader = run.slice(range).unwrap();
            while let Some(entry) = reader.next_entry().unwrap() {
                assert!(entry.key >= range.start && range.end.is_none_or(|end| entry.key < end));
                back.push(entry);
            }
        }
        assert_eq!(back, entries);

        let mut bytes = std::fs::read(&path).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x10;
        std::fs::write(&path, &bytes).unwrap();
        RunFile::open(&path, false).expect("framing is intact");
        let err = RunFile::open(&path, true).unwrap_err().to_string();
        assert!(err.contains("checksum mismatch"), "{err}");
        std::fs::write(&path, &bytes[..bytes.len() - 7]).unwrap();
        let err = RunFile::open(&path, false).unwrap_err().to_string();
        assert!(err.contains("corrupt or truncated"), "{err}");
    }
}
