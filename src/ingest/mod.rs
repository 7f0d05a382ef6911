//! Ingest: stands in for the serving servers that commit segments. Rows are routed to partitions by
//! a stable hash of the primary key, cut into segments of `segment_rows` rows, written as Parquet,
//! uploaded under fresh names, and registered online in one catalog transaction at the end, so a
//! failed ingest registers nothing (its uploaded objects are deleted, or left for GC on a crash).
//!
//! Each segment's sequence is reserved before it is written, under a lease this ingest renews
//! while it runs (`catalog::reservations`): a killed ingest stops blocking merges within a lease.
//!
//! When the answer to the registration's COMMIT is lost, the catalog is asked what happened
//! (`catalog::commit`). Uploads are deleted only on a definite "no"; if nobody can tell, they stay
//! for gc's orphan sweep and the error says how to check and that a rerun is safe. With an
//! idempotency key, a rerun after a registration that did commit registers nothing.

mod columns;
mod convert;
pub mod generate;
mod partitioner;
pub mod sources;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::catalog::{Catalog, CatalogError, IngestRegistration, NewSegment, ReservationLease};
use crate::segment::{new_segment_name, SegmentWriter, WriteOptions};
use crate::storage::Store;
use crate::table::TableConfig;

pub use columns::RowBuilder;
pub use generate::{GenerateOptions, Generator};
pub use sources::{open_input, BatchSource, InputFormat};

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("{file} {}: {message}; fix the input and run the ingest again (nothing was registered)", location(*line, column.as_deref()))]
    BadRow {
        file: String,
        line: u64,
        column: Option<String>,
        message: String,
    },
    #[error("input {file}: {message}")]
    Input { file: String, message: String },
    #[error("bad ingest options: {0}")]
    Options(String),
    #[error("idempotency key `{key}` of table {table} was used for another input (recorded input SHA-256 {recorded}, this input {given}); nothing was registered. A key names one input: use a new key for new rows, or rerun with the input the key was first used for")]
    KeyReused {
        table: String,
        key: String,
        recorded: String,
        given: String,
    },
    #[error("{source}.\nCheck with `minion segment ls --table {table}` whether these segments are listed: {names}. {rerun} The uploaded objects were left in place; gc removes them if nothing references them")]
    OutcomeUnknown {
        table: String,
        names: String,
        rerun: String,
        source: Box<CatalogError>,
    },
}

fn location(line: u64, column: Option<&str>) -> String {
    let place = if line == 0 {
        String::new()
    } else {
        format!("line {line}")
    };
    match column {
        Some(column) if place.is_empty() => format!("column `{column}`"),
        Some(column) => format!("{place}, column `{column}`"),
        None => place,
    }
}

#[derive(Debug, Clone)]
pub struct IngestOptions {
    pub segment_rows: usize,
    pub write: WriteOptions,
    /// Local directory for staging segment files before upload.
    pub staging_dir: PathBuf,
    /// Segments written and uploaded at once.
    pub concurrency: usize,
    pub progress: bool,
    /// Expected total rows, for the progress bar; 0 if unknown.
    pub expected_rows: u64,
    /// How long a reservation outlives its last renewal (renewed every third of it).
    pub reservation_lease: Duration,
    /// Recorded with the registration; a rerun with the same key registers nothing.
    pub idempotency_key: Option<String>,
    /// SHA-256 of the input (the file, or the generator's settings), recorded with the key: a
    /// rerun with the key and another input is refused.
    pub input_fingerprint: Option<String>,
}

/// The default reservation lease: a killed ingest blocks merges across its sequences this long.
pub const DEFAULT_RESERVATION_LEASE: Duration = Duration::from_secs(30);

