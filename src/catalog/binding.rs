//! The catalog's side of the store binding (`binding`): this catalog's identity and the store it
//! is bound to.

use chrono::{DateTime, Utc};

use super::{Catalog, CatalogError};

/// The store a catalog is bound to.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct StoreBinding {
    pub store_id: String,
    pub store_url: String,
    pub bound_at: DateTime<Utc>,
}

impl Catalog {
    /// This catalog's identity (made at migration).
    pub async fn catalog_id(&self) -> Result<String, CatalogError> {
        let (id,): (String,) = sqlx::query_as("SELECT catalog_id FROM catalog_identity")
            .fetch_one(&self.pool)
            .await?;
        Ok(id)
    }

    pub async fn store_binding(&self) -> Result<Option<StoreBinding>, CatalogError> {
        Ok(sqlx::query_as::<_, StoreBinding>(
            "SELECT store_id, store_url, bound_at FROM store_binding",
        )
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Binds the catalog to store `store_id` unless it is bound already; returns the binding in
    /// force (the first one wins a race).
    pub async fn bind_store(
        &self,
        store_id: &str,
        store_url: &str,
    ) -> Result<StoreBinding, CatalogError> {
        sqlx::query(
            "INSERT INTO store_binding (store_id, store_url) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(store_id)
        .bind(store_url)
        .execute(&self.pool)
        .await?;
        Ok(self
            .store_binding()
            .await?
            .expect("inserted above, or by a racing binder"))
    }

    /// The object key of some segment of this catalog, if it has any (any state): a catalog that
    /// predates bindings is bound only to a store that holds its objects.
    pub async fn some_segment_object(&self) -> Result<Option<String>, CatalogError> {
        Ok(sqlx::query_as::<_, (String,)>(
            "SELECT object_key FROM segments WHERE state = 'online' ORDER BY id LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await?
        .map(|(key,)| key))
    }
}
