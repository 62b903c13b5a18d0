//! The token bucket: integer arithmetic in nanotokens, time passed in.
//!
//! Invariants: `level <= burst × 10⁹` nanotokens after every call; `last` never moves
//! backwards, so a caller whose `now` is older than another caller's (two threads racing to
//! the lock) gets no refill rather than a negative one; no operation panics or overflows,
//! whatever the rate, burst or gap between calls.

use std::time::Duration;

use super::Rate;

/// Nanotokens in a token (and nanoseconds in a second): a rate of `r` tokens per second adds
/// exactly `r` nanotokens per nanosecond.
const NANOS_PER_TOKEN: u128 = 1_000_000_000;

/// A partial grant is never smaller than this fraction of a second's rate (unless the request
/// or the burst is smaller), so a copy loop is not woken once per byte.
const SLICE_DIVISOR: u64 = 100;

/// The answer to a [`TokenBucket::take`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a grant is taken from the bucket whether or not it is used"]
pub enum Take {
    /// This many tokens were taken: at least one, at most what was asked for.
    Granted(u64),
    /// Nothing was taken; ask again after this long (never zero).
    Wait(Duration),
}

/// A token bucket: fills at [`Rate::per_sec`] up to [`Rate::burst`] tokens.
///
/// A token is a byte for bandwidth caps and a connection (or flow) for connection rates.
///
/// ```
/// use std::time::Duration;
/// use portunus_core::ratelimit::{Rate, Take, TokenBucket};
///
/// let secs = Duration::from_secs;
/// // 1000 bytes per second, bucket of 2000 bytes, full at t = 0.
/// let mut bucket = TokenBucket::full(Rate::new(1_000, 2_000).unwrap(), secs(0));
/// assert_eq!(bucket.take(5_000, secs(0)), Take::Granted(2_000), "a partial grant");
/// assert_eq!(bucket.take(500, secs(0)), Take::Wait(Duration::from_millis(10)), "10 ms of rate");
/// assert_eq!(bucket.take(500, secs(1)), Take::Granted(500));
/// assert!(!bucket.try_take(501, secs(1)), "all or nothing");
/// assert!(bucket.try_take(500, secs(1)));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenBucket {
    rate: Rate,
    /// Nanotokens, at most `rate.burst() × NANOS_PER_TOKEN`.
    level: u128,
    /// The latest `now` the level was brought up to.
    last: Duration,
}

impl TokenBucket {
    /// A bucket holding a full burst at `now`, as a freshly bound rule or cap starts.
    pub fn full(rate: Rate, now: Duration) -> Self {
        TokenBucket { rate, level: capacity(rate), last: now }
    }

    /// An empty bucket at `now`: the first token exists one token's time later.
    pub fn empty(rate: Rate, now: Duration) -> Self {
        TokenBucket { rate, level: 0, last: now }
    }

    /// The rate and burst in force.
    pub const fn rate(&self) -> Rate {
        self.rate
    }

    /// Whole tokens available at `now`, without taking any.
    pub fn level(&self, now: Duration) -> u64 {
        whole(self.level_at(now))
    }

    /// Takes up to `want` tokens at `now`: as many as exist, if that is at least the smaller of
    /// `want` and a slice of the rate (1/100 s, at least one token, at most the burst);
    /// otherwise takes nothing and says how long until that much exists. `want == 0` is
    /// granted at once. For bandwidth: a copy loop writes what was granted and waits for the
    /// rest, so a direction over budget is slowed, never refused.
    pub fn take(&mut self, want: u64, now: Duration) -> Take {
        take_all(&mut [self], want, now)
    }

    /// Takes exactly `n` tokens at `now` if they exist, else nothing; `n == 0` always succeeds
    /// and `n` above the burst never does. For connection rates and UDP datagrams, which
    /// are refused (dropped) when over budget.
    #[must_use]
    pub fn try_take(&mut self, n: u64, now: Duration) -> bool {
        try_take_all(&mut [self], n, now)
    }

