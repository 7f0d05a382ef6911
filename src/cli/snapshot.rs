//! `minion snapshot ls|show`, `minion bootstrap`, `minion verify` and `minion scan`.

use crate::binding::Access;
use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::output::{print_json, print_table};
use super::Context;
use crate::loader::{bootstrap, BootstrapOptions};
use crate::scan::{scan, ScanFormat, ScanRequest, ScanRows};
use crate::snapshot::verify::verify_partition;
use crate::snapshot::Manifest;

#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// List published snapshots, newest first per partition.
    Ls {
        /// The table.
        #[arg(long)]
        table: String,
        /// Only this partition.
        #[arg(long)]
        partition: Option<u32>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show a snapshot's manifest (the newest unless --snapshot VERSION).
    Show {
        /// The table.
        #[arg(long)]
        table: String,
        /// The partition.
        #[arg(long)]
        partition: u32,
        /// A version other than the newest.
        #[arg(long = "snapshot")]
        snapshot_version: Option<i64>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct BootstrapArgs {
    /// The table.
    #[arg(long)]
    pub table: String,
    /// The partition to load.
    #[arg(long)]
    pub partition: u32,
    /// Local directory for the RocksDB key metadata (must be empty or absent).
    #[arg(long)]
    pub dir: PathBuf,
    /// The slow path: rebuild from segments alone.
    #[arg(long)]
    pub no_snapshot: bool,
    /// Keep the snapshot but send compaction and merge outputs made since through the compare
    /// path instead of mapping them through their lineage (for comparisons).
    #[arg(long)]
    pub no_lineage: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The table.
    #[arg(long)]
    pub table: String,
    /// Print the verdicts as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("rows").args(["valid_only", "queryable_only"])))]
pub struct ScanArgs {
    /// The table.
    #[arg(long)]
    pub table: String,
    /// Only this partition (required with --snapshot).
    #[arg(long)]
    pub partition: Option<u32>,
    /// Every valid row, delete tombstones included.
    #[arg(long)]
    pub valid_only: bool,
    /// Only rows queries see (the default).
    #[arg(long)]
    pub queryable_only: bool,
    /// Output format.
    #[arg(long, value_enum, default_value = "jsonl")]
    pub format: ScanFormat,
    /// The file to write.
    #[arg(long)]
    pub output: PathBuf,
    /// Read exactly this snapshot version of --partition, as a server that pinned it would.
    #[arg(long = "snapshot", requires = "partition")]
    pub snapshot_version: Option<i64>,
}

fn bootstrap_options(context: &Context, use_snapshot: bool) -> BootstrapOptions {
    BootstrapOptions {
        use_snapshot,
        use_lineage: true,
        sst_format_version: context.settings.prebuild.sst_format_version,
        staging_dir: context.settings.staging_dir.clone(),
    }
}

pub async fn run(context: &Context, command: SnapshotCommand) -> anyhow::Result<()> {
    let catalog = context.catalog().await?;
    match command {
        SnapshotCommand::Ls {
            table,
            partition,
            json,
        } => {
            catalog.table(&table).await?;
            let snapshots = catalog.snapshots(&table, partition).await?;
            if json {
                return print_json(&snapshots);
            }
            let rows: Vec<Vec<String>> = snapshots
                .iter()
                .map(|s| {
                    vec![
                        s.partition.to_string(),
                        s.version.to_string(),
                        s.segment_ids.len().to_string(),
                        s.key_count.to_string(),
                        s.valid_docs.to_string(),
                        s.queryable_docs.to_string(),
                        s.created_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                    ]
                })
                .collect();
            print_table(
                &[
                    "PARTITION",
                    "VERSION",
                    "SEGMENTS",
                    "KEYS",
                    "VALID",
                    "QUERYABLE",
                    "CREATED",
                ],
                &rows,
            );
            Ok(())
        }
        SnapshotCommand::Show {
            table,
            partition,
            snapshot_version,
            json,
        } => {
            let snapshot = match snapshot_version {
                Some(version) => catalog.snapshot(&table, partition, version).await?,
                None => catalog.latest_snapshot(&table, partition).await?,
            };
            let Some(snapshot) = snapshot else {
                anyhow::bail!("no such snapshot of {table}/{partition}; build one with `minion run prebuild --table {table} --partition {partition}`");
            };
            let bytes = context
                .store(Access::Read)
                .await?
                .get(&snapshot.manifest_key)
                .await?;
            let manifest = Manifest::parse(&snapshot.manifest_key, &bytes)?;
            if json {
                return print_json(&manifest);
            }
            println!(
                "snapshot {} of {}/{} ({})",
                manifest.version, manifest.table, manifest.partition, snapshot.manifest_key
            );
            println!(
                "  keys in metadata: {}  cold keys: {}  live keys: {}  forgotten deleted keys: {}",
                manifest.key_count,
                manifest.cold_key_count(),
                manifest.live_keys,
                manifest.forgotten_deleted_keys
            );
            println!(
                "  valid docs: {}  queryable docs: {}  largest comparison: {}",
                manifest.valid_docs,
                manifest.queryable_docs,
                manifest
                    .largest_comparison_f64
                    .map_or_else(|| "none".to_string(), |c| c.to_string())
            );
            let rows: Vec<Vec<String>> = manifest
                .segments
                .iter()
                .map(|s| {
                    vec![
                        s.id.to_string(),
                        s.sequence.to_string(),
                        s.rows.to_string(),
                        s.valid_docs.to_string(),
                        s.queryable_docs.to_string(),
                        s.name.clone(),
                    ]
                })
                .collect();
            print_table(
                &["SEGMENT", "SEQ", "ROWS", "VALID", "QUERYABLE", "NAME"],
                &rows,
            );
            let sets = [
                ("key file", &manifest.key_files),
                ("cold key file", &manifest.cold_key_files),
            ];
            for (what, files) in sets {
                for file in files {
                    println!(
                        "  {what} {} (layer {}, {} entries, {} bytes)",
                        file.file.key, file.layer, file.entries, file.file.size
                    );
                }
            }
            Ok(())
        }
    }
}

pub async fn run_bootstrap(context: &Context, args: BootstrapArgs) -> anyhow::Result<()> {
    let catalog = context.catalog().await?;
    let store = context.store(Access::Read).await?;
    let options = BootstrapOptions {
        use_lineage: !args.no_lineage,
        ..bootstrap_options(context, !args.no_snapshot)
    };
    let loaded = bootstrap(
        catalog,
        &store,
        &args.table,
        args.partition,
        &args.dir,
        &options,
    )
    .await?;
    let report = &loaded.report;
    if args.json {
        return print_json(report);
    }
    let path = if report.snapshot_version.is_none() {
        "without snapshot"
    } else {
        "from snapshot"
    };
    for refusal in &report.lineage_refused {
        println!(
            "note: segment {} through the compare path: {}",
            refusal.segment, refusal.reason
        );
    }
    let snapshot = report
        .snapshot_version
        .map_or_else(|| "no snapshot".to_string(), |v| format!("snapshot {v}"));
    println!(
        "bootstrapped {}/{} {path} ({snapshot}: {} segments covered, {} replaced since and {} replacements mapped through lineage, {} through the compare path): {} keys, {} cold keys, {} valid docs, {} queryable, in {:.3}s",
        report.table, report.partition, report.covered_segments, report.replaced_segments,
        report.mapped_segments, report.uncovered_segments,
        report.keys, report.cold_keys, report.valid_docs, report.queryable_docs, report.seconds
    );
    if let Some(why) = &report.snapshot_unused {
        println!("note: {why}");
    }
    Ok(())
}

pub async fn run_verify(context: &Context, args: VerifyArgs) -> anyhow::Result<()> {
    let catalog = context.catalog().await?;
    let store = context.store(Access::Read).await?;
    let table = catalog.table(&args.table).await?;
    let mut verdicts = Vec::new();
    for partition in 0..table.partitions {
        verdicts.push(
            verify_partition(
                catalog,
                &store,
                &args.table,
                partition,
                &context.settings.prebuild,
            )
            .await?,
        );
    }
    let differences: usize = verdicts.iter().map(|v| v.differences.len()).sum();
    if args.json {
        print_json(&verdicts)?;
    } else {
        for verdict in &verdicts {
            let state = match (verdict.snapshot_version, verdict.differences.is_empty()) {
                (None, _) => "no snapshot".to_string(),
                (Some(version), true) => format!(
                    "snapshot {version} matches ({} segments, {} keys)",
                    verdict.segments, verdict.keys_checked
                ),
                (Some(version), false) => format!("snapshot {version} DIFFERS"),
            };
            println!(
                "partition {}: {state}; {} online segments not covered yet",
                verdict.partition, verdict.uncovered_segments
            );
            for difference in &verdict.differences {
                println!("  - {difference}");
            }
            if !verdict.differences.is_empty() {
                println!(
                    "  rebuild it from the segments: minion run prebuild --table {} --partition {} --force",
                    args.table, verdict.partition
                );
            }
        }
    }
    anyhow::ensure!(
        differences == 0,
        "{differences} differences between the snapshots of {} and a recomputation",
        args.table
    );
    Ok(())
}

pub async fn run_scan(context: &Context, args: ScanArgs) -> anyhow::Result<()> {
    let catalog = context.catalog().await?;
    let store = context.store(Access::Read).await?;
    let table = catalog.table(&args.table).await?;
    let partitions: Vec<u32> = match args.partition {
        Some(partition) => {
            anyhow::ensure!(
                partition < table.partitions,
                "table {} has partitions 0 to {}",
                table.name,
                table.partitions - 1
            );
            vec![partition]
        }
        None => (0..table.partitions).collect(),
    };
    let rows = if args.valid_only {
        ScanRows::Valid
    } else {
        ScanRows::Queryable
    };
    let request = ScanRequest {
        table: &args.table,
        partitions: &partitions,
        rows,
        format: args.format,
        output: &args.output,
        snapshot: args.snapshot_version,
    };
    let written = scan(catalog, &store, request, &bootstrap_options(context, true)).await?;
    println!("wrote {written} rows to {}", args.output.display());
    Ok(())
}
