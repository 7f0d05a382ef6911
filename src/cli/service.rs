//! The flags every long-running process shares: its HTTP listener, and the shutdown signal that
//! makes it unready at once.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use clap::Args;
use tokio_util::sync::CancellationToken;

use super::Context;
use crate::schedule::load_dir;
use crate::service::console::{Access, Console};
use crate::service::{start, Service, ServiceState};
use crate::tasks::Registry;
use crate::telemetry::Health;

#[derive(Debug, Clone, Args)]
pub struct ListenArgs {
    /// Serve /metrics, /healthz and /readyz on this address (e.g. 0.0.0.0:9090; port 0 picks
    /// a free one, logged at start). Off unless given.
    #[arg(long, env = "MINION_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Also serve the operator console (read-only) at / on the --listen address.
    #[arg(long, env = "MINION_CONSOLE")]
    pub console: bool,
    /// Let the console retry and cancel jobs (implies --console). Each action asks for
    /// confirmation and needs the console's CSRF token; give it only where operators may act.
    #[arg(long, env = "MINION_CONSOLE_WRITE")]
    pub console_write: bool,
}

impl ListenArgs {
    /// Starts the listener if one was asked for; prints the bound address on stdout's first line
    /// (`listening on ADDR`) so scripts and tests can find a port-0 listener. The console's
    /// schedules page shows the schedules in `jobs_dir`.
    pub async fn start(
        &self,
        context: &Context,
        health: Arc<Health>,
        jobs_dir: &Path,
    ) -> anyhow::Result<()> {
        let with_console = self.console || self.console_write;
        let Some(addr) = self.listen else {
            anyhow::ensure!(
                !with_console,
                "--console needs the HTTP listener: add --listen ADDR (e.g. 0.0.0.0:9090)"
            );
            return Ok(());
        };
        let catalog = context.catalog().await?.clone();
        let state = ServiceState::new(
            health,
            catalog,
            context.store(crate::binding::Access::Write).await?,
        );
        let console = match with_console {
            false => None,
            true => {
                // A worker without --scheduler may have no jobs directory: the page says so.
                let schedules = load_dir(jobs_dir, &Registry::standard()).map_err(|err| {
                    format!("cannot read the schedules: {err}; point --jobs (MINION_JOBS_DIR) at the schedule files")
                });
                let access = match self.console_write {
                    true => Access::Write,
                    false => Access::ReadOnly,
                };
                Some(Console::new(
                    context.services().await?,
                    schedules,
                    jobs_dir.to_path_buf(),
                    access,
                ))
            }
        };
        let bound = start(addr, Service { state, console }).await?;
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
