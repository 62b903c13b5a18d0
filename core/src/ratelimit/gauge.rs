//! The concurrency gauge: how many connections (or UDP flows) are open, against a cap.
//!
//! Invariants: the open count never goes below zero (a release at zero does nothing) and an
//! acquire never lifts it above the cap; changing the cap keeps the count, so lowering it
//! closes nothing and only refuses new connections until enough have gone.

/// Open connections against an optional cap. The default is uncapped with nothing open.
///
/// The count is kept even without a cap, so a cap added later sees the connections that are
/// already open.
///
/// ```
/// use portunus_core::ratelimit::ConcurrencyGauge;
///
/// let mut gauge = ConcurrencyGauge::new(Some(2));
/// assert!(gauge.try_acquire() && gauge.try_acquire());
/// assert!(!gauge.try_acquire(), "at the cap");
/// gauge.set_limit(Some(1));
/// assert_eq!(gauge.open(), 2, "a lowered cap closes nothing");
/// gauge.release();
/// assert!(!gauge.try_acquire(), "still at the lowered cap");
/// gauge.release();
/// gauge.release();
/// assert_eq!(gauge.open(), 0, "never below zero");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConcurrencyGauge {
    limit: Option<u32>,
    open: u32,
}

impl ConcurrencyGauge {
    /// A gauge with nothing open; `None` means uncapped.
    pub const fn new(limit: Option<u32>) -> Self {
        ConcurrencyGauge { limit, open: 0 }
    }

    /// The cap in force.
    pub const fn limit(&self) -> Option<u32> {
        self.limit
    }

    /// Connections open now.
    pub const fn open(&self) -> u32 {
        self.open
    }

    /// True when one more connection would fit.
    pub fn has_room(&self) -> bool {
        self.open < self.limit.unwrap_or(u32::MAX)
    }

    /// Counts one more open connection if it fits; false (and nothing counted) otherwise.
    #[must_use]
    pub fn try_acquire(&mut self) -> bool {
        if !self.has_room() {
            return false;
        }
        // Cannot overflow: `has_room` means `open < limit <= u32::MAX`.
        self.open += 1;
        true
    }

    /// Counts one connection closed. A release with nothing open does nothing.
    pub fn release(&mut self) {
        self.open = self.open.saturating_sub(1);
    }

    /// Changes the cap, keeping the open count (a hot update).
    pub fn set_limit(&mut self, limit: Option<u32>) {
        self.limit = limit;
    }
}
