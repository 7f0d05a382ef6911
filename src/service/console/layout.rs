//! The frame every page shares (navigation, access badge) and the formatting of times, sizes and
//! states.

use chrono::{DateTime, Utc};
use maud::{html, Markup, DOCTYPE};

use super::{Access, Console};
use crate::queue::JobState;

/// Which navigation entry is current.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Overview,
    Jobs,
    Tables,
    Schedules,
}

const ENTRIES: [(Nav, &str, &str); 4] = [
    (Nav::Overview, "/", "Overview"),
    (Nav::Jobs, "/jobs", "Jobs"),
    (Nav::Tables, "/tables", "Tables"),
    (Nav::Schedules, "/schedules", "Schedules"),
];

pub fn frame(console: &Console, title: &str, current: Option<Nav>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · minion" }
                link rel="stylesheet" href="/console/console.css";
                script src="/console/console.js" defer {}
            }
            body {
                header.top {
                    a.brand href="/" { "upsert-minion" }
                    nav {
                        @for (nav, href, label) in ENTRIES {
                            a href=(href) class=[(current == Some(nav)).then_some("current")] { (label) }
                        }
                    }
                    span.spacer {}
                    label.refresh title="Reload this page every 10 seconds" {
                        input #auto-refresh type="checkbox"; " auto-refresh"
                    }
                    @match console.access {
                        Access::ReadOnly => span.badge.read-only #access data-access="read-only" { "read-only" },
                        Access::Write => span.badge.write #access data-access="write" { "write access" },
                    }
                }
                main {
                    h1 { (title) }
                    (body)
                }
                footer { "minion " (env!("CARGO_PKG_VERSION")) " · rendered " (time(Utc::now())) }
            }
        }
    }
}

/// `2026-11-29 07:41:03`, UTC.
pub fn time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

pub fn time_or_dash(t: Option<DateTime<Utc>>) -> String {
    t.map_or_else(|| "-".to_string(), time)
}

/// A span of seconds as `45s`, `12m 3s`, `5h 2m`, `3d 4h`.
pub fn span(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as i64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        3600..86400 => format!("{}h {}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d {}h", s / 86400, (s % 86400) / 3600),
    }
}

/// How long before `now` `t` was: `12m 3s ago`.
pub fn ago(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    format!("{} ago", span((now - t).num_milliseconds() as f64 / 1000.0))
}

/// Bytes in binary units: `512 B`, `1.5 KiB`, `3.2 GiB`; negative amounts keep their sign.
pub fn bytes(n: i64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    let sign = if n < 0 { "-" } else { "" };
    let mut value = n.unsigned_abs() as f64;
    if value < 1024.0 {
        return format!("{sign}{value} B");
    }
    let mut unit = 0;
    value /= 1024.0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{sign}{value:.1} {}", UNITS[unit])
}

/// `12,345,678`.
pub fn count(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if n < 0 {
        out.push('-');
    }
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `12.3%`, or `-` for none.
pub fn percent(ratio: Option<f64>) -> String {
    ratio.map_or_else(|| "-".to_string(), |r| format!("{:.1}%", r * 100.0))
}

/// A job state as a coloured badge.
pub fn state(state: JobState) -> Markup {
    html! { span class={ "state " (state.as_str()) } { (state.as_str()) } }
}

/// A link to a job's page.
pub fn job_link(id: i64) -> Markup {
    html! { a.job href={ "/jobs/" (id) } { "#" (id) } }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_read_well() {
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(1000), "1,000");
        assert_eq!(count(-12_345_678), "-12,345,678");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(-3 * 1024 * 1024), "-3.0 MiB");
        assert_eq!(span(59.4), "59s");
        assert_eq!(span(3.0 * 3600.0 + 120.0), "3h 2m");
        assert_eq!(span(2.0 * 86400.0 + 7200.0), "2d 2h");
        assert_eq!(percent(Some(0.1234)), "12.3%");
        assert_eq!(percent(None), "-");
    }
}
