//! The catalog in Postgres (DESIGN.md section 7): tables, partitions, segments, and later
//! snapshots and jobs. Each concern keeps its SQL in its own submodule; every change that touches
//! several rows runs in one transaction.

pub mod binding;
pub mod commit;
pub mod gc;
mod lineage;
mod replace;
mod reservations;
mod segments;
pub mod snapshots;
pub mod stats;
pub mod tables;

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};

pub use lineage::{Lineage, LineageInput};
pub use replace::{ReplaceOutcome, SequenceGuard};
pub use reservations::{IngestRegistration, ReservationLease};
pub use segments::{NewSegment, SegmentRow, SegmentState};
pub use snapshots::{NewSnapshot, PublishOutcome, SnapshotRow};
pub use stats::{summarize, PartitionStats, TableStats};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Errors callers match on; everything else is a plain database error with context.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("cannot reach the catalog database at {url}: {source}. Start Postgres or fix --database-url / DATABASE_URL (unset it to use the embedded dev database)")]
    Unreachable { url: String, source: sqlx::Error },
    #[error("the database URL `{url}` is not valid: {message}")]
    BadUrl { url: String, message: String },
    #[error("table `{0}` already exists with a different definition; pick another name, or drop it with `minion table drop {0} --yes` (deleting its data) and create it again")]
    TableConflict(String),
    #[error("table `{name}` has {running} running job(s); cancel them (`minion job ls --state running`, `minion job cancel ID`) or wait, then drop it")]
    TableBusy { name: String, running: i64 },
    #[error("table `{0}` does not exist; create it with `minion table create --file TABLE.toml`")]
    TableNotFound(String),
    #[error("the catalog schema is not up to date: {0}. Run `minion migrate`")]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error("the catalog at {url} is not migrated (applied: {applied}, this minion needs {needed}); run `minion migrate`")]
    NotMigrated {
        url: String,
        applied: String,
        needed: i64,
    },
    #[error("catalog query failed: {0}")]
    Database(#[from] sqlx::Error),
    #[error("sequence {sequence} of {table} partition {partition} is no longer reserved (the ingest stopped renewing its reservation for longer than its lease, and plan, merge or gc released it); nothing was registered, run the ingest again")]
    ReservationExpired {
        table: String,
        partition: u32,
        sequence: i64,
    },
    /// The answer to a COMMIT was lost and the catalog could not be asked what happened (see
    /// `commit`): the write may or may not have taken effect.
    #[error("the outcome of {what} is unknown: the catalog's answer to COMMIT was lost ({source}) and the catalog could not be asked what happened before giving up")]
    OutcomeUnknown { what: String, source: sqlx::Error },
    #[error("an ingest of table `{table}` with idempotency key `{key}` is already registered; nothing more was registered")]
    AlreadyRegistered { table: String, key: String },
    #[error("stored table `{name}` cannot be decoded: {message}")]
    Corrupt { name: String, message: String },
}

impl crate::error::Permanence for CatalogError {
    /// A missing table, a bad URL or an undecodable stored table stay so; a database that cannot
    /// be reached, an unknown outcome or a conflict may resolve.
    fn is_permanent(&self) -> bool {
        matches!(
            self,
            CatalogError::TableNotFound(_)
                | CatalogError::BadUrl { .. }
                | CatalogError::Corrupt { .. }
        )
    }
}

/// A handle on the catalog database. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Catalog {
    pool: PgPool,
    /// The URL with its password redacted, for messages.
    url: String,
    /// How long a write whose COMMIT answer was lost asks what happened (`commit`).
    learn_deadline: Duration,
}

impl Catalog {
    /// Connects with a short acquire timeout so an unreachable database fails fast and clearly.
    pub async fn connect(url: &str) -> Result<Catalog, CatalogError> {
        Self::connect_with(url, 10).await
    }