    /// Changes the rate and burst at `now` (a hot update). Tokens earned until `now` count at
    /// the old rate; the level is kept, clamped to the new burst, and grows at the new rate
    /// from `now` on.
    pub fn set_rate(&mut self, rate: Rate, now: Duration) {
        self.refill(now);
        self.rate = rate;
        self.level = self.level.min(capacity(rate));
    }

    /// The level in nanotokens the bucket would have at `now`.
    fn level_at(&self, now: Duration) -> u128 {
        let Some(elapsed) = now.checked_sub(self.last) else { return self.level };
        let earned = u128::from(self.rate.per_sec()).saturating_mul(elapsed.as_nanos());
        self.level.saturating_add(earned).min(capacity(self.rate))
    }

    fn refill(&mut self, now: Duration) {
        self.level = self.level_at(now);
        self.last = self.last.max(now);
    }

    fn slice(&self) -> u64 {
        (self.rate.per_sec() / SLICE_DIVISOR).clamp(1, self.rate.burst().max(1))
    }

    /// How long after `now` until the bucket holds `tokens`, given that it was refilled to
    /// `max(now, last)`. Rounded up, so waiting exactly this long is always enough.
    fn wait_for(&self, tokens: u64, now: Duration) -> Duration {
        let deficit = (u128::from(tokens) * NANOS_PER_TOKEN).saturating_sub(self.level);
        if deficit == 0 {
            return Duration::ZERO;
        }
        // A `Rate` is never zero; `max(1)` keeps the division total anyway.
        let nanos = deficit.div_ceil(u128::from(self.rate.per_sec().max(1)));
        let behind = self.last.saturating_sub(now);
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX)).saturating_add(behind)
    }

    /// Removes `tokens`; callers checked they exist. Saturating, so the level can't wrap.
    fn remove(&mut self, tokens: u64) {
        self.level = self.level.saturating_sub(u128::from(tokens) * NANOS_PER_TOKEN);
    }
}

/// A take across several buckets (an owner envelope's and a rule's): grants the same amount
/// from every bucket or takes from none, by [`TokenBucket::take`]'s rule applied to the
/// smallest level and the smallest slice. A `Wait` is the longest any bucket needs. An
/// empty slice of buckets grants `want` at once.
pub fn take_all(buckets: &mut [&mut TokenBucket], want: u64, now: Duration) -> Take {
    if want == 0 || buckets.is_empty() {
        return Take::Granted(want);
    }
    for bucket in buckets.iter_mut() {
        bucket.refill(now);
    }
    let available = buckets.iter().map(|b| whole(b.level)).min().unwrap_or(want).min(want);
    let threshold = buckets.iter().map(|b| b.slice()).min().unwrap_or(1).min(want);
    if available >= threshold {
        for bucket in buckets.iter_mut() {
            bucket.remove(available);
        }
        return Take::Granted(available);
    }
    // Every bucket's slice is at most its burst, so `threshold` is reachable by all of them
    // and the wait is finite; and some bucket lacks it, so the wait is not zero.
    let wait = buckets.iter().map(|b| b.wait_for(threshold, now)).max().unwrap_or(Duration::ZERO);
    Take::Wait(wait)
}

/// An all-or-nothing take of `n` tokens from every bucket: true when each held `n` at `now`
/// (and now holds `n` fewer), false when any lacked them (and none changed but for refill).
/// An empty slice of buckets always succeeds.
#[must_use]
pub fn try_take_all(buckets: &mut [&mut TokenBucket], n: u64, now: Duration) -> bool {
    for bucket in buckets.iter_mut() {
        bucket.refill(now);
    }
    if buckets.iter().any(|b| whole(b.level) < n) {
        return false;
    }
    for bucket in buckets.iter_mut() {
        bucket.remove(n);
    }
    true
}

fn capacity(rate: Rate) -> u128 {
    u128::from(rate.burst()) * NANOS_PER_TOKEN
}

/// Whole tokens in `nanotokens`; a level never exceeds a `u64` burst, so this saturation is
/// never reached.
fn whole(nanotokens: u128) -> u64 {
    u64::try_from(nanotokens / NANOS_PER_TOKEN).unwrap_or(u64::MAX)
}
