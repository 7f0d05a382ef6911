//! Schedules as declared in `jobs/*.toml`: a name, a cron expression (seconds optional) in a time
//! zone, a job kind with its typed arguments, and for kinds that work on a table a table selector
//! (names or glob patterns; `"*"` is every table). Every field is checked when the files are
//! read, and a bad one is refused with the file, the schedule and the field.
//!
//! ```toml
//! [[schedule]]
//! name = "plan"                 # unique over all files
//! cron = "0 */5 * * * *"        # sec min hour day month weekday (sec optional)
//! time_zone = "UTC"             # IANA name, default UTC
//! kind = "plan"                 # see `minion job kinds`
//! tables = ["*"]                # names or glob patterns (kinds that take a table)
//! max_attempts = 5              # optional, as `minion job submit`
//! timeout = "30m"               # optional; default: the kind's (`minion job kinds`)
//! priority = 0
//! queue = "default"
//! [schedule.args]               # the kind's other arguments (`minion job submit KIND --help`)
//! job_attempts = 10
//! ```

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::queue::NewJob;
use crate::tasks::Registry;

/// One schedule, checked.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub name: String,
    pub cron_text: String,
    cron: croner::Cron,
    pub time_zone: chrono_tz::Tz,
    pub kind: String,
    /// Table patterns; empty for kinds that take no table.
    pub tables: Vec<String>,
    patterns: Vec<glob::Pattern>,
    pub args: serde_json::Map<String, serde_json::Value>,
    pub queue: String,
    pub priority: i16,
    pub max_attempts: i32,
    /// How long each attempt may run; `None` is the kind's default (`minion job kinds`).
    pub timeout: Option<std::time::Duration>,
    /// The file it was declared in.
    pub source: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScheduleFile {
    #[serde(default)]
    schedule: Vec<ScheduleToml>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScheduleToml {
    name: String,
    cron: String,
    #[serde(default)]
    time_zone: Option<String>,
    kind: String,
    #[serde(default)]
    tables: Vec<String>,
    #[serde(default)]
    args: serde_json::Map<String, serde_json::Value>,
    #[serde(default = "default_queue")]
    queue: String,
    #[serde(default)]
    priority: i16,
    #[serde(default = "default_attempts")]
    max_attempts: i32,
    #[serde(default)]
    timeout: Option<String>,
}

fn default_queue() -> String {
    "default".into()
}

fn default_attempts() -> i32 {
    5
}

/// A schedule file that cannot be used, with where and how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("cannot read schedules from {path}: {message}")]
    Read { path: String, message: String },
    #[error("{path}: {message} (see jobs/README.md)")]
    Invalid { path: String, message: String },
    #[error("{path}: schedule `{schedule}`: `{field}`: {message}")]
    Field {
        path: String,
        schedule: String,
        field: &'static str,
        message: String,
    },
}

impl Schedule {
    /// The newest tick at or before `now`. Ticks are whole seconds (croner would return `now`
    /// itself, fractions included, when the current second matches).
    pub fn due(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        use chrono::SubsecRound;
        let local = now.trunc_subsecs(0).with_timezone(&self.time_zone);
        self.cron
            .find_previous_occurrence(&local, true)
            .ok()
            .map(|tick| tick.with_timezone(&Utc))
    }

    /// The first tick after `now`.
    pub fn next_after(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = now.with_timezone(&self.time_zone);
        self.cron
            .find_next_occurrence(&local, false)
            .ok()
            .map(|tick| tick.with_timezone(&Utc))
    }

    /// Whether this schedule makes one job per selected table.
    pub fn per_table(&self) -> bool {
        !self.patterns.is_empty()
    }

    pub fn selects(&self, table: &str) -> bool {
        self.patterns.iter().any(|pattern| pattern.matches(table))
    }

    /// The job of one tick (for `table`, when per table), under the tick's unique key.
    pub fn job(
        &self,
        registry: &Registry,
        tick: DateTime<Utc>,
        table: Option<&str>,
    ) -> anyhow::Result<NewJob> {
        let mut args = self.args.clone();
        if let Some(table) = table {
            args.insert("table".into(), table.into());
        }
        let mut job = registry.prepare(&self.kind, serde_json::Value::Object(args))?;
        job.unique_key = Some(match table {
            Some(table) => format!("schedule:{}:{}:{table}", self.name, tick.to_rfc3339()),
            None => format!("schedule:{}:{}", self.name, tick.to_rfc3339()),
        });
        job.queue = self.queue.clone();
        job.priority = self.priority;
        job.max_attempts = self.max_attempts;
        job.timeout = self.timeout;
        Ok(job)
    }
}

