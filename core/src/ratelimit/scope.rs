//! One scope's limiter (a rule, or one owner on one client) and the thread-safe path a
//! connection takes through its owner's scope and then its rule's.
//!
//! Why a `Mutex` and not atomics: a grant refills and debits a bucket (a 128-bit level and a
//! timestamp) as one step, debits the owner's and the rule's buckets together or neither, and
//! a hot update changes rate, burst and level together. Atomics would need a packed
//! compare-and-swap per bucket and still could not commit two buckets at once. The lock is
//! held for a few integer operations, and the data plane asks once per copy chunk (tens of
//! KiB), per datagram or per new connection, so it is seldom contended.
//!
//! Invariants: every path locks the owner's scope before the rule's, and an owner's scope is
//! never some other path's rule scope, so two paths never deadlock; a path never holds the
//! same scope twice (given one scope as both, it keeps it once); a permit releases each scope under its own lock, one at a time. A scope is updated
//! in place ([`SharedScope::update`]), never replaced, so permits of open connections keep
//! counting against the scope that admitted them.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use super::bucket::{Take, TokenBucket, take_all, try_take_all};
use super::gauge::ConcurrencyGauge;
use super::{Caps, Direction, Rate};

/// Which scope refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// The owner's envelope on this client.
    Owner,
    /// The rule's own caps.
    Rule,
}

impl Scope {
    /// `"owner"` or `"rule"`, for logs and metric labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            Scope::Owner => "owner",
            Scope::Rule => "rule",
        }
    }
}

/// Which cap refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefusedCap {
    /// `new_connections_per_sec`: no token for a new connection (or flow) now.
    NewConnectionRate,
    /// `concurrent_connections`: the scope has as many open as it may.
    ConcurrentConnections,
}

impl RefusedCap {
    /// The field name of the cap, for logs and metric labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            RefusedCap::NewConnectionRate => "new_connections_per_sec",
            RefusedCap::ConcurrentConnections => "concurrent_connections",
        }
    }
}

/// Why a new connection (or UDP flow) was refused: the first cap that said no, the owner's
/// caps checked before the rule's and, within a scope, concurrency before rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Refusal {
    /// The scope whose cap refused.
    pub scope: Scope,
    /// The cap that refused.
    pub cap: RefusedCap,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the {} cap {} is reached", self.scope.as_str(), self.cap.as_str())
    }
}

/// The live state of one scope's caps: a bucket per rate cap and the concurrency gauge.
/// Sans-io and single-threaded; [`SharedScope`] puts it behind a lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeLimiter {
    caps: Caps,
    bandwidth_in: Option<TokenBucket>,
    bandwidth_out: Option<TokenBucket>,
    new_connections: Option<TokenBucket>,
    gauge: ConcurrencyGauge,
}

impl ScopeLimiter {
    /// A limiter enforcing `caps` from `now`, its buckets full and nothing open.
    pub fn new(caps: Caps, now: Duration) -> Self {
        let bucket = |rate: Option<Rate>| rate.map(|rate| TokenBucket::full(rate, now));
        ScopeLimiter {
            caps,
            bandwidth_in: bucket(caps.bandwidth(Direction::In)),
            bandwidth_out: bucket(caps.bandwidth(Direction::Out)),
            new_connections: bucket(caps.new_connections()),
            gauge: ConcurrencyGauge::new(caps.concurrent_connections()),
        }
    }

    /// The caps in force.
    pub const fn caps(&self) -> Caps {
        self.caps
    }

    /// Enforces `caps` from `now` on (a hot update): a bucket whose cap stays keeps its level,
    /// clamped to the new burst; a newly capped rate starts with a full bucket; a lifted cap
    /// drops its bucket; the open count is kept whatever the caps. Repeating an update with
    /// the same caps changes nothing but the refill.
    pub fn update(&mut self, caps: Caps, now: Duration) {
        rebucket(&mut self.bandwidth_in, caps.bandwidth(Direction::In), now);
        rebucket(&mut self.bandwidth_out, caps.bandwidth(Direction::Out), now);
        rebucket(&mut self.new_connections, caps.new_connections(), now);
        self.gauge.set_limit(caps.concurrent_connections());
        self.caps = caps;
    }

    /// The bandwidth bucket of `direction`, if that direction is capped.
    pub fn bandwidth_mut(&mut self, direction: Direction) -> Option<&mut TokenBucket> {
        match direction {
            Direction::In => self.bandwidth_in.as_mut(),
            Direction::Out => self.bandwidth_out.as_mut(),
        }
    }

