//! `/tables` and `/tables/{name}`: per table and partition, online segments and rows, the
//! dead-row ratio, bytes reclaimed, the newest snapshot and its lag, the history of segments and
//! dead rows (from prebuild reports), and what the next `plan` would submit.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, Utc};
use maud::{html, Markup};
use serde_json::Value;

use super::chart::{line_chart, seconds, time_labels, Series};
use super::layout::{ago, bytes, count, frame, percent, span, Nav};
use super::{error_page, html, server_error, Shared};
use crate::catalog::{summarize, TableStats};
use crate::status::{preview, PlanPreview};

/// How many prebuild reports the history reads.
const REPORTS: i64 = 500;

pub async fn list(State(console): State<Shared>) -> Response {
    let tables = match console.services.catalog.table_stats(None).await {
        Ok(tables) => tables,
        Err(err) => return server_error(&console, err),
    };
    let body = html! {
        @if tables.is_empty() {
            p.muted { "No table yet: create one with `minion table create --file TABLE.toml`." }
        } @else {
            table #tables {
                thead { tr {
                    th { "Table" } th.num { "Partitions" } th.num { "Segments" } th.num { "Rows" }
                    th.num { "Bytes" } th.num { "Dead rows" } th.num { "Reclaimed" }
                    th.num { "Snapshot lag" } th.num { "Snapshot age" }
                } }
                tbody {
                    @for t in &tables {
                        tr.table-row data-table=(t.table) {
                            td { a href={ "/tables/" (t.table) } { (t.table) } }
                            td.num { (t.partitions) }
                            td.num { (count(t.online_segments)) }
                            td.num { (count(t.online_rows)) }
                            td.num { (bytes(t.online_bytes)) }
                            td.num { (percent(t.dead_row_ratio)) }
                            td.num { (bytes(t.reclaimed_bytes)) }
                            td.num { (count(t.snapshot_lag_segments)) " segments" }
                            td.num { (t.snapshot_age_seconds.map(span).unwrap_or_else(|| "-".into())) }
                        }
                    }
                }
            }
        }
    };
    html(
        StatusCode::OK,
        frame(&console, "Tables", Some(Nav::Tables), body),
    )
}

pub async fn show(State(console): State<Shared>, Path(name): Path<String>) -> Response {
    let catalog = &console.services.catalog;
    let read = tokio::try_join!(
        async { Ok::<_, anyhow::Error>(catalog.partition_stats(Some(&name)).await?) },
        async {
            Ok::<_, anyhow::Error>(
                console
                    .services
                    .queue
                    .prebuild_reports(&name, REPORTS)
                    .await?,
            )
        },
    );
    let (partitions, reports) = match read {
        Ok(read) => read,
        Err(err) => return server_error(&console, format!("{err:#}")),
    };
    // The table's figures from the partitions' (one statistics query, not two).
    let Some(stats) = summarize(&partitions, Utc::now()).into_iter().next() else {
        return error_page(
            &console,
            StatusCode::NOT_FOUND,
            &format!("no table `{name}`; /tables lists the tables this catalog has"),
        );
    };
    let plan = preview(&console.services, &name).await;
    let now = Utc::now();
    let body = html! {
        (summary(&stats))
        h2 { "Partitions" }
        table #partitions {
            thead { tr {
                th.num { "Partition" } th.num { "Segments" } th.num { "Rows" } th.num { "Bytes" }
                th.num { "Snapshot" } th { "Published" } th.num { "Valid docs" } th.num { "Dead rows" }
                th.num { "Not covered" } th.num { "Reclaimed" }
            } }
            tbody {
                @for p in &partitions {
                    @let dead = (p.covered_rows > 0).then(|| 1.0 - p.snapshot_valid_docs as f64 / p.covered_rows as f64);
                    tr.partition data-partition=(p.partition_id) {
                        td.num { (p.partition_id) }
                        td.num { (count(p.online_segments)) }
                        td.num { (count(p.online_rows)) }
                        td.num { (bytes(p.online_bytes)) }
                        td.num { (p.snapshot_version.map(|v| format!("v{v}")).unwrap_or_else(|| "none".into())) }
                        td { (p.snapshot_created_at.map(|t| ago(t, now)).unwrap_or_else(|| "-".into())) }
                        td.num { (count(p.snapshot_valid_docs)) }
                        td.num { (percent(dead)) }
                        td.num { (count(p.uncovered_segments)) }
                        td.num { (bytes(p.reclaimed_bytes)) }
                    }
                }
            }
        }
        h2 { "History " small { "from the " (REPORTS) " newest prebuild reports" } }
        (history_chart(&reports))
        h2 { "Next plan" }
        (plan_preview(&plan))
        p { a href={ "/jobs?table=" (name) } { "Jobs of this table »" } }
    };
    html(
        StatusCode::OK,
        frame(&console, &format!("Table {name}"), Some(Nav::Tables), body),
    )
}