/// Reads and checks every `*.toml` in `dir`, in file-name order.
pub fn load_dir(dir: &Path, registry: &Registry) -> Result<Vec<Schedule>, SpecError> {
    let read_error = |message: String| SpecError::Read {
        path: dir.display().to_string(),
        message,
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|err| read_error(format!("{err}; pass --jobs DIR with the schedule files")))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
        .collect();
    files.sort();
    let mut schedules = Vec::new();
    let mut names = BTreeSet::new();
    for file in files {
        let text = std::fs::read_to_string(&file).map_err(|err| SpecError::Read {
            path: file.display().to_string(),
            message: err.to_string(),
        })?;
        for schedule in parse(&file, &text, registry)? {
            if !names.insert(schedule.name.clone()) {
                return Err(SpecError::Field {
                    path: file.display().to_string(),
                    schedule: schedule.name,
                    field: "name",
                    message: "another schedule has this name; names must be unique over all files"
                        .into(),
                });
            }
            schedules.push(schedule);
        }
    }
    Ok(schedules)
}

/// Parses and checks the schedules of one file.
pub fn parse(path: &Path, text: &str, registry: &Registry) -> Result<Vec<Schedule>, SpecError> {
    let path_text = path.display().to_string();
    let file: ScheduleFile = toml::from_str(text).map_err(|err| SpecError::Invalid {
        path: path_text.clone(),
        message: err.to_string().trim_end().to_string(),
    })?;
    file.schedule
        .into_iter()
        .map(|spec| {
            check(&path_text, spec, registry).map(|s| Schedule {
                source: path.to_path_buf(),
                ..s
            })
        })
        .collect()
}

