//! `/jobs` and `/jobs/{id}`: the filterable list and a job's page; retry and cancel with write
//! access, through the same queue functions as `minion job retry|cancel`.

use axum::extract::rejection::FormRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use chrono::Utc;
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::Value;

use super::layout::{ago, frame, job_link, span, state, time, time_or_dash, Nav};
use super::{error_page, html, same_token, server_error, Access, Console, Shared};
use crate::queue::{CancelOutcome, JobFilter, JobRow, JobState, QueueError};

/// Jobs per page.
const PAGE: i64 = 50;

#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    state: Option<String>,
    kind: Option<String>,
    table: Option<String>,
    before: Option<i64>,
}

/// A filter field left empty in the form means "any".
fn given(field: &Option<String>) -> Option<String> {
    field
        .as_deref()
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_string)
}

pub async fn list(State(console): State<Shared>, Query(query): Query<ListQuery>) -> Response {
    let state_filter = match given(&query.state) {
        None => None,
        Some(text) => match JobState::parse(&text) {
            Some(parsed) => Some(parsed),
            None => {
                let known: Vec<&str> = JobState::ALL.iter().map(|s| s.as_str()).collect();
                return error_page(
                    &console,
                    StatusCode::BAD_REQUEST,
                    &format!(
                        "unknown job state `{text}`; use one of {}",
                        known.join(", ")
                    ),
                );
            }
        },
    };
    let filter = JobFilter {
        state: state_filter,
        kind: given(&query.kind),
        table: given(&query.table),
    };
    let jobs = match console
        .services
        .queue
        .job_page(&filter, query.before, PAGE)
        .await
    {
        Ok(jobs) => jobs,
        Err(err) => return server_error(&console, err),
    };
    let now = Utc::now();
    let kinds = crate::tasks::Registry::standard().kinds();
    let older = (jobs.len() as i64 == PAGE)
        .then(|| jobs.last().map(|j| j.id))
        .flatten();
    let body = html! {
        form.filter method="get" action="/jobs" {
            label { "State " select name="state" {
                option value="" { "any" }
                @for s in JobState::ALL {
                    option value=(s.as_str()) selected[filter.state == Some(s)] { (s.as_str()) }
                }
            } }
            label { "Kind " select name="kind" {
                option value="" { "any" }
                @for k in &kinds {
                    option value=(k) selected[filter.kind.as_deref() == Some(*k)] { (k) }
                }
            } }
            label { "Table " input type="text" name="table" value=[filter.table.as_deref()] placeholder="any"; }
            button type="submit" { "Filter" }
            a.reset href="/jobs" { "clear" }
        }
        @if jobs.is_empty() {
            p.muted #no-jobs { "No job matches." }
        } @else {
            table #jobs {
                thead { tr { th { "Job" } th { "Kind" } th { "Table" } th { "Queue" } th { "State" } th.num { "Attempt" } th.num { "Errors" } th { "Created" } th { "Finished" } th { "By" } } }
                tbody {
                    @for j in &jobs {
                        tr.job-row data-id=(j.id) data-state=(j.state.as_str()) {
                            td { (job_link(j.id)) } td { (j.kind) }
                            td { @if let Some(t) = &j.table_name { a href={ "/tables/" (t) } { (t) } } @else { "-" } }
                            td { (j.queue) } td { (state(j.state)) }
                            td.num { (j.attempt) "/" (j.max_attempts) } td.num { (j.error_count) }
                            td { (ago(j.created_at, now)) }
                            td { (j.finalized_at.map(|t| ago(t, now)).unwrap_or_else(|| "-".into())) }
                            td { (j.attempted_by.as_deref().unwrap_or("-")) }
                        }
                    }
                }
            }
        }
        nav.pages {
            @if query.before.is_some() { a href=(list_href(&filter, None)) { "« newest" } }
            @if let Some(id) = older { a #older href=(list_href(&filter, Some(id))) { "older »" } }
        }
    };
    html(
        StatusCode::OK,
        frame(&console, "Jobs", Some(Nav::Jobs), body),
    )
}

