//! Building a segment's key run: reading its key, comparison and delete columns, and sorting
//! with bounded memory (sorted chunks spilled to local disk, then merged).

use std::path::{Path, PathBuf};

use arrow::array::{Array, ArrayRef, AsArray};

use super::{HashedEntry, MergedRuns, RunEntry, RunError, RunHeader, RunReader, RunWriter};
use crate::keys::{encode_key_into, metadata_key};
use crate::segment::SegmentFile;
use crate::snapshot::record::sortable_values;
use crate::table::{PrimaryKeyHash, TableConfig};

/// Calls `visit(metadata key, sortable comparison, docId, deleted)` for every row of a local
/// segment file in docId order, reading only the key, comparison and delete columns.
pub fn scan_keys<E: From<RunError>>(
    segment: &Path,
    table: &TableConfig,
    mut visit: impl FnMut(&[u8], u64, u32, bool) -> Result<(), E>,
) -> Result<u64, E> {
    let file = SegmentFile::open(segment, table).map_err(RunError::from)?;
    let mut columns: Vec<&str> = table.primary_key.iter().map(String::as_str).collect();
    columns.push(&table.comparison);
    if let Some(delete) = &table.delete_column {
        columns.push(delete);
    }
    let key_count = table.primary_key.len();
    // Projected batches come back in file column order; find each needed column by name.
    let file_schema = file.metadata().file_metadata().schema_descr_ptr();
    let position_in_file = |name: &str| {
        (0..file_schema.num_columns())
            .find(|&i| file_schema.column(i).name() == name)
            .expect("schema checked by SegmentFile::open")
    };
    let mut in_file: Vec<usize> = columns.iter().map(|name| position_in_file(name)).collect();
    in_file.sort_unstable();
    let order: Vec<usize> = columns
        .iter()
        .map(|name| {
            in_file
                .iter()
                .position(|&i| i == position_in_file(name))
                .expect("present")
        })
        .collect();

    let mut doc_id: u32 = 0;
    let mut encoded = Vec::with_capacity(64);
    let mut key = Vec::with_capacity(64);
    for batch in file.read(Some(&columns), 8192).map_err(RunError::from)? {
        let batch = batch.map_err(RunError::from)?;
        let key_columns: Vec<ArrayRef> = order[..key_count]
            .iter()
            .map(|&i| batch.column(i).clone())
            .collect();
        let comparisons = sortable_values(batch.column(order[key_count]).as_ref());
        let deletes = table
            .delete_column
            .as_ref()
            .map(|_| batch.column(order[key_count + 1]).as_boolean().clone());
        for (row, &comparison) in comparisons.iter().enumerate() {
            encode_key_into(&key_columns, row, &mut encoded);
            metadata_key(&encoded, table.primary_key_hash, &mut key);
            let deleted = deletes
                .as_ref()
                .is_some_and(|d| d.is_valid(row) && d.value(row));
            visit(&key, comparison, doc_id, deleted)?;
            doc_id = doc_id.checked_add(1).ok_or_else(|| RunError::Corrupt {
                path: segment.display().to_string(),
                message: "more than 4 billion rows in one segment".into(),
            })?;
        }
    }
    Ok(doc_id as u64)
}

/// Builds the sorted key run of a local segment file into `out`, spilling sorted chunks of at
/// most `max_entries_in_memory` entries to `workdir`.
pub fn build_run(
    segment: &Path,
    segment_checksum: &str,
    table: &TableConfig,
    out: &Path,
    workdir: &Path,
    max_entries_in_memory: usize,
) -> Result<RunHeader, RunError> {
    let build = if table.primary_key_hash == PrimaryKeyHash::Xxh3_128 {
        build_sorted::<HashedEntry>
    } else {
        build_sorted::<RunEntry>
    };
    build(
        segment,
        segment_checksum,
        table,
        out,
        workdir,
        max_entries_in_memory.max(1),
    )
}

/// What a run is built from in memory: the general [`RunEntry`], or for hashed keys the
/// allocation-free 32-byte [`HashedEntry`] with its faster sort.
trait ChunkEntry: Sized {
    fn from_row(key: &[u8], comparison: u64, doc_id: u32, deleted: bool) -> Self;
    fn sort(chunk: Vec<Self>) -> Vec<Self>;
    fn write_to(&self, writer: &mut RunWriter) -> Result<(), RunError>;
}

impl ChunkEntry for RunEntry {
    fn from_row(key: &[u8], comparison: u64, doc_id: u32, deleted: bool) -> Self {
        RunEntry::new(key, comparison, doc_id, deleted, false)
    }

    fn sort(mut chunk: Vec<Self>) -> Vec<Self> {
        chunk.sort_unstable();
        chunk
    }

    fn write_to(&self, writer: &mut RunWriter) -> Result<(), RunError> {
        writer.write(self)
    }
}

impl ChunkEntry for HashedEntry {
    fn from_row(key: &[u8], comparison: u64, doc_id: u32, deleted: bool) -> Self {
        let key: [u8; 16] = key.try_into().expect("hashed keys are 16 bytes");
        HashedEntry {
            key: u128::from_be_bytes(key),
            comparison,
            doc_id,
            deleted,
        }
    }

    fn sort(chunk: Vec<Self>) -> Vec<Self> {
        sort_hashed(chunk)
    }

    fn write_to(&self, writer: &mut RunWriter) -> Result<(), RunError> {
        writer.write_hashed(self)
    }
}

