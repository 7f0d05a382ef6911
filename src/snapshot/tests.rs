//! The oracle test: random upsert streams resolved by a naive model and by the real engine
//! (segment files -> key runs with forced spilling -> merge/resolve) must give identical bitmaps
//! and identical key metadata (hot and cold key sets). And the tail: a snapshot of some segments
//! plus the later segments resolved row by row against it (`tail`, what a loader does), and every
//! segment resolved row by row from nothing (the slow path), must both equal the model over all
//! segments.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, Int64Array, RecordBatch, StringArray};
use proptest::prelude::*;
use roaring::RoaringBitmap;

use super::keyrun::{build_run, RunFile, RunReader};
use super::ranges::{resolve_in_ranges, KeySink, RangePlan};
use super::read::SegmentBitmaps;
use super::record::{ComparisonKind, KeyRecord, KeySet};
use super::resolve::{resolve, Source, TtlSettings};
use super::tail::{load_watermark, KeyCounts, KeyStore, MemoryKeys, Tail, TailRow};
use crate::keys::{encode_key_into, metadata_key};
use crate::segment::{SegmentWriter, WriteOptions};
use crate::table::{PrimaryKeyHash, TableConfig};

/// One generated row: key parts, comparison value, delete flag.
#[derive(Debug, Clone)]
struct Row {
    tenant: u8,
    id: i64,
    comparison: i64,
    deleted: bool,
}

fn table(composite: bool, hash: PrimaryKeyHash, ttl: TtlSettings) -> TableConfig {
    let key = if composite {
        r#"["tenant", "id"]"#
    } else {
        r#"["id"]"#
    };
    let hash = match hash {
        PrimaryKeyHash::Xxh3_128 => "xxh3_128",
        PrimaryKeyHash::None => "none",
    };
    let mut text = format!(
        "name = \"t\"\npartitions = 1\nprimary_key = {key}\ncomparison = \"ts\"\ndelete_column = \"del\"\nprimary_key_hash = \"{hash}\"\n\
         [[columns]]\nname = \"tenant\"\ntype = \"string\"\n[[columns]]\nname = \"id\"\ntype = \"int64\"\n\
         [[columns]]\nname = \"ts\"\ntype = \"int64\"\n[[columns]]\nname = \"del\"\ntype = \"bool\"\n[ttl]\n"
    );
    if let Some(ttl) = ttl.deleted_keys_ttl {
        text.push_str(&format!("deleted_keys_ttl = {ttl}\n"));
    }
    if let Some(ttl) = ttl.metadata_ttl {
        text.push_str(&format!("metadata_ttl = {ttl}\n"));
    }
    TableConfig::from_toml(&text, "test").unwrap()
}

fn batch(table: &TableConfig, rows: &[Row]) -> RecordBatch {
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| format!("t{}", r.tenant)),
        )),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.id))),
        Arc::new(Int64Array::from_iter_values(
            rows.iter().map(|r| r.comparison),
        )),
        Arc::new(BooleanArray::from(
            rows.iter().map(|r| r.deleted).collect::<Vec<_>>(),
        )),
    ];
    RecordBatch::try_new(table.arrow_schema(), columns).unwrap()
}

fn metadata_key_of(table: &TableConfig, row: &Row) -> Vec<u8> {
    let one = batch(table, std::slice::from_ref(row));
    let key_columns: Vec<ArrayRef> = table
        .key_indices()
        .iter()
        .map(|&i| one.column(i).clone())
        .collect();
    let mut encoded = Vec::new();
    encode_key_into(&key_columns, 0, &mut encoded);
    let mut key = Vec::new();
    metadata_key(&encoded, table.primary_key_hash, &mut key);
    key
}

/// A version of a key: (comparison, sequence, docId, deleted, segment index).
type Version = (i64, i64, u32, bool, usize);
/// Segments, composite key?, hashed key?, deleted_keys_ttl, metadata_ttl, spill threshold.
type Case = (Vec<Vec<Row>>, bool, bool, Option<f64>, Option<f64>, usize);