    pub async fn connect_with(url: &str, max_connections: u32) -> Result<Catalog, CatalogError> {
        let shown = redact_url(url);
        if !url.contains("://") && url.contains('=') {
            return Err(CatalogError::BadUrl {
                url: shown,
                message: "the key=value form is not supported; write postgres://user:password@host:port/database".into(),
            });
        }
        let options: PgConnectOptions =
            url.parse()
                .map_err(|err: sqlx::Error| CatalogError::BadUrl {
                    url: shown.clone(),
                    // The parser may echo what it was given.
                    message: redact_key_values(&err.to_string().replace(url, &shown)),
                })?;
        let options = options
            .application_name("upsert-minion")
            .log_statements(tracing::log::LevelFilter::Trace);
        // One direct connection first: a closed port or a refused login says so at once, where
        // the pool would retry until its acquire timeout and say only "pool timed out".
        let probe = tokio::time::timeout(
            Duration::from_secs(10),
            sqlx::ConnectOptions::connect(&options),
        )
        .await;
        match probe {
            Ok(Ok(connection)) => {
                let _ = sqlx::Connection::close(connection).await;
            }
            Ok(Err(source)) => return Err(CatalogError::Unreachable { url: shown, source }),
            Err(_) => {
                return Err(CatalogError::Unreachable {
                    url: shown,
                    source: sqlx::Error::PoolTimedOut,
                })
            }
        }
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await
            .map_err(|source| CatalogError::Unreachable { url: shown, source })?;
        Ok(Catalog {
            pool,
            url: redact_url(url),
            learn_deadline: learn_deadline_from_env(),
        })
    }

    /// A write transaction that learns its outcome when the answer to its COMMIT is lost.
    pub(crate) async fn write_tx(&self, what: String) -> Result<commit::WriteTx, CatalogError> {
        commit::WriteTx::begin(&self.pool, what, self.learn_deadline).await
    }

    /// Applies pending migrations. sqlx holds a Postgres advisory lock while it migrates, so two
    /// processes starting at once do not race; running it again is a no-op.
    pub async fn migrate(&self) -> Result<(), CatalogError> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    /// The newest migration this binary knows (what `minion migrate` brings a catalog to).
    pub fn migration_version() -> i64 {
        MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0)
    }

    /// Fails unless every migration this binary knows has been applied, so a worker never runs
    /// against an older schema.
    pub async fn check_migrated(&self) -> Result<(), CatalogError> {
        let needed = Self::migration_version();
        let applied: Result<(Option<i64>,), sqlx::Error> =
            sqlx::query_as("SELECT max(version) FROM _sqlx_migrations WHERE success")
                .fetch_one(&self.pool)
                .await;
        let applied = match applied {
            Ok((version,)) => version,
            Err(sqlx::Error::Database(err)) if err.code().as_deref() == Some("42P01") => None,
            Err(err) => return Err(err.into()),
        };
        if applied.is_some_and(|version| version >= needed) {
            return Ok(());
        }
        Err(CatalogError::NotMigrated {
            url: self.url.clone(),
            applied: applied.map_or_else(|| "none".to_string(), |v| v.to_string()),
            needed,
        })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

/// `MINION_COMMIT_LEARN_DEADLINE` (e.g. `2m`), else [`commit::LEARN_DEADLINE`].
fn learn_deadline_from_env() -> Duration {
    std::env::var("MINION_COMMIT_LEARN_DEADLINE")
        .ok()
        .and_then(|text| match humantime::parse_duration(&text) {
            Ok(deadline) => Some(deadline),
            Err(err) => {
                tracing::warn!(value = %text, error = %err, "MINION_COMMIT_LEARN_DEADLINE is not a duration (like 60s); using the default");
                None
            }
        })
        .unwrap_or(commit::LEARN_DEADLINE)
}

/// Keys whose values are secrets, in a URL's query or a `key=value` connection string.
const SECRET_KEYS: &[&str] = &["password", "sslpassword", "pass", "secret"];

/// A database URL (or `key=value` connection string) with every password replaced by `***`, for
/// messages and logs: the user-info form (`postgres://u:pw@h/db`), query parameters
/// (`?password=pw`), the key=value form (`host=h password=pw`, quoted or not), and a URL too
/// malformed to parse whose user-info still holds one.
pub fn redact_url(url: &str) -> String {
    if let Ok(mut parsed) = url::Url::parse(url) {
        if parsed.cannot_be_a_base() {
            return redact_key_values(url);
        }
        if parsed.password().is_some() {
            let _ = parsed.set_password(Some("***"));
        }
        if parsed.query().is_some() {
            let pairs: Vec<(String, String)> = parsed
                .query_pairs()
                .map(|(k, v)| match is_secret_key(&k) {
                    true => (k.into_owned(), "***".to_string()),
                    false => (k.into_owned(), v.into_owned()),
                })
                .collect();
            parsed.query_pairs_mut().clear().extend_pairs(pairs);
        }
        return parsed.to_string();
    }
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, tail) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
            let authority = match authority.rsplit_once('@') {
                Some((user_info, host)) => match user_info.split_once(':') {
                    Some((user, _)) => format!("{user}:***@{host}"),
                    None => authority.to_string(),
                },
                None => authority.to_string(),
            };
            redact_key_values(&format!("{scheme}://{authority}{tail}"))
        }
        None => redact_key_values(url),
    }
}

