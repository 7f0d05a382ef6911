//! `minion bench compact`: compaction throughput against DuckDB rewriting the same segments to
//! the same valid rows (same order, zstd, same row-group size), and the copy-through fast path
//! when only a few row groups lost rows.
//!
//! Both sides read local Parquet files and write local Parquet files; downloads, uploads and the
//! catalog swap are timed separately (`compact_jobs_seconds`), as they do not depend on the
//! rewrite engine.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use clap::Args;
use roaring::RoaringBitmap;
use serde_json::json;

use super::{bench_table, local_store_dir, write_figures};
use crate::catalog::SegmentState;
use crate::cli::Context;
use crate::compaction::{compact, rewrite, CoveringSnapshot, RewriteInput};
use crate::snapshot::prebuild;
use crate::table::TableConfig;

#[derive(Debug, Args)]
pub struct CompactBenchArgs {
    /// Rows of the generated stream (one partition).
    #[arg(long, default_value_t = 4_000_000)]
    pub rows: u64,
    /// Distinct keys drawn from (uniformly).
    #[arg(long, default_value_t = 2_000_000)]
    pub keys: u64,
    /// Rows per segment.
    #[arg(long, default_value_t = 1_000_000)]
    pub segment_rows: usize,
    /// Share of row groups that lose rows in the copy-through scenario.
    #[arg(long, default_value_t = 0.1)]
    pub touched_row_groups: f64,
    /// Python with duckdb installed, for the baseline.
    #[arg(long, default_value = ".venv/bin/python")]
    pub python: PathBuf,
    /// Where the figures are written as JSON.
    #[arg(long, default_value = "bench-results/compact.json")]
    pub output: PathBuf,
}

pub async fn run(context: &Context, args: CompactBenchArgs) -> anyhow::Result<()> {
    let store_dir = local_store_dir(context, "compact")?;
    println!(
        "bench compact: {} rows over {} keys, segments of {} rows",
        args.rows, args.keys, args.segment_rows
    );
    let (name, table) = bench_table(context, args.rows, args.keys, args.segment_rows, None).await?;
    let services = context.services().await?;
    let catalog = &services.catalog;
    prebuild(
        catalog,
        &services.store,
        &name,
        0,
        None,
        false,
        &context.settings.prebuild,
    )
    .await?;
    let snapshot = CoveringSnapshot::latest(&services, &name, 0)
        .await?
        .ok_or_else(|| anyhow::anyhow!("prebuild published nothing"))?;
    let segments = catalog
        .segments(&name, Some(0), Some(SegmentState::Online))
        .await?;
    let work = tempfile::Builder::new()
        .prefix("minion-bench-compact-")
        .tempdir_in(&context.settings.staging_dir)?;

    // Scenario 1: the real bitmaps of the generated stream.
    let mut real = Vec::new();
    for segment in &segments {
        real.push(Case {
            input: store_dir.join(&segment.object_key),
            valid: snapshot.valid_docs(&services, segment).await?,
        });
    }
    let input_rows: u64 = segments.iter().map(|s| s.row_count as u64).sum();
    let input_bytes: u64 = segments.iter().map(|s| s.byte_size as u64).sum();
    let ours = rewrite_all(&table, &real, work.path(), "ours", true).await?;
    let duckdb = duckdb_rewrite(&args.python, &real, work.path(), "duckdb")?;

    // Scenario 2: only a few row groups lose a row each; the rest can be copied through.
    let few: Vec<Case> = real
        .iter()
        .map(|case| Case {
            input: case.input.clone(),
            valid: few_rows_lost(&case.input, args.touched_row_groups),
        })
        .collect();
    let few_copy = rewrite_all(&table, &few, work.path(), "few-copy", true).await?;
    let few_decode = rewrite_all(&table, &few, work.path(), "few-decode", false).await?;
    let few_duckdb = duckdb_rewrite(&args.python, &few, work.path(), "few-duckdb")?;

    // End to end: the compact jobs themselves (staging copy, rewrite, checksum, upload, swap).
    let started = Instant::now();
    for segment in &segments {
        compact(&services, &name, segment.id, None, &Default::default()).await?;
    }
    let jobs_seconds = started.elapsed().as_secs_f64();

    let mb = input_bytes as f64 / 1e6;
    let figures = json!({
        "benchmark": "compact",
        "rows": input_rows,
        "segments": segments.len(),
        "input_mb": mb,
        "valid_rows": ours.rows,
        "rewrite_seconds": ours.seconds,
        "rewrite_rows_per_second": input_rows as f64 / ours.seconds,
        "rewrite_mb_per_second": mb / ours.seconds,
        "output_mb": ours.bytes as f64 / 1e6,
        "duckdb_seconds": duckdb.seconds,
        "duckdb_output_mb": duckdb.bytes as f64 / 1e6,
        "rewrite_vs_duckdb": duckdb.seconds / ours.seconds,
        "copy_through": {
            "touched_row_groups": args.touched_row_groups,
            "valid_rows": few_copy.rows,
            "copy_seconds": few_copy.seconds,
            "decode_seconds": few_decode.seconds,
            "duckdb_seconds": few_duckdb.seconds,
            "copy_rows_per_second": input_rows as f64 / few_copy.seconds,
            "copy_vs_decode": few_decode.seconds / few_copy.seconds,
            "copy_vs_duckdb": few_duckdb.seconds / few_copy.seconds,
        },
        "compact_jobs_seconds": jobs_seconds,
        "compact_jobs_rows_per_second": input_rows as f64 / jobs_seconds,
    });
    anyhow::ensure!(
        duckdb.rows == ours.rows
            && few_duckdb.rows == few_copy.rows
            && few_decode.rows == few_copy.rows,
        "row counts differ between the rewrites: {figures}"
    );
    println!("{}", serde_json::to_string_pretty(&figures)?);
    write_figures(&args.output, &figures)
}

