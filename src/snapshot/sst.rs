//! Key-metadata SST files (RocksDB SstFileWriter), split into files of at most `max_entries`.
//!
//! Servers run older RocksDB than the one this crate bundles, and a newer table `format_version`
//! is unreadable to them (RocksDB 7.8 rejects format_version 7), so the version is pinned
//! (default 5) and settable.

use std::path::{Path, PathBuf};

use rocksdb::{BlockBasedOptions, DBCompressionType, Options, SstFileWriter};

use super::record::{KeyRecord, KeySet};

/// Default table format_version: readable by RocksDB 6.x and 7.x servers.
pub const DEFAULT_FORMAT_VERSION: i32 = 5;

/// Options for writing, and for a DB that ingests what was written.
pub fn sst_options(format_version: i32) -> Options {
    let mut block = BlockBasedOptions::default();
    block.set_format_version(format_version);
    let mut options = Options::default();
    options.set_block_based_table_factory(&block);
    options.set_compression_type(DBCompressionType::Lz4);
    options
}

/// A finished SST file, with what the manifest records of it.
#[derive(Debug, Clone)]
pub struct SstFile {
    pub path: PathBuf,
    pub entries: u64,
    pub size: u64,
    /// SHA-256, hex.
    pub checksum: String,
}

/// Writes sorted entries into `dir/{name}-{n}.sst`, starting a new file every `max_entries`.
/// Each file is checksummed as it is closed, on the thread that wrote it.
pub struct SstSplitter<'a> {
    options: &'a Options,
    dir: PathBuf,
    name: String,
    max_entries: u64,
    current: Option<(SstFileWriter<'a>, PathBuf, u64)>,
    files: Vec<SstFile>,
}

impl<'a> SstSplitter<'a> {
    pub fn new(options: &'a Options, dir: &Path, name: &str, max_entries: u64) -> SstSplitter<'a> {
        SstSplitter {
            options,
            dir: dir.to_path_buf(),
            name: name.to_string(),
            max_entries: max_entries.max(1),
            current: None,
            files: Vec::new(),
        }
    }

    pub fn put(&mut self, key: &[u8], value: &[u8]) -> anyhow::Result<()> {
        if self
            .current
            .as_ref()
            .is_some_and(|(_, _, n)| *n >= self.max_entries)
        {
            self.close_current()?;
        }
        if self.current.is_none() {
            let path = self
                .dir
                .join(format!("{}-{}.sst", self.name, self.files.len()));
            let writer = SstFileWriter::create(self.options);
            writer.open(&path)?;
            self.current = Some((writer, path, 0));
        }
        let (writer, _, count) = self.current.as_mut().expect("opened above");
        writer.put(key, value)?;
        *count += 1;
        Ok(())
    }

    fn close_current(&mut self) -> anyhow::Result<()> {
        if let Some((mut writer, path, entries)) = self.current.take() {
            writer.finish()?;
            let size = std::fs::metadata(&path)?.len();
            let checksum = crate::storage::sha256_file(&path)?;
            self.files.push(SstFile {
                path,
                entries,
                size,
                checksum,
            });
        }
        Ok(())
    }

    /// Closes the last file; returns every file.
    pub fn finish(mut self) -> anyhow::Result<Vec<SstFile>> {
        self.close_current()?;
        Ok(self.files)
    }
}

/// The SST files of both key sets (`KeySet`), each in key order.
#[derive(Debug, Clone, Default)]
pub struct KeySetFiles {
    pub hot: Vec<SstFile>,
    pub cold: Vec<SstFile>,
}

impl KeySetFiles {
    /// Both sets' files, one list after the other in key order.
    pub fn extend(&mut self, other: KeySetFiles) {
        self.hot.extend(other.hot);
        self.cold.extend(other.cold);
    }
}

/// Writes hot keys to `{name}-{n}.sst` and cold keys to `{name}-cold-{n}.sst`; the cold splitter
/// opens a file only when a cold key comes.
pub struct SetSplitters<'a> {
    hot: SstSplitter<'a>,
    cold: SstSplitter<'a>,
}

impl<'a> SetSplitters<'a> {
    pub fn new(options: &'a Options, dir: &Path, name: &str, max_entries: u64) -> SetSplitters<'a> {
        SetSplitters {
            hot: SstSplitter::new(options, dir, name, max_entries),
            cold: SstSplitter::new(options, dir, &format!("{name}-cold"), max_entries),
        }
    }

    pub fn put(&mut self, set: KeySet, key: &[u8], record: &KeyRecord) -> anyhow::Result<()> {
        match set {
            KeySet::Hot => self.hot.put(key, &record.encode()),
            KeySet::Cold => self.cold.put(key, &record.encode()),
        }
    }

    pub fn finish(self) -> anyhow::Result<KeySetFiles> {
        Ok(KeySetFiles {
            hot: self.hot.finish()?,
            cold: self.cold.finish()?,
        })
    }
}

impl super::ranges::KeySink for SetSplitters<'_> {
    type Output = KeySetFiles;

    fn put(&mut self, set: KeySet, key: &[u8], record: KeyRecord) -> anyhow::Result<()> {
        SetSplitters::put(self, set, key, &record)
    }

    fn finish(self) -> anyhow::Result<Self::Output> {
        SetSplitters::finish(self)
    }
}
