//! Readiness: can this process do its work right now? The catalog answers and is migrated to
//! this binary's version, the object store answers, and the process is not shutting down. Each
//! check has a short deadline, so a hung dependency makes the probe fail rather than hang.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::catalog::Catalog;
use crate::storage::Store;
use crate::telemetry::Health;

/// How long one dependency may take to answer a probe.
const CHECK_DEADLINE: Duration = Duration::from_secs(3);

pub struct Readiness {
    catalog: Catalog,
    store: Store,
    health: Arc<Health>,
}

/// One check's result: `ok`, or what failed and what to do.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Check {
    fn pass() -> Check {
        Check {
            ok: true,
            error: None,
        }
    }

    fn fail(error: String) -> Check {
        Check {
            ok: false,
            error: Some(error),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ReadyReport {
    pub ready: bool,
    pub shutting_down: bool,
    pub catalog: Check,
    pub store: Check,
}

impl Readiness {
    pub fn new(catalog: Catalog, store: Store, health: Arc<Health>) -> Readiness {
        Readiness {
            catalog,
            store,
            health,
        }
    }

    pub async fn check(&self) -> ReadyReport {
        let shutting_down = self.health.is_shutting_down();
        let (catalog, store) = tokio::join!(
            deadline("catalog", self.catalog.check_migrated()),
            deadline("object store", self.store.check_reachable()),
        );
        ReadyReport {
            ready: !shutting_down && catalog.ok && store.ok,
            shutting_down,
            catalog,
            store,
        }
    }
}

async fn deadline<E: std::fmt::Display>(
    what: &str,
    check: impl std::future::Future<Output = Result<(), E>>,
) -> Check {
    match tokio::time::timeout(CHECK_DEADLINE, check).await {
        Ok(Ok(())) => Check::pass(),
        Ok(Err(err)) => Check::fail(err.to_string()),
        Err(_) => Check::fail(format!(
            "the {what} did not answer within {}s",
            CHECK_DEADLINE.as_secs()
        )),
    }
}