/// Key metadata of both sets: each key with the set it is in.
type Metadata = BTreeMap<Vec<u8>, (KeySet, KeyRecord)>;

/// validDocIds, queryableDocIds, key metadata, expired tombstones kept beside older rows.
type Expected = (Vec<RoaringBitmap>, Vec<RoaringBitmap>, Metadata, u64);

/// The naive model of DESIGN.md section 3: group every row by key, take the maximum.
fn model(
    table: &TableConfig,
    segments: &[Vec<Row>],
    sequences: &[i64],
    ttl: TtlSettings,
) -> Expected {
    let mut by_key: BTreeMap<Vec<u8>, Vec<Version>> = BTreeMap::new();
    for (index, rows) in segments.iter().enumerate() {
        for (doc, row) in rows.iter().enumerate() {
            by_key
                .entry(metadata_key_of(table, row))
                .or_default()
                .push((
                    row.comparison,
                    sequences[index],
                    doc as u32,
                    row.deleted,
                    index,
                ));
        }
    }
    let largest = segments.iter().flatten().map(|r| r.comparison).max();
    let mut valid = vec![RoaringBitmap::new(); segments.len()];
    let mut queryable = vec![RoaringBitmap::new(); segments.len()];
    let mut metadata = BTreeMap::new();
    let mut kept = 0;
    for (key, versions) in by_key {
        let winner = versions.iter().max_by_key(|v| (v.0, v.1, v.2)).unwrap();
        let (comparison, _, doc, deleted, index) = *winner;
        let old = |ttl: Option<f64>| {
            ttl.zip(largest)
                .is_some_and(|(t, l)| (comparison as f64) < l as f64 - t)
        };
        if deleted && old(ttl.deleted_keys_ttl) {
            if versions.len() == 1 {
                continue;
            }
            kept += 1;
        }
        valid[index].insert(doc);
        if !deleted {
            queryable[index].insert(doc);
        }
        let set = match old(ttl.metadata_ttl) {
            true => KeySet::Cold,
            false => KeySet::Hot,
        };
        let record = KeyRecord {
            segment_id: 100 + index as u64,
            doc_id: doc,
            comparison: comparison as u64,
            deleted,
        };
        metadata.insert(key, (set, record));
    }
    (valid, queryable, metadata, kept)
}

