//! The catalog and its object store belong together (issue 26): a catalog records the store its
//! objects live in on its first write, and the store records the same identity in a marker object
//! written once (`minion-store.json` at its root). Every command checks the pair before it touches
//! either, and refuses a store that is not the catalog's, naming both, so an ingest never
//! registers segments whose objects went somewhere else, and a gc never takes another catalog's
//! objects for orphans.
//!
//! - Bound catalog, marker with the same store id: the store is the catalog's.
//! - Bound catalog, marker missing or another id: refused (another directory, another bucket or
//!   prefix, `memory://`, a relative default in another working directory).
//! - Unbound catalog (new, or one that predates bindings): a write binds it. The marker is written
//!   first (create-once: a racing binder reads the winner's), then the binding row (the first
//!   row wins). A catalog that already has segments binds only to a store holding one of their
//!   objects. A store whose marker names another catalog is refused: it belongs to that one.
//! - Reads never bind and never create anything.

use serde::{Deserialize, Serialize};

use crate::catalog::{Catalog, CatalogError};
use crate::error::Permanence;
use crate::storage::{StorageError, Store};

/// The marker object, at the root of the store.
pub const MARKER: &str = "minion-store.json";

/// What a command does to the store: reads never bind the catalog or create objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Marker {
    format: u32,
    store_id: String,
    catalog_id: String,
    created_at: chrono::DateTime<chrono::Utc>,
}

#[derive(Debug, thiserror::Error)]
pub enum BindingError {
    #[error("this catalog's objects are in store {bound} (store id {bound_id}), but the store given is {given}, which {found}; point --store (or MINION_STORE) at {bound}")]
    OtherStore {
        bound: String,
        bound_id: String,
        given: String,
        found: String,
    },
    #[error("store {given} belongs to another catalog (catalog id {other}; this catalog is {ours}); give this catalog a store of its own (another directory, bucket or prefix)")]
    OtherCatalog {
        given: String,
        other: String,
        ours: String,
    },
    #[error("this catalog has segments, but their objects are not in store {given} ({key} is missing); point --store (or MINION_STORE) at the store they were written to")]
    NotItsObjects { given: String, key: String },
    #[error("store marker {key} in {given} is not one minion wrote ({message}); restore it, or point --store at the catalog's store")]
    BadMarker {
        given: String,
        key: String,
        message: String,
    },
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl Permanence for BindingError {
    fn is_permanent(&self) -> bool {
        match self {
            BindingError::Catalog(err) => err.is_permanent(),
            BindingError::Storage(err) => err.is_permanent(),
            _ => true,
        }
    }
}

/// Checks that `store` is `catalog`'s (binding the catalog on a first write).
pub async fn check_store(
    catalog: &Catalog,
    store: &Store,
    access: Access,
) -> Result<(), BindingError> {
    let given = store.url().to_string();
    let marker = read_marker(store).await?;
    if let Some(bound) = catalog.store_binding().await? {
        return match marker {
            Some(marker) if marker.store_id == bound.store_id => Ok(()),
            found => Err(BindingError::OtherStore {
                bound: bound.store_url,
                bound_id: bound.store_id,
                given,
                found: match found {
                    Some(marker) => format!("is store id {}", marker.store_id),
                    None => format!("has no store marker ({MARKER})"),
                },
            }),
        };
    }
    let ours = catalog.catalog_id().await?;
    if let Some(marker) = &marker {
        if marker.catalog_id != ours {
            return Err(BindingError::OtherCatalog {
                given,
                other: marker.catalog_id.clone(),
                ours,
            });
        }
    }
    if access == Access::Read {
        return Ok(());
    }
    if let Some(key) = catalog.some_segment_object().await? {
        if store.head(&key).await?.is_none() {
            return Err(BindingError::NotItsObjects { given, key });
        }
    }
    let marker = match marker {
        Some(marker) => marker,
        None => write_marker(store, &ours).await?,
    };
    let bound = catalog.bind_store(&marker.store_id, &given).await?;
    if bound.store_id != marker.store_id {
        // Another process bound the catalog to another store first.
        return Err(BindingError::OtherStore {
            bound: bound.store_url,
            bound_id: bound.store_id,
            given,
            found: format!("is store id {}", marker.store_id),
        });
    }
    tracing::info!(store = %given, store_id = %marker.store_id, "catalog bound to this store");
    Ok(())
}

async fn read_marker(store: &Store) -> Result<Option<Marker>, BindingError> {
    let bytes = match store.get(MARKER).await {
        Ok(bytes) => bytes,
        Err(StorageError::NotFound { .. }) => return Ok(None),
        Err(err) => return Err(err.into()),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|err| BindingError::BadMarker {
            given: store.url().to_string(),
            key: MARKER.into(),
            message: err.to_string(),
        })
}

/// Writes this store's marker once; a racing writer's marker wins and is returned.
async fn write_marker(store: &Store, catalog_id: &str) -> Result<Marker, BindingError> {
    let marker = Marker {
        format: 1,
        store_id: format!("{:032x}", rand::random::<u128>()),
        catalog_id: catalog_id.to_string(),
        created_at: chrono::Utc::now(),
    };
    let bytes = serde_json::to_vec_pretty(&marker).expect("a marker serializes");
    match store.put_once(MARKER, bytes.into()).await {
        Ok(()) => Ok(marker),
        Err(StorageError::AlreadyExists { .. }) => {
            Ok(read_marker(store).await?.expect("the marker that exists"))
        }
        Err(err) => Err(err.into()),
    }
}
