//! The flags every long-running process shares: its HTTP listener, and the shutdown signal that
//! makes it unready at once.

use std::net::SocketAddr;
use std::sync::Arc;

use clap::Args;
use tokio_util::sync::CancellationToken;

use super::Context;
use crate::service::{start, ServiceState};
use crate::telemetry::Health;

#[derive(Debug, Clone, Args)]
pub struct ListenArgs {
    /// Serve /metrics, /healthz and /readyz on this address (e.g. 0.0.0.0:9090; port 0 picks
    /// a free one, logged at start). Off unless given.
    #[arg(long, env = "MINION_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
}

impl ListenArgs {
    /// Starts the listener if one was asked for; prints the bound address on stdout's first line
    /// (`listening on ADDR`) so scripts and tests can find a port-0 listener.
    pub async fn start(&self, context: &Context, health: Arc<Health>) -> anyhow::Result<()> {
        let Some(addr) = self.listen else {
            return Ok(());
        };
        let catalog = context.catalog().await?.clone();
        let state = ServiceState::new(health, catalog, context.store()?);
        let bound = start(addr, state).await?;
        println!("listening on {bound}");
        Ok(())
    }
}

/// Cancels `shutdown` on the first SIGTERM or SIGINT, and marks the process unready at once.
pub async fn signal_shutdown(shutdown: CancellationToken, health: Arc<Health>) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop the process with SIGKILL");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
    health.begin_shutdown();
    shutdown.cancel();
}
