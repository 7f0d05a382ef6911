//! Liveness and the shutdown flag, shared by a process's loops and its HTTP listener.
//!
//! Each long-running loop (a worker's claim loop and heartbeat, the scheduler's loop) registers
//! with the longest gap it may leave between turns and reports every turn; `/healthz` fails when
//! one has not turned within its gap (a hung loop is what a liveness probe restarts for). Once
//! shutdown begins the process stops being ready at once, so a load balancer or the pool stops
//! counting on it while running jobs finish.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
pub struct Health {
    loops: Mutex<BTreeMap<&'static str, LoopState>>,
    shutting_down: AtomicBool,
}

#[derive(Debug, Clone, Copy)]
struct LoopState {
    last_turn: Instant,
    max_gap: Duration,
}

/// A loop that has not turned in time.
#[derive(Debug, Clone, PartialEq)]
pub struct StaleLoop {
    pub name: &'static str,
    pub since: Duration,
    pub max_gap: Duration,
}

impl Health {
    pub fn new() -> Arc<Health> {
        Arc::new(Health::default())
    }

    /// Declares a loop that must turn at least every `max_gap`; counts as turning now.
    pub fn register(&self, name: &'static str, max_gap: Duration) {
        self.loops.lock().expect("health lock").insert(
            name,
            LoopState {
                last_turn: Instant::now(),
                max_gap,
            },
        );
    }

    /// The loop `name` turned.
    pub fn turned(&self, name: &'static str) {
        if let Some(state) = self.loops.lock().expect("health lock").get_mut(name) {
            state.last_turn = Instant::now();
        }
    }

    /// A loop that ended on purpose (it is no longer watched).
    pub fn finished(&self, name: &'static str) {
        self.loops.lock().expect("health lock").remove(name);
    }

    /// Loops that have not turned within their gap.
    pub fn stale(&self) -> Vec<StaleLoop> {
        let now = Instant::now();
        self.loops
            .lock()
            .expect("health lock")
            .iter()
            .filter_map(|(&name, state)| {
                let since = now.duration_since(state.last_turn);
                (since > state.max_gap).then_some(StaleLoop {
                    name,
                    since,
                    max_gap: state.max_gap,
                })
            })
            .collect()
    }

    /// The names of the loops watched.
    pub fn loop_names(&self) -> Vec<&'static str> {
        self.loops
            .lock()
            .expect("health lock")
            .keys()
            .copied()
            .collect()
    }

    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loop_that_stops_turning_goes_stale() {
        let health = Health::new();
        health.register("claim", Duration::from_millis(20));
        assert!(health.stale().is_empty());
        std::thread::sleep(Duration::from_millis(40));
        let stale = health.stale();
        assert_eq!(stale.len(), 1);
        assert_eq!(stale[0].name, "claim");
        health.turned("claim");
        assert!(health.stale().is_empty());
        health.finished("claim");
        std::thread::sleep(Duration::from_millis(40));
        assert!(health.stale().is_empty());
        assert!(!health.is_shutting_down());
        health.begin_shutdown();
        assert!(health.is_shutting_down());
    }
}
