//! `minion ingest`: rows from a file or from the synthetic generator into new segments.

use crate::binding::Access;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use clap::Args;

use super::output::{human_bytes, print_json};
use super::Context;
use crate::ingest::{self, GenerateOptions, Generator, IngestOptions, IngestReport, InputFormat};
use crate::segment::WriteOptions;

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["input", "generate"])))]
pub struct IngestArgs {
    /// The table to write into (see `minion table ls`).
    #[arg(long)]
    pub table: String,
    /// A JSON Lines, CSV (with header) or Parquet file.
    #[arg(long)]
    pub input: Option<PathBuf>,
    /// Input format; guessed from the file extension when omitted.
    #[arg(long, value_enum)]
    pub format: Option<InputFormat>,
    /// Generate this many rows of a synthetic upsert stream instead of reading a file.
    #[arg(long, value_name = "ROWS")]
    pub generate: Option<u64>,
    /// Distinct keys of the generated stream.
    #[arg(long, default_value_t = 10_000)]
    pub keys: u64,
    /// Random seed of the synthetic stream (the same seed gives the same rows).
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Zipf exponent of key popularity (0 = uniform).
    #[arg(long, default_value_t = 0.99)]
    pub zipf: f64,
    /// Share of generated rows that arrive late (smaller event time than rows before them).
    #[arg(long, default_value_t = 0.05)]
    pub out_of_order_ratio: f64,
    /// Share of generated rows that are delete tombstones.
    #[arg(long, default_value_t = 0.02)]
    pub delete_ratio: f64,
    /// Event time of the first generated row (ms since the epoch).
    #[arg(long, default_value_t = 1_700_000_000_000)]
    pub start_time_ms: i64,
    /// Rows per segment (per partition).
    #[arg(long, default_value_t = 500_000)]
    pub segment_rows: usize,
    /// Rows per Parquet row group.
    #[arg(long, default_value_t = 131_072)]
    pub row_group_rows: usize,
    /// Recorded with the registration: a rerun with the same key registers nothing if this one
    /// committed (use it when rerunning an ingest whose outcome was unknown).
    #[arg(long, value_name = "KEY")]
    pub idempotency_key: Option<String>,
    /// How long this ingest's sequence reservations outlive their last renewal; a killed ingest
    /// blocks merges across its sequences for at most this long.
    #[arg(long, value_parser = crate::job::args::parse_duration, allow_hyphen_values = true, default_value = "30s")]
    pub reservation_lease: std::time::Duration,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(context: &Context, args: IngestArgs) -> anyhow::Result<()> {
    let report = ingest_with(context, &args).await?;
    if args.json {
        return print_json(&report);
    }
    Ok(())
}

/// Runs an ingest and prints a one-line summary (unless `--json`); shared with the demo.
pub async fn ingest_with(context: &Context, args: &IngestArgs) -> anyhow::Result<IngestReport> {
    let catalog = context.catalog().await?;
    let table = Arc::new(catalog.table(&args.table).await?);
    let store = context.store(Access::Write).await?;
    store.check_reachable().await?;
    let (source, expected_rows): (ingest::BatchSource, u64) = match (&args.input, args.generate) {
        (Some(path), None) => {
            let format = match args.format.or_else(|| InputFormat::from_path(path)) {
                Some(format) => format,
                None => anyhow::bail!(
                    "cannot tell the format of {} from its name; pass --format jsonl|csv|parquet",
                    path.display()
                ),
            };
            (ingest::open_input(path, format, table.clone())?, 0)
        }
        (None, Some(rows)) => {
            let options = GenerateOptions {
                rows,
                keys: args.keys,
                seed: args.seed,
                zipf_exponent: args.zipf,
                out_of_order_ratio: args.out_of_order_ratio,
                delete_ratio: args.delete_ratio,
                start_time_ms: args.start_time_ms,
                ..GenerateOptions::default()
            };
            (Box::new(Generator::new(table.clone(), options)?), rows)
        }
        _ => anyhow::bail!("give exactly one of --input FILE or --generate ROWS"),
    };
    let options = IngestOptions {
        segment_rows: args.segment_rows,
        write: WriteOptions {
            row_group_rows: args.row_group_rows,
            ..WriteOptions::default()
        },
        staging_dir: context.settings.staging_dir.clone(),
        concurrency: 2,
        progress: std::io::stderr().is_terminal() && !args.json,
        expected_rows,
        reservation_lease: args.reservation_lease,
        idempotency_key: args.idempotency_key.clone(),
        input_fingerprint: match &args.idempotency_key {
            Some(_) => Some(input_fingerprint(args).await?),
            None => None,
        },
    };
    if let Some(key) = &args.idempotency_key {
        anyhow::ensure!(
            !key.is_empty() && key.len() <= 200,
            "--idempotency-key must be 1 to 200 characters"
        );
    }
    anyhow::ensure!(
        args.reservation_lease >= std::time::Duration::from_secs(1),
        "--reservation-lease must be at least 1s (renewals come every third of it)"
    );
    let started = Instant::now();
    let report = ingest::ingest(catalog, &store, table, source, options).await?;
    let seconds = started.elapsed().as_secs_f64();
    if report.outcome == ingest::IngestOutcome::AlreadyRegistered {
        if !args.json {
            println!(
                "already registered under idempotency key {}: {} rows in segments {} of table {}; nothing more was registered",
                crate::logging::escape_controls(args.idempotency_key.as_deref().unwrap_or_default()),
                report.rows,
                report
                    .segment_ids
                    .iter()
                    .map(i64::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
                report.table
            );
        }
        return Ok(report);
    }
    if !args.json {
        println!(
            "ingested {} rows into {} segments of table {} ({}) in {:.1}s ({:.0} rows/s)",
            report.rows,
            report.segments.len(),
            report.table,
            human_bytes(report.bytes),
            seconds,
            report.rows as f64 / seconds.max(1e-9)
        );
    }
    Ok(report)
}

/// What names the input an idempotency key is recorded with: the SHA-256 of the input file, or
/// of the generator's settings (the same settings generate the same rows).
async fn input_fingerprint(args: &IngestArgs) -> anyhow::Result<String> {
    match &args.input {
        Some(path) => {
            let path = path.clone();
            Ok(tokio::task::spawn_blocking(move || crate::storage::sha256_file(&path)).await??)
        }
        None => {
            let settings = format!(
                "generate rows={:?} keys={} seed={} zipf={} out_of_order={} delete={} start={}",
                args.generate,
                args.keys,
                args.seed,
                args.zipf,
                args.out_of_order_ratio,
                args.delete_ratio,
                args.start_time_ms
            );
            Ok(crate::storage::sha256_hex(settings.as_bytes()))
        }
    }
}