struct Case {
    input: PathBuf,
    valid: RoaringBitmap,
}

struct Timed {
    seconds: f64,
    rows: u64,
    bytes: u64,
}

/// Rewrites every case, two at a time (a worker with concurrency 2 on these 2 cores).
async fn rewrite_all(
    table: &TableConfig,
    cases: &[Case],
    dir: &Path,
    label: &str,
    copy_through: bool,
) -> anyhow::Result<Timed> {
    let started = Instant::now();
    let mut totals = Timed {
        seconds: 0.0,
        rows: 0,
        bytes: 0,
    };
    for pair in cases.chunks(2).enumerate() {
        let (chunk, pair) = pair;
        let mut running = Vec::new();
        for (offset, case) in pair.iter().enumerate() {
            let inputs = vec![RewriteInput {
                path: case.input.clone(),
                valid: case.valid.clone(),
            }];
            let output = dir.join(format!("{label}-{}.parquet", chunk * 2 + offset));
            let table = table.clone();
            running.push(tokio::task::spawn_blocking(move || {
                rewrite(
                    &table,
                    0,
                    0,
                    &inputs,
                    &output,
                    copy_through,
                    &Default::default(),
                )
            }));
        }
        for handle in running {
            let (written, _) = handle.await??;
            totals.rows += written.rows;
            totals.bytes += written.bytes;
        }
    }
    totals.seconds = started.elapsed().as_secs_f64();
    Ok(totals)
}

/// A bitmap of every row but one in each of the first `share` of row groups.
fn few_rows_lost(path: &Path, share: f64) -> RoaringBitmap {
    let file = std::fs::File::open(path).expect("bench input exists");
    let reader =
        parquet::file::reader::SerializedFileReader::new(file).expect("bench input parses");
    use parquet::file::reader::FileReader;
    let metadata = reader.metadata();
    let groups = metadata.num_row_groups();
    let touched = ((groups as f64 * share).ceil() as usize).min(groups);
    let mut valid = RoaringBitmap::new();
    let mut first = 0u32;
    for index in 0..groups {
        let rows = metadata.row_group(index).num_rows() as u32;
        valid.insert_range(first..first + rows);
        if index < touched {
            valid.remove(first + rows / 2);
        }
        first += rows;
    }
    valid
}

/// DuckDB rewriting each case to its valid rows, timed inside DuckDB's process.
fn duckdb_rewrite(python: &Path, cases: &[Case], dir: &Path, label: &str) -> anyhow::Result<Timed> {
    let mut listed = Vec::new();
    for (index, case) in cases.iter().enumerate() {
        let docs = dir.join(format!("{label}-{index}.docs"));
        let text: String = case.valid.iter().map(|doc| format!("{doc}\n")).collect();
        std::fs::write(&docs, text)?;
        listed.push(json!({
            "input": case.input,
            "docs": docs,
            "output": dir.join(format!("{label}-{index}.parquet")),
        }));
    }
    let plan = dir.join(format!("{label}.json"));
    std::fs::write(&plan, serde_json::to_string(&listed)?)?;
    let output = Command::new(python)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/py/duckdb_rewrite.py"
        ))
        .arg(&plan)
        .output()
        .map_err(|err| {
            anyhow::anyhow!(
                "cannot run {} for the DuckDB baseline ({err}); run scripts/setup.sh",
                python.display()
            )
        })?;
    anyhow::ensure!(
        output.status.success(),
        "DuckDB baseline failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let figures: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    Ok(Timed {
        seconds: figures["seconds"].as_f64().unwrap_or(f64::NAN),
        rows: figures["rows"].as_u64().unwrap_or(0),
        bytes: figures["bytes"].as_u64().unwrap_or(0),
    })
}