fn engine(
    table: &TableConfig,
    segments: &[Vec<Row>],
    sequences: &[i64],
    ttl: TtlSettings,
    spill_at: usize,
) -> Expected {
    let dir = tempfile::tempdir().unwrap();
    let mut readers = Vec::new();
    let mut run_paths = Vec::new();
    let mut sources = Vec::new();
    for (index, rows) in segments.iter().enumerate() {
        let path = dir.path().join(format!("{index}.parquet"));
        let mut writer =
            SegmentWriter::create(&path, table, 0, sequences[index], &WriteOptions::default())
                .unwrap();
        writer.write(&batch(table, rows)).unwrap();
        writer.finish().unwrap();
        let run = dir.path().join(format!("{index}.run"));
        build_run(&path, "x", table, &run, dir.path(), spill_at).unwrap();
        readers.push(RunReader::open(&run).unwrap());
        run_paths.push(run);
        sources.push(Source {
            segment_id: 100 + index as u64,
            sequence: sequences[index],
            rows: rows.len() as u64,
        });
    }
    let mut metadata = BTreeMap::new();
    let mut last_key: Option<Vec<u8>> = None;
    let resolution = resolve(
        readers,
        &sources,
        ComparisonKind::Integer,
        ttl,
        |set, key, record| {
            assert!(
                last_key.as_deref().is_none_or(|last| last < key),
                "key metadata must come in key order"
            );
            last_key = Some(key.to_vec());
            metadata.insert(key.to_vec(), (set, record));
            Ok(())
        },
    )
    .unwrap();
    let cold = metadata.values().filter(|(set, _)| *set == KeySet::Cold);
    assert_eq!(resolution.cold_keys, cold.count() as u64);
    assert_eq!(
        resolution.live_keys,
        resolution.metadata_keys + resolution.cold_keys
    );
    let sequential = (
        resolution.valid,
        resolution.queryable,
        metadata,
        resolution.expired_tombstones_kept,
    );
    if table.primary_key_hash == PrimaryKeyHash::Xxh3_128 {
        // The parallel path must agree exactly, however the key space is cut.
        let runs: Vec<RunFile> = run_paths
            .iter()
            .map(|p| RunFile::open(p, true).unwrap())
            .collect();
        for ranges in [1, 3, 8] {
            let plan = RangePlan { ranges, threads: 2 };
            let (resolution, parts) =
                resolve_in_ranges(&runs, &sources, ComparisonKind::Integer, ttl, plan, |_| {
                    Ok(Collect::default())
                })
                .unwrap();
            let keys: Vec<Vec<u8>> = parts.iter().flatten().map(|(k, _)| k.clone()).collect();
            assert!(keys.windows(2).all(|w| w[0] < w[1]), "ranges in key order");
            let metadata: Metadata = parts.into_iter().flatten().collect();
            assert_eq!(resolution.live_keys, metadata.len() as u64);
            let parallel = (
                resolution.valid,
                resolution.queryable,
                metadata,
                resolution.expired_tombstones_kept,
            );
            assert_eq!(parallel, sequential, "{ranges} key ranges");
        }
    }
    sequential
}

/// Collects one range's key metadata in memory.
#[derive(Default)]
struct Collect(Vec<(Vec<u8>, (KeySet, KeyRecord))>);

impl KeySink for Collect {
    type Output = Vec<(Vec<u8>, (KeySet, KeyRecord))>;

    fn put(&mut self, set: KeySet, key: &[u8], record: KeyRecord) -> anyhow::Result<()> {
        self.0.push((key.to_vec(), (set, record)));
        Ok(())
    }

    fn finish(self) -> anyhow::Result<Self::Output> {
        Ok(self.0)
    }
}

fn row_strategy() -> impl Strategy<Value = Row> {
    // Few keys and few comparison values: collisions and ties on every level.
    (0u8..3, -4i64..12, 0i64..8, prop::bool::weighted(0.2)).prop_map(
        |(tenant, id, comparison, deleted)| Row {
            tenant,
            id,
            comparison,
            deleted,
        },
    )
}

fn case_strategy() -> impl Strategy<Value = Case> {
    (
        prop::collection::vec(prop::collection::vec(row_strategy(), 0..40), 1..6),
        any::<bool>(),
        any::<bool>(),
        prop::option::of(1.0f64..6.0),
        prop::option::of(1.0f64..6.0),
        1usize..50,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, .. ProptestConfig::default() })]

    #[test]
    fn engine_matches_the_naive_model((segments, composite, hashed, deleted_ttl, metadata_ttl, spill_at) in case_strategy()) {
        let hash = if hashed { PrimaryKeyHash::Xxh3_128 } else { PrimaryKeyHash::None };
        let ttl = TtlSettings { deleted_keys_ttl: deleted_ttl, metadata_ttl };
        let table = table(composite, hash, ttl);
        // Sequences increase but not necessarily by one (gaps after failed ingests).
        let sequences: Vec<i64> = (0..segments.len() as i64).map(|i| i * 3 + 1).collect();
        let expected = model(&table, &segments, &sequences, ttl);
        let actual = engine(&table, &segments, &sequences, ttl, spill_at);
        prop_assert_eq!(&actual.0, &expected.0, "validDocIds");
        prop_assert_eq!(&actual.1, &expected.1, "queryableDocIds");
        prop_assert_eq!(&actual.2, &expected.2, "key metadata");
        prop_assert_eq!(actual.3, expected.3, "expired tombstones kept");
    }
}

