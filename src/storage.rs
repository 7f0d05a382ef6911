//! The object store: one URL for all data (DESIGN.md section 5), a thin layer over `object_store`.
//!
//! What this layer adds: URL parsing with errors that say how to fix them, write-once puts
//! (conditional create, so nothing is ever overwritten), streaming multipart upload of staged local
//! files, retries with jittered backoff for transient failures, and the layout of object keys.

mod checksum;
mod error;
pub mod layout;
mod retry;
mod verified;

use checksum::copy_and_hash;
pub use checksum::{sha256_file, sha256_hex};
pub use error::StorageError;
use retry::retry;
pub use verified::Expected;

use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{ObjectMeta, ObjectStore, PutMode, PutOptions, PutPayload, WriteMultipart};
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

/// Files above this size are uploaded in parts, streamed from disk.
pub const MULTIPART_THRESHOLD: u64 = 16 * 1024 * 1024;
const PART_SIZE: usize = 8 * 1024 * 1024;

/// An object store rooted at the URL's prefix. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<dyn ObjectStore>,
    /// The URL as given, for messages.
    url: String,
    /// The directory of a local-directory store: staged files are hard-linked into it.
    local_root: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Store({})", self.url)
    }
}

impl Store {
    /// Opens `file:///abs/path`, a plain (relative or absolute) directory path, `s3://bucket/prefix`
    /// or `memory://`. S3 settings come from the standard `AWS_*` variables, including
    /// `AWS_ENDPOINT_URL` and `AWS_ALLOW_HTTP` for S3-compatible servers.
    pub fn open(url: &str) -> Result<Store, StorageError> {
        Self::open_with(url, std::env::vars())
    }