    /// The bandwidth bucket of `direction`, if that direction is capped.
    pub fn bandwidth(&self, direction: Direction) -> Option<&TokenBucket> {
        match direction {
            Direction::In => self.bandwidth_in.as_ref(),
            Direction::Out => self.bandwidth_out.as_ref(),
        }
    }

    /// The open-connection gauge (counting even when concurrency is uncapped).
    pub const fn gauge(&self) -> &ConcurrencyGauge {
        &self.gauge
    }

    /// Whether a new connection would be admitted at `now`, without admitting it.
    pub fn check_admit(&self, now: Duration) -> Result<(), RefusedCap> {
        if !self.gauge.has_room() {
            return Err(RefusedCap::ConcurrentConnections);
        }
        if self.new_connections.as_ref().is_some_and(|bucket| bucket.level(now) == 0) {
            return Err(RefusedCap::NewConnectionRate);
        }
        Ok(())
    }

    /// Admits a new connection at `now` (one rate token, one open slot) or refuses it, taking
    /// nothing. Pair each admission with one [`ScopeLimiter::release`].
    pub fn try_admit(&mut self, now: Duration) -> Result<(), RefusedCap> {
        self.check_admit(now)?;
        self.commit_admit(now);
        Ok(())
    }

    /// Counts one admitted connection closed. Extra releases do nothing.
    pub fn release(&mut self) {
        self.gauge.release();
    }

    /// Takes the slot and the token that `check_admit` just found at this `now`, under the
    /// same borrow, so neither can fail; their outcomes carry no news.
    fn commit_admit(&mut self, now: Duration) {
        let _slot = self.gauge.try_acquire();
        let _token = self.new_connections.as_mut().is_none_or(|bucket| bucket.try_take(1, now));
    }
}

fn rebucket(slot: &mut Option<TokenBucket>, rate: Option<Rate>, now: Duration) {
    match (slot.as_mut(), rate) {
        (Some(bucket), Some(rate)) => bucket.set_rate(rate, now),
        (None, Some(rate)) => *slot = Some(TokenBucket::full(rate, now)),
        (_, None) => *slot = None,
    }
}

/// A [`ScopeLimiter`] shared by every connection of a rule, or of an owner's rules on one
/// client, across data-plane threads.
#[derive(Debug)]
pub struct SharedScope {
    limiter: Mutex<ScopeLimiter>,
}

impl SharedScope {
    /// A scope enforcing `caps` from `now`.
    pub fn new(caps: Caps, now: Duration) -> Self {
        SharedScope { limiter: Mutex::new(ScopeLimiter::new(caps, now)) }
    }

    /// A hot update, as [`ScopeLimiter::update`]. Lift every cap with `Caps::default()` rather
    /// than dropping the scope, so open connections stay counted.
    pub fn update(&self, caps: Caps, now: Duration) {
        self.lock().update(caps, now);
    }

    /// The caps in force.
    pub fn caps(&self) -> Caps {
        self.lock().caps()
    }

    /// Connections (flows) this scope admitted that are still open.
    pub fn open_connections(&self) -> u32 {
        self.lock().gauge().open()
    }

    /// Whole tokens in the bandwidth bucket of `direction` at `now`; `None` when uncapped.
    pub fn bandwidth_level(&self, direction: Direction, now: Duration) -> Option<u64> {
        self.lock().bandwidth(direction).map(|bucket| bucket.level(now))
    }

    fn lock(&self) -> MutexGuard<'_, ScopeLimiter> {
        // No limiter method panics and each leaves the state consistent, so a lock poisoned by
        // a panic elsewhere still guards a valid limiter.
        self.limiter.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The scopes one connection passes, the owner's envelope first, then the rule's caps. Cheap
/// to clone (two `Arc`s); the default passes no scope and limits nothing.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use portunus_core::ratelimit::{Direction, LimitPath, RateLimits, SharedScope, Take};
///
/// let now = Duration::ZERO;
/// let caps = |limits: RateLimits| limits.validate().unwrap();
/// let owner = Arc::new(SharedScope::new(
///     caps(RateLimits { bandwidth_in_bps: Some(100_000), ..Default::default() }),
///     now,
/// ));
/// let rule = Arc::new(SharedScope::new(
///     caps(RateLimits { bandwidth_in_bps: Some(1_000_000), concurrent_connections: Some(1), ..Default::default() }),
///     now,
/// ));
/// let path = LimitPath::new(Some(owner), Some(rule));
///
/// let permit = path.admit(now).unwrap();
/// assert!(path.admit(now).is_err(), "the rule allows one connection at a time");
/// // The owner's 100 kB bucket binds before the rule's 1 MB one.
/// assert_eq!(path.take(Direction::In, 1_000_000, now), Take::Granted(100_000));
/// assert_eq!(path.take(Direction::Out, 1_000_000, now), Take::Granted(1_000_000), "out is uncapped");
/// drop(permit);
/// assert!(path.admit(now).is_ok());
/// ```
#[derive(Debug, Clone, Default)]
pub struct LimitPath {
    owner: Option<Arc<SharedScope>>,
    rule: Option<Arc<SharedScope>>,
}

impl LimitPath {
    /// The path through `owner` (if the owner has an envelope on this client) and `rule` (if
    /// the rule has caps). The same scope given twice counts once.
    pub fn new(owner: Option<Arc<SharedScope>>, rule: Option<Arc<SharedScope>>) -> Self {
        let owner = match (&owner, &rule) {
            (Some(o), Some(r)) if Arc::ptr_eq(o, r) => None,
            _ => owner,
        };
        LimitPath { owner, rule }
    }