/// Resolves segments `covered..` row by row against the state `base` (the resolution of segments
/// `..covered`, as a snapshot holds it; nothing when `covered` is 0), as a loader does.
fn load_tail(
    table: &TableConfig,
    base: &Expected,
    segments: &[Vec<Row>],
    covered: usize,
    sequences: &[i64],
    metadata_ttl: Option<f64>,
) -> Expected {
    let kind = ComparisonKind::Integer;
    let id = |index: usize| 100 + index as u64;
    let mut keys = MemoryKeys::default();
    let mut bitmaps = BTreeMap::new();
    let mut counts = KeyCounts::default();
    for index in 0..covered {
        let (valid, queryable) = (base.0[index].clone(), base.1[index].clone());
        bitmaps.insert(id(index) as i64, SegmentBitmaps { valid, queryable });
    }
    for (key, (set, record)) in &base.2 {
        keys.put(*set, key, *record).unwrap();
        match set {
            KeySet::Hot => counts.hot += 1,
            KeySet::Cold => counts.cold += 1,
        }
    }
    let largest = |segments: &[Vec<Row>]| {
        (segments.iter().flatten())
            .map(|r| r.comparison as f64)
            .reduce(f64::max)
    };
    let split_by = load_watermark(metadata_ttl, largest(&segments[..covered]));
    let watermark = load_watermark(metadata_ttl, largest(segments));
    let known: HashMap<u64, i64> = (0..segments.len()).map(|i| (id(i), sequences[i])).collect();
    let mut tail = Tail::new(kind, watermark, &known, counts);
    tail.rebalance(&mut keys, split_by).unwrap();
    for (index, rows) in segments.iter().enumerate().skip(covered) {
        for (doc, row) in rows.iter().enumerate() {
            let row_in_tail = TailRow {
                comparison: kind.sortable_from_natural(row.comparison as u64),
                doc_id: doc as u32,
                deleted: row.deleted,
            };
            let place = (id(index), sequences[index]);
            let key = metadata_key_of(table, row);
            tail.apply(&mut keys, &mut bitmaps, place, &key, row_in_tail)
                .unwrap();
        }
    }
    assert_eq!(
        tail.counts,
        KeyCounts {
            hot: keys.hot.len() as u64,
            cold: keys.cold.len() as u64
        },
        "key counts"
    );
    let bitmap = |index: usize| {
        bitmaps
            .get(&(id(index) as i64))
            .cloned()
            .unwrap_or_default()
    };
    let metadata = (keys.hot.into_iter().map(|(k, r)| (k, (KeySet::Hot, r))))
        .chain(keys.cold.into_iter().map(|(k, r)| (k, (KeySet::Cold, r))))
        .collect();
    (
        (0..segments.len()).map(|i| bitmap(i).valid).collect(),
        (0..segments.len()).map(|i| bitmap(i).queryable).collect(),
        metadata,
        0,
    )
}

/// Segments covered by a snapshot, segments after it, composite key?, hashed key?,
/// metadata_ttl, spill threshold.
type TailCase = (Vec<Vec<Row>>, Vec<Vec<Row>>, bool, bool, Option<f64>, usize);

