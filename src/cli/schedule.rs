//! `minion scheduler` (the process) and `minion schedule ls`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use tokio_util::sync::CancellationToken;

use super::output::{print_json, print_table};
use super::service::{signal_shutdown, ListenArgs};
use super::Context;
use crate::schedule::{load_dir, Schedule, Scheduler, SchedulerOptions};
use crate::tasks::Registry;
use crate::telemetry::Health;

/// Where the schedules are read from.
#[derive(Debug, Args)]
pub struct JobsDir {
    /// The directory of schedule files (`*.toml`, see jobs/README.md).
    #[arg(long = "jobs", env = "MINION_JOBS_DIR", default_value = "jobs")]
    pub dir: PathBuf,
}

/// What a scheduler needs, whether it runs alone (`minion scheduler`) or beside a worker
/// (`minion worker --scheduler`).
#[derive(Debug, Args)]
pub struct ScheduleFlags {
    #[command(flatten)]
    pub jobs: JobsDir,
    /// How long the leader's lease lasts without renewal; another instance takes over within
    /// it when the leader dies (renewed every third of it).
    #[arg(long, default_value = "15s", value_parser = crate::job::args::parse_duration, allow_hyphen_values = true)]
    pub leader_lease: Duration,
    /// How often the leader samples the queue and table gauges of /metrics from the catalog.
    #[arg(long, default_value = "15s", value_parser = crate::job::args::parse_duration, allow_hyphen_values = true)]
    pub sample_interval: Duration,
}

impl ScheduleFlags {
    /// The schedules (checked) and the options of a scheduler named `id` that looks for due
    /// ticks every `poll_interval`.
    pub fn scheduler_parts(
        &self,
        id: String,
        poll_interval: Duration,
    ) -> anyhow::Result<(Vec<Schedule>, SchedulerOptions)> {
        anyhow::ensure!(
            poll_interval < self.leader_lease / 3,
            "--poll-interval must be under a third of --leader-lease, or the lease cannot be renewed in time"
        );
        let schedules = load_dir(&self.jobs.dir, &Registry::standard())?;
        Ok((
            schedules,
            SchedulerOptions {
                id,
                lease: self.leader_lease,
                poll_interval,
                sample_interval: self.sample_interval,
            },
        ))
    }
}

#[derive(Debug, Args)]
pub struct SchedulerArgs {
    #[command(flatten)]
    pub schedule: ScheduleFlags,
    /// How often due ticks are looked for.
    #[arg(long, default_value = "1s", value_parser = crate::job::args::parse_duration, allow_hyphen_values = true)]
    pub poll_interval: Duration,
    /// This instance's name in the lease and the schedule runs (default: host-pid-random).
    #[arg(long)]
    pub id: Option<String>,
    #[command(flatten)]
    pub listen: ListenArgs,
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
    let id = args.id.unwrap_or_else(crate::worker::default_worker_id);
    let (schedules, options) = args.schedule.scheduler_parts(id, args.poll_interval)?;
    let catalog = context.catalog().await?.clone();
    let health = Health::new();
    args.listen
        .start(context, health.clone(), &args.schedule.jobs.dir)
        .await?;
    let scheduler = Scheduler::new(catalog, schedules, options).with_health(health.clone());
    let shutdown = CancellationToken::new();
    tokio::spawn(signal_shutdown(shutdown.clone(), health));
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