/// The list's address with `filter` and a page start.
fn list_href(filter: &JobFilter, before: Option<i64>) -> String {
    let mut url = url::Url::parse("http://console/jobs").expect("a valid base");
    {
        let mut pairs = url.query_pairs_mut();
        if let Some(s) = filter.state {
            pairs.append_pair("state", s.as_str());
        }
        if let Some(k) = &filter.kind {
            pairs.append_pair("kind", k);
        }
        if let Some(t) = &filter.table {
            pairs.append_pair("table", t);
        }
        if let Some(b) = before {
            pairs.append_pair("before", &b.to_string());
        }
    }
    match url.query() {
        Some(q) if !q.is_empty() => format!("/jobs?{q}"),
        _ => "/jobs".to_string(),
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct ShowQuery {
    done: Option<String>,
}

pub async fn show(
    State(console): State<Shared>,
    Path(id): Path<i64>,
    Query(query): Query<ShowQuery>,
) -> Response {
    let job = match console.services.queue.get(id).await {
        Ok(job) => job,
        Err(err @ QueueError::NotFound(_)) => {
            return error_page(&console, StatusCode::NOT_FOUND, &err.to_string())
        }
        Err(err) => return server_error(&console, err),
    };
    let body = job_page(&console, &job, query.done.as_deref());
    html(
        StatusCode::OK,
        frame(&console, &format!("Job #{id}"), Some(Nav::Jobs), body),
    )
}

/// One recorded failure of an attempt (see `queue::sql::FAIL`).
#[derive(Debug, Deserialize)]
struct AttemptError {
    attempt: Option<i64>,
    at: Option<String>,
    error: Option<String>,
    permanent: Option<bool>,
}

fn job_page(console: &Console, job: &JobRow, done: Option<&str>) -> Markup {
    let now = Utc::now();
    let errors: Vec<AttemptError> = match &job.errors {
        Value::Array(items) => items
            .iter()
            .map(|e| {
                serde_json::from_value(e.clone()).unwrap_or(AttemptError {
                    attempt: None,
                    at: None,
                    error: Some(e.to_string()),
                    permanent: None,
                })
            })
            .collect(),
        _ => Vec::new(),
    };
    let ran = match (job.attempted_at, job.finalized_at) {
        (Some(start), Some(end)) => Some((end - start).num_milliseconds() as f64 / 1000.0),
        _ => None,
    };
    let waited = job
        .attempted_at
        .map(|start| (start - job.scheduled_at).num_milliseconds() as f64 / 1000.0);
    html! {
        @if let Some(done) = done {
            p.flash #flash data-done=(done) { (flash(done)) }
        }
        dl.facts #job data-id=(job.id) data-state=(job.state.as_str()) {
            dt { "State" } dd #job-state { (state(job.state)) @if job.cancel_requested { " (cancel requested)" } }
            dt { "Kind" } dd { (job.kind) }
            dt { "Queue" } dd { (job.queue) " (priority " (job.priority) ")" }
            dt { "Attempt" } dd #job-attempt { (job.attempt) " of " (job.max_attempts) }
            dt { "Worker" } dd { (job.attempted_by.as_deref().unwrap_or("-")) }
            @if let Some(key) = &job.unique_key { dt { "Unique key" } dd { code { (key) } } }
            @if let Some(t) = job.timeout_seconds { dt { "Timeout" } dd { (span(t)) } }
        }
        @if console.access == Access::Write {
            div.actions {
                @if job.state.is_finished() {
                    (action(console, job.id, "retry", "Retry", &format!("Run job {} again?", job.id)))
                } @else {
                    (action(console, job.id, "cancel", "Cancel", &format!("Cancel job {}?", job.id)))
                }
            }
        }
        h2 { "Timings" }
        dl.facts #timings {
            dt { "Created" } dd { (time(job.created_at)) " (" (ago(job.created_at, now)) ")" }
            dt { "Runnable from" } dd { (time(job.scheduled_at)) }
            dt { "Last attempt started" } dd { (time_or_dash(job.attempted_at)) @if let Some(w) = waited { " after waiting " (span(w)) } }
            @if let Some(lease) = job.lease_expires_at { dt { "Lease until" } dd { (time(lease)) } }
            dt { "Finished" } dd { (time_or_dash(job.finalized_at)) @if let Some(r) = ran { " (last attempt took " (format!("{r:.2}s")) ")" } }
        }
        h2 { "Arguments" }
        pre.json #args { (pretty(&job.args)) }
        h2 { "Errors " small { (errors.len()) } }
        @if errors.is_empty() {
            p.muted { "No attempt failed." }
        } @else {
            table #errors {
                thead { tr { th.num { "Attempt" } th { "At" } th { "Permanent" } th { "Error" } } }
                tbody {
                    @for e in &errors {
                        tr.attempt-error {
                            td.num { (e.attempt.map(|a| a.to_string()).unwrap_or_default()) }
                            td { (e.at.as_deref().map(readable_time).unwrap_or_else(|| "-".into())) }
                            td { (match e.permanent { Some(true) => "yes", Some(false) => "no", None => "-" }) }
                            td.error { (e.error.as_deref().unwrap_or("-")) }
                        }
                    }
                }
            }
        }
        h2 { "Output" }
        @match &job.output {
            Some(output) => pre.json #output { (pretty(output)) },
            None => p.muted { "No output (the job has not completed)." },
        }
    }
}

