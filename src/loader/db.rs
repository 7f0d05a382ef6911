//! The loader's local key metadata: one RocksDB whose default column family holds the hot keys
//! and whose `cold` column family holds the cold ones (`metadata_ttl`, `snapshot::tail`). A
//! server consults the cold family only when the hot one misses, so it can give it a small block
//! cache of its own; the hot family is what every incoming row touches.

use std::path::Path;

use anyhow::Context;
use rocksdb::{ColumnFamily, WriteBatch, WriteOptions, DB};

use crate::snapshot::record::{ComparisonKind, KeyRecord, KeySet};
use crate::snapshot::sst::sst_options;
use crate::snapshot::tail::KeyStore;

/// The column family of the cold key set.
pub const COLD_FAMILY: &str = "cold";

/// Writes gathered before a batch is applied.
const BATCH: usize = 65_536;

pub(super) fn open_db(dir: &Path, format_version: i32) -> anyhow::Result<DB> {
    let mut options = sst_options(format_version);
    options.create_if_missing(true);
    options.create_missing_column_families(true);
    let families = [rocksdb::ColumnFamilyDescriptor::new(
        COLD_FAMILY,
        sst_options(format_version),
    )];
    DB::open_cf_descriptors(&options, dir, families)
        .with_context(|| format!("cannot open a RocksDB at {}", dir.display()))
}

/// The column family of `set`: `None` is the default family (hot keys).
pub(super) fn family(db: &DB, set: KeySet) -> Option<&ColumnFamily> {
    match set {
        KeySet::Hot => None,
        KeySet::Cold => Some(
            db.cf_handle(COLD_FAMILY)
                .expect("opened with the cold family"),
        ),
    }
}

/// The loader's RocksDB as a [`KeyStore`]: writes skip the WAL (the local key metadata is rebuilt
/// from snapshot and segments after a crash).
pub(super) struct RocksKeys<'a> {
    db: &'a DB,
    write: WriteOptions,
}

impl<'a> RocksKeys<'a> {
    pub fn new(db: &'a DB) -> RocksKeys<'a> {
        let mut write = WriteOptions::default();
        write.disable_wal(true);
        RocksKeys { db, write }
    }

    fn get_in(&self, set: KeySet, key: &[u8]) -> anyhow::Result<Option<KeyRecord>> {
        let bytes = match family(self.db, set) {
            Some(cf) => self.db.get_cf(cf, key)?,
            None => self.db.get(key)?,
        };
        bytes
            .map(|bytes| KeyRecord::decode(&bytes).context("key metadata holds a malformed record"))
            .transpose()
    }

    pub fn write(&self, batch: WriteBatch) -> anyhow::Result<()> {
        Ok(self.db.write_opt(batch, &self.write)?)
    }
}

/// Adds a put of `record` under `key` in `set` to `batch`.
pub(super) fn batch_put(
    db: &DB,
    batch: &mut WriteBatch,
    set: KeySet,
    key: &[u8],
    record: &KeyRecord,
) {
    match family(db, set) {
        Some(cf) => batch.put_cf(cf, key, record.encode()),
        None => batch.put(key, record.encode()),
    }
}

/// Adds a delete of `key` in `set` to `batch`.
pub(super) fn batch_delete(db: &DB, batch: &mut WriteBatch, set: KeySet, key: &[u8]) {
    match family(db, set) {
        Some(cf) => batch.delete_cf(cf, key),
        None => batch.delete(key),
    }
}

/// Every entry of one key set, in key order.
pub(super) fn entries(
    db: &DB,
    set: KeySet,
) -> impl Iterator<Item = anyhow::Result<(Box<[u8]>, KeyRecord)>> + '_ {
    let iterator = match family(db, set) {
        Some(cf) => db.iterator_cf(cf, rocksdb::IteratorMode::Start),
        None => db.iterator(rocksdb::IteratorMode::Start),
    };
    iterator.map(|item| {
        let (key, value) = item?;
        let record = KeyRecord::decode(&value).context("malformed key-metadata record")?;
        Ok((key, record))
    })
}

impl KeyStore for RocksKeys<'_> {
    fn get(&self, key: &[u8]) -> anyhow::Result<Option<(KeySet, KeyRecord)>> {
        for set in [KeySet::Hot, KeySet::Cold] {
            if let Some(record) = self.get_in(set, key)? {
                return Ok(Some((set, record)));
            }
        }
        Ok(None)
    }

    fn put(&mut self, set: KeySet, key: &[u8], record: KeyRecord) -> anyhow::Result<()> {
        match family(self.db, set) {
            Some(cf) => self.db.put_cf_opt(cf, key, record.encode(), &self.write)?,
            None => self.db.put_opt(key, record.encode(), &self.write)?,
        }
        Ok(())
    }

    fn delete(&mut self, set: KeySet, key: &[u8]) -> anyhow::Result<()> {
        match family(self.db, set) {
            Some(cf) => self.db.delete_cf_opt(cf, key, &self.write)?,
            None => self.db.delete_opt(key, &self.write)?,
        }
        Ok(())
    }

    fn resplit(
        &mut self,
        from: KeySet,
        kind: ComparisonKind,
        watermark: Option<f64>,
    ) -> anyhow::Result<u64> {
        let mut batch = WriteBatch::default();
        let mut moved = 0;
        // The iterator reads an implicit snapshot: the batches written meanwhile do not disturb it.
        for entry in entries(self.db, from) {
            let (key, record) = entry?;
            let to = KeySet::of_record(&record, kind, watermark);
            if to == from {
                continue;
            }
            batch_delete(self.db, &mut batch, from, &key);
            batch_put(self.db, &mut batch, to, &key, &record);
            moved += 1;
            if batch.len() >= BATCH {
                self.write(std::mem::take(&mut batch))?;
            }
        }
        self.write(batch)?;
        Ok(moved)
    }
}
