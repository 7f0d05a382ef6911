//! Catalog writes whose answer can be lost (DESIGN.md section 8).
//!
//! **An error from a commit is not a "no".** When the connection dies after Postgres received
//! `COMMIT` but before its answer arrived (a reset, a timeout, a server restart), the transaction
//! may well have committed. Cleanup that is only right on failure (deleting uploads, releasing
//! reservations, telling a caller to retry under new names) must first learn the outcome.
//!
//! The rule, applied by every write that other work depends on (ingest's registration, the
//! compact/merge swap, prebuild's publish, gc's row deletions, sequence reservations):
//! - the write runs in a [`WriteTx`], which asks for its transaction id first
//!   (`pg_current_xact_id()`, one round trip), remembers its backend's pid, and turns
//!   `synchronous_commit` on for itself (a commit that was answered must survive a crash of a
//!   server that runs with asynchronous commit: the chaos test found batches lost that way);
//! - an error before `COMMIT` was sent is a plain "no": nothing commits without `COMMIT`;
//! - an error from `COMMIT` itself is answered by [`WriteTx::commit`] on a fresh connection with
//!   `pg_xact_status(xid)`, which Postgres keeps exactly for this: `committed` and `aborted` are
//!   final; `in progress` means the old backend has not decided yet, so it is terminated (it can
//!   then only abort, or finish a commit already under way) and asked again;
//! - if no answer can be had within [`LEARN_DEADLINE`], the caller gets
//!   [`CatalogError::OutcomeUnknown`] and must leave its objects to gc's orphan sweep (which keeps
//!   whatever a committed row references) and say that a rerun is safe.
//!
//! The queue's own transitions are single fenced statements: they learn their outcome by
//! re-reading the job by (id, attempt) instead (`queue::Queue::attempt_state`).

use std::time::Duration;

use sqlx::{PgConnection, PgPool, Postgres, Transaction};

use super::CatalogError;

/// How long a lost commit answer is asked after before the outcome is called unknown, unless
/// `MINION_COMMIT_LEARN_DEADLINE` says otherwise. Long enough for a Postgres restart.
pub const LEARN_DEADLINE: Duration = Duration::from_secs(60);

/// The transaction id and backend pid, and `synchronous_commit` on for this transaction: an
/// answered (or learned) commit of these writes must survive a server crash even where the
/// server runs with asynchronous commit, since objects are deleted on the strength of it.
const BEGIN_WRITE: &str = "SELECT pg_current_xact_id()::text::bigint, pg_backend_pid(), \
     set_config('synchronous_commit', 'on', true)";
const XACT_STATUS: &str = "SELECT pg_xact_status($1::bigint::text::xid8)";
/// Terminates the backend that still runs transaction $2 (the pid alone could have been reused).
const TERMINATE_WRITER: &str = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
     WHERE pid = $1 AND backend_xid::text = ($2::bigint % 4294967296)::text";

/// What became of a commit whose answer was lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Learned {
    Committed,
    Aborted,
}

/// A write transaction that can learn its outcome when the answer to its `COMMIT` is lost.
pub struct WriteTx {
    tx: Transaction<'static, Postgres>,
    pool: PgPool,
    xid: i64,
    pid: i32,
    /// What the write does, for the error when its outcome stays unknown.
    what: String,
    deadline: Duration,
}

impl WriteTx {
    pub async fn begin(
        pool: &PgPool,
        what: String,
        deadline: Duration,
    ) -> Result<WriteTx, CatalogError> {
        let mut tx = pool.begin().await?;
        let (xid, pid, _): (i64, i32, String) =
            sqlx::query_as(BEGIN_WRITE).fetch_one(&mut *tx).await?;
        Ok(WriteTx {
            tx,
            pool: pool.clone(),
            xid,
            pid,
            what,
            deadline,
        })
    }

    pub fn conn(&mut self) -> &mut PgConnection {
        &mut self.tx
    }

    /// Commits. `Ok` means committed (answered, or learned); an error means it did not commit,
    /// except [`CatalogError::OutcomeUnknown`], which means nobody could tell.
    pub async fn commit(self) -> Result<(), CatalogError> {
        let WriteTx {
            tx,
            pool,
            xid,
            pid,
            what,
            deadline,
        } = self;
        let error = match tx.commit().await {
            Ok(()) => return Ok(()),
            Err(error) => error,
        };
        crate::faults::pause_point("catalog:commit_answer_lost").await;
        tracing::warn!(%what, xid, error = %error, "the answer to a COMMIT was lost; asking the catalog what happened");
        match learn(&pool, xid, pid, deadline).await {
            Some(Learned::Committed) => {
                tracing::info!(%what, xid, "the write had committed");
                Ok(())
            }
            Some(Learned::Aborted) => {
                tracing::info!(%what, xid, "the write had not committed");
                Err(CatalogError::Database(error))
            }
            None => Err(CatalogError::OutcomeUnknown {
                what,
                source: error,
            }),
        }
    }
}

/// Asks, on fresh connections and with backoff, whether transaction `xid` committed; `None` when
/// the catalog could not be asked before `deadline`.
pub async fn learn(pool: &PgPool, xid: i64, pid: i32, deadline: Duration) -> Option<Learned> {
    let give_up = tokio::time::Instant::now() + deadline;
    let mut delay = Duration::from_millis(50);
    loop {
        match status(pool, xid).await {
            Ok(Some(learned)) => return Some(learned),
            Ok(None) => {
                // Still in progress: the old backend has not seen COMMIT yet, or is committing.
                // Terminated, it can no longer decide "yes" later than our look.
                if let Err(err) = sqlx::query(TERMINATE_WRITER)
                    .bind(pid)
                    .bind(xid)
                    .execute(pool)
                    .await
                {
                    tracing::debug!(error = %err, "cannot terminate the old backend yet");
                }
            }
            Err(err) => tracing::debug!(error = %err, "cannot ask the catalog yet"),
        }
        if tokio::time::Instant::now() + delay > give_up {
            return None;
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}

/// `Some` once the transaction has ended; `None` while it is in progress.
async fn status(pool: &PgPool, xid: i64) -> Result<Option<Learned>, sqlx::Error> {
    let (status,): (Option<String>,) = sqlx::query_as(XACT_STATUS)
        .bind(xid)
        .fetch_one(pool)
        .await?;
    Ok(match status.as_deref() {
        Some("committed") => Some(Learned::Committed),
        Some("aborted") => Some(Learned::Aborted),
        Some("in progress") => None,
        // NULL: the id is too old to be known, which seconds after the write cannot happen.
        other => {
            tracing::warn!(
                xid,
                status = other.unwrap_or("null"),
                "unexpected transaction status"
            );
            None
        }
    })
}