    /// Like [`Store::open`], with the `AWS_*` settings taken from `settings` instead of the
    /// process environment (tests run several stores side by side).
    pub fn open_with(
        url: &str,
        settings: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Store, StorageError> {
        Self::open_inner(url, settings, true)
    }

    /// Like [`Store::open`], for commands that only read: a local directory that does not exist
    /// is an error, never created.
    pub fn open_existing(url: &str) -> Result<Store, StorageError> {
        Self::open_inner(url, std::env::vars(), false)
    }

    fn open_inner(
        url: &str,
        settings: impl IntoIterator<Item = (String, String)>,
        create_local: bool,
    ) -> Result<Store, StorageError> {
        let bad = |message: String| StorageError::BadUrl {
            url: url.to_string(),
            message,
        };
        let mut local_root = None;
        let inner: Arc<dyn ObjectStore> = if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(bad(
                    "no bucket name; write s3://BUCKET/optional/prefix".into()
                ));
            }
            let mut builder = AmazonS3Builder::new()
                .with_bucket_name(bucket)
                .with_region("us-east-1");
            for (key, value) in settings {
                let Some(name) = key.strip_prefix("AWS_") else {
                    continue;
                };
                match name {
                    // Spelled differently by the AWS SDKs and object_store; accept both.
                    "ENDPOINT_URL" | "ENDPOINT" => builder = builder.with_endpoint(value),
                    "ALLOW_HTTP" => {
                        builder = builder.with_allow_http(value == "true" || value == "1")
                    }
                    "DEFAULT_REGION" => builder = builder.with_region(value),
                    _ => {
                        if let Ok(config_key) =
                            key.to_ascii_lowercase().parse::<AmazonS3ConfigKey>()
                        {
                            builder = builder.with_config(config_key, value);
                        }
                    }
                }
            }
            let s3 = builder.build().map_err(|err| bad(err.to_string()))?;
            with_prefix(Arc::new(s3), prefix)?
        } else if url == "memory://" || url == "memory:///" {
            Arc::new(InMemory::new())
        } else {
            let dir = local_dir_of(url).map_err(bad)?;
            if !create_local && !dir.is_dir() {
                return Err(bad(format!(
                    "directory {} does not exist (nothing was created); point --store (or MINION_STORE) at the catalog's store",
                    dir.display()
                )));
            }
            std::fs::create_dir_all(&dir)
                .map_err(|err| bad(format!("cannot create directory {}: {err}", dir.display())))?;
            let local =
                LocalFileSystem::new_with_prefix(&dir).map_err(|err| bad(err.to_string()))?;
            local_root = Some(dir);
            Arc::new(local)
        };
        Ok(Store {
            inner,
            url: url.to_string(),
            local_root,
        })
    }

    /// The directory `url` names, if it is a local store whose directory does not exist.
    pub fn missing_local_dir(url: &str) -> Option<PathBuf> {
        if url.starts_with("memory://") {
            return None;
        }
        local_dir_of(url).ok().filter(|dir| !dir.exists())
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Fails early with a clear message when the store cannot be reached (bad credentials, missing
    /// bucket, endpoint down), instead of deep inside a job.
    pub async fn check_reachable(&self) -> Result<(), StorageError> {
        let probe = Path::from("tables");
        self.inner
            .list_with_delimiter(Some(&probe))
            .await
            .map(|_| ())
            .map_err(|source| self.store_error("tables/", "list", source))
    }

    /// Writes `bytes` under `key` only if nothing is there yet. A retry that finds its own earlier
    /// successful write (same content) counts as success, so callers can retry blindly.
    pub async fn put_once(&self, key: &str, bytes: Bytes) -> Result<(), StorageError> {
        let path = Path::from(key);
        let options = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        let result = retry(|| {
            self.inner
                .put_opts(&path, PutPayload::from(bytes.clone()), options.clone())
        })
        .await;
        match result {
            Ok(_) => Ok(()),
            Err(object_store::Error::AlreadyExists { .. }) => {
                let existing = self.get(key).await?;
                if existing == bytes {
                    Ok(())
                } else {
                    Err(self.already_exists(key))
                }
            }
            Err(source) => Err(self.store_error(key, "put", source)),
        }
    }

    /// Uploads a staged local file under a fresh `key`. Small files go through [`Store::put_once`];
    /// large ones are streamed in parts so memory stays flat. Multipart completion cannot be
    /// conditional on every backend, so for those the key must be new (callers use unique names)
    /// and an existing object is refused up front.
    pub async fn put_file_once(&self, key: &str, local: &FsPath) -> Result<(), StorageError> {
        let local_err = |source| StorageError::Local {
            path: local.display().to_string(),
            source,
        };
        if let Some(root) = &self.local_root {
            if self.link_into(root, key, local).await? {
                return Ok(());
            }
        }
        let size = tokio::fs::metadata(local).await.map_err(local_err)?.len();
        if size <= MULTIPART_THRESHOLD {
            let bytes = tokio::fs::read(local).await.map_err(local_err)?;
            return self.put_once(key, Bytes::from(bytes)).await;
        }
        if self.head(key).await?.is_some() {
            return Err(self.already_exists(key));
        }
        let path = Path::from(key);
        let upload = self
            .inner
            .put_multipart(&path)
            .await
            .map_err(|source| self.store_error(key, "start multipart upload", source))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        let mut file = tokio::fs::File::open(local).await.map_err(local_err)?;
        let mut buffer = vec![0u8; PART_SIZE];
        loop {
            let read = file.read(&mut buffer).await.map_err(local_err)?;
            if read == 0 {
                break;
            }
            writer
                .wait_for_capacity(4)
                .await
                .map_err(|source| self.store_error(key, "upload part", source))?;
            writer.write(&buffer[..read]);
        }
        writer
            .finish()
            .await
            .map_err(|source| self.store_error(key, "complete multipart upload", source))?;
        Ok(())
    }

    /// Local-directory stores: hard-links the staged file into place, which is atomic and fails
    /// if the name exists (the write-once rule) and copies nothing. False when linking is not
    /// possible (another filesystem): the caller copies instead.
    async fn link_into(
        &self,
        root: &FsPath,
        key: &str,
        local: &FsPath,
    ) -> Result<bool, StorageError> {
        let target = root.join(key);
        if let Some(parent) = target.parent() {
            if tokio::fs::create_dir_all(parent).await.is_err() {
                return Ok(false);
            }
        }
        match tokio::fs::hard_link(local, &target).await {
            Ok(()) => Ok(true),
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
                Err(self.already_exists(key))
            }
            Err(_) => Ok(false),
        }
    }

    pub async fn get(&self, key: &str) -> Result<Bytes, StorageError> {
        let path = Path::from(key);
        let result = retry(|| async { self.inner.get(&path).await?.bytes().await }).await;
        result.map_err(|source| self.map_read_error(key, "get", source))
    }

    pub async fn get_range(
        &self,
        key: &str,
        range: std::ops::Range<u64>,
    ) -> Result<Bytes, StorageError> {
        let path = Path::from(key);
        retry(|| self.inner.get_range(&path, range.clone()))
            .await
            .map_err(|source| self.map_read_error(key, "get range", source))
    }

    /// Streams an object to a local file and returns its SHA-256 (hex), computed on the way.
    pub async fn download_to(&self, key: &str, local: &FsPath) -> Result<String, StorageError> {
        use tokio::io::AsyncWriteExt;
        let path = Path::from(key);
        let local_err = |source| StorageError::Local {
            path: local.display().to_string(),
            source,
        };
        if let Some(root) = &self.local_root {
            let (source, target) = (root.join(key), local.to_path_buf());
            // One pass on a blocking thread: a chunked async copy of a local file is several
            // times slower (every chunk is a hop to the blocking pool).
            let copied = tokio::task::spawn_blocking(move || copy_and_hash(&source, &target))
                .await
                .map_err(|join| local_err(std::io::Error::other(join)))?;
            match copied {
                Ok(checksum) => return Ok(checksum),
                // Let the object store say what is missing, in its own words.
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(err) => return Err(local_err(err)),
            }
        }
        let response = retry(|| self.inner.get(&path))
            .await
            .map_err(|source| self.map_read_error(key, "get", source))?;
        let mut stream = response.into_stream();
        let file = tokio::fs::File::create(local).await.map_err(local_err)?;
        let mut file = tokio::io::BufWriter::with_capacity(1 << 20, file);
        let mut hasher = Sha256::new();
        while let Some(chunk) = stream
            .try_next()
            .await
            .map_err(|source| self.store_error(key, "read", source))?
        {
            hasher.update(&chunk);
            file.write_all(&chunk).await.map_err(local_err)?;
        }
        file.flush().await.map_err(local_err)?;
        Ok(hex::encode(hasher.finalize()))
    }

    pub async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, StorageError> {
        let path = Path::from(key);
        match retry(|| self.inner.head(&path)).await {
            Ok(meta) => Ok(Some(meta)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(source) => Err(self.store_error(key, "head", source)),
        }
    }

    /// Every object under `prefix` (recursive).
    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StorageError> {
        let path = Path::from(prefix);
        retry(|| self.inner.list(Some(&path)).try_collect::<Vec<_>>())
            .await
            .map_err(|source| self.store_error(prefix, "list", source))
    }

    /// Deletes `key`; a missing object is not an error (deletes are retried after crashes).
    pub async fn delete(&self, key: &str) -> Result<(), StorageError> {
        let path = Path::from(key);
        match retry(|| self.inner.delete(&path)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(source) => Err(self.store_error(key, "delete", source)),
        }
    }

    /// Copies the object `from` to the fresh key `to` without passing its bytes through this
    /// process: a hard link on a local-directory store, a server-side copy (CopyObject, objects
    /// up to 5 GB) on S3. Like [`Store::put_file_once`], `to` must be a new key.
    pub async fn copy_to_new(&self, from: &str, to: &str) -> Result<(), StorageError> {
        if let Some(root) = &self.local_root {
            if self.link_into(root, to, &root.join(from)).await? {
                return Ok(());
            }
        }
        let (source, target) = (Path::from(from), Path::from(to));
        retry(|| self.inner.copy(&source, &target))
            .await
            .map_err(|err| self.map_read_error(from, "copy", err))
    }

    fn map_read_error(
        &self,
        key: &str,
        operation: &'static str,
        source: object_store::Error,
    ) -> StorageError {
        match source {
            object_store::Error::NotFound { .. } => StorageError::NotFound {
                key: key.to_string(),
                store: self.url.clone(),
            },
            source => self.store_error(key, operation, source),
        }
    }

    fn store_error(
        &self,
        key: &str,
        operation: &'static str,
        source: object_store::Error,
    ) -> StorageError {
        StorageError::Store {
            store: self.url.clone(),
            key: key.to_string(),
            operation,
            source: Box::new(source),
        }
    }

    fn already_exists(&self, key: &str) -> StorageError {
        StorageError::AlreadyExists {
            key: key.to_string(),
            store: self.url.clone(),
        }
    }
}

fn with_prefix(
    store: Arc<dyn ObjectStore>,
    prefix: &str,
) -> Result<Arc<dyn ObjectStore>, StorageError> {
    let prefix = prefix.trim_matches('/');
    if prefix.is_empty() {
        return Ok(store);
    }
    Ok(Arc::new(PrefixStore::new(store, prefix)))
}

/// The directory a local store URL names. Relative paths are taken from the working directory.
fn local_dir_of(url: &str) -> Result<PathBuf, String> {
    let raw = if let Some(rest) = url.strip_prefix("file://") {
        if !rest.starts_with('/') {
            return Err("file URLs need an absolute path: file:///abs/path (three slashes)".into());
        }
        rest
    } else if let Some((scheme, _)) = url.split_once("://") {
        return Err(format!(
            "unsupported scheme `{scheme}`; use file:///abs/path, a directory path, s3://bucket/prefix or memory://"
        ));
    } else {
        url
    };
    if raw.is_empty() {
        return Err("empty path; give a directory such as ./minion-data".into());
    }
    let path = PathBuf::from(raw);
    if path.is_absolute() {
        return Ok(path);
    }
    let cwd = std::env::current_dir()
        .map_err(|err| format!("cannot read the working directory: {err}"))?;
    Ok(cwd.join(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn put_once_never_overwrites() {
        let store = Store::open("memory://").unwrap();
        store
            .put_once("a/b", Bytes::from_static(b"one"))
            .await
            .unwrap();
        // The same content again is an idempotent retry.
        store
            .put_once("a/b", Bytes::from_static(b"one"))
            .await
            .unwrap();
        let err = store
            .put_once("a/b", Bytes::from_static(b"two"))
            .await
            .unwrap_err();
        assert!(matches!(err, StorageError::AlreadyExists { .. }), "{err}");
        assert_eq!(store.get("a/b").await.unwrap(), Bytes::from_static(b"one"));
    }

    #[tokio::test]
    async fn missing_objects_say_so() {
        let store = Store::open("memory://").unwrap();
        let err = store.get("nope").await.unwrap_err();
        assert!(matches!(err, StorageError::NotFound { .. }));
        assert!(err.to_string().contains("nope"));
        assert!(store.head("nope").await.unwrap().is_none());
        store.delete("nope").await.unwrap();
    }

    #[test]
    fn bad_urls_explain_the_fix() {
        let err = Store::open("ftp://host/x").unwrap_err().to_string();
        assert!(err.contains("unsupported scheme `ftp`"), "{err}");
        let err = Store::open("file://relative").unwrap_err().to_string();
        assert!(err.contains("three slashes"), "{err}");
        let err = Store::open("s3:///prefix").unwrap_err().to_string();
        assert!(err.contains("no bucket"), "{err}");
    }

    #[tokio::test]
    async fn multipart_upload_of_a_large_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("store").to_str().unwrap()).unwrap();
        let local = dir.path().join("big.bin");
        let data: Vec<u8> = (0..(MULTIPART_THRESHOLD as usize + 3 * 1024 * 1024))
            .map(|i| (i % 251) as u8)
            .collect();
        std::fs::write(&local, &data).unwrap();
        store.put_file_once("x/big.bin", &local).await.unwrap();
        let back = dir.path().join("back.bin");
        let checksum = store.download_to("x/big.bin", &back).await.unwrap();
        assert_eq!(checksum, sha256_hex(&data));
        assert!(store.put_file_once("x/big.bin", &local).await.is_err());
    }
}
