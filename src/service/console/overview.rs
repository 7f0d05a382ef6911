//! `/`: the pool, the leader, the queue and what failed lately, on one page.

use std::collections::BTreeSet;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use chrono::Utc;
use maud::html;

use super::chart::{line_chart, seconds, time_labels, Series};
use super::layout::{ago, count, frame, job_link, span, state, time, Nav};
use super::{html, server_error, Shared};
use crate::queue::{DepthSample, JobState};
use crate::status::SEEN_WITHIN;

/// How many failures the overview lists.
const FAILURES: i64 = 10;
/// The chart's window.
const HISTORY: chrono::Duration = chrono::Duration::hours(1);
/// The states the chart draws (discarded only grows; its count is in the table).
const CHARTED: [JobState; 4] = [
    JobState::Available,
    JobState::Running,
    JobState::Retryable,
    JobState::Scheduled,
];

pub async fn page(State(console): State<Shared>) -> Response {
    let queue = &console.services.queue;
    let now = Utc::now();
    let read = tokio::try_join!(
        async { Ok::<_, anyhow::Error>(queue.processes_seen(SEEN_WITHIN).await?) },
        async {
            crate::schedule::leader(console.services.catalog.pool())
                .await
                .map_err(anyhow::Error::from)
        },
        async { Ok::<_, anyhow::Error>(queue.depth().await?) },
        async { Ok::<_, anyhow::Error>(queue.oldest_available().await?) },
        async { Ok::<_, anyhow::Error>(queue.recent_failures(FAILURES).await?) },
        async { Ok::<_, anyhow::Error>(queue.depth_history(now - HISTORY).await?) },
    );
    let (processes, leader, depth, oldest, failures, history) = match read {
        Ok(read) => read,
        Err(err) => return server_error(&console, format!("{err:#}")),
    };
    let kinds: BTreeSet<&String> = depth.by_state.values().flat_map(|k| k.keys()).collect();
    let states: Vec<JobState> = depth.by_state.keys().copied().collect();
    let body = html! {
        section #processes {
            h2 { "Processes " small { "seen in the last " (SEEN_WITHIN.as_secs()) "s" } }
            @if processes.is_empty() {
                p.muted { "No worker or scheduler has reported in the last minute." }
            } @else {
                table {
                    thead { tr { th { "Role" } th { "Id" } th { "Version" } th.num { "Busy" } th { "Running jobs" } th { "Queues" } th { "Started" } th { "Last seen" } } }
                    tbody {
                        @for p in &processes {
                            tr.process data-id=(p.id) data-role=(p.role.as_str()) {
                                td { (p.role.as_str()) }
                                td { code { (p.id) } }
                                td { (p.version) }
                                td.num { (p.running_jobs.len()) "/" (p.concurrency) }
                                td { @for id in &p.running_jobs { (job_link(*id)) " " } }
                                td { (p.queues.join(", ")) }
                                td { (ago(p.started_at, now)) }
                                td { (ago(p.last_seen_at, now)) }
                            }
                        }
                    }
                }
            }
            p #leader data-leader=[leader.as_ref().map(|l| l.leader_id.as_str())] {
                "Scheduler leader: "
                @match &leader {
                    Some(l) => { code { (l.leader_id) } " since " (ago(l.elected_at, now)) },
                    None => span.muted { "none (no scheduler is running)" },
                }
            }
        }
        section #queue {
            h2 { "Queue" }
            @if kinds.is_empty() {
                p.muted { "No unfinished or discarded job." }
            } @else {
                table.depth {
                    thead { tr { th { "Kind" } @for s in &states { th.num { (state(*s)) } } } }
                    tbody {
                        @for kind in &kinds {
                            tr {
                                td { a href={ "/jobs?kind=" (kind) } { (kind) } }
                                @for s in &states {
                                    @let n = depth.by_state.get(s).and_then(|k| k.get(*kind)).copied().unwrap_or(0);
                                    td.num.depth data-state=(s.as_str()) data-kind=(kind) data-count=(n) { (count(n)) }
                                }
                            }
                        }
                    }
                    tfoot {
                        tr {
                            th { "All" }
                            @for s in &states {
                                th.num data-total=(s.as_str()) data-count=(depth.total(*s)) {
                                    a href={ "/jobs?state=" (s.as_str()) } { (count(depth.total(*s))) }
                                }
                            }
                        }
                    }
                }
            }
            h3 { "The last hour" }
            (depth_chart(&history, now))
            h3 { "Waiting longest" }
            @if oldest.is_empty() {
                p.muted { "No runnable job is waiting." }
            } @else {
                table {
                    thead { tr { th { "Queue" } th { "Job" } th { "Kind" } th { "Runnable since" } th.num { "Waiting" } } }
                    tbody {
                        @for o in &oldest {
                            tr.oldest data-queue=(o.queue) {
                                td { (o.queue) } td { (job_link(o.id)) } td { (o.kind) }
                                td { (time(o.runnable_since)) } td.num { (span(o.waiting_seconds)) }
                            }
                        }
                    }
                }
            }
        }
        section #failures {
            h2 { "Recent failures" }
            @if failures.is_empty() {
                p.muted { "No retryable or discarded job." }
            } @else {
                table {
                    thead { tr { th { "Job" } th { "Kind" } th { "Table" } th { "State" } th.num { "Attempt" } th { "When" } th { "Last error" } } }
                    tbody {
                        @for f in &failures {
                            tr.failure data-id=(f.id) {
                                td { (job_link(f.id)) } td { (f.kind) }
                                td { (f.table_name.as_deref().unwrap_or("-")) }
                                td { (state(f.state)) } td.num { (f.attempt) }
                                td { (ago(f.failed_at, now)) }
                                td.error { (f.last_error.as_deref().unwrap_or("-")) }
                            }
                        }
                    }
                }
            }
        }
    };
    html(
        StatusCode::OK,
        frame(&console, "Overview", Some(Nav::Overview), body),
    )
}

fn depth_chart(history: &[DepthSample], now: chrono::DateTime<Utc>) -> maud::Markup {
    let series: Vec<Series> = CHARTED
        .iter()
        .map(|s| Series {
            name: s.as_str().to_string(),
            points: history
                .iter()
                .map(|sample| {
                    (
                        seconds(sample.at),
                        sample.by_state.get(s).copied().unwrap_or(0) as f64,
                    )
                })
                .collect(),
        })
        .collect();
    let range = (seconds(now - HISTORY), seconds(now));
    line_chart(
        "depth-chart",
        &series,
        range,
        time_labels(range),
        |v| count(v.round() as i64),
        "No samples yet: the scheduler leader records the queue's depth at every gauge sample \
         (--sample-interval); run `minion scheduler` or `minion worker --scheduler`.",
    )
}
