//! `/schedules`: each schedule this process read from its jobs directory, with its cron
//! expression, next and last run and the jobs its last tick submitted, and the leader.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use chrono::Utc;
use maud::html;

use super::layout::{ago, frame, job_link, time_or_dash, Nav};
use super::{html, server_error, Shared};
use crate::schedule::Schedule;

pub async fn page(State(console): State<Shared>) -> Response {
    let schedules: &[Schedule] = match &console.schedules {
        Ok(schedules) => schedules.as_slice(),
        Err(_) => &[],
    };
    let (statuses, leader) =
        match crate::schedule::status(console.services.catalog.pool(), schedules).await {
            Ok(read) => read,
            Err(err) => return server_error(&console, format!("{err:#}")),
        };
    let now = Utc::now();
    let body = html! {
        p.muted {
            "Read from " code { (console.jobs_dir.display()) } " by this process at start; the leader runs the same files if it was started with the same directory."
        }
        @if let Err(why) = &console.schedules {
            p.error-box #schedules-error { (why) }
        }
        p #leader data-leader=[leader.as_ref().map(|l| l.leader_id.as_str())] {
            "Leader: "
            @match &leader {
                Some(l) => { code { (l.leader_id) } " since " (ago(l.elected_at, now)) ", lease until " (time_or_dash(Some(l.expires_at))) },
                None => span.muted { "none (no scheduler is running, so no schedule fires)" },
            }
        }
        @if statuses.is_empty() {
            p.muted #no-schedules { "No schedule." }
        } @else {
            table #schedules {
                thead { tr { th { "Schedule" } th { "Cron" } th { "Kind" } th { "Tables" } th { "Next run" } th { "Last run" } th { "Submitted" } th { "By" } th { "File" } } }
                tbody {
                    @for s in &statuses {
                        tr.schedule data-name=(s.name) {
                            td { (s.name) }
                            td { code { (s.cron) } " (" (s.time_zone) ")" }
                            td { (s.kind) }
                            td { @if s.tables.is_empty() { "-" } @else { (s.tables.join(", ")) } }
                            td { (time_or_dash(s.next_run)) }
                            td { (time_or_dash(s.last_tick)) }
                            td { @if s.last_job_ids.is_empty() { "-" } @for id in &s.last_job_ids { (job_link(*id)) " " } }
                            td { (s.submitted_by.as_deref().unwrap_or("-")) }
                            td { code { (s.source) } }
                        }
                    }
                }
            }
        }
    };
    html(
        StatusCode::OK,
        frame(&console, "Schedules", Some(Nav::Schedules), body),
    )
}
