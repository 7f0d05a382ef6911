//! `minion bench prebuild`: prebuild speed and memory on a generated table, the DuckDB baseline
//! computing the same winners on the same files, and bootstrap time with vs without the snapshot.

use crate::binding::Access;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use clap::Args;
use serde_json::json;

use super::{bench_table, local_store_dir, write_figures};
use crate::cli::Context;
use crate::config::DatabaseSetting;
use crate::loader::{bootstrap, BootstrapOptions};

#[derive(Debug, Args)]
pub struct PrebuildBenchArgs {
    /// Rows of the generated stream (one partition).
    #[arg(long, default_value_t = 2_000_000)]
    pub rows: u64,
    /// Distinct keys drawn from (uniformly).
    #[arg(long, default_value_t = 1_000_000)]
    pub keys: u64,
    /// Rows per segment.
    #[arg(long, default_value_t = 1_000_000)]
    pub segment_rows: usize,
    /// Python with duckdb installed, for the baseline.
    #[arg(long, default_value = ".venv/bin/python")]
    pub python: PathBuf,
    /// Skip the slow bootstrap path (it is the longest part at large key counts).
    #[arg(long)]
    pub skip_slow_path: bool,
    /// Where the figures are written as JSON.
    #[arg(long, default_value = "bench-results/prebuild.json")]
    pub output: PathBuf,
    /// Then compact this share of the segments (at least one) and merge a few more, and measure
    /// bootstrap through lineage and the follow-up prebuild (issue 14). 0 leaves it out.
    #[arg(long, default_value_t = 0.0)]
    pub compact_fraction: f64,
    /// Segments merged into one in that scenario.
    #[arg(long, default_value_t = 3)]
    pub merge_segments: usize,
    /// Give the table this `metadata_ttl` (ms of `updated_at`; the stream advances 1 ms a row),
    /// to measure the hot and cold key sets against a run without it.
    #[arg(long)]
    pub metadata_ttl: Option<u64>,
}

