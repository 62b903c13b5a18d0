//! Rate limits as the data plane enforces them: the clock every limiter runs on, and the
//! waiting side of a bandwidth cap (a TCP direction sleeps until its caps grant bytes).
//!
//! The caps themselves, their buckets and the owner-then-rule composition live in
//! [`portunus_core::ratelimit`]; a rule gets its [`LimitPath`] through
//! [`RuleRuntime::set_limits`](crate::RuleRuntime::set_limits).
//!
//! Invariants:
//! - **one clock**: every [`SharedScope`](portunus_core::ratelimit::SharedScope) handed to the
//!   data plane is created and updated with [`now`], the same monotonic origin the relays and
//!   flows pass to `admit`, `take` and `try_take`. A scope created with another origin would
//!   see time jump and refill (or stall) by the difference;
//! - a connection reads its rule's path once, when it is accepted (a UDP flow when it opens):
//!   connections of a rule without caps never lock a scope, and a connection without a
//!   bandwidth cap at that moment keeps the fast path for its life. Caps changed in place
//!   ([`SharedScope::update`](portunus_core::ratelimit::SharedScope::update)) reach open
//!   connections at their next chunk;
//! - a TCP direction over its bandwidth cap waits, it is never closed for it.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use portunus_core::ratelimit::{Direction, LimitPath, Take};

/// Monotonic time since this process's origin (fixed by the first call): the `now` every
/// rate limiter of the data plane takes. Create and update the scopes you give
/// [`RuleRuntime::set_limits`](crate::RuleRuntime::set_limits) with it.
///
/// ```
/// use std::sync::Arc;
/// use portunus_core::ratelimit::{LimitPath, RateLimits, SharedScope};
/// use portunus_dataplane::limits;
///
/// let caps = RateLimits { concurrent_connections: Some(1), ..Default::default() }.validate()?;
/// let scope = Arc::new(SharedScope::new(caps, limits::now()));
/// let path = LimitPath::new(None, Some(scope));
/// let first = path.admit(limits::now()).expect("room for one");
/// assert!(path.admit(limits::now()).is_err());
/// drop(first);
/// assert!(limits::now() <= limits::now(), "monotonic");
/// # Ok::<(), portunus_core::Failure>(())
/// ```
pub fn now() -> Duration {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    ORIGIN.get_or_init(Instant::now).elapsed()
}

/// One connection's bandwidth caps, as its copy loop asks them. Present only when the
/// connection's path capped bandwidth when it was accepted.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Throttle<'a> {
    pub(crate) path: &'a LimitPath,
    /// Counts each wait for a refill (the port's `rate_limit_throttled`).
    pub(crate) waits: &'a AtomicU64,
}

impl Throttle<'_> {
    /// How many of the `want` bytes (at least 1 when `want` is) `direction` may write now:
    /// sleeps on the tokio timer, counting each wait, until the caps grant some.
    pub(crate) async fn grant(&self, direction: Direction, want: usize) -> usize {
        loop {
            match self.path.take(direction, want as u64, now()) {
                // Never more than asked for; the conversion cannot fail for that reason.
                Take::Granted(n) => return usize::try_from(n).unwrap_or(want).min(want),
                Take::Wait(wait) => {
                    self.waits.fetch_add(1, Relaxed);
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}
