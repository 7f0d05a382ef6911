//! The `minion` command line: parsing, and one module per command group.

mod bench;
mod context;
mod demo;
mod dev;
mod ingest;
mod job;
mod kinds;
mod output;
mod schedule;
mod segment;
mod service;
mod snapshot;
mod status;
mod table;
mod worker;

use clap::{Parser, Subcommand};

pub use context::Context;

use crate::config::{GlobalArgs, Settings};

/// upsert-minion: compaction, validDocIds snapshots and key-metadata prebuild for upsert tables.
#[derive(Debug, Parser)]
#[command(name = "minion", version, about, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply catalog migrations (idempotent, safe to run concurrently).
    Migrate,
    /// Declare and inspect tables.
    #[command(subcommand)]
    Table(table::TableCommand),
    /// Write rows into a table as new segments (from a file, or a synthetic upsert stream).
    Ingest(ingest::IngestArgs),
    /// Inspect segments.
    #[command(subcommand)]
    Segment(segment::SegmentCommand),
    /// Inspect published snapshots.
    #[command(subcommand)]
    Snapshot(snapshot::SnapshotCommand),
    /// Load a partition as a serving server does at startup (from its snapshot, or without).
    Bootstrap(snapshot::BootstrapArgs),
    /// Recompute every partition from its segments and compare with the newest snapshots.
    Verify(snapshot::VerifyArgs),
    /// Write the valid (or queryable) rows of a table as JSON Lines or Parquet.
    Scan(snapshot::ScanArgs),
    /// Submit, inspect, cancel, retry and prune jobs.
    #[command(subcommand)]
    Job(job::JobCommand),
    /// Run a job in this process, without the queue: `minion run KIND --flag value ...`.
    #[command(subcommand_required = true)]
    Run(job::RunArgs),
    /// Run the worker pool: take jobs from the queue until SIGTERM/SIGINT.
    Worker(worker::WorkerArgs),
    /// Run the scheduler: submit the jobs of jobs/*.toml on their ticks (one instance leads).
    Scheduler(schedule::SchedulerArgs),
    /// Inspect schedules.
    #[command(subcommand)]
    Schedule(schedule::ScheduleCommand),
    /// The pool at a glance: processes, leader, queue, and per table dead rows, snapshot lag
    /// and the next plan.
    Status(status::StatusArgs),
    /// Benchmarks that print their figures and write them to a file.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// The embedded dev Postgres used when DATABASE_URL is unset.
    #[command(subcommand)]
    Dev(dev::DevCommand),
    /// Run the example pipeline end to end on the current settings.
    Demo(demo::DemoArgs),
}

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let mut settings = Settings::resolve(&cli.global)?;
    // Held until the command ends: the directory goes with it (or with the next worker's sweep).
    let staging = crate::staging::ProcessStaging::create(&settings.staging_root)?;
    settings.use_process_staging(&staging);
    let context = Context::new(settings);
    match cli.command {
        Command::Migrate => {
            let catalog = context.catalog_unmigrated().await?;
            catalog.migrate().await?;
            println!("catalog migrated");
            Ok(())
        }
        Command::Table(command) => table::run(&context, command).await,
        Command::Ingest(args) => ingest::run(&context, args).await,
        Command::Segment(command) => segment::run(&context, command).await,
        Command::Snapshot(command) => snapshot::run(&context, command).await,
        Command::Bootstrap(args) => snapshot::run_bootstrap(&context, args).await,
        Command::Verify(args) => snapshot::run_verify(&context, args).await,
        Command::Scan(args) => snapshot::run_scan(&context, args).await,
        Command::Job(command) => job::run(&context, command).await,
        Command::Run(args) => job::run_inline(&context, args).await,
        Command::Worker(args) => worker::run(&context, args).await,
        Command::Scheduler(args) => schedule::run_scheduler(&context, args).await,
        Command::Schedule(command) => schedule::run(&context, command).await,
        Command::Status(args) => status::run(&context, args).await,
        Command::Bench(command) => bench::run(&context, command).await,
        Command::Dev(command) => dev::run(command),
        Command::Demo(args) => demo::run(&context, args).await,
    }
}

/// Parses the log settings early so logging is up before anything else runs.
pub fn log_settings(cli: &Cli) -> (crate::config::LogFormat, String) {
    match Settings::resolve(&cli.global) {
        Ok(settings) => (settings.log_format, settings.log_level),
        Err(_) => (Default::default(), "info".into()),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }

    /// Every option and argument of every command says what it is for, and the global options
    /// come under their own heading.
    #[test]
    fn every_option_has_a_help_line() {
        fn walk(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in command.get_arguments() {
                let id = arg.get_id().as_str();
                if arg.is_hide_set() || id == "help" || id == "version" {
                    continue;
                }
                if arg.get_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
                if arg.is_global_set()
                    && super::Cli::command()
                        .get_arguments()
                        .any(|root| root.get_id() == arg.get_id())
                {
                    assert_eq!(arg.get_help_heading(), Some("Global options"), "{id}");
                }
            }
            for sub in command.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut command = super::Cli::command();
        command.build();
        let mut missing = Vec::new();
        walk(&command, "minion", &mut missing);
        assert!(missing.is_empty(), "options without help: {missing:#?}");
    }
}
