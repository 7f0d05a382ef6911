//! `minion status [--json]`: see `crate::status`.

use clap::Args;

use super::output::{print_json, print_table};
use super::Context;
use crate::status::{gather, StatusReport, SEEN_WITHIN};

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print JSON instead of tables.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(context: &Context, args: StatusArgs) -> anyhow::Result<()> {
    let services = context.services_for(crate::binding::Access::Read).await?;
    let report = gather(&services).await?;
    if args.json {
        return print_json(&report);
    }
    print_report(&report);
    Ok(())
}

pub(super) fn print_report(report: &StatusReport) {
    let ago = |t: chrono::DateTime<chrono::Utc>| {
        let seconds = (report.at - t).num_milliseconds().max(0) as f64 / 1000.0;
        format!("{seconds:.1}s ago")
    };
    println!(
        "processes seen in the last {}s: {}",
        SEEN_WITHIN.as_secs(),
        report.processes.len()
    );
    if !report.processes.is_empty() {
        let rows: Vec<Vec<String>> = report
            .processes
            .iter()
            .map(|p| {
                vec![
                    p.role.as_str().to_string(),
                    p.id.clone(),
                    p.version.clone(),
                    format!("{}/{}", p.running_jobs.len(), p.concurrency),
                    p.running_jobs
                        .iter()
                        .map(i64::to_string)
                        .collect::<Vec<_>>()
                        .join(","),
                    ago(p.last_seen_at),
                ]
            })
            .collect();
        print_table(
            &["ROLE", "ID", "VERSION", "BUSY", "RUNNING JOBS", "LAST SEEN"],
            &rows,
        );
    }
    match &report.leader {
        Some(leader) => println!(
            "\nscheduler leader: {} (since {})",
            leader.leader_id,
            ago(leader.elected_at)
        ),
        None => println!("\nscheduler leader: none (no scheduler is running)"),
    }
    println!("\nqueue:");
    let rows: Vec<Vec<String>> = report
        .queue
        .by_state
        .iter()
        .flat_map(|(state, kinds)| {
            kinds
                .iter()
                .map(move |(kind, count)| vec![state.to_string(), kind.clone(), count.to_string()])
        })
        .collect();
    if rows.is_empty() {
        println!("  no unfinished or discarded jobs");
    } else {
        print_table(&["STATE", "KIND", "JOBS"], &rows);
    }
    for oldest in &report.oldest_available {
        println!(
            "oldest waiting in queue `{}`: job {} ({}), waiting {:.1}s",
            oldest.queue, oldest.id, oldest.kind, oldest.waiting_seconds
        );
    }
    println!("\ntables:");
    let rows: Vec<Vec<String>> = report
        .tables
        .iter()
        .map(|t| {
            let s = &t.stats;
            let plan = &t.next_plan;
            let next = match &plan.error {
                Some(error) => format!("cannot plan: {error}"),
                None => {
                    let mut parts = vec![
                        format!("{} prebuild", plan.prebuild_partitions.len()),
                        format!("{} merge", plan.merge_groups),
                        format!("{} compact", plan.compact_segments),
                    ];
                    let unfinished: i64 = plan.unfinished.values().sum();
                    if unfinished > 0 {
                        parts.push(format!("waiting for {unfinished} unfinished"));
                    }
                    parts.join(", ")
                }
            };
            vec![
                s.table.clone(),
                s.partitions.to_string(),
                s.online_segments.to_string(),
                s.online_rows.to_string(),
                s.dead_row_ratio
                    .map_or("-".into(), |r| format!("{:.1}%", r * 100.0)),
                format!("{} bytes", s.reclaimed_bytes),
                format!(
                    "{} segments{}",
                    s.snapshot_lag_segments,
                    if s.partitions_without_snapshot > 0 {
                        format!(" ({} partitions without)", s.partitions_without_snapshot)
                    } else {
                        String::new()
                    }
                ),
                s.snapshot_age_seconds
                    .map_or("-".into(), |a| format!("{a:.0}s")),
                next,
            ]
        })
        .collect();
    if rows.is_empty() {
        println!("  no tables (create one with `minion table create --file TABLE.toml`)");
    } else {
        print_table(
            &[
                "TABLE",
                "PARTITIONS",
                "SEGMENTS",
                "ROWS",
                "DEAD ROWS",
                "RECLAIMED",
                "SNAPSHOT LAG",
                "SNAPSHOT AGE",
                "NEXT PLAN",
            ],
            &rows,
        );
    }
}
