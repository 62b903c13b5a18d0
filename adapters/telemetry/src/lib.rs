//! `portunus-telemetry`: the structured event log (one flat JSON object per line on stderr)
//! and the Prometheus exposition of the control plane's counters and latencies, produced through
//! OpenTelemetry.
//!
//! Invariant: events carry a stable dotted `event` name and never a secret; metric names and
//! labels are exactly the documented ones.
#![forbid(unsafe_code)]

pub mod clock;
pub mod log;
pub mod metrics;

/// Git revision of this build, or "unknown".
pub const GIT_REVISION: &str = env!("PORTUNUS_GIT_REVISION");

/// The `--version` text shared by every binary: version, git revision, protocol version.
pub fn version_text(package_version: &str) -> String {
    format!("{package_version} (git {GIT_REVISION}, protocol {})", portunus_core::PROTOCOL_VERSION)
}