/// An RFC 3339 time from a job's errors as the console shows times; as given if it is not one.
fn readable_time(text: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| time(t.with_timezone(&Utc)))
        .unwrap_or_else(|_| text.to_string())
}

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
}

fn flash(done: &str) -> &'static str {
    match done {
        "retried" => "The job was made available again.",
        "not_retryable" => "The job had not finished, so it was not retried.",
        "cancelled" => "The job was cancelled.",
        "cancel_requested" => "The job is running; its worker was told to stop.",
        "not_cancellable" => "The job had already finished; nothing was cancelled.",
        _ => "Done.",
    }
}

/// A write button: a POST form with the console's token, confirmed in the browser first.
fn action(console: &Console, id: i64, verb: &str, label: &str, confirm: &str) -> Markup {
    html! {
        form.action method="post" action={ "/jobs/" (id) "/" (verb) } data-confirm=(confirm) {
            input type="hidden" name="csrf" value=(console.csrf);
            button id={ (verb) "-button" } type="submit" { (label) }
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct WriteForm {
    csrf: String,
}

/// Refuses a write unless the console has write access and the form carries its token.
fn check_write(
    console: &Console,
    form: &Result<Form<WriteForm>, FormRejection>,
) -> Option<Response> {
    if console.access != Access::Write {
        return Some(error_page(
            console,
            StatusCode::FORBIDDEN,
            "this console is read-only; start it with --console-write to retry or cancel jobs",
        ));
    }
    match form {
        Ok(Form(form)) if same_token(&form.csrf, &console.csrf) => None,
        _ => Some(error_page(
            console,
            StatusCode::FORBIDDEN,
            "the request carries no valid console token (CSRF); reload the job's page and use its button",
        )),
    }
}

pub async fn retry(
    State(console): State<Shared>,
    Path(id): Path<i64>,
    form: Result<Form<WriteForm>, FormRejection>,
) -> Response {
    let queue = console.services.queue.clone();
    let action = async move {
        Ok(match queue.retry(id).await? {
            true => "retried",
            false => "not_retryable",
        })
    };
    act(&console, id, &form, action).await
}

pub async fn cancel(
    State(console): State<Shared>,
    Path(id): Path<i64>,
    form: Result<Form<WriteForm>, FormRejection>,
) -> Response {
    let queue = console.services.queue.clone();
    let action = async move {
        Ok(match queue.cancel(id).await? {
            CancelOutcome::Cancelled => "cancelled",
            CancelOutcome::Requested => "cancel_requested",
            CancelOutcome::NotCancellable => "not_cancellable",
        })
    };
    act(&console, id, &form, action).await
}

/// Runs a write `action` on job `id` if `check_write` allows it, then sends the browser back to
/// the job's page saying what happened (`?done=`, see `flash`).
async fn act(
    console: &Console,
    id: i64,
    form: &Result<Form<WriteForm>, FormRejection>,
    action: impl std::future::Future<Output = Result<&'static str, QueueError>>,
) -> Response {
    if let Some(refused) = check_write(console, form) {
        return refused;
    }
    match action.await {
        Ok(done) => {
            tracing::info!(job = id, done, "job action from the console");
            Redirect::to(&format!("/jobs/{id}?done={done}")).into_response()
        }
        Err(err) => server_error(console, err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_links_keep_the_filter() {
        let filter = JobFilter {
            state: Some(JobState::Discarded),
            kind: Some("compact".into()),
            table: Some("a b&c".into()),
        };
        assert_eq!(
            list_href(&filter, Some(42)),
            "/jobs?state=discarded&kind=compact&table=a+b%26c&before=42"
        );
        assert_eq!(list_href(&JobFilter::default(), None), "/jobs");
    }
}