fn summary(stats: &TableStats) -> Markup {
    html! {
        dl.facts #table-summary data-table=(stats.table) {
            dt { "Partitions" } dd { (stats.partitions) }
            dt { "Online segments" } dd #online-segments data-value=(stats.online_segments) { (count(stats.online_segments)) }
            dt { "Online rows" } dd #online-rows data-value=(stats.online_rows) { (count(stats.online_rows)) }
            dt { "Online bytes" } dd { (bytes(stats.online_bytes)) }
            dt { "Dead-row ratio" }
            dd #dead-row-ratio data-value=[stats.dead_row_ratio] { (percent(stats.dead_row_ratio)) " of the rows the newest snapshots cover" }
            dt { "Reclaimed" }
            dd #reclaimed data-bytes=(stats.reclaimed_bytes) data-rows=(stats.reclaimed_rows) {
                (bytes(stats.reclaimed_bytes)) " and " (count(stats.reclaimed_rows)) " rows by compaction and merge"
            }
            dt { "Snapshot lag" }
            dd #snapshot-lag data-value=(stats.snapshot_lag_segments) {
                (count(stats.snapshot_lag_segments)) " online segments not covered"
                @if stats.partitions_without_snapshot > 0 { "; " (stats.partitions_without_snapshot) " partitions without a snapshot" }
            }
            dt { "Snapshot age" } dd { (stats.snapshot_age_seconds.map(span).unwrap_or_else(|| "-".into())) " (the oldest of the partitions' newest)" }
        }
    }
}

fn plan_preview(plan: &PlanPreview) -> Markup {
    html! {
        @if let Some(error) = &plan.error {
            p.error-box #plan-error { "No preview: " (error) }
        } @else {
            dl.facts #plan {
                dt { "Prebuild" } dd { @if plan.prebuild_partitions.is_empty() { "nothing" } @else { "partitions " (plan.prebuild_partitions.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")) } }
                dt { "Merge" } dd #plan-merge data-groups=(plan.merge_groups) { (plan.merge_groups) " groups of " (plan.merge_segments) " segments" }
                dt { "Compact" } dd #plan-compact data-segments=(plan.compact_segments) { (plan.compact_segments) " segments" }
                @if !plan.unfinished.is_empty() {
                    dt { "Waiting for" } dd { @for (kind, n) in &plan.unfinished { (n) " unfinished " (kind) " " } }
                }
                @for (reason, n) in &plan.skipped {
                    dt { "Skipped" } dd { (n) " segments: " (serde_json::to_value(reason).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()) }
                }
            }
        }
    }
}

/// Segments and dead rows of the whole table after each published prebuild: each report
/// updates its partition, the others keep their last reported figures.
fn history_chart(reports: &[(DateTime<Utc>, Value)]) -> Markup {
    let mut latest: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
    let (mut segments, mut dead) = (Vec::new(), Vec::new());
    for (at, report) in reports.iter().rev() {
        if report["outcome"] != "published" {
            continue;
        }
        let (Some(partition), Some(n), Some(rows), Some(valid)) = (
            report["partition"].as_u64(),
            report["segments"].as_f64(),
            report["rows"].as_f64(),
            report["valid_docs"].as_f64(),
        ) else {
            continue;
        };
        latest.insert(partition, (n, rows - valid));
        let t = seconds(*at);
        segments.push((t, latest.values().map(|v| v.0).sum()));
        dead.push((t, latest.values().map(|v| v.1).sum()));
    }
    let range = match (segments.first(), segments.last()) {
        (Some(first), Some(last)) => (first.0, last.0),
        _ => (0.0, 1.0),
    };
    let label = time_labels(range);
    html! {
        div.charts {
            (line_chart("segments-chart", &[Series { name: "online segments".into(), points: segments }], range, label, |v| count(v.round() as i64),
                "No published prebuild report yet (reports of pruned jobs are gone)."))
            (line_chart("dead-rows-chart", &[Series { name: "dead rows".into(), points: dead }], range, label, |v| count(v.round() as i64), ""))
        }
    }
}
