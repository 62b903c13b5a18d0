//! Rate limits per rule and per owner on a client: the caps an operator writes
//! ([`RateLimits`], [`OwnerEnvelope`]), their validated form ([`Caps`]), and the sans-io
//! machinery that enforces them ([`TokenBucket`], [`ConcurrencyGauge`], [`ScopeLimiter`]),
//! with a thread-safe wrapper for the data plane ([`SharedScope`], [`LimitPath`]).
//!
//! Units: bandwidth caps count **bytes** per second (the `bps` in `bandwidth_in_bps` is bytes,
//! not bits); connection rates count new connections (or new UDP flows) per second. `in` is the
//! direction from the connecting peer towards the target, `out` the replies back to the peer.
//!
//! Invariants a reader must not break:
//! - time only comes in as `now`, a monotonic [`Duration`](std::time::Duration) since an origin
//!   the caller fixes (the data plane uses its start); nothing here reads a clock;
//! - bucket arithmetic is integer only, in nanotokens (a token is 10⁹ nanotokens and a rate
//!   of `r` tokens per second adds exactly `r` nanotokens per nanosecond), so nothing drifts
//!   however long a bucket runs, and every product is saturating or fits in `u128`;
//! - a bucket's level is never negative and never above its burst; over any interval a
//!   bucket grants at most its level at the start plus `rate × elapsed`;
//! - a grant that spans several buckets (owner envelope and rule) takes from all of them or
//!   from none: a refusal by one never consumes from another;
//! - a concurrency gauge never counts below zero, and lowering a cap never closes anything: it
//!   only refuses new connections until enough have gone;
//! - a hot update keeps each bucket's level (clamped to the new burst) and the open count.

mod bucket;
mod gauge;
mod owner;
mod scope;

use serde::{Deserialize, Serialize};

use crate::error::{ErrorCode, Failure};

pub use bucket::{Take, TokenBucket, take_all, try_take_all};
pub use gauge::ConcurrencyGauge;
pub use owner::{OwnerCaps, OwnerCapsUpdate};
pub use scope::{LimitPath, Permit, Refusal, RefusedCap, Scope, ScopeLimiter, SharedScope};

/// Highest bandwidth cap, in bytes per second (1 TB/s). The arithmetic stays exact well past
/// it; the bound only catches typos.
pub const MAX_BANDWIDTH_BPS: u64 = 1_000_000_000_000;

/// Highest new-connection rate, per second.
pub const MAX_NEW_CONNECTIONS_PER_SEC: u32 = 1_000_000;

/// Smallest bandwidth burst, in bytes: one maximal UDP datagram (or a large TCP copy chunk)
/// always fits a bandwidth bucket, so a slow cap delays traffic but never starves it. It is
/// also the default burst of bandwidth caps below 64 KiB/s.
pub const MIN_BANDWIDTH_BURST_BYTES: u64 = 65_536;

/// A burst holds at most this many seconds of its rate.
pub const MAX_BURST_SECS: u64 = 60;

/// A burst holds at least `1 / MIN_BURST_DIVISOR` of a second of its rate (rounded up).
pub const MIN_BURST_DIVISOR: u64 = 10;

/// A direction of traffic through a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From the connecting peer towards the target (capped by `bandwidth_in_bps`).
    In,
    /// From the target back to the peer (capped by `bandwidth_out_bps`).
    Out,
}

/// A rate and its bucket size. Both are at least 1; the range policy for bursts lives in
/// validation, not here.
///
/// ```
/// use portunus_core::ratelimit::Rate;
///
/// let rate = Rate::new(10_000_000, 20_000_000).unwrap();
/// assert_eq!((rate.per_sec(), rate.burst()), (10_000_000, 20_000_000));
/// assert_eq!(Rate::new(0, 1), None);
/// assert_eq!(Rate::new(1, 0), None);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rate {
    per_sec: u64,
    burst: u64,
}

