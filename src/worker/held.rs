//! A job a worker holds: claimed and leased to it, waiting for a slot (prefetched) or running;
//! how it is told to stop, and the one-way move from waiting to started or given up.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

/// Why a running job was told to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum StopReason {
    Cancelled,
    LeaseLost,
    Shutdown,
}

/// Where a held job is: waiting for a slot (prefetched), started, or given up before it started.
const WAITING: u8 = 0;
const STARTED: u8 = 1;
const GIVEN_UP: u8 = 2;

/// A job this process holds: claimed, leased to it, waiting for a slot or running.
pub(super) struct RunningJob {
    pub attempt: i32,
    pub cancel: CancellationToken,
    reason: Mutex<Option<StopReason>>,
    phase: AtomicU8,
}

impl RunningJob {
    /// A job just claimed: waiting for a slot.
    pub fn held(attempt: i32) -> Arc<RunningJob> {
        Arc::new(RunningJob {
            attempt,
            cancel: CancellationToken::new(),
            reason: Mutex::new(None),
            phase: AtomicU8::new(WAITING),
        })
    }

    pub fn stop(&self, reason: StopReason) {
        self.reason
            .lock()
            .expect("reason lock")
            .get_or_insert(reason);
        self.cancel.cancel();
    }

    /// Why the job was told to stop, if it was.
    pub fn stopped_for(&self) -> Option<StopReason> {
        *self.reason.lock().expect("reason lock")
    }

    /// Why the job was stopped (a stop without a recorded reason is a shutdown).
    pub fn stop_reason(&self) -> StopReason {
        self.stopped_for().unwrap_or(StopReason::Shutdown)
    }

    /// Moves a waiting job to started; false if it was given up first (or stopped).
    pub fn start(&self) -> bool {
        !self.cancel.is_cancelled()
            && self
                .phase
                .compare_exchange(WAITING, STARTED, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
    }

    /// Stops a job that has not started, for `reason`; false if it already started.
    pub fn give_up_waiting(&self, reason: StopReason) -> bool {
        let given_up = self
            .phase
            .compare_exchange(WAITING, GIVEN_UP, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if given_up {
            self.stop(reason);
        }
        given_up
    }
}