    /// The owner's scope, if any.
    pub fn owner(&self) -> Option<&Arc<SharedScope>> {
        self.owner.as_ref()
    }

    /// The rule's scope, if any.
    pub fn rule(&self) -> Option<&Arc<SharedScope>> {
        self.rule.as_ref()
    }

    /// True when a scope caps bandwidth in some direction now: the connection must use the
    /// userspace copy, not splice.
    pub fn has_bandwidth_cap(&self) -> bool {
        self.scopes().any(|scope| scope.caps().has_bandwidth_cap())
    }

    /// Takes up to `want` bytes of `direction` from every capped scope at once, by
    /// [`take_all`]'s rule: a TCP copy loop writes what was granted and sleeps on `Wait`.
    /// Granted in full when no scope caps the direction.
    pub fn take(&self, direction: Direction, want: u64, now: Duration) -> Take {
        self.with_buckets(direction, |buckets| take_all(buckets, want, now))
    }

    /// Takes exactly `n` bytes of `direction` from every capped scope, or nothing: false
    /// means the UDP datagram of `n` bytes is dropped.
    #[must_use]
    pub fn try_take(&self, direction: Direction, n: u64, now: Duration) -> bool {
        self.with_buckets(direction, |buckets| try_take_all(buckets, n, now))
    }

    /// Admits a new connection (or UDP flow) at `now` if every scope has room and a rate
    /// token, taking a slot and a token from each; otherwise takes nothing and names the
    /// first cap that refused. The permit holds the slots until it is dropped.
    pub fn admit(&self, now: Duration) -> Result<Permit, Refusal> {
        let mut owner = self.owner.as_deref().map(SharedScope::lock);
        let mut rule = self.rule.as_deref().map(SharedScope::lock);
        for (scope, limiter) in [(Scope::Owner, owner.as_deref()), (Scope::Rule, rule.as_deref())] {
            if let Some(limiter) = limiter {
                limiter.check_admit(now).map_err(|cap| Refusal { scope, cap })?;
            }
        }
        // Both scopes passed at this `now` and their locks are still held: commit both.
        for limiter in [owner.as_deref_mut(), rule.as_deref_mut()].into_iter().flatten() {
            limiter.commit_admit(now);
        }
        Ok(Permit { path: self.clone() })
    }

    fn scopes(&self) -> impl Iterator<Item = &SharedScope> {
        [self.owner.as_deref(), self.rule.as_deref()].into_iter().flatten()
    }

    /// Locks the owner's scope, then the rule's, and hands `f` the capped buckets of
    /// `direction` in that order.
    fn with_buckets<R>(&self, direction: Direction, f: impl FnOnce(&mut [&mut TokenBucket]) -> R) -> R {
        let mut owner = self.owner.as_deref().map(SharedScope::lock);
        let mut rule = self.rule.as_deref().map(SharedScope::lock);
        let owner_bucket = owner.as_deref_mut().and_then(|limiter| limiter.bandwidth_mut(direction));
        let rule_bucket = rule.as_deref_mut().and_then(|limiter| limiter.bandwidth_mut(direction));
        match (owner_bucket, rule_bucket) {
            (Some(first), Some(second)) => f(&mut [first, second][..]),
            (Some(only), None) | (None, Some(only)) => f(&mut [only][..]),
            (None, None) => f(&mut Vec::new()),
        }
    }
}

/// One admitted connection's slots in its scopes' concurrency gauges, released on drop.
#[derive(Debug)]
#[must_use = "dropping the permit releases the connection's slot at once"]
pub struct Permit {
    path: LimitPath,
}

impl Drop for Permit {
    fn drop(&mut self) {
        // One lock at a time: a release needs no other scope.
        for scope in self.path.scopes() {
            scope.lock().release();
        }
    }
}
