//! The operator console: server-rendered pages on the process's HTTP listener (`--console`).
//!
//! - `/` overview: processes and their running jobs, the scheduler leader, queue depth by state
//!   and kind with a chart of the last hour, the oldest waiting jobs, recent failures.
//! - `/jobs` (filter by state, kind, table; keyset pages) and `/jobs/{id}` (arguments, every
//!   attempt's error, timings, output; retry and cancel with write access).
//! - `/tables` and `/tables/{name}`: segments, rows, dead-row ratio, reclaimed bytes, snapshot
//!   lag, the history of segments and dead rows from prebuild reports, and the next plan.
//! - `/schedules`: cron, next and last run, the jobs the last tick submitted.
//!
//! Everything ships in the binary (HTML from `maud`, one stylesheet and one small script), and
//! nothing is fetched from elsewhere; the content security policy forbids it. Pages read bounded
//! amounts (pages of 50 jobs walked by id, limits, the last hour), so they stay fast on a large
//! catalog. Read-only unless started with `--console-write`; then the two write actions (retry,
//! cancel) go through the same queue functions as `minion job retry|cancel`, and need the
//! console's CSRF token, a random value made at start and embedded in its forms. Nothing secret
//! is shown: pages show catalog rows and job reports, never settings.

mod chart;
mod jobs;
mod layout;
mod overview;
mod schedules;
mod tables;

use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use maud::Markup;

use crate::job::Services;
use crate::schedule::Schedule;

/// How the console was started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    ReadOnly,
    /// Retry and cancel buttons, each behind a confirmation and the CSRF token.
    Write,
}

/// What the pages read.
pub struct Console {
    services: Arc<Services>,
    /// The schedules this process read from its jobs directory, or why it could not.
    schedules: Result<Vec<Schedule>, String>,
    jobs_dir: PathBuf,
    access: Access,
    csrf: String,
}

impl Console {
    pub fn new(
        services: Arc<Services>,
        schedules: Result<Vec<Schedule>, String>,
        jobs_dir: PathBuf,
        access: Access,
    ) -> Console {
        Console {
            services,
            schedules,
            jobs_dir,
            access,
            csrf: new_token(),
        }
    }
}

type Shared = Arc<Console>;

/// The console's routes, to be merged into the listener's router.
pub fn router(console: Console) -> Router {
    Router::new()
        .route("/", get(overview::page))
        .route("/jobs", get(jobs::list))
        .route("/jobs/{id}", get(jobs::show))
        .route("/jobs/{id}/retry", post(jobs::retry))
        .route("/jobs/{id}/cancel", post(jobs::cancel))
        .route("/tables", get(tables::list))
        .route("/tables/{name}", get(tables::show))
        .route("/schedules", get(schedules::page))
        .route("/console/console.css", get(stylesheet))
        .route("/console/console.js", get(script))
        .fallback(not_found)
        .layer(axum::middleware::from_fn(refuse_nul))
        .with_state(Arc::new(console))
}

/// No name, filter or id holds a NUL byte, and Postgres refuses text that does: a request whose
/// path or query has one (`%00`) is answered 400 before any handler, not 500 from the catalog.
async fn refuse_nul(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let uri = request.uri().to_string();
    if uri.to_ascii_lowercase().contains("%00") || uri.contains('\0') {
        return (
            StatusCode::BAD_REQUEST,
            "the request's path or query holds a NUL byte (%00), which no name, filter or id can contain",
        )
            .into_response();
    }
    next.run(request).await
}

/// A page, with the headers every page carries: nothing from elsewhere may load, nothing may
/// frame it, and it is not cached (it shows live state).
fn html(status: StatusCode, markup: Markup) -> Response {
    let mut response = (status, markup).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    response
}

/// A failed page: the status and what to do, in the console's frame. Errors are catalog and
/// queue errors, which name no credentials.
fn error_page(console: &Console, status: StatusCode, message: &str) -> Response {
    let body = maud::html! {
        div.error-box { h2 { (status.canonical_reason().unwrap_or("error")) } p { (message) } }
    };
    html(status, layout::frame(console, status.as_str(), None, body))
}

fn server_error(console: &Console, err: impl std::fmt::Display) -> Response {
    tracing::warn!(error = %err, "a console page failed");
    error_page(
        console,
        StatusCode::INTERNAL_SERVER_ERROR,
        &format!("{err}; the catalog may be unreachable, see /readyz"),
    )
}

async fn not_found(State(console): State<Shared>) -> Response {
    error_page(
        &console,
        StatusCode::NOT_FOUND,
        "no such page; the console has /, /jobs, /tables and /schedules",
    )
}

async fn stylesheet() -> Response {
    asset(
        "text/css; charset=utf-8",
        include_str!("assets/console.css"),
    )
}

async fn script() -> Response {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("assets/console.js"),
    )
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        body,
    )
        .into_response()
}

/// 32 random bytes, hex: the token the console's forms carry.
fn new_token() -> String {
    use std::fmt::Write;
    let bytes: [u8; 32] = rand::random();
    bytes.iter().fold(String::new(), |mut hex, b| {
        let _ = write!(hex, "{b:02x}");
        hex
    })
}

/// Compares without stopping at the first difference, so the time taken does not tell an
/// attacker how much of a guessed token was right.
fn same_token(given: &str, expected: &str) -> bool {
    given.len() == expected.len()
        && given
            .bytes()
            .zip(expected.bytes())
            .fold(0u8, |diff, (a, b)| diff | (a ^ b))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_compared_whole() {
        let (a, b) = (new_token(), new_token());
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        assert!(same_token(&a, &a.clone()));
        assert!(!same_token(&a, &b));
        assert!(!same_token(&a[..63], &a));
        assert!(!same_token("", &a));
    }
}
