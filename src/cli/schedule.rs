//! `minion scheduler` (the process) and `minion schedule ls`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use tokio_util::sync::CancellationToken;

use super::output::{print_json, print_table};
use super::Context;
use crate::schedule::{load_dir, Scheduler, SchedulerOptions};
use crate::tasks::Registry;

/// Where the schedules are read from.
#[derive(Debug, Args)]
pub struct JobsDir {
    /// The directory of schedule files (`*.toml`, see jobs/README.md).
    #[arg(long = "jobs", env = "MINION_JOBS_DIR", default_value = "jobs")]
    pub dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct SchedulerArgs {
    #[command(flatten)]
    pub jobs: JobsDir,
    /// How long the leader's lease lasts without renewal; another instance takes over within
    /// it when the leader dies (renewed every third of it).
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    pub leader_lease: Duration,
    /// How often due ticks are looked for.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub poll_interval: Duration,
    /// This instance's name in the lease and the schedule runs (default: host-pid-random).
    #[arg(long)]
    pub id: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum ScheduleCommand {
    /// Show each schedule, its next and last run, the jobs it last submitted, and the leader.
    Ls {
        #[command(flatten)]
        jobs: JobsDir,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run_scheduler(context: &Context, args: SchedulerArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.poll_interval < args.leader_lease / 3,
        "--poll-interval must be under a third of --leader-lease, or the lease cannot be renewed in time"
    );
    let schedules = load_dir(&args.jobs.dir, &Registry::standard())?;
    let catalog = context.catalog().await?.clone();
    let options = SchedulerOptions {
        id: args.id.unwrap_or_else(crate::worker::default_worker_id),
        lease: args.leader_lease,
        poll_interval: args.poll_interval,
    };
    let scheduler = Scheduler::new(catalog, schedules, options);
    let shutdown = CancellationToken::new();
    tokio::spawn(super::worker::signal_shutdown(shutdown.clone()));
    scheduler.run(shutdown).await;
    Ok(())
}

pub async fn run(context: &Context, command: ScheduleCommand) -> anyhow::Result<()> {
    match command {
        ScheduleCommand::Ls { jobs, json } => {
            let schedules = load_dir(&jobs.dir, &Registry::standard())?;
            let catalog = context.catalog().await?;
            let (statuses, leader) = crate::schedule::status(catalog.pool(), &schedules).await?;
            if json {
                return print_json(&serde_json::json!({"schedules": statuses, "leader": leader}));
            }
            let time = |t: Option<chrono::DateTime<chrono::Utc>>| {
                t.map_or_else(
                    || "-".to_string(),
                    |t| t.format("%Y-%m-%d %H:%M:%S").to_string(),
                )
            };
            let rows: Vec<Vec<String>> = statuses
                .iter()
                .map(|s| {
                    vec![
                        s.name.clone(),
                        format!("{} ({})", s.cron, s.time_zone),
                        s.kind.clone(),
                        if s.tables.is_empty() {
                            "-".into()
                        } else {
                            s.tables.join(",")
                        },
                        time(s.next_run),
                        time(s.last_tick),
                        s.last_job_ids
                            .iter()
                            .map(i64::to_string)
                            .collect::<Vec<_>>()
                            .join(","),
                    ]
                })
                .collect();
            print_table(
                &[
                    "SCHEDULE",
                    "CRON",
                    "KIND",
                    "TABLES",
                    "NEXT RUN",
                    "LAST RUN",
                    "LAST JOBS",
                ],
                &rows,
            );
            match leader {
                Some(leader) => println!(
                    "leader: {} (since {}, lease until {})",
                    leader.leader_id,
                    leader.elected_at.format("%Y-%m-%d %H:%M:%S"),
                    leader.expires_at.format("%Y-%m-%d %H:%M:%S")
                ),
                None => println!("leader: none (no scheduler is running)"),
            }
            Ok(())
        }
    }
}