fn is_secret_key(key: &str) -> bool {
    SECRET_KEYS.iter().any(|s| key.eq_ignore_ascii_case(s))
}

/// Replaces the value after every `secret-key=` (any case, spaces around `=`, quoted with `'` or
/// not, `&`-separated in a query) with `***`.
fn redact_key_values(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(value_start) = find_secret_key(rest) {
        out.push_str(&rest[..value_start]);
        out.push_str("***");
        let value = &rest[value_start..];
        let value_len = if let Some(quoted) = value.strip_prefix('\'') {
            // A quoted value ends at the next unescaped quote.
            let mut escaped = false;
            let end = quoted
                .char_indices()
                .find(|&(_, c)| {
                    let closes = c == '\'' && !escaped;
                    escaped = c == '\\' && !escaped;
                    closes
                })
                .map_or(quoted.len(), |(i, _)| i + 1);
            1 + end
        } else {
            value
                .find(|c: char| c.is_whitespace() || c == '&')
                .unwrap_or(value.len())
        };
        rest = &value[value_len..];
    }
    out.push_str(rest);
    out
}

/// Where the value of the next `key=` whose key is secret starts.
fn find_secret_key(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut index = 0;
    while let Some(offset) = text[index..].find('=') {
        let eq = index + offset;
        let key_end = text[..eq].trim_end().len();
        let key_start = text[..key_end]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(0, |i| i + 1);
        let mut value_start = eq + 1;
        while value_start < bytes.len() && bytes[value_start] == b' ' {
            value_start += 1;
        }
        if is_secret_key(&text[key_start..key_end]) {
            return Some(value_start);
        }
        index = eq + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_are_redacted() {
        use super::redact_url;
        assert_eq!(
            redact_url("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        for url in [
            "postgres://u@h/db?password=secret",
            "postgres://u@h/db?sslmode=disable&PASSWORD=secret&x=1",
            "host=h user=u password=secret dbname=db",
            "host=h password = 'sec ret\\' more' dbname=db",
            "host=h Password=secret",
            "postgres://u:sec ret@h/db",
            "postgres://u:secret@[bad/db",
        ] {
            let shown = redact_url(url);
            assert!(
                !shown.contains("secret") && !shown.contains("sec ret"),
                "{url} -> {shown}"
            );
            assert!(shown.contains("***"), "{url} -> {shown}");
        }
        assert_eq!(
            redact_url("host=h user=u password=secret dbname=db"),
            "host=h user=u password=*** dbname=db"
        );
        assert_eq!(
            redact_url("postgres://u@h/db?sslmode=disable&password=secret"),
            "postgres://u@h/db?sslmode=disable&password=***"
        );
    }
}
