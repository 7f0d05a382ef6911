//! What a process tells the outside about itself: Prometheus metrics ([`metrics`]) and liveness
//! and readiness state ([`health`]). At the bottom of the crate so every layer can record; served
//! over HTTP by `service`.

pub mod health;
pub mod metrics;

pub use health::Health;
pub use metrics::metrics;
