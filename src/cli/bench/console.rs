//! `minion bench console`: how fast the console's pages answer on a large catalog. Seeds a table
//! of `--segments` online segments (catalog rows and snapshot rows only: no objects) and
//! `--jobs` jobs in the mix a busy pool leaves (mostly completed with reports, some discarded
//! with errors, some waiting), an hour of depth samples, then serves the console in this process
//! and times each page over `--rounds` requests. The baseline, in the same run, is what `minion
//! status` reads (`status::gather`). Run it on a fresh database: it refuses one that has jobs.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::write_figures;
use crate::cli::Context;
use crate::service::console::{router, Access, Console};
use crate::table::TableConfig;

const TABLE: &str = "console_bench";
const PARTITIONS: u32 = 16;
/// The target of issue 16.
const TARGET_MS: f64 = 200.0;

#[derive(Debug, Args)]
pub struct ConsoleBenchArgs {
    /// Jobs seeded.
    #[arg(long, default_value_t = 100_000)]
    pub jobs: i64,
    /// Online segments seeded (over 16 partitions).
    #[arg(long, default_value_t = 10_000)]
    pub segments: i64,
    /// Requests per page.
    #[arg(long, default_value_t = 20)]
    pub rounds: usize,
    /// Where the figures are written as JSON.
    #[arg(long, default_value = "bench-results/console.json")]
    pub output: PathBuf,
}

pub async fn run(context: &Context, args: ConsoleBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.jobs >= 1000 && args.segments >= PARTITIONS as i64 && args.rounds > 0,
        "--jobs must be at least 1000, --segments at least {PARTITIONS}, --rounds positive"
    );
    let services = context.services().await?;
    let pool = services.catalog.pool().clone();
    let (existing,): (i64,) = sqlx::query_as("SELECT count(*) FROM jobs")
        .fetch_one(&pool)
        .await?;
    anyhow::ensure!(
        existing == 0,
        "this database has {existing} jobs; run the console benchmark on a fresh one (createdb, then DATABASE_URL)"
    );
    let seeded = Instant::now();
    seed(context, &pool, &args).await?;
    sqlx::query("ANALYZE").execute(&pool).await?;
    println!(
        "seeded {} jobs and {} segments in {:.1}s",
        args.jobs,
        args.segments,
        seeded.elapsed().as_secs_f64()
    );

    let console = Console::new(
        services.clone(),
        Ok(Vec::new()),
        PathBuf::from("jobs"),
        Access::ReadOnly,
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move { axum::serve(listener, router(console)).await });

    let (discarded,): (i64,) = sqlx::query_as("SELECT max(id) FROM jobs WHERE state = 'discarded'")
        .fetch_one(&pool)
        .await?;
    let middle = args.jobs / 2;
    let pages = [
        "/".to_string(),
        "/jobs".to_string(),
        "/jobs?state=discarded".to_string(),
        format!("/jobs?kind=merge&table={TABLE}"),
        format!("/jobs?before={middle}"),
        format!("/jobs/{discarded}"),
        "/tables".to_string(),
        format!("/tables/{TABLE}"),
        "/schedules".to_string(),
    ];
    let mut figures = Vec::new();
    let baseline = time_rounds(args.rounds, || async {
        crate::status::gather(&services).await.map(|_| ())
    })
    .await?;
    println!(
        "baseline `minion status` (status::gather): p50 {:.1} ms, p95 {:.1} ms",
        baseline.0, baseline.1
    );
    let mut worst: f64 = 0.0;
    for page in &pages {
        let (p50, p95, max) = time_rounds(args.rounds, || get(port, page)).await?;
        worst = worst.max(p95);
        println!(
            "{page:<40} p50 {p50:7.1} ms  p95 {p95:7.1} ms  max {max:7.1} ms  ({:.2}x status)",
            p50 / baseline.0
        );
        figures.push(
            json!({"page": page, "p50_ms": p50, "p95_ms": p95, "max_ms": max,
                            "p50_vs_status": p50 / baseline.0}),
        );
    }
    println!(
        "slowest page p95: {worst:.1} ms (target: under {TARGET_MS} ms): {}",
        if worst < TARGET_MS { "met" } else { "NOT met" }
    );
    write_figures(
        &args.output,
        &json!({
            "jobs": args.jobs, "segments": args.segments, "rounds": args.rounds,
            "status_gather_ms": {"p50": baseline.0, "p95": baseline.1, "max": baseline.2},
            "pages": figures, "slowest_p95_ms": worst, "target_ms": TARGET_MS,
        }),
    )
}

/// p50, p95 and max of `rounds` runs of `f`, in milliseconds (after one warm-up run).
async fn time_rounds<F, Fut>(rounds: usize, f: F) -> anyhow::Result<(f64, f64, f64)>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    f().await?;
    let mut times = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let start = Instant::now();
        f().await?;
        times.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    Ok((at(0.5), at(0.95), at(1.0)))
}

