//! Reading a run back in order: the streaming reader, which checks the checksum as it reaches
//! the end, and the k-way merge of several runs (spill merging and the sequential resolution).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use xxhash_rust::xxh3::Xxh3;

use super::{
    read_header, HashedEntry, RunEntry, RunError, RunHeader, END_MAGIC, HASHED_RECORD_LEN,
};
use crate::snapshot::record::FLAG_DELETED;
use crate::table::PrimaryKeyHash;

/// Reads a run back, verifying its checksum when the last entry has been read.
pub struct RunReader {
    path: String,
    input: BufReader<File>,
    hasher: Xxh3,
    pub header: RunHeader,
    remaining: u64,
    hashed_keys: bool,
}

impl RunReader {
    pub fn open(path: &Path) -> Result<RunReader, RunError> {
        let shown = path.display().to_string();
        let file = File::open(path).map_err(|source| RunError::Io {
            path: shown.clone(),
            source,
        })?;
        let mut input = BufReader::with_capacity(256 * 1024, file);
        let mut hasher = Xxh3::new();
        // The header counts towards the checksum like every other byte.
        let (header, _) = read_header(
            |buffer| take(&mut input, &mut hasher, buffer, &shown),
            &shown,
        )?;
        Ok(RunReader {
            path: shown,
            input,
            hasher,
            remaining: header.entries,
            hashed_keys: header.primary_key_hash == PrimaryKeyHash::Xxh3_128,
            header,
        })
    }

    fn corrupt(&self, message: &str) -> RunError {
        RunError::Corrupt {
            path: self.path.clone(),
            message: message.to_string(),
        }
    }

    fn take(&mut self, buffer: &mut [u8]) -> Result<(), RunError> {
        take(&mut self.input, &mut self.hasher, buffer, &self.path)
    }

    /// The next entry, or `None` after the last one once the checksum has been verified.
    pub fn next_entry(&mut self) -> Result<Option<RunEntry>, RunError> {
        if self.remaining == 0 {
            self.verify_footer()?;
            return Ok(None);
        }
        self.remaining -= 1;
        let decode = |fixed: &[u8]| {
            (
                u64::from_le_bytes(fixed[0..8].try_into().expect("8 bytes")),
                u32::from_le_bytes(fixed[8..12].try_into().expect("4 bytes")),
                fixed[12] & FLAG_DELETED != 0,
            )
        };
        if self.hashed_keys {
            let mut record = [0u8; HASHED_RECORD_LEN];
            self.take(&mut record)?;
            return Ok(Some(HashedEntry::decode(&record).into()));
        }
        let mut len = [0u8; 2];
        self.take(&mut len)?;
        let mut key = vec![0u8; u16::from_le_bytes(len) as usize];
        self.take(&mut key)?;
        let mut fixed = [0u8; 13];
        self.take(&mut fixed)?;
        let (comparison, doc_id, deleted) = decode(&fixed);
        Ok(Some(RunEntry::new(
            &key, comparison, doc_id, deleted, false,
        )))
    }

    fn verify_footer(&mut self) -> Result<(), RunError> {
        let expected = self.hasher.digest();
        let mut footer = [0u8; 16];
        self.input
            .read_exact(&mut footer)
            .map_err(|_| self.corrupt("footer missing"))?;
        if u64::from_le_bytes(footer[0..8].try_into().expect("8 bytes")) != expected {
            return Err(self.corrupt("checksum mismatch"));
        }
        if &footer[8..16] != END_MAGIC {
            return Err(self.corrupt("bad end magic"));
        }
        Ok(())
    }
}

/// Reads exactly `buffer.len()` bytes and adds them to the running checksum.
fn take(
    input: &mut impl Read,
    hasher: &mut Xxh3,
    buffer: &mut [u8],
    path: &str,
) -> Result<(), RunError> {
    input
        .read_exact(buffer)
        .map_err(|err| RunError::reading(path, err))?;
    hasher.update(buffer);
    Ok(())
}

/// A k-way merge of sorted runs: entries in (key, comparison, docId, run index) order, each with
/// the index of the run it came from. Holds one entry per run in memory.
pub struct MergedRuns {
    readers: Vec<RunReader>,
    heap: BinaryHeap<Reverse<(RunEntry, usize)>>,
}

impl MergedRuns {
    pub fn new(mut readers: Vec<RunReader>) -> Result<MergedRuns, RunError> {
        let mut heap = BinaryHeap::with_capacity(readers.len());
        for (index, reader) in readers.iter_mut().enumerate() {
            if let Some(entry) = reader.next_entry()? {
                heap.push(Reverse((entry, index)));
            }
        }
        Ok(MergedRuns { readers, heap })
    }

    pub fn next_entry(&mut self) -> Result<Option<(usize, RunEntry)>, RunError> {
        let Some(Reverse((entry, index))) = self.heap.pop() else {
            return Ok(None);
        };
        if let Some(next) = self.readers[index].next_entry()? {
            self.heap.push(Reverse((next, index)));
        }
        Ok(Some((index, entry)))
    }

    /// The next entry, without taking it.
    pub fn peek(&self) -> Option<&RunEntry> {
        self.heap.peek().map(|Reverse((entry, _))| entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::keyrun::RunWriter;

    fn entry(key: u8, comparison: u64, doc_id: u32) -> RunEntry {
        RunEntry::new(&[key; 16], comparison, doc_id, doc_id % 2 == 0, true)
    }

    fn header(entries: u64) -> RunHeader {
        RunHeader {
            format: 1,
            primary_key_hash: PrimaryKeyHash::Xxh3_128,
            segment_checksum: "abc".into(),
            entries,
            max_comparison: Some(9),
        }
    }

    #[test]
    fn runs_round_trip_and_detect_damage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.run");
        let entries = vec![entry(1, 5, 0), entry(1, 7, 3), entry(2, 1, 1)];
        let mut writer = RunWriter::create(&path, &header(3)).unwrap();
        for e in &entries {
            writer.write(e).unwrap();
        }
        writer.finish().unwrap();
        let mut reader = RunReader::open(&path).unwrap();
        assert_eq!(reader.header, header(3));
        let mut back = Vec::new();
        while let Some(e) = reader.next_entry().unwrap() {
            back.push(e);
        }
        assert_eq!(back, entries);

        let mut bytes = std::fs::read(&path).unwrap();
        let middle = bytes.len() - 30;
        bytes[middle] ^= 0xFF;
        std::fs::write(&path, &bytes).unwrap();
        let mut reader = RunReader::open(&path).unwrap();
        let err = loop {
            match reader.next_entry() {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("damage went unnoticed"),
                Err(err) => break err,
            }
        };
        assert!(err.to_string().contains("checksum mismatch"), "{err}");
        std::fs::write(&path, &bytes[..bytes.len() - 20]).unwrap();
        let mut reader = RunReader::open(&path).unwrap();
        let err = (0..5).find_map(|_| reader.next_entry().err()).unwrap();
        assert!(err.to_string().contains("corrupt or truncated"), "{err}");
    }
}