impl Default for IngestOptions {
    fn default() -> Self {
        IngestOptions {
            segment_rows: 500_000,
            write: WriteOptions::default(),
            staging_dir: std::env::temp_dir(),
            concurrency: 2,
            progress: false,
            expected_rows: 0,
            reservation_lease: DEFAULT_RESERVATION_LEASE,
            idempotency_key: None,
            input_fingerprint: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IngestOutcome {
    /// This run registered its segments.
    Registered,
    /// An earlier run with the same idempotency key had registered; this one registered nothing.
    AlreadyRegistered,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct IngestReport {
    pub table: String,
    pub outcome: IngestOutcome,
    pub idempotency_key: Option<String>,
    pub rows: u64,
    pub bytes: u64,
    pub segment_ids: Vec<i64>,
    /// The segments this run wrote (none when already registered).
    pub segments: Vec<NewSegment>,
}

impl IngestReport {
    fn already_registered(registration: IngestRegistration) -> IngestReport {
        IngestReport {
            table: registration.table,
            outcome: IngestOutcome::AlreadyRegistered,
            idempotency_key: Some(registration.idempotency_key),
            rows: registration.row_count as u64,
            bytes: registration.byte_size as u64,
            segment_ids: registration.segment_ids,
            segments: Vec::new(),
        }
    }
}

/// A segment's worth of rows for one partition, in stream order.
struct Cut {
    partition: u32,
    batches: Vec<RecordBatch>,
}

/// Runs `source` through the partitioner, writes and uploads every segment, then registers them
/// all in one transaction. On any error, uploaded objects are deleted and nothing is registered.
pub async fn ingest(
    catalog: &Catalog,
    store: &Store,
    table: Arc<TableConfig>,
    source: BatchSource,
    options: IngestOptions,
) -> anyhow::Result<IngestReport> {
    anyhow::ensure!(
        options.segment_rows > 0,
        "--segment-rows must be at least 1"
    );
    if let Some(key) = &options.idempotency_key {
        if let Some(done) = catalog.ingest_registration(&table.name, key).await? {
            same_input(&done, &options)?;
            tracing::info!(table = %table.name, key = %key, "already registered under this idempotency key; nothing to do");
            return Ok(IngestReport::already_registered(done));
        }
    }
    let lease = ReservationLease::new(options.reservation_lease);
    let _renewer = Renewer::start(catalog.clone(), lease.clone());
    let staging = tempfile::Builder::new()
        .prefix("minion-ingest-")
        .tempdir_in(&options.staging_dir)
        .map_err(|err| {
            anyhow::anyhow!(
                "cannot create a staging directory in {}: {err}",
                options.staging_dir.display()
            )
        })?;
    let progress = progress_bar(options.progress, options.expected_rows);

    let (cut_tx, mut cut_rx) = mpsc::channel::<Cut>(options.concurrency.max(1));
    let producer = {
        let table = table.clone();
        let segment_rows = options.segment_rows;
        let progress = progress.clone();
        tokio::task::spawn_blocking(move || {
            partitioner::run(&table, source, segment_rows, &cut_tx, &progress)
        })
    };

    let mut written: Vec<NewSegment> = Vec::new();
    let mut tasks: JoinSet<anyhow::Result<NewSegment>> = JoinSet::new();
    let mut failure: Option<anyhow::Error> = None;
    let mut reserved: Vec<(u32, i64)> = Vec::new();
    while let Some(cut) = cut_rx.recv().await {
        // Sequences are reserved in cut order, which is stream order within a partition.
        let sequence = match catalog
            .reserve_sequences(&lease, &table.name, cut.partition, 1)
            .await
        {
            Ok(sequence) => {
                reserved.push((cut.partition, sequence));
                sequence
            }
            Err(err) => {
                failure = Some(err.into());
                break;
            }
        };
        while tasks.len() >= options.concurrency.max(1) {
            match join_next(&mut tasks).await {
                Some(Ok(segment)) => written.push(segment),
                Some(Err(err)) => failure = Some(err),
                None => break,
            }
        }
        if failure.is_some() {
            break;
        }
        let (table, store, staging_dir, write) = (
            table.clone(),
            store.clone(),
            staging.path().to_path_buf(),
            options.write.clone(),
        );
        tasks.spawn(async move {
            write_and_upload(&table, &store, &staging_dir, &write, cut, sequence).await
        });
    }
    drop(cut_rx);
    while let Some(result) = join_next(&mut tasks).await {
        match result {
            Ok(segment) => written.push(segment),
            Err(err) => failure = failure.or(Some(err)),
        }
    }
    let produced = producer
        .await
        .map_err(|err| anyhow::anyhow!("ingest reader panicked: {err}"))?;
    if let Err(err) = produced {
        failure = Some(err.into());
    }
    progress.finish_and_clear();

    let undo = Undo {
        catalog,
        store,
        lease: &lease,
        table: &table.name,
        reserved: &reserved,
    };
    if let Some(err) = failure {
        undo.give_up(&written).await;
        return Err(err);
    }
    written.sort_by_key(|s| (s.partition, s.sequence));
    crate::faults::pause_point("ingest:before_register").await;
    let key = options.idempotency_key.as_deref();
    let keyed = key.map(|key| (key, options.input_fingerprint.as_deref()));
    let segment_ids = match catalog.register_segments(&lease, &written, keyed).await {
        Ok(ids) => ids,
        Err(CatalogError::AlreadyRegistered { .. }) => {
            // A concurrent run with our key committed first; our transaction did not.
            undo.give_up(&written).await;
            let key = key.expect("only keyed registrations conflict");
            let done = catalog.ingest_registration(&table.name, key).await?;
            let done = done.ok_or_else(|| {
                anyhow::anyhow!(
                    "the registration under idempotency key `{key}` vanished; run the ingest again"
                )
            })?;
            same_input(&done, &options)?;
            return Ok(IngestReport::already_registered(done));
        }
        Err(source @ CatalogError::OutcomeUnknown { .. }) => {
            // Maybe registered: deleting the uploads could leave online segments without objects.
            return Err(outcome_unknown(&table.name, &written, key, source).into());
        }
        Err(err) => {
            undo.give_up(&written).await;
            return Err(err.into());
        }
    };
    Ok(IngestReport {
        table: table.name.clone(),
        outcome: IngestOutcome::Registered,
        idempotency_key: options.idempotency_key.clone(),
        rows: written.iter().map(|s| s.row_count).sum(),
        bytes: written.iter().map(|s| s.byte_size).sum(),
        segment_ids,
        segments: written,
    })
}

/// An idempotency key already registered must name the same input.
fn same_input(done: &IngestRegistration, options: &IngestOptions) -> Result<(), IngestError> {
    match (&done.input_fingerprint, &options.input_fingerprint) {
        (Some(recorded), Some(given)) if recorded != given => Err(IngestError::KeyReused {
            table: done.table.clone(),
            key: done.idempotency_key.clone(),
            recorded: recorded.clone(),
            given: given.clone(),
        }),
        _ => Ok(()),
    }
}

fn outcome_unknown(
    table: &str,
    written: &[NewSegment],
    key: Option<&str>,
    source: CatalogError,
) -> IngestError {
    let names: Vec<&str> = written.iter().map(|s| s.name.as_str()).collect();
    let rerun = match key {
        Some(key) => format!(
            "Rerunning the same ingest with `--idempotency-key {key}` is safe: it registers nothing if this one committed."
        ),
        None => "Rerunning is safe for upsert semantics: if this one committed, a rerun adds a second copy of the same rows, which changes no result unless a row ingested since has the same key and comparison value (the tie then goes to the rerun's copy). Pass `--idempotency-key` to make reruns exact no-ops.".to_string(),
    };
    IngestError::OutcomeUnknown {
        table: table.to_string(),
        names: names.join(", "),
        rerun,
        source: Box::new(source),
    }
}

/// What undoing a failed ingest needs.
struct Undo<'a> {
    catalog: &'a Catalog,
    store: &'a Store,
    lease: &'a ReservationLease,
    table: &'a str,
    reserved: &'a [(u32, i64)],
}

impl Undo<'_> {
    /// Only on a definite "no": uploads are deleted and reservations released (a failure here is
    /// only logged: reservations expire with their lease and gc sweeps orphan objects anyway).
    async fn give_up(&self, written: &[NewSegment]) {
        discard_uploads(self.store, written).await;
        if let Err(err) = self
            .catalog
            .release_sequences(self.lease, self.table, self.reserved)
            .await
        {
            tracing::warn!(table = %self.table, error = %err, "could not release sequence reservations; they expire with their lease");
        }
    }
}

/// Renews the ingest's reservations every third of their lease until dropped.
struct Renewer(tokio::task::JoinHandle<()>);

impl Renewer {
    fn start(catalog: Catalog, lease: ReservationLease) -> Renewer {
        Renewer(tokio::spawn(async move {
            loop {
                tokio::time::sleep(lease.lease / 3).await;
                if let Err(err) = catalog.renew_reservations(&lease).await {
                    tracing::warn!(error = %err, "cannot renew sequence reservations; they expire unless a renewal gets through");
                }
            }
        }))
    }
}

impl Drop for Renewer {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn join_next(
    tasks: &mut JoinSet<anyhow::Result<NewSegment>>,
) -> Option<anyhow::Result<NewSegment>> {
    let joined = tasks.join_next().await?;
    Some(joined.unwrap_or_else(|err| Err(anyhow::anyhow!("segment writer panicked: {err}"))))
}

async fn write_and_upload(
    table: &TableConfig,
    store: &Store,
    staging_dir: &std::path::Path,
    write: &WriteOptions,
    cut: Cut,
    sequence: i64,
) -> anyhow::Result<NewSegment> {
    let name = new_segment_name(&table.name, cut.partition, sequence);
    let local = staging_dir.join(format!("{name}.parquet"));
    let written = {
        let (table, local, write) = (table.clone(), local.clone(), write.clone());
        tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            let mut writer =
                SegmentWriter::create(&local, &table, cut.partition, sequence, &write)?;
            for batch in &cut.batches {
                writer.write(batch)?;
            }
            Ok(writer.finish()?)
        })
        .await??
    };
    let segment = NewSegment::for_written(&table.name, cut.partition, sequence, name, &written);
    store.put_file_once(&segment.object_key, &local).await?;
    let _ = tokio::fs::remove_file(&local).await;
    Ok(segment)
}

/// Best effort: objects of a failed ingest are deleted now; what a crash leaves, GC collects.
async fn discard_uploads(store: &Store, written: &[NewSegment]) {
    for segment in written {
        if let Err(err) = store.delete(&segment.object_key).await {
            tracing::warn!(object = %segment.object_key, error = %err, "could not delete the upload of a failed ingest; gc will collect it");
        }
    }
}

fn progress_bar(enabled: bool, expected_rows: u64) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    let bar = if expected_rows > 0 {
        ProgressBar::new(expected_rows)
    } else {
        ProgressBar::new_spinner()
    };
    bar.set_draw_target(ProgressDrawTarget::stderr());
    let template = if expected_rows > 0 {
        "{spinner} ingest [{elapsed_precise}] {wide_bar} {human_pos}/{human_len} rows ({per_sec}, eta {eta})"
    } else {
        "{spinner} ingest [{elapsed_precise}] {human_pos} rows ({per_sec})"
    };
    bar.set_style(ProgressStyle::with_template(template).expect("valid progress template"));
    bar
}
