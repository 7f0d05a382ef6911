//! Retries of object-store calls: only errors that can pass, with jittered backoff.

use std::time::Duration;

const MAX_ATTEMPTS: u32 = 4;

/// Runs `operation` until it succeeds, fails permanently, or `MAX_ATTEMPTS` is reached, sleeping a
/// jittered exponential backoff between tries. Only errors that can pass are retried.
pub(super) async fn retry<T, F, Fut>(mut operation: F) -> object_store::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = object_store::Result<T>>,
{
    let mut attempt = 1;
    loop {
        match operation().await {
            Ok(value) => return Ok(value),
            Err(err) if attempt < MAX_ATTEMPTS && is_transient(&err) => {
                let base = 50u64 << attempt;
                let jitter = rand::random::<u64>() % base;
                tracing::debug!(attempt, error = %err, "object store call failed, retrying");
                tokio::time::sleep(Duration::from_millis(base + jitter)).await;
                attempt += 1;
            }
            Err(err) => return Err(err),
        }
    }
}

fn is_transient(err: &object_store::Error) -> bool {
    use object_store::Error as E;
    !matches!(
        err,
        E::NotFound { .. }
            | E::AlreadyExists { .. }
            | E::Precondition { .. }
            | E::NotModified { .. }
            | E::NotImplemented
            | E::NotSupported { .. }
            | E::InvalidPath { .. }
            | E::PermissionDenied { .. }
            | E::Unauthenticated { .. }
            | E::UnknownConfigurationKey { .. }
    )
}
