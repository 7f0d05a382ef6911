//! The one way objects whose size and checksum are known are read: every segment, key run,
//! bitmap, SST file and manifest whose catalog row or manifest entry records them. A mismatch of
//! either is [`StorageError::ChecksumMismatch`] (permanent), which names both.

use std::path::Path as FsPath;

use bytes::Bytes;

use super::{sha256_hex, StorageError, Store};

/// What the catalog or a manifest recorded about an object.
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    /// SHA-256, hex.
    pub checksum: &'a str,
    /// Bytes, when recorded.
    pub size: Option<u64>,
}

impl<'a> Expected<'a> {
    pub fn new(checksum: &'a str, size: u64) -> Expected<'a> {
        Expected {
            checksum,
            size: Some(size),
        }
    }

    /// Only a checksum is recorded (manifests).
    pub fn checksum(checksum: &'a str) -> Expected<'a> {
        Expected {
            checksum,
            size: None,
        }
    }
}

impl Store {
    /// Reads `key` into memory and checks it against what was recorded.
    pub async fn get_verified(
        &self,
        key: &str,
        expected: Expected<'_>,
    ) -> Result<Bytes, StorageError> {
        let bytes = self.get(key).await?;
        self.check(key, expected, bytes.len() as u64, || sha256_hex(&bytes))?;
        Ok(bytes)
    }

    /// Downloads `key` to `local` (hashing on the way) and checks it against what was recorded.
    pub async fn download_verified(
        &self,
        key: &str,
        local: &FsPath,
        expected: Expected<'_>,
    ) -> Result<(), StorageError> {
        let checksum = self.download_to(key, local).await?;
        let size = tokio::fs::metadata(local)
            .await
            .map_err(|source| StorageError::Local {
                path: local.display().to_string(),
                source,
            })?
            .len();
        self.check(key, expected, size, || checksum)
    }

    fn check(
        &self,
        key: &str,
        expected: Expected<'_>,
        size: u64,
        checksum: impl FnOnce() -> String,
    ) -> Result<(), StorageError> {
        let size_differs = expected.size.filter(|want| *want != size);
        let actual = checksum();
        if actual == expected.checksum && size_differs.is_none() {
            return Ok(());
        }
        Err(StorageError::ChecksumMismatch {
            key: key.to_string(),
            store: self.url.clone(),
            expected: expected.checksum.to_string(),
            actual,
            size: size_differs
                .map(|want| format!(" and {size} bytes where {want} were recorded"))
                .unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_changed_object_is_refused_with_its_name() {
        let store = Store::open("memory://").unwrap();
        store
            .put_once("a", Bytes::from_static(b"abc"))
            .await
            .unwrap();
        let good = sha256_hex(b"abc");
        assert_eq!(
            store
                .get_verified("a", Expected::new(&good, 3))
                .await
                .unwrap(),
            Bytes::from_static(b"abc")
        );
        let err = store
            .get_verified("a", Expected::new(&good, 4))
            .await
            .unwrap_err();
        assert!(
            matches!(err, StorageError::ChecksumMismatch { .. }),
            "{err}"
        );
        assert!(
            err.to_string().contains("3 bytes where 4 were recorded"),
            "{err}"
        );
        let err = store
            .get_verified("a", Expected::checksum(&sha256_hex(b"abd")))
            .await
            .unwrap_err();
        assert!(
            matches!(err, StorageError::ChecksumMismatch { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("`a`"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let local = dir.path().join("a");
        store
            .download_verified("a", &local, Expected::new(&good, 3))
            .await
            .unwrap();
        let err = store
            .download_verified("a", &local, Expected::checksum("00"))
            .await
            .unwrap_err();
        assert!(
            matches!(err, StorageError::ChecksumMismatch { .. }),
            "{err}"
        );
    }
}
