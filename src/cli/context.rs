//! What commands share: resolved settings, and the catalog and store opened on first use.

use std::sync::Arc;

use tokio::sync::OnceCell;

use crate::binding::{check_store, Access};
use crate::catalog::Catalog;
use crate::config::{DatabaseSetting, Settings};
use crate::devdb;
use crate::job::Services;
use crate::queue::Queue;
use crate::storage::{StorageError, Store};

pub struct Context {
    pub settings: Settings,
    /// Connections in the catalog pool; workers raise it to their concurrency plus overhead.
    pub max_connections: std::sync::atomic::AtomicU32,
    catalog: OnceCell<Catalog>,
}

impl Context {
    pub fn new(settings: Settings) -> Context {
        Context {
            settings,
            max_connections: std::sync::atomic::AtomicU32::new(10),
            catalog: OnceCell::new(),
        }
    }

    /// The catalog, checked to be migrated. The embedded dev database is migrated on the spot;
    /// a real one must be migrated explicitly (`minion migrate`, or the Helm hook).
    pub async fn catalog(&self) -> anyhow::Result<&Catalog> {
        let catalog = self.catalog_unmigrated().await?;
        if self.settings.database == DatabaseSetting::Embedded {
            catalog.migrate().await?;
        } else {
            catalog.check_migrated().await?;
        }
        Ok(catalog)
    }

    /// The catalog without the migration check, for `minion migrate` itself.
    pub async fn catalog_unmigrated(&self) -> anyhow::Result<&Catalog> {
        self.catalog
            .get_or_try_init(|| async {
                let url = match &self.settings.database {
                    DatabaseSetting::Url(url) => url.clone(),
                    DatabaseSetting::Embedded => {
                        let dir = devdb::default_dir();
                        let dev = tokio::task::spawn_blocking(move || devdb::ensure_running(&dir)).await??;
                        tracing::info!(dir = %dev.dir.display(), port = dev.port, "using the embedded dev Postgres (stop it with `minion dev stop`)");
                        dev.url()
                    }
                };
                let connections = self.max_connections.load(std::sync::atomic::Ordering::Relaxed);
                Ok::<_, anyhow::Error>(Catalog::connect_with(&url, connections).await?)
            })
            .await
    }

    pub async fn queue(&self) -> anyhow::Result<Queue> {
        Ok(Queue::new(self.catalog().await?.pool().clone()))
    }

    /// What jobs reach: catalog, queue and store, sharing one connection pool.
    pub async fn services(&self) -> anyhow::Result<Arc<Services>> {
        self.services_for(Access::Write).await
    }

    /// [`Self::services`] for a command that only reads.
    pub async fn services_for(&self, access: Access) -> anyhow::Result<Arc<Services>> {
        let catalog = self.catalog().await?.clone();
        Ok(Arc::new(Services {
            queue: Queue::new(catalog.pool().clone()),
            catalog,
            store: self.store(access).await?,
            prebuild: self.settings.prebuild.clone(),
        }))
    }

    /// The store, checked to be the catalog's (`binding`): a write binds a catalog that has no
    /// store yet; a read never binds, and never creates a local store directory.
    pub async fn store(&self, access: Access) -> anyhow::Result<Store> {
        let catalog = self.catalog().await?;
        let store = match access {
            Access::Read => match Store::open_existing(&self.settings.store) {
                Ok(store) => store,
                // A local directory that does not exist holds nothing: fine for a catalog that
                // never wrote (an empty store stands in), the wrong store for one that did.
                Err(missing @ StorageError::BadUrl { .. })
                    if Store::missing_local_dir(&self.settings.store).is_some() =>
                {
                    match catalog.store_binding().await? {
                        Some(bound) => anyhow::bail!(
                            "{missing}; this catalog's objects are in store {}",
                            bound.store_url
                        ),
                        None => return Ok(Store::open("memory://")?),
                    }
                }
                Err(err) => return Err(err.into()),
            },
            Access::Write => {
                // A refused write creates nothing: a bound catalog's store exists already.
                if let Some(dir) = Store::missing_local_dir(&self.settings.store) {
                    if let Some(bound) = catalog.store_binding().await? {
                        anyhow::bail!(
                            "this catalog's objects are in store {}, but the store given is {}, whose directory {} does not exist (nothing was created); point --store (or MINION_STORE) at {}",
                            bound.store_url,
                            self.settings.store,
                            dir.display(),
                            bound.store_url
                        );
                    }
                }
                Store::open(&self.settings.store)?
            }
        };
        check_store(catalog, &store, access).await?;
        Ok(store)
    }
}