impl Rate {
    /// `per_sec` tokens per second into a bucket of `burst` tokens; `None` if either is zero.
    pub const fn new(per_sec: u64, burst: u64) -> Option<Rate> {
        if per_sec == 0 || burst == 0 { None } else { Some(Rate { per_sec, burst }) }
    }
    /// Tokens (bytes, or connections) added per second.
    pub const fn per_sec(self) -> u64 {
        self.per_sec
    }
    /// The bucket size: the most tokens that can be taken at once after an idle spell.
    pub const fn burst(self) -> u64 {
        self.burst
    }
}

/// Rate limits as an operator writes them: CLI flags, a JSON body, or a
/// `[rule.rate_limit]` table. Every field is optional; unknown fields are refused.
///
/// Bursts (bucket sizes) default to one second of their rate, except that a bandwidth burst
/// is never below [`MIN_BANDWIDTH_BURST_BYTES`]. An explicit burst must lie in
/// `[max(⌈rate / 10⌉, floor), max(60 × rate, floor)]`, where `floor` is
/// [`MIN_BANDWIDTH_BURST_BYTES`] for bandwidth and 1 for the connection rate.
///
/// An empty value means "no caps" on a rule (use it to clear them); an
/// [`OwnerEnvelope`] must set at least one cap.
///
/// ```
/// use portunus_core::ratelimit::{Direction, RateLimits};
/// use portunus_core::ErrorCode;
///
/// let limits: RateLimits = serde_json::from_str(
///     r#"{"bandwidth_in_bps": 10000000, "new_connections_per_sec": 100, "concurrent_connections": 50}"#,
/// )?;
/// let caps = limits.validate()?;
/// let inbound = caps.bandwidth(Direction::In).unwrap();
/// assert_eq!((inbound.per_sec(), inbound.burst()), (10_000_000, 10_000_000));
/// assert_eq!(caps.bandwidth(Direction::Out), None);
/// assert_eq!(caps.concurrent_connections(), Some(50));
///
/// let zero = RateLimits { bandwidth_out_bps: Some(0), ..RateLimits::default() };
/// assert_eq!(zero.validate().unwrap_err().code, ErrorCode::ZeroCap);
/// assert!(serde_json::from_str::<RateLimits>(r#"{"bandwidth_bps": 1}"#).is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RateLimits {
    /// Bytes (not bits) per second from the peer towards the target, over all connections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub bandwidth_in_bps: Option<u64>,
    /// Bucket size of `bandwidth_in_bps`, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub bandwidth_in_burst_bytes: Option<u64>,
    /// Bytes (not bits) per second from the target back to the peer, over all connections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub bandwidth_out_bps: Option<u64>,
    /// Bucket size of `bandwidth_out_bps`, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub bandwidth_out_burst_bytes: Option<u64>,
    /// New TCP connections (or new UDP flows) admitted per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub new_connections_per_sec: Option<u32>,
    /// Bucket size of `new_connections_per_sec`, in connections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub new_connections_burst: Option<u32>,
    /// TCP connections (or UDP flows) open at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub concurrent_connections: Option<u32>,
}

impl RateLimits {
    /// True when no field is set.
    pub fn is_empty(&self) -> bool {
        *self == RateLimits::default()
    }