/// GETs `path` and reads the whole answer; fails unless it is 200.
async fn get(port: u16, path: &str) -> anyhow::Result<()> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .await?;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut answer)).await??;
    let head = String::from_utf8_lossy(&answer[..answer.len().min(64)]);
    anyhow::ensure!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "{path}: {head}"
    );
    Ok(())
}

/// The table, its segments and snapshots, the jobs and an hour of depth samples.
async fn seed(
    context: &Context,
    pool: &sqlx::PgPool,
    args: &ConsoleBenchArgs,
) -> anyhow::Result<()> {
    let mut table = TableConfig::from_toml(
        super::super::demo::ORDERS_TOML,
        "examples/tables/orders.toml",
    )?;
    table.name = TABLE.to_string();
    table.partitions = PARTITIONS;
    context.catalog().await?.create_table(&table).await?;
    // Segments: sequence i within partition i % 16; a tenth of them replaced (not online).
    sqlx::query(
        "INSERT INTO segments (table_name, partition_id, sequence, name, object_key, row_count,
                               byte_size, checksum, state, lineage)
         SELECT $1, i % $3, i / $3, 'seg-' || i, 'bench/seg-' || i, 50000 + i % 1000,
                4000000 + i, md5(i::text), 'online', NULL
         FROM generate_series(0, $2 - 1) AS i",
    )
    .bind(TABLE)
    .bind(args.segments)
    .bind(PARTITIONS as i32)
    .execute(pool)
    .await?;
    // A snapshot per partition covering all its segments but the newest two.
    sqlx::query(
        "INSERT INTO snapshots (table_name, partition_id, version, manifest_key, manifest_checksum,
                                segment_ids, key_count, valid_docs, queryable_docs)
         SELECT table_name, partition_id, 1, 'bench/manifest-' || partition_id, 'x',
                (array_agg(id ORDER BY sequence))[1:greatest(count(*) - 2, 0)],
                sum(row_count) / 2, sum(row_count) * 7 / 10, sum(row_count) * 7 / 10
         FROM segments WHERE table_name = $1 GROUP BY table_name, partition_id",
    )
    .bind(TABLE)
    .execute(pool)
    .await?;
    sqlx::query("UPDATE partitions SET latest_snapshot = 1, reclaimed_bytes = 123456789, reclaimed_rows = 98765 WHERE table_name = $1")
        .bind(TABLE)
        .execute(pool)
        .await?;
    // Jobs over the last day: 90% completed (prebuild ones with a report), 3% discarded with
    // errors, the rest available, scheduled or retryable.
    sqlx::query(
        "INSERT INTO jobs (kind, args, state, attempt, max_attempts, scheduled_at, attempted_at,
                           attempted_by, finalized_at, errors, output, created_at)
         SELECT k.kind, jsonb_build_object('table', $2::text, 'partition', i % 16),
                s.state::job_state,
                CASE WHEN s.state IN ('available', 'scheduled') THEN 0 ELSE 1 END, 3,
                t, t + interval '1 second', 'bench-worker',
                CASE WHEN s.state IN ('completed', 'discarded') THEN t + interval '3 seconds' END,
                CASE WHEN s.state IN ('discarded', 'retryable') THEN
                    jsonb_build_array(jsonb_build_object('attempt', 1, 'at', t, 'permanent', false,
                                      'error', 'the store timed out reading segment ' || i))
                ELSE '[]'::jsonb END,
                CASE WHEN s.state = 'completed' AND k.kind = 'prebuild' THEN
                    jsonb_build_object('table', $2::text, 'partition', i % 16, 'outcome', 'published',
                                       'segments', 500 + i / 1000, 'rows', 25000000 + i * 10,
                                       'valid_docs', 20000000 + i * 5)
                WHEN s.state = 'completed' THEN '{}'::jsonb END,
                t
         FROM generate_series(1, $1) AS i,
              LATERAL (SELECT now() - (($1 - i) * interval '86400 seconds') / $1 AS t) AS tt,
              LATERAL (SELECT (ARRAY['prebuild', 'compact', 'merge', 'plan', 'gc'])[1 + i % 5] AS kind) AS k,
              LATERAL (SELECT CASE WHEN i % 100 < 90 THEN 'completed'
                                   WHEN i % 100 < 93 THEN 'discarded'
                                   WHEN i % 100 < 97 THEN 'available'
                                   WHEN i % 100 < 99 THEN 'scheduled'
                                   ELSE 'retryable' END AS state) AS s",
    )
    .bind(args.jobs)
    .bind(TABLE)
    .execute(pool)
    .await?;
    // An hour of depth samples every 15 s (the default sample interval).
    sqlx::query(
        "INSERT INTO queue_samples (sampled_at, state, kind, jobs)
         SELECT now() - m * interval '15 seconds', s::job_state, k, 100 + m % 50
         FROM generate_series(0, 239) AS m,
              unnest(ARRAY['available', 'running', 'retryable', 'scheduled', 'discarded']) AS s,
              unnest(ARRAY['prebuild', 'compact', 'merge', 'plan', 'gc']) AS k",
    )
    .execute(pool)
    .await?;
    Ok(())
}
