//! Deriving the key run of a rewritten segment (compaction or merge output) from its inputs' runs
//! and the validDocIds bitmaps the rewrite used, without reading the output's Parquet (issue 14).
//!
//! The rewrite keeps exactly the valid rows of each input in docId order, inputs one after the
//! other, so a kept entry `(key, comparison, doc)` of input `i` is the output's entry
//! `(key, comparison, offset(i) + rank(valid(i), doc) - 1)`. Within one input the new docId grows
//! with the old one, and valid rows of different inputs never share a key (a snapshot has one
//! valid row per key), so merging the filtered runs by (key, comparison, old docId) gives the
//! output's run in its own order: the same bytes `build_run` would write from the output file.

use std::path::{Path, PathBuf};

use roaring::RoaringBitmap;

use crate::table::PrimaryKeyHash;

use super::{MergedRuns, RunEntry, RunError, RunHeader, RunReader, RunWriter};

/// One input of a rewrite: its run on local disk, the rows kept, and where they start.
pub struct DeriveInput<'a> {
    pub run: PathBuf,
    pub valid: &'a RoaringBitmap,
    pub offset: u64,
}

impl DeriveInput<'_> {
    fn kept(&self, entry: &RunEntry) -> bool {
        self.valid.contains(entry.doc_id)
    }

    /// The kept entry with its docId in the output.
    fn moved(&self, mut entry: RunEntry) -> RunEntry {
        entry.doc_id = (self.offset + self.valid.rank(entry.doc_id) - 1) as u32;
        entry
    }
}

/// Writes the run of the output segment (whose SHA-256 is `segment_checksum`) to `out`. Every
/// input run is read in full and checked, and must hold exactly one entry per kept row.
pub fn derive_run(
    inputs: &[DeriveInput<'_>],
    segment_checksum: &str,
    out: &Path,
) -> Result<RunHeader, RunError> {
    let corrupt = |input: &DeriveInput<'_>, message: String| RunError::Corrupt {
        path: input.run.display().to_string(),
        message,
    };
    // Pass 1: check each run against its bitmap and find the header's figures.
    let mut entries = 0u64;
    let mut max_comparison: Option<u64> = None;
    let mut hash = None;
    for input in inputs {
        let mut reader = RunReader::open(&input.run)?;
        if *hash.get_or_insert(reader.header.primary_key_hash) != reader.header.primary_key_hash {
            return Err(corrupt(
                input,
                "its keys are hashed unlike the other inputs'".into(),
            ));
        }
        let mut kept = 0u64;
        while let Some(entry) = reader.next_entry()? {
            if input.kept(&entry) {
                kept += 1;
                max_comparison = max_comparison.max(Some(entry.comparison));
            }
        }
        if kept != input.valid.len() {
            return Err(corrupt(
                input,
                format!(
                    "it holds {kept} entries for the {} rows the bitmap keeps",
                    input.valid.len()
                ),
            ));
        }
        entries += kept;
    }
    let header = RunHeader {
        format: 1,
        primary_key_hash: hash.unwrap_or(PrimaryKeyHash::Xxh3_128),
        segment_checksum: segment_checksum.to_string(),
        entries,
        max_comparison,
    };
    // Pass 2: merge the kept entries, moved to their output docIds.
    let readers = inputs
        .iter()
        .map(|input| RunReader::open(&input.run))
        .collect::<Result<Vec<_>, _>>()?;
    let mut merged = MergedRuns::new(readers)?;
    let mut writer = RunWriter::create(out, &header)?;
    while let Some((index, entry)) = merged.next_entry()? {
        let input = &inputs[index];
        if input.kept(&entry) {
            writer.write(&input.moved(entry))?;
        }
    }
    writer.finish()?;
    Ok(header)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_run(path: &Path, entries: &[RunEntry]) {
        let mut sorted = entries.to_vec();
        sorted.sort();
        let header = RunHeader {
            format: 1,
            primary_key_hash: PrimaryKeyHash::Xxh3_128,
            segment_checksum: "in".into(),
            entries: sorted.len() as u64,
            max_comparison: sorted.iter().map(|e| e.comparison).max(),
        };
        let mut writer = RunWriter::create(path, &header).unwrap();
        for entry in &sorted {
            writer.write(entry).unwrap();
        }
        writer.finish().unwrap();
    }

    fn read_all(path: &Path) -> (RunHeader, Vec<RunEntry>) {
        let mut reader = RunReader::open(path).unwrap();
        let mut out = Vec::new();
        while let Some(entry) = reader.next_entry().unwrap() {
            out.push(entry);
        }
        (reader.header, out)
    }

    fn entry(key: u8, comparison: u64, doc_id: u32) -> RunEntry {
        RunEntry::new(&[key; 16], comparison, doc_id, key % 3 == 0, true)
    }

    #[test]
    fn the_derived_run_is_the_run_of_the_rewritten_rows() {
        let dir = tempfile::tempdir().unwrap();
        // Input a: docs 0..6 with keys 5,1,5,2,9,3; input b: docs 0..4 with keys 7,1,4,8.
        let a_rows = [(5, 10), (1, 11), (5, 12), (2, 13), (9, 14), (3, 15)];
        let b_rows = [(7, 20), (1, 21), (4, 22), (8, 23)];
        let to_entries = |rows: &[(u8, u64)]| -> Vec<RunEntry> {
            rows.iter()
                .enumerate()
                .map(|(doc, &(key, cmp))| entry(key, cmp, doc as u32))
                .collect()
        };
        let (a, b) = (dir.path().join("a.run"), dir.path().join("b.run"));
        write_run(&a, &to_entries(&a_rows));
        write_run(&b, &to_entries(&b_rows));
        // a keeps docs 2 (key 5), 3, 4, 5; b keeps 0, 1 (key 1: a's doc 1 lost to it), 3.
        let a_valid: RoaringBitmap = [2u32, 3, 4, 5].into_iter().collect();
        let b_valid: RoaringBitmap = [0u32, 1, 3].into_iter().collect();
        let out = dir.path().join("out.run");
        let header = derive_run(
            &[
                DeriveInput {
                    run: a,
                    valid: &a_valid,
                    offset: 0,
                },
                DeriveInput {
                    run: b,
                    valid: &b_valid,
                    offset: 4,
                },
            ],
            "out",
            &out,
        )
        .unwrap();
        // What build_run would see in the output: a's kept rows, then b's.
        let output_rows = [
            (5, 12),
            (2, 13),
            (9, 14),
            (3, 15),
            (7, 20),
            (1, 21),
            (8, 23),
        ];
        let expected_path = dir.path().join("expected.run");
        write_run(&expected_path, &to_entries(&output_rows));
        let (_, expected) = read_all(&expected_path);
        let (read_header, derived) = read_all(&out);
        assert_eq!(derived, expected);
        assert_eq!(header, read_header);
        assert_eq!(header.entries, 7);
        assert_eq!(header.max_comparison, Some(23));
        assert_eq!(header.segment_checksum, "out");
    }

    #[test]
    fn a_run_that_disagrees_with_the_bitmap_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.run");
        write_run(&a, &[entry(1, 1, 0), entry(2, 1, 1)]);
        let valid: RoaringBitmap = [0u32, 1, 2].into_iter().collect();
        let err = derive_run(
            &[DeriveInput {
                run: a,
                valid: &valid,
                offset: 0,
            }],
            "out",
            &dir.path().join("out.run"),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("2 entries for the 3 rows"),
            "{err}"
        );
    }
}