    /// Checks every field, fills in default bursts, and returns the caps. The first problem
    /// found, in field order, is reported: [`ErrorCode::ZeroCap`],
    /// [`ErrorCode::OutOfRange`] (a rate above its maximum), [`ErrorCode::BurstWithoutRate`]
    /// or [`ErrorCode::BurstOutOfRange`].
    pub fn validate(&self) -> Result<Caps, Failure> {
        let bandwidth_in = checked_rate(RateField {
            rate_key: "bandwidth_in_bps",
            rate: self.bandwidth_in_bps,
            burst_key: "bandwidth_in_burst_bytes",
            burst: self.bandwidth_in_burst_bytes,
            max: MAX_BANDWIDTH_BPS,
            floor: MIN_BANDWIDTH_BURST_BYTES,
        })?;
        let bandwidth_out = checked_rate(RateField {
            rate_key: "bandwidth_out_bps",
            rate: self.bandwidth_out_bps,
            burst_key: "bandwidth_out_burst_bytes",
            burst: self.bandwidth_out_burst_bytes,
            max: MAX_BANDWIDTH_BPS,
            floor: MIN_BANDWIDTH_BURST_BYTES,
        })?;
        let new_connections = checked_rate(RateField {
            rate_key: "new_connections_per_sec",
            rate: self.new_connections_per_sec.map(u64::from),
            burst_key: "new_connections_burst",
            burst: self.new_connections_burst.map(u64::from),
            max: u64::from(MAX_NEW_CONNECTIONS_PER_SEC),
            floor: 1,
        })?;
        if self.concurrent_connections == Some(0) {
            return Err(zero_cap("concurrent_connections"));
        }
        Ok(Caps {
            bandwidth_in,
            bandwidth_out,
            new_connections,
            concurrent_connections: self.concurrent_connections,
        })
    }
}

/// The caps of one owner on one client, across all the owner's rules there. Same shape (and
/// the same JSON / TOML) as [`RateLimits`]; it binds before each rule's own caps.
///
/// ```
/// use portunus_core::ratelimit::OwnerEnvelope;
/// use portunus_core::ErrorCode;
///
/// let envelope: OwnerEnvelope = serde_json::from_str(r#"{"concurrent_connections": 200}"#)?;
/// assert_eq!(envelope.validate()?.concurrent_connections(), Some(200));
/// let empty: OwnerEnvelope = serde_json::from_str("{}")?;
/// assert_eq!(empty.validate().unwrap_err().code, ErrorCode::EmptyEnvelope);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(transparent)]
pub struct OwnerEnvelope(pub RateLimits);

impl OwnerEnvelope {
    /// Like [`RateLimits::validate`], and an envelope without any cap is
    /// [`ErrorCode::EmptyEnvelope`] (delete the envelope instead).
    pub fn validate(&self) -> Result<Caps, Failure> {
        if self.0.is_empty() {
            return Err(Failure::new(
                ErrorCode::EmptyEnvelope,
                "an owner envelope needs at least one cap; delete it to lift the owner's caps",
            ));
        }
        self.0.validate()
    }
}

/// Validated caps: what a rule or an owner envelope enforces. The default is no cap at all.
///
/// Serialised as its [`RateLimits`] form with every burst written out, and deserialised
/// through [`RateLimits::validate`], so a stored `Caps` is always a valid one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "RateLimits", try_from = "RateLimits")]
pub struct Caps {
    bandwidth_in: Option<Rate>,
    bandwidth_out: Option<Rate>,
    new_connections: Option<Rate>,
    concurrent_connections: Option<u32>,
}

impl Caps {
    /// The bandwidth cap of one direction, in bytes per second.
    pub const fn bandwidth(&self, direction: Direction) -> Option<Rate> {
        match direction {
            Direction::In => self.bandwidth_in,
            Direction::Out => self.bandwidth_out,
        }
    }
    /// The new-connection (new-flow) rate.
    pub const fn new_connections(&self) -> Option<Rate> {
        self.new_connections
    }
    /// The most connections (flows) open at once.
    pub const fn concurrent_connections(&self) -> Option<u32> {
        self.concurrent_connections
    }
    /// True when a bandwidth cap is set in either direction: such traffic must go through the
    /// userspace copy, which asks a bucket before each write.
    pub const fn has_bandwidth_cap(&self) -> bool {
        self.bandwidth_in.is_some() || self.bandwidth_out.is_some()
    }
    /// True when nothing is capped.
    pub const fn is_unlimited(&self) -> bool {
        self.bandwidth_in.is_none()
            && self.bandwidth_out.is_none()
            && self.new_connections.is_none()
            && self.concurrent_connections.is_none()
    }
    /// The input form that validates back to these caps, with every burst explicit.
    pub fn to_limits(&self) -> RateLimits {
        // Connection rates and bursts were validated from `u32` values; saturate rather than
        // trust that when converting back.
        let narrow = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
        RateLimits {
            bandwidth_in_bps: self.bandwidth_in.map(Rate::per_sec),
            bandwidth_in_burst_bytes: self.bandwidth_in.map(Rate::burst),
            bandwidth_out_bps: self.bandwidth_out.map(Rate::per_sec),
            bandwidth_out_burst_bytes: self.bandwidth_out.map(Rate::burst),
            new_connections_per_sec: self.new_connections.map(|r| narrow(r.per_sec())),
            new_connections_burst: self.new_connections.map(|r| narrow(r.burst())),
            concurrent_connections: self.concurrent_connections,
        }
    }
}