fn tail_case_strategy() -> impl Strategy<Value = TailCase> {
    let segments = || prop::collection::vec(prop::collection::vec(row_strategy(), 0..40), 1..4);
    (
        segments(),
        segments(),
        any::<bool>(),
        any::<bool>(),
        prop::option::of(1.0f64..6.0),
        1usize..50,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, .. ProptestConfig::default() })]

    /// Late rows of every kind (newer than everything, newer than a cold key's winner but below
    /// the watermark, older than the winner, tombstones) against a snapshot whose keys went
    /// cold: the loaded state is the model's over all segments, hot and cold sets included.
    /// Without `deleted_keys_ttl`: a forgotten tombstone is forgotten by design.
    #[test]
    fn a_tail_resolved_against_a_snapshot_matches_the_model((covered, later, composite, hashed, metadata_ttl, spill_at) in tail_case_strategy()) {
        let hash = if hashed { PrimaryKeyHash::Xxh3_128 } else { PrimaryKeyHash::None };
        let ttl = TtlSettings { deleted_keys_ttl: None, metadata_ttl };
        let table = table(composite, hash, ttl);
        let all: Vec<Vec<Row>> = covered.iter().chain(&later).cloned().collect();
        let sequences: Vec<i64> = (0..all.len() as i64).map(|i| i * 2 + 1).collect();
        let expected = model(&table, &all, &sequences, ttl);
        let snapshot = engine(&table, &covered, &sequences[..covered.len()], ttl, spill_at);
        let loaded = load_tail(&table, &snapshot, &all, covered.len(), &sequences, metadata_ttl);
        prop_assert_eq!(&loaded, &expected, "snapshot plus tail");
        let empty = (Vec::new(), Vec::new(), BTreeMap::new(), 0);
        let slow = load_tail(&table, &empty, &all, 0, &sequences, metadata_ttl);
        prop_assert_eq!(&slow, &expected, "every segment through the compare path");
    }
}

#[test]
fn processing_order_does_not_matter() {
    // The same rows with segments given in another order (sequences travel with them) resolve to
    // the same winners.
    let table = table(false, PrimaryKeyHash::Xxh3_128, TtlSettings::default());
    let rows = |c: i64| {
        (0..30)
            .map(|i| Row {
                tenant: 0,
                id: i % 7,
                comparison: c + i % 3,
                deleted: i % 5 == 0,
            })
            .collect::<Vec<_>>()
    };
    let segments = vec![rows(1), rows(2), rows(1)];
    let forward = engine(&table, &segments, &[1, 2, 3], TtlSettings::default(), 1000);
    let reversed: Vec<Vec<Row>> = segments.iter().rev().cloned().collect();
    let backward = engine(&table, &reversed, &[3, 2, 1], TtlSettings::default(), 1000);
    let mut flipped_valid = backward.0.clone();
    flipped_valid.reverse();
    assert_eq!(forward.0, flipped_valid);
    let keys = |m: &Metadata| m.keys().cloned().collect::<BTreeSet<_>>();
    assert_eq!(keys(&forward.2), keys(&backward.2));
}

#[test]
fn a_tombstone_is_not_forgotten_while_an_older_version_survives() {
    // Key 1: an old insert and an old delete; key 2: only an old delete. Both tombstones are
    // past the TTL, but dropping key 1's would resurrect its insert (Pinot PR #13351).
    let ttl = TtlSettings {
        deleted_keys_ttl: Some(10.0),
        metadata_ttl: None,
    };
    let table = table(false, PrimaryKeyHash::Xxh3_128, ttl);
    let old = vec![
        Row {
            tenant: 0,
            id: 1,
            comparison: 1,
            deleted: false,
        },
        Row {
            tenant: 0,
            id: 1,
            comparison: 2,
            deleted: true,
        },
        Row {
            tenant: 0,
            id: 2,
            comparison: 2,
            deleted: true,
        },
    ];
    let new = vec![Row {
        tenant: 0,
        id: 3,
        comparison: 100,
        deleted: false,
    }];
    let (valid, queryable, metadata, kept) = engine(&table, &[old, new], &[1, 2], ttl, 2);
    assert_eq!(kept, 1, "key 1's tombstone, kept beside its insert");
    assert!(
        valid[0].contains(1),
        "key 1's tombstone stays: its insert still exists"
    );
    assert!(!valid[0].contains(0), "the insert it deletes is not valid");
    assert!(!valid[0].contains(2), "key 2's lone tombstone is forgotten");
    assert!(queryable[0].is_empty());
    assert_eq!(metadata.len(), 2, "key 1 (deleted) and key 3");
    assert!(metadata.values().all(|(set, _)| *set == KeySet::Hot));
}
