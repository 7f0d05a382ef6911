//! What can go wrong with the object store, each variant saying how to fix it, and which of them
//! retrying cannot help.

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("bad object store URL `{url}`: {message}")]
    BadUrl { url: String, message: String },
    #[error("object `{key}` is missing from the store {store}; was it deleted by hand, or is --store pointing at the wrong place?")]
    NotFound { key: String, store: String },
    #[error("object `{key}` already exists in {store} with other content; objects are write-once, so this is a naming bug or a foreign writer")]
    AlreadyExists { key: String, store: String },
    #[error("object store {store} failed on `{key}` ({operation}): {source}")]
    Store {
        store: String,
        key: String,
        operation: &'static str,
        source: Box<object_store::Error>,
    },
    #[error("object `{key}` in {store} does not match its checksum: it has checksum {actual}{size}, the catalog or manifest recorded {expected}; it was changed or damaged: restore the object from a backup (retrying cannot help)")]
    ChecksumMismatch {
        key: String,
        store: String,
        expected: String,
        actual: String,
        /// Empty, or how the size differs from the recorded one (" and 3 bytes where 4 were
        /// recorded").
        size: String,
    },
    #[error("local file {path}: {source}")]
    Local {
        path: String,
        source: std::io::Error,
    },
}

impl crate::error::Permanence for StorageError {
    /// A missing, damaged or foreign object stays so however often it is read; a bad URL stays
    /// bad. Store and local I/O failures may pass.
    fn is_permanent(&self) -> bool {
        match self {
            StorageError::BadUrl { .. }
            | StorageError::NotFound { .. }
            | StorageError::AlreadyExists { .. }
            | StorageError::ChecksumMismatch { .. } => true,
            StorageError::Store { .. } | StorageError::Local { .. } => false,
        }
    }
}