impl From<Caps> for RateLimits {
    fn from(caps: Caps) -> RateLimits {
        caps.to_limits()
    }
}

impl TryFrom<RateLimits> for Caps {
    type Error = Failure;

    fn try_from(limits: RateLimits) -> Result<Caps, Failure> {
        limits.validate()
    }
}

/// The inclusive range an explicit burst must lie in for `rate`, and the default burst.
///
/// ```
/// use portunus_core::ratelimit::{MIN_BANDWIDTH_BURST_BYTES, burst_range};
///
/// assert_eq!(burst_range(100, 1), (10..=6_000, 100));
/// assert_eq!(burst_range(5, 1), (1..=300, 5));
/// let floor = MIN_BANDWIDTH_BURST_BYTES;
/// assert_eq!(burst_range(10_000_000, floor), (1_000_000..=600_000_000, 10_000_000));
/// assert_eq!(burst_range(1_000, floor), (floor..=floor, floor));
/// ```
pub fn burst_range(rate: u64, floor: u64) -> (std::ops::RangeInclusive<u64>, u64) {
    let low = rate.div_ceil(MIN_BURST_DIVISOR).max(floor);
    let high = rate.saturating_mul(MAX_BURST_SECS).max(floor);
    (low..=high, rate.max(floor))
}

/// One rate field and its burst field, with their keys for messages.
struct RateField {
    rate_key: &'static str,
    rate: Option<u64>,
    burst_key: &'static str,
    burst: Option<u64>,
    max: u64,
    floor: u64,
}

fn checked_rate(field: RateField) -> Result<Option<Rate>, Failure> {
    let Some(per_sec) = field.rate else {
        return match field.burst {
            Some(_) => Err(Failure::new(
                ErrorCode::BurstWithoutRate,
                format!("{} is set but {} is not", field.burst_key, field.rate_key),
            )),
            None => Ok(None),
        };
    };
    if per_sec == 0 {
        return Err(zero_cap(field.rate_key));
    }
    if per_sec > field.max {
        return Err(Failure::new(
            ErrorCode::OutOfRange,
            format!("{} must be at most {}, got {per_sec}", field.rate_key, field.max),
        ));
    }
    let (range, default) = burst_range(per_sec, field.floor);
    let burst = field.burst.unwrap_or(default);
    if !range.contains(&burst) {
        return Err(Failure::new(
            ErrorCode::BurstOutOfRange,
            format!(
                "{} must be {}-{} for {} = {per_sec}, got {burst}",
                field.burst_key,
                range.start(),
                range.end(),
                field.rate_key
            ),
        ));
    }
    // Both are at least 1 here: `per_sec` was checked and every range starts at 1 or more.
    Rate::new(per_sec, burst).map(Some).ok_or_else(|| {
        Failure::new(ErrorCode::Internal, format!("{} produced an empty bucket", field.rate_key))
    })
}

fn zero_cap(key: &str) -> Failure {
    Failure::new(ErrorCode::ZeroCap, format!("{key} must be at least 1; omit it for no cap"))
}

#[cfg(test)]
mod tests;