fn check(path: &str, spec: ScheduleToml, registry: &Registry) -> Result<Schedule, SpecError> {
    let field = |field: &'static str, message: String| SpecError::Field {
        path: path.to_string(),
        schedule: spec.name.clone(),
        field,
        message,
    };
    if spec.name.is_empty() || spec.name.contains(':') {
        return Err(field("name", "give a non-empty name without `:`".into()));
    }
    let cron = croner::Cron::from_str(&spec.cron).map_err(|err| {
        field(
            "cron",
            format!(
                "`{}` is not a cron expression ({err}); write e.g. \"0 */5 * * * *\" (seconds optional)",
                spec.cron
            ),
        )
    })?;
    let time_zone = match &spec.time_zone {
        None => chrono_tz::UTC,
        Some(name) => name.parse::<chrono_tz::Tz>().map_err(|_| {
            field(
                "time_zone",
                format!(
                    "`{name}` is not an IANA time zone; write e.g. \"UTC\" or \"Europe/Berlin\""
                ),
            )
        })?,
    };
    let task = registry
        .get(&spec.kind)
        .map_err(|err| field("kind", err.to_string()))?;
    if spec.args.contains_key("table") {
        return Err(field(
            "args",
            "give the table in `tables`, not in `args`".into(),
        ));
    }
    let per_table = task.per_table();
    if per_table && spec.tables.is_empty() {
        return Err(field(
            "tables",
            format!(
                "kind `{}` works on a table: give names or patterns, e.g. [\"*\"] for every table",
                spec.kind
            ),
        ));
    }
    if !per_table && !spec.tables.is_empty() {
        return Err(field(
            "tables",
            format!("kind `{}` takes no table; remove `tables`", spec.kind),
        ));
    }
    let patterns = spec
        .tables
        .iter()
        .map(|text| {
            glob::Pattern::new(text)
                .map_err(|err| field("tables", format!("`{text}` is not a pattern: {err}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if spec.max_attempts < 1 {
        return Err(field("max_attempts", "must be at least 1".into()));
    }
    let timeout = match &spec.timeout {
        None => None,
        Some(text) => match crate::job::args::parse_seconds(text) {
            Ok(seconds) if seconds > 0.0 && seconds.is_finite() => {
                Some(std::time::Duration::from_secs_f64(seconds))
            }
            Ok(_) => {
                return Err(field(
                    "timeout",
                    format!("`{text}` must be more than 0; write e.g. \"30m\""),
                ))
            }
            Err(message) => return Err(field("timeout", message)),
        },
    };
    let schedule = Schedule {
        name: spec.name.clone(),
        cron_text: spec.cron.clone(),
        cron,
        time_zone,
        kind: spec.kind.clone(),
        tables: spec.tables.clone(),
        patterns,
        args: spec.args.clone(),
        queue: spec.queue.clone(),
        priority: spec.priority,
        max_attempts: spec.max_attempts,
        timeout,
        source: PathBuf::new(),
    };
    // The arguments are checked as the kind will see them (with a stand-in table).
    schedule
        .job(registry, Utc::now(), per_table.then_some("example"))
        .map_err(|err| field("args", format!("{err:#}")))?;
    Ok(schedule)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_one(text: &str) -> Result<Vec<Schedule>, String> {
        parse(Path::new("jobs/x.toml"), text, &Registry::standard()).map_err(|e| e.to_string())
    }

    #[test]
    fn the_shipped_schedules_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("jobs");
        let schedules = load_dir(&dir, &Registry::standard()).unwrap();
        let kinds: BTreeSet<&str> = schedules.iter().map(|s| s.kind.as_str()).collect();
        assert!(kinds.contains("plan") && kinds.contains("gc"), "{kinds:?}");
    }

    #[test]
    fn ticks_follow_the_cron_expression_and_time_zone() {
        let schedules = parse_one(
            "[[schedule]]\nname = \"p\"\ncron = \"0 */5 * * * *\"\nkind = \"plan\"\ntables = [\"*\"]\n",
        )
        .unwrap();
        let now: DateTime<Utc> = "2026-11-28T10:07:30Z".parse().unwrap();
        assert_eq!(
            schedules[0].due(now).unwrap().to_rfc3339(),
            "2026-11-28T10:05:00+00:00"
        );
        let every_second =
            parse_one("[[schedule]]\nname = \"s\"\ncron = \"* * * * * *\"\nkind = \"noop\"\n")
                .unwrap();
        let fraction: DateTime<Utc> = "2026-11-28T10:07:30.640Z".parse().unwrap();
        assert_eq!(every_second[0].due(fraction).unwrap(), now, "whole seconds");
        assert_eq!(
            schedules[0].next_after(now).unwrap().to_rfc3339(),
            "2026-11-28T10:10:00+00:00"
        );
        let berlin = parse_one(
            "[[schedule]]\nname = \"n\"\ncron = \"0 3 * * *\"\ntime_zone = \"Europe/Berlin\"\nkind = \"noop\"\n",
        )
        .unwrap();
        assert_eq!(
            berlin[0].due(now).unwrap().to_rfc3339(),
            "2026-11-28T02:00:00+00:00"
        );
        let job = schedules[0]
            .job(&Registry::standard(), now, Some("orders"))
            .unwrap();
        assert_eq!(
            job.unique_key.as_deref(),
            Some("schedule:p:2026-11-28T10:07:30+00:00:orders")
        );
        assert!(schedules[0].selects("orders"));
    }

    #[test]
    fn bad_files_name_the_file_the_schedule_and_the_field() {
        let cases = [
            ("[[schedule]]\nname = \"a\"\ncron = \"every minute\"\nkind = \"noop\"\n", "schedule `a`: `cron`"),
            ("[[schedule]]\nname = \"a\"\ncron = \"* * * * *\"\nkind = \"frobnicate\"\n", "`kind`: unknown job kind `frobnicate`"),
            ("[[schedule]]\nname = \"a\"\ncron = \"* * * * *\"\nkind = \"gc\"\ntables = [\"*\"]\nargs = { grace = 1 }\n", "`args`: invalid arguments for `gc`: unknown field `grace`"),
            ("[[schedule]]\nname = \"a\"\ncron = \"* * * * *\"\nkind = \"plan\"\n", "`tables`: kind `plan` works on a table"),
            ("[[schedule]]\nname = \"a\"\ncron = \"* * * * *\"\nkind = \"noop\"\ntime_zone = \"Mars/Olympus\"\n", "`time_zone`"),
            ("[[schedule]]\nname = \"a\"\ncron = \"* * * * *\"\nkind = \"noop\"\ncolour = \"red\"\n", "unknown field `colour`"),
            ("[[schedule]]\nname = \"a\"\ncron = \"* * * * *\"\nkind = \"noop\"\ntimeout = \"soon\"\n", "`timeout`: `soon` is not a duration"),
            ("[[schedule]]\nname = \"a\"\ncron = \"* * * * *\"\nkind = \"plan\"\ntables = [\"*\"]\n[schedule.args.compaction]\ninvalid_ratio = 0.5\n", "unknown field `invalid_ratio`"),
        ];
        for (text, expected) in cases {
            let err = parse_one(text).unwrap_err();
            assert!(err.starts_with("jobs/x.toml"), "{err}");
            assert!(err.contains(expected), "{expected}: {err}");
        }
    }
}