pub async fn run(context: &Context, args: PrebuildBenchArgs) -> anyhow::Result<()> {
    let store_dir = local_store_dir(context, "prebuild")?;
    let catalog = context.catalog().await?;
    println!("bench prebuild: {} rows over {} keys", args.rows, args.keys);
    let (name, _table) = bench_table(
        context,
        args.rows,
        args.keys,
        args.segment_rows,
        args.metadata_ttl,
    )
    .await?;

    // Prebuild from scratch in a child process, so its peak RSS is its own.
    let (prebuild_seconds, max_rss_kib) = prebuild_child(context, &name).await?;
    let snapshot = catalog
        .latest_snapshot(&name, 0)
        .await?
        .ok_or_else(|| anyhow::anyhow!("prebuild published nothing"))?;
    let keys = snapshot.key_count as u64;
    let manifest = {
        let manifest_bytes = context
            .store(Access::Write)
            .await?
            .get(&snapshot.manifest_key)
            .await?;
        crate::snapshot::Manifest::parse(&snapshot.manifest_key, &manifest_bytes)?
    };
    let cold_keys = manifest.cold_key_count();

    // DuckDB on the same files, given in sequence order (its tie-break after the comparison).
    let mut segments = catalog.segments(&name, Some(0), None).await?;
    segments.sort_by_key(|s| s.sequence);
    let files: Vec<String> = segments
        .iter()
        .map(|s| store_dir.join(&s.object_key).display().to_string())
        .collect();
    let output = Command::new(&args.python)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/py/duckdb_baseline.py"
        ))
        .args(["order_id", "updated_at", "deleted"])
        .args(&files)
        .output()
        .map_err(|err| {
            anyhow::anyhow!(
                "cannot run {} for the DuckDB baseline ({err}); run scripts/setup.sh",
                args.python.display()
            )
        })?;
    anyhow::ensure!(
        output.status.success(),
        "DuckDB baseline failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let duckdb: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    let duckdb_seconds = duckdb["seconds"].as_f64().unwrap_or(f64::NAN);

    // Bootstrap both ways.
    let work = tempfile::Builder::new()
        .prefix("minion-bench-")
        .tempdir_in(&context.settings.staging_dir)?;
    let store = context.store(Access::Write).await?;
    let mut bootstrap_seconds = Vec::new();
    for use_snapshot in [true, false] {
        if !use_snapshot && args.skip_slow_path {
            bootstrap_seconds.push(f64::NAN);
            continue;
        }
        let options = BootstrapOptions {
            use_snapshot,
            use_lineage: true,
            sst_format_version: context.settings.prebuild.sst_format_version,
            staging_dir: context.settings.staging_dir.clone(),
        };
        let dir = work
            .path()
            .join(if use_snapshot { "with" } else { "without" });
        let loaded = bootstrap(catalog, &store, &name, 0, &dir, &options).await?;
        anyhow::ensure!(
            (loaded.report.keys, loaded.report.cold_keys) == (keys, cold_keys),
            "bootstrap found {} hot and {} cold keys, the snapshot {keys} and {cold_keys}",
            loaded.report.keys,
            loaded.report.cold_keys
        );
        bootstrap_seconds.push(loaded.report.seconds);
    }
    let bytes = |files: &[crate::snapshot::manifest::KeyFile]| -> u64 {
        files.iter().map(|f| f.file.size).sum()
    };
    let (sst_bytes, cold_sst_bytes) = (bytes(&manifest.key_files), bytes(&manifest.cold_key_files));
    let mut figures = json!({
        "benchmark": "prebuild",
        "rows": args.rows,
        "keys": keys,
        "duckdb_keys": duckdb["keys"],
        "queryable_docs": snapshot.queryable_docs,
        "duckdb_queryable": duckdb["queryable"],
        "prebuild_seconds": prebuild_seconds,
        "rows_per_second": args.rows as f64 / prebuild_seconds,
        "keys_per_second": keys as f64 / prebuild_seconds,
        "prebuild_peak_rss_mib": max_rss_kib as f64 / 1024.0,
        "rss_bytes_per_key": max_rss_kib as f64 * 1024.0 / keys.max(1) as f64,
        "sst_bytes_per_key": sst_bytes as f64 / keys.max(1) as f64,
        "metadata_ttl": args.metadata_ttl,
        "hot_keys": keys,
        "cold_keys": cold_keys,
        "hot_sst_bytes": sst_bytes,
        "cold_sst_bytes": cold_sst_bytes,
        "duckdb_seconds": duckdb_seconds,
        "prebuild_vs_duckdb": duckdb_seconds / prebuild_seconds,
        "duckdb_group_only_seconds": duckdb["group_only_seconds"],
        "bootstrap_with_snapshot_seconds": bootstrap_seconds[0],
        "bootstrap_without_snapshot_seconds": bootstrap_seconds[1],
        "bootstrap_speedup": bootstrap_seconds[1] / bootstrap_seconds[0],
    });
    if args.compact_fraction > 0.0 {
        let scenario = super::lineage::after_compaction(
            context,
            &name,
            &super::lineage::Scenario {
                compact_fraction: args.compact_fraction,
                merge_segments: args.merge_segments,
                skip_slow_path: args.skip_slow_path,
                from_scratch_prebuild_seconds: prebuild_seconds,
            },
        )
        .await?;
        figures["after_compaction"] = scenario;
    }
    println!("{}", serde_json::to_string_pretty(&figures)?);
    write_figures(&args.output, &figures)
}

/// Runs `minion run prebuild` for partition 0 of `name` in a child process; returns its whole
/// life in seconds and its peak RSS in KiB.
pub(super) async fn prebuild_child(context: &Context, name: &str) -> anyhow::Result<(f64, i64)> {
    let exe = std::env::current_exe()?;
    let mut command = Command::new(exe);
    if let DatabaseSetting::Url(url) = &context.settings.database {
        command.arg("--database-url").arg(url);
    }
    command
        .arg("--store")
        .arg(&context.settings.store)
        .args(["run", "prebuild", "--table", name, "--partition", "0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    let started = Instant::now();
    let child = command.spawn()?;
    let (status, max_rss_kib) =
        tokio::task::spawn_blocking(move || wait_with_rusage(child)).await??;
    let seconds = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        status == 0,
        "the prebuild child failed (exit status {status})"
    );
    Ok((seconds, max_rss_kib))
}

/// Waits for `child` and returns (exit code, peak RSS in KiB).
///
/// The peak is the child's own `VmHWM` (/proc/PID/status), polled every 10 ms: it starts afresh at
/// exec. `ru_maxrss` from wait4 would not do: Linux folds the parent's resident set from before
/// the exec into it.
fn wait_with_rusage(mut child: std::process::Child) -> anyhow::Result<(i32, i64)> {
    let status_path = format!("/proc/{}/status", child.id());
    let mut peak_kib: i64 = 0;
    loop {
        if let Ok(text) = std::fs::read_to_string(&status_path) {
            if let Some(line) = text.lines().find(|l| l.starts_with("VmHWM:")) {
                let kib = line
                    .split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                peak_kib = peak_kib.max(kib);
            }
        }
        if let Some(status) = child.try_wait()? {
            return Ok((status.code().unwrap_or(-1), peak_kib));
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}