fn build_sorted<E: ChunkEntry>(
    segment: &Path,
    segment_checksum: &str,
    table: &TableConfig,
    out: &Path,
    workdir: &Path,
    limit: usize,
) -> Result<RunHeader, RunError> {
    let mut chunk: Vec<E> = Vec::with_capacity(limit.min(1 << 21));
    let mut spills: Vec<PathBuf> = Vec::new();
    let mut max_comparison: Option<u64> = None;
    let entries = scan_keys(
        segment,
        table,
        |key, comparison, doc_id, deleted| -> Result<(), RunError> {
            max_comparison = Some(max_comparison.map_or(comparison, |m| m.max(comparison)));
            // Spill before the chunk grows past the limit, so a segment of exactly `limit` rows
            // is sorted in memory and written once.
            if chunk.len() >= limit {
                spills.push(spill(&mut chunk, table, workdir, spills.len())?);
            }
            chunk.push(E::from_row(key, comparison, doc_id, deleted));
            Ok(())
        },
    )?;
    let header = run_header(table, segment_checksum, entries, max_comparison);
    if spills.is_empty() {
        write_run(out, &header, &E::sort(chunk))?;
        return Ok(header);
    }
    if !chunk.is_empty() {
        spills.push(spill(&mut chunk, table, workdir, spills.len())?);
    }
    drop(chunk);
    merge_spills(spills, &header, out)?;
    Ok(header)
}

fn write_run<E: ChunkEntry>(path: &Path, header: &RunHeader, sorted: &[E]) -> Result<(), RunError> {
    let mut writer = RunWriter::create(path, header)?;
    for entry in sorted {
        entry.write_to(&mut writer)?;
    }
    writer.finish()?;
    Ok(())
}

/// Sorts the chunk and writes it to a spill file; leaves the chunk empty (its allocation kept).
fn spill<E: ChunkEntry>(
    chunk: &mut Vec<E>,
    table: &TableConfig,
    workdir: &Path,
    index: usize,
) -> Result<PathBuf, RunError> {
    let sorted = E::sort(std::mem::take(chunk));
    let path = spill_path(workdir, index);
    write_run(
        &path,
        &run_header(table, "", sorted.len() as u64, None),
        &sorted,
    )?;
    *chunk = sorted;
    chunk.clear();
    Ok(path)
}

fn run_header(
    table: &TableConfig,
    segment_checksum: &str,
    entries: u64,
    max_comparison: Option<u64>,
) -> RunHeader {
    RunHeader {
        format: 1,
        primary_key_hash: table.primary_key_hash,
        segment_checksum: segment_checksum.to_string(),
        entries,
        max_comparison,
    }
}

fn spill_path(workdir: &Path, index: usize) -> PathBuf {
    workdir.join(format!("spill-{index}-{:08x}.run", rand::random::<u32>()))
}

/// Merges sorted spill files into the run at `out`, then deletes them.
fn merge_spills(spills: Vec<PathBuf>, header: &RunHeader, out: &Path) -> Result<(), RunError> {
    let readers = spills
        .iter()
        .map(|p| RunReader::open(p))
        .collect::<Result<Vec<_>, _>>()?;
    let mut writer = RunWriter::create(out, header)?;
    let mut merged = MergedRuns::new(readers)?;
    while let Some((_, entry)) = merged.next_entry()? {
        writer.write(&entry)?;
    }
    writer.finish()?;
    for path in spills {
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}

/// Sorts hashed entries in (key, comparison, docId) order. Hashed keys are uniform, so one
/// counting pass on the keys' top bits scatters the entries into buckets of a few dozen each,
/// which are then sorted on their own: cheaper than one comparison sort of the whole chunk
/// (in `perf`, sorting fell from about 15% to 11% of a prebuild's CPU), for a second buffer of
/// the same size while it runs.
fn sort_hashed(mut entries: Vec<HashedEntry>) -> Vec<HashedEntry> {
    const SMALL: usize = 1 << 12;
    if entries.len() <= SMALL {
        entries.sort_unstable();
        return entries;
    }
    // About 32 entries per bucket, at most 2^20 buckets.
    let bits = (usize::BITS - (entries.len() / 32).leading_zeros()).min(20);
    let bucket = |entry: &HashedEntry| (entry.key >> (128 - bits)) as usize;
    let mut starts = vec![0usize; (1 << bits) + 1];
    for entry in &entries {
        starts[bucket(entry) + 1] += 1;
    }
    for index in 1..starts.len() {
        starts[index] += starts[index - 1];
    }
    let mut next = starts.clone();
    let mut sorted = vec![entries[0]; entries.len()];
    for entry in &entries {
        let slot = &mut next[bucket(entry)];
        sorted[*slot] = *entry;
        *slot += 1;
    }
    drop(entries);
    for window in starts.windows(2) {
        sorted[window[0]..window[1]].sort_unstable();
    }
    debug_assert!(sorted.windows(2).all(|pair| pair[0] <= pair[1]));
    sorted
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn bucket_sort_agrees_with_a_comparison_sort() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for len in [0usize, 1, 4096, 4097, 100_000] {
            // Few distinct keys for some lengths: many rows per key, ties on the comparison.
            let distinct = if len % 2 == 0 { 50 } else { len.max(1) };
            let keys: Vec<u128> = (0..distinct).map(|_| rng.gen()).collect();
            let entries: Vec<HashedEntry> = (0..len)
                .map(|doc_id| HashedEntry {
                    key: keys[rng.gen_range(0..distinct)],
                    comparison: rng.gen_range(0..4),
                    doc_id: doc_id as u32,
                    deleted: rng.gen(),
                })
                .collect();
            let mut expected = entries.clone();
            expected.sort_unstable();
            assert_eq!(sort_hashed(entries), expected, "{len} entries");
        }
    }
}
