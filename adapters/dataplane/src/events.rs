//! Helpers that keep log events from flooding: a per-rule rate limit and a once-flag.
//!
//! Event names are a contract (`docs/troubleshooting.md`); they are written out literally at
//! each `tracing` call so a grep for the name finds the emitter.
//!
//! Invariant: neither helper takes a lock; a lost race at worst emits nothing extra.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use portunus_core::ids::RuleId;

/// Allows one event per `period`.
#[derive(Debug)]
pub(crate) struct RateLimit {
    epoch: Instant,
    period: Duration,
    /// Milliseconds since `epoch` before which nothing more is allowed.
    next_allowed_ms: AtomicU64,
}

impl RateLimit {
    pub(crate) fn new(period: Duration) -> Self {
        RateLimit { epoch: Instant::now(), period, next_allowed_ms: AtomicU64::new(0) }
    }

    /// True at most once per period; the caller emits its event only then.
    pub(crate) fn allow(&self) -> bool {
        let now_ms = millis(self.epoch.elapsed());
        let next = self.next_allowed_ms.load(Relaxed);
        now_ms >= next
            && self
                .next_allowed_ms
                .compare_exchange(next, now_ms.saturating_add(millis(self.period)), Relaxed, Relaxed)
                .is_ok()
    }
}

/// True the first time only.
#[derive(Debug, Default)]
pub(crate) struct Once(AtomicBool);

impl Once {
    /// True exactly once over the flag's life. The load first keeps the common "already
    /// done" case free of a read-modify-write.
    pub(crate) fn first(&self) -> bool {
        !self.0.load(Relaxed) && !self.0.swap(true, Relaxed)
    }
}

/// A rule id in events, or `-` for a stand-alone relay that belongs to no rule.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RuleLabel(pub(crate) Option<RuleId>);

impl fmt::Display for RuleLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(id) => write!(f, "{id}"),
            None => f.write_str("-"),
        }
    }
}

pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests;
