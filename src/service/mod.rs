//! The HTTP listener of every worker and scheduler (`--listen`): `/metrics` in the Prometheus
//! text format, `/healthz` (the process's loops are turning) and `/readyz` (the catalog answers
//! and is migrated for this binary, the object store answers, and the process is not shutting
//! down). With `--console`, also the operator console ([`console`]). Nothing secret is ever in an
//! answer: errors name the database and store with their credentials redacted.

pub mod console;
mod ready;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::catalog::Catalog;
use crate::storage::Store;
use crate::telemetry::{metrics, Health};

pub use ready::Readiness;

/// What the handlers read.
#[derive(Clone)]
pub struct ServiceState {
    pub health: Arc<Health>,
    pub readiness: Arc<Readiness>,
}

/// What the listener serves: the probes and metrics, and the console if one was asked for.
pub struct Service {
    pub state: ServiceState,
    pub console: Option<console::Console>,
}

impl ServiceState {
    pub fn new(health: Arc<Health>, catalog: Catalog, store: Store) -> ServiceState {
        ServiceState {
            readiness: Arc::new(Readiness::new(catalog, store, health.clone())),
            health,
        }
    }
}

pub fn router(service: Service) -> Router {
    let probes = Router::new()
        .route("/metrics", get(serve_metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(service.state);
    match service.console {
        Some(console) => probes.merge(console::router(console)),
        None => probes,
    }
}

/// Binds `addr` (so a taken port fails the start, with the address named) and serves in the
/// background until the process ends: the listener stays up through a graceful shutdown, so
/// probes see the process drain.
pub async fn start(addr: SocketAddr, service: Service) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|err| {
        anyhow::anyhow!("cannot listen on {addr}: {err}; pick another address with --listen (or `--listen off`)")
    })?;
    let bound = listener.local_addr()?;
    metrics()
        .build_info
        .with_label_values(&[
            env!("CARGO_PKG_VERSION"),
            &Catalog::migration_version().to_string(),
        ])
        .set(1);
    let with_console = service.console.is_some();
    tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, router(service)).await {
            tracing::error!(error = %err, "the HTTP listener stopped");
        }
    });
    match with_console {
        true => {
            tracing::info!(address = %bound, "serving the console at /, and /metrics, /healthz and /readyz")
        }
        false => tracing::info!(address = %bound, "serving /metrics, /healthz and /readyz"),
    }
    Ok(bound)
}

async fn serve_metrics() -> Response {
    (
        [(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)],
        metrics().render(),
    )
        .into_response()
}

async fn healthz(State(state): State<ServiceState>) -> Response {
    let stale = state.health.stale();
    let loops = state.health.loop_names();
    if stale.is_empty() {
        return (
            StatusCode::OK,
            Json(json!({ "status": "ok", "loops": loops })),
        )
            .into_response();
    }
    let stale: Vec<_> = stale
        .iter()
        .map(|s| {
            json!({
                "loop": s.name,
                "seconds_since_turn": s.since.as_secs_f64(),
                "allowed_seconds": s.max_gap.as_secs_f64(),
            })
        })
        .collect();
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({ "status": "stalled", "loops": loops, "stale": stale })),
    )
        .into_response()
}

async fn readyz(State(state): State<ServiceState>) -> Response {
    let report = state.readiness.check().await;
    let status = if report.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(report)).into_response()
}
