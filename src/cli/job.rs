//! `minion job submit|ls|show|cancel|retry|prune` and `minion run`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use serde_json::Value;

use serde::Serialize;

use super::kinds::KindCommand;
use super::output::{print_json, print_table};
use super::Context;
use crate::job::refs::check_refs;
use crate::job::JobContext;
use crate::logging::escape_controls;
use crate::queue::{CancelOutcome, JobRow, JobState, Submitted};
use crate::tasks::Registry;

#[derive(Debug, Subcommand)]
pub enum JobCommand {
    /// Enqueue a job: `minion job submit KIND --flag value ...` (see `minion job kinds`).
    #[command(subcommand_required = true)]
    Submit(Box<SubmitArgs>),
    /// List the job kinds with what each does.
    Kinds {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// List jobs, newest first.
    Ls {
        /// Only jobs in this state.
        #[arg(long, value_enum)]
        state: Option<JobState>,
        /// Only jobs of this kind.
        #[arg(long)]
        kind: Option<String>,
        /// At most this many jobs.
        #[arg(long, default_value_t = 50)]
        limit: i64,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one job with every attempt's error.
    Show {
        /// The job id.
        id: i64,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Cancel a job; a running job's worker is told to stop it.
    Cancel {
        /// The job id.
        id: i64,
    },
    /// Run a discarded or cancelled job again, with fresh attempts.
    Retry {
        /// The job id.
        id: i64,
    },
    /// Delete finished jobs older than a retention.
    Prune {
        /// Delete jobs finished longer ago than this (e.g. 7d, 12h, 30m).
        #[arg(long, default_value = "7d", value_parser = crate::job::args::parse_duration, allow_hyphen_values = true)]
        older_than: Duration,
        /// Jobs deleted per statement.
        #[arg(long, default_value_t = 1000)]
        batch: usize,
    },
}

#[derive(Debug, Args)]
pub struct SubmitArgs {
    #[command(subcommand)]
    pub kind: KindCommand,
    #[command(flatten)]
    pub options: SubmitOptions,
}

/// How a job is queued; given before or after the kind's own flags.
#[derive(Debug, Args)]
#[command(next_help_heading = "Submit options")]
pub struct SubmitOptions {
    /// The queue to put the job in (workers take from the queues of their `--queues`).
    #[arg(long, default_value = "default", global = true)]
    pub queue: String,
    /// Higher runs first.
    #[arg(long, default_value_t = 0, global = true)]
    pub priority: i16,
    /// Run at this time (RFC 3339, e.g. 2026-11-28T22:00:00Z).
    #[arg(long, conflicts_with = "in", global = true)]
    pub at: Option<DateTime<Utc>>,
    /// Run after this delay (e.g. 30s, 5m).
    #[arg(long = "in", value_parser = crate::job::args::parse_duration, allow_hyphen_values = true, global = true)]
    pub r#in: Option<Duration>,
    /// At most one unfinished job per key; a duplicate returns the existing job. Each kind has
    /// a default (e.g. one prebuild per partition).
    #[arg(long, global = true)]
    pub unique_key: Option<String>,
    /// Attempts before the job is discarded.
    #[arg(long, default_value_t = 5, global = true)]
    pub max_attempts: i32,
    /// How long each attempt may run before it is cancelled and retried (e.g. 30s, 2h);
    /// default: the kind's (`minion job kinds`).
    #[arg(long, value_parser = crate::job::args::parse_duration, allow_hyphen_values = true, global = true)]
    pub timeout: Option<Duration>,
    /// Print the outcome as JSON.
    #[arg(long, global = true)]
    pub json: bool,
}

/// A kind as `minion job kinds` lists it.
#[derive(Debug, Serialize)]
struct KindInfo {
    kind: &'static str,
    about: &'static str,
    timeout_seconds: f64,
}

pub async fn run(context: &Context, command: JobCommand) -> anyhow::Result<()> {
    match command {
        JobCommand::Submit(submit) => {
            let SubmitArgs { kind, options } = *submit;
            let (mut job, refs) = kind.into_job()?;
            // An invalid job is never enqueued: what it names must exist now.
            check_refs(context.catalog().await?, &refs).await?;
            anyhow::ensure!(
                options.max_attempts >= 1,
                "--max-attempts must be at least 1"
            );
            job.scheduled_at = match (options.at, options.r#in) {
                (Some(at), _) => Some(at),
                (None, Some(delay)) => Some(Utc::now() + chrono::Duration::from_std(delay)?),
                (None, None) => None,
            };
            job.queue = options.queue;
            job.priority = options.priority;
            job.max_attempts = options.max_attempts;
            if let Some(timeout) = options.timeout {
                anyhow::ensure!(!timeout.is_zero(), "--timeout must be more than 0");
                job.timeout = Some(timeout);
            }
            job.unique_key = options.unique_key.or(job.unique_key);
            let submitted = context.queue().await?.submit(&job).await?;
            if options.json {
                return print_json(&submitted);
            }
            match submitted {
                Submitted::New(id) => println!("submitted job {id} ({})", job.kind),
                Submitted::Existing(id) => {
                    println!("job {id} already holds that unique key; not submitted again")
                }
            }
            Ok(())
        }
        JobCommand::Kinds { json } => {
            let kinds: Vec<KindInfo> = Registry::standard()
                .tasks()
                .map(|task| KindInfo {
                    kind: task.kind(),
                    about: task.about(),
                    timeout_seconds: task.timeout().as_secs_f64(),
                })
                .collect();
            if json {
                return print_json(&kinds);
            }
            let rows: Vec<Vec<String>> = kinds
                .iter()
                .map(|k| {
                    let timeout = Duration::from_secs_f64(k.timeout_seconds);
                    vec![
                        k.kind.to_string(),
                        humantime::format_duration(timeout).to_string(),
                        k.about.to_string(),
                    ]
                })
                .collect();
            print_table(&["KIND", "TIMEOUT", "WHAT IT DOES"], &rows);
            println!(
                "\nthe flags of a kind: minion job submit KIND --help (or minion run KIND --help)"
            );
            Ok(())
        }
        JobCommand::Ls {
            state,
            kind,
            limit,
            json,
        } => {
            let jobs = context
                .queue()
                .await?
                .list(state, kind.as_deref(), limit)
                .await?;
            if json {
                return print_json(&jobs);
            }
            print_jobs(&jobs);
            Ok(())
        }
        JobCommand::Show { id, json } => {
            let job = context.queue().await?.get(id).await?;
            if json {
                return print_json(&job);
            }
            print_job(&job);
            Ok(())
        }
        JobCommand::Cancel { id } => {
            let queue = context.queue().await?;
            match queue.cancel(id).await? {
                CancelOutcome::Cancelled => println!("job {id} cancelled"),
                CancelOutcome::Requested => {
                    println!("job {id} is running; its worker was told to cancel it")
                }
                CancelOutcome::NotCancellable => {
                    let job = queue.get(id).await?;
                    anyhow::bail!("job {id} is {} and cannot be cancelled", job.state);
                }
            }
            Ok(())
        }
        JobCommand::Retry { id } => {
            let queue = context.queue().await?;
            if !queue.retry(id).await? {
                let job = queue.get(id).await?;
                anyhow::bail!(
                    "job {id} is {}; only finished jobs can be retried",
                    job.state
                );
            }
            println!("job {id} is available again");
            Ok(())
        }
        JobCommand::Prune { older_than, batch } => {
            let deleted = context.queue().await?.prune(older_than, batch).await?;
            println!("pruned {deleted} finished jobs");
            Ok(())
        }
    }
}

fn print_jobs(jobs: &[JobRow]) {
    let rows: Vec<Vec<String>> = jobs
        .iter()
        .map(|job| {
            vec![
                job.id.to_string(),
                job.kind.clone(),
                job.state.to_string(),
                format!("{}/{}", job.attempt, job.max_attempts),
                job.queue.clone(),
                job.priority.to_string(),
                job.scheduled_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                job.unique_key.clone().unwrap_or_default(),
            ]
        })
        .collect();
    print_table(
        &[
            "ID",
            "KIND",
            "STATE",
            "ATTEMPT",
            "QUEUE",
            "PRIORITY",
            "SCHEDULED",
            "UNIQUE KEY",
        ],
        &rows,
    );
}

fn print_job(job: &JobRow) {
    // Messages, keys and errors come from users and from failures: one line each, escaped.
    let shown = |text: &str| escape_controls(text).into_owned();
    println!("job {} ({})", job.id, job.kind);
    println!("  state:        {}", job.state);
    println!("  attempt:      {}/{}", job.attempt, job.max_attempts);
    println!("  queue:        {} (priority {})", job.queue, job.priority);
    if let Some(timeout) = job.timeout_seconds {
        println!("  timeout:      {timeout}s");
    }
    println!("  args:         {}", shown(&job.args.to_string()));
    println!("  scheduled at: {}", job.scheduled_at);
    if let Some(by) = &job.attempted_by {
        println!(
            "  attempted by: {} at {}",
            shown(by),
            job.attempted_at.map(|t| t.to_string()).unwrap_or_default()
        );
    }
    if let Some(lease) = job.lease_expires_at {
        println!("  lease until:  {lease}");
    }
    if let Some(finalized) = job.finalized_at {
        println!("  finalized at: {finalized}");
    }
    if let Some(key) = &job.unique_key {
        println!("  unique key:   {}", shown(key));
    }
    if let Some(output) = &job.output {
        println!("  output:       {}", shown(&output.to_string()));
    }
    let errors = job.errors.as_array().cloned().unwrap_or_default();
    if !errors.is_empty() {
        println!("  errors:");
        for error in errors {
            println!(
                "    attempt {} at {}: {}{}",
                error["attempt"],
                error["at"].as_str().unwrap_or("?"),
                shown(error["error"].as_str().unwrap_or("?")),
                if error["permanent"] == Value::Bool(true) {
                    " (permanent)"
                } else {
                    ""
                }
            );
        }
    }
}

/// `minion run KIND --flags`: the job executed in this process, without the queue.
#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(subcommand)]
    pub kind: KindCommand,
}

pub async fn run_inline(context: &Context, args: RunArgs) -> anyhow::Result<()> {
    let (job, _) = args.kind.into_job()?;
    let task = Registry::standard().get(&job.kind)?.clone();
    let cancel = tokio_util::sync::CancellationToken::new();
    let job_context = JobContext {
        job_id: 0,
        attempt: 1,
        cancel: cancel.clone(),
        services: context.services().await?,
    };
    let work = task.run(&job_context, job.args);
    tokio::pin!(work);
    let output = tokio::select! {
        output = &mut work => output?,
        _ = tokio::signal::ctrl_c() => {
            cancel.cancel();
            work.await?
        }
    };
    println!("{}", serde_json::to_string_pretty(&output)?);
    Ok(())
}
