//! `minion job submit|ls|show|cancel|retry|prune` and `minion run`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use serde_json::Value;

use super::output::{print_json, print_table};
use super::Context;
use crate::queue::{CancelOutcome, JobRow, JobState, NewJob, Submitted};
use crate::tasks::{JobContext, Registry};

#[derive(Debug, Subcommand)]
pub enum JobCommand {
    /// Enqueue a job.
    Submit(SubmitArgs),
    /// List jobs, newest first.
    Ls {
        #[arg(long, value_enum)]
        state: Option<JobState>,
        #[arg(long)]
        kind: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
    /// Show one job with every attempt's error.
    Show {
        id: i64,
        #[arg(long)]
        json: bool,
    },
    /// Cancel a job; a running job's worker is told to stop it.
    Cancel { id: i64 },
    /// Run a discarded or cancelled job again, with fresh attempts.
    Retry { id: i64 },
    /// Delete finished jobs older than a retention.
    Prune {
        /// e.g. 7d, 12h, 30m.
        #[arg(long, default_value = "7d", value_parser = humantime::parse_duration)]
        older_than: Duration,
        #[arg(long, default_value_t = 1000)]
        batch: usize,
    },
}

#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// Job kind (see `minion job submit --help` for the list in the error of an unknown one).
    pub kind: String,
    /// Arguments as a JSON object.
    #[arg(default_value = "{}")]
    pub args: String,
    #[arg(long, default_value = "default")]
    pub queue: String,
    /// Higher runs first.
    #[arg(long, default_value_t = 0)]
    pub priority: i16,
    /// Run at this time (RFC 3339).
    #[arg(long, conflicts_with = "in")]
    pub at: Option<DateTime<Utc>>,
    /// Run after this delay (e.g. 30s, 5m).
    #[arg(long = "in", value_parser = humantime::parse_duration)]
    pub r#in: Option<Duration>,
    /// At most one unfinished job per key; a duplicate returns the existing job.
    #[arg(long)]
    pub unique_key: Option<String>,
    #[arg(long, default_value_t = 5)]
    pub max_attempts: i32,
    #[arg(long)]
    pub json: bool,
}

/// Parses and validates a job's arguments against its kind: nothing invalid is enqueued.
pub fn parse_job_args(registry: &Registry, kind: &str, text: &str) -> anyhow::Result<Value> {
    let args: Value = serde_json::from_str(text).map_err(|err| {
        anyhow::anyhow!(
            "job arguments are not valid JSON ({err}); pass an object like '{{\"seconds\": 1}}'"
        )
    })?;
    anyhow::ensure!(
        args.is_object(),
        "job arguments must be a JSON object, got {args}"
    );
    registry.check(kind, &args)?;
    Ok(args)
}

pub async fn run(context: &Context, command: JobCommand) -> anyhow::Result<()> {
    let registry = Registry::standard();
    match command {
        JobCommand::Submit(args) => {
            let job_args = parse_job_args(&registry, &args.kind, &args.args)?;
            let default_unique_key = registry.get(&args.kind)?.unique_key(&job_args);
            anyhow::ensure!(args.max_attempts >= 1, "--max-attempts must be at least 1");
            let scheduled_at = match (args.at, args.r#in) {
                (Some(at), _) => Some(at),
                (None, Some(delay)) => Some(Utc::now() + chrono::Duration::from_std(delay)?),
                (None, None) => None,
            };
            let job = NewJob {
                kind: args.kind.clone(),
                args: job_args,
                queue: args.queue,
                priority: args.priority,
                max_attempts: args.max_attempts,
                scheduled_at,
                unique_key: args.unique_key.or(default_unique_key),
            };
            let submitted = context.queue().await?.submit(&job).await?;
            if args.json {
                return print_json(&submitted);
            }
            match submitted {
                Submitted::New(id) => println!("submitted job {id} ({})", args.kind),
                Submitted::Existing(id) => {
                    println!("job {id} already holds that unique key; not submitted again")
                }
            }
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
                job.state.clone(),
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
    println!("job {} ({})", job.id, job.kind);
    println!("  state:        {}", job.state);
    println!("  attempt:      {}/{}", job.attempt, job.max_attempts);
    println!("  queue:        {} (priority {})", job.queue, job.priority);
    println!("  args:         {}", job.args);
    println!("  scheduled at: {}", job.scheduled_at);
    if let Some(by) = &job.attempted_by {
        println!(
            "  attempted by: {by} at {}",
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
        println!("  unique key:   {key}");
    }
    if let Some(output) = &job.output {
        println!("  output:       {output}");
    }
    let errors = job.errors.as_array().cloned().unwrap_or_default();
    if !errors.is_empty() {
        println!("  errors:");
        for error in errors {
            println!(
                "    attempt {} at {}: {}{}",
                error["attempt"],
                error["at"].as_str().unwrap_or("?"),
                error["error"].as_str().unwrap_or("?"),
                if error["permanent"] == Value::Bool(true) {
                    " (permanent)"
                } else {
                    ""
                }
            );
        }
    }
}

/// `minion run KIND [ARGS]`: the task executed in this process, without the queue.
#[derive(Debug, Args)]
pub struct RunArgs {
    pub kind: String,
    #[arg(default_value = "{}")]
    pub args: String,
}

pub async fn run_inline(context: &Context, args: RunArgs) -> anyhow::Result<()> {
    let registry = Registry::standard();
    let job_args = parse_job_args(&registry, &args.kind, &args.args)?;
    let task = registry.get(&args.kind)?.clone();
    let cancel = tokio_util::sync::CancellationToken::new();
    let job_context = JobContext {
        job_id: 0,
        attempt: 1,
        cancel: cancel.clone(),
        services: context.services().await?,
    };
    let work = task.run(&job_context, job_args);
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
