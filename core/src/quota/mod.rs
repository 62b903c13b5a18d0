//! Monthly traffic quotas of one (user, client) pair: what an operator writes
//! ([`QuotaSpec`], [`QuotaPatch`]), their validated form ([`QuotaTerms`], [`QuotaChange`]),
//! billing periods ([`period_containing`]) and the sans-io meter that decides when a pair is
//! exhausted, crosses a threshold or starts a new period ([`QuotaState`]).
//!
//! Units: bytes, both directions together; time comes in as `now` ([`Timestamp`]), and an
//! anchor is whole unix seconds, UTC.
//!
//! Invariants a reader must not break:
//! - a pair is exhausted exactly when its usage in the current period is at least its cap;
//! - usage within a period never decreases except through an explicit credit
//!   ([`QuotaChange::clear_period_usage`]), and a clock set back never rolls usage back nor
//!   moves the period backwards: only `now` past the period's end starts the next one;
//! - each threshold fires at most once while usage stays above it; it re-arms only when usage
//!   falls below it again (a new period, a credit, a raised cap);
//! - all arithmetic is saturating or widened to `u128`: no input makes it panic.

mod gate;
mod period;

use serde::{Deserialize, Serialize};

use crate::error::{ErrorCode, Failure};
use crate::ids::{ClientId, Timestamp, UserId};

pub use gate::{GateChange, PairUpdate, QuotaGates, QuotaUpdate};
pub use period::{Period, period_containing};

/// Largest `monthly_bytes`: 2⁵³ − 1 (about 9 PB), the largest integer a JavaScript reader of
/// the API holds exactly. The arithmetic would stay exact well past it; the bound catches
/// typos.
pub const MAX_MONTHLY_BYTES: u64 = (1 << 53) - 1;

/// Latest billing anchor: 9999-12-31T23:59:59Z, in unix seconds.
pub const MAX_ANCHOR_SECS: u64 = 253_402_300_799;

/// A pair's monthly cap in bytes: 1 to [`MAX_MONTHLY_BYTES`].
///
/// ```
/// use portunus_core::quota::MonthlyBytes;
/// use portunus_core::ErrorCode;
///
/// assert_eq!(MonthlyBytes::new(1_000_000_000)?.get(), 1_000_000_000);
/// assert_eq!(MonthlyBytes::new(0).unwrap_err().code, ErrorCode::QuotaBytesInvalid);
/// # Ok::<(), portunus_core::Failure>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "u64", into = "u64")]
pub struct MonthlyBytes(u64);

impl MonthlyBytes {
    /// Checks a cap; 0 and values above [`MAX_MONTHLY_BYTES`] are
    /// [`ErrorCode::QuotaBytesInvalid`].
    pub fn new(bytes: u64) -> Result<Self, Failure> {
        if bytes == 0 {
            return Err(Failure::new(
                ErrorCode::QuotaBytesInvalid,
                "monthly_bytes must be at least 1; delete the quota to lift it",
            ));
        }
        if bytes > MAX_MONTHLY_BYTES {
            return Err(Failure::new(
                ErrorCode::QuotaBytesInvalid,
                format!("monthly_bytes must be at most {MAX_MONTHLY_BYTES}, got {bytes}"),
            ));
        }
        Ok(MonthlyBytes(bytes))
    }
    /// The cap in bytes.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl TryFrom<u64> for MonthlyBytes {
    type Error = Failure;
    fn try_from(bytes: u64) -> Result<Self, Failure> {
        MonthlyBytes::new(bytes)
    }
}

impl From<MonthlyBytes> for u64 {
    fn from(bytes: MonthlyBytes) -> u64 {
        bytes.0
    }
}

/// The instant billing periods are counted from: whole unix seconds, UTC, from 1970 to
/// [`MAX_ANCHOR_SECS`] (the end of year 9999).
///
/// ```
/// use portunus_core::ids::Timestamp;
/// use portunus_core::quota::BillingAnchor;
/// use portunus_core::ErrorCode;
///
/// assert_eq!(BillingAnchor::from_unix_secs(1_798_761_600)?.unix_secs(), 1_798_761_600);
/// assert_eq!(BillingAnchor::from_unix_secs(-1).unwrap_err().code, ErrorCode::QuotaAnchorInvalid);
/// // The default anchor is `now`, truncated to the second.
/// assert_eq!(BillingAnchor::at(Timestamp::from_millis(1_798_761_600_999)).unix_secs(), 1_798_761_600);
/// # Ok::<(), portunus_core::Failure>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i64")]
pub struct BillingAnchor(u64);

impl BillingAnchor {
    /// Checks an anchor given in unix seconds; before 1970 or after [`MAX_ANCHOR_SECS`] is
    /// [`ErrorCode::QuotaAnchorInvalid`].
    pub fn from_unix_secs(secs: i64) -> Result<Self, Failure> {
        match u64::try_from(secs) {
            Ok(secs) if secs <= MAX_ANCHOR_SECS => Ok(BillingAnchor(secs)),
            _ => Err(Failure::new(
                ErrorCode::QuotaAnchorInvalid,
                format!(
                    "billing_anchor must be unix seconds from 0 (1970) to {MAX_ANCHOR_SECS} (9999), got {secs}"
                ),
            )),
        }
    }
    /// The anchor for a quota created at `now`: `now` truncated to the second (clamped to
    /// [`MAX_ANCHOR_SECS`]).
    pub fn at(now: Timestamp) -> Self {
        BillingAnchor((now.as_millis() / 1000).min(MAX_ANCHOR_SECS))
    }
    /// The anchor in unix seconds.
    pub const fn unix_secs(self) -> u64 {
        self.0
    }
}

impl TryFrom<i64> for BillingAnchor {
    type Error = Failure;
    fn try_from(secs: i64) -> Result<Self, Failure> {
        BillingAnchor::from_unix_secs(secs)
    }
}

impl From<BillingAnchor> for i64 {
    fn from(anchor: BillingAnchor) -> i64 {
        // At most MAX_ANCHOR_SECS, far below i64::MAX.
        i64::try_from(anchor.0).unwrap_or(i64::MAX)
    }
}

/// A quota as an operator creates or replaces it (`PUT`, `quota set`). Unknown fields are
/// refused.
///
/// ```
/// use portunus_core::ids::Timestamp;
/// use portunus_core::quota::QuotaSpec;
/// use portunus_core::ErrorCode;
///
/// let spec: QuotaSpec = serde_json::from_str(r#"{"monthly_bytes": 1000000000}"#)?;
/// let terms = spec.validate()?;
/// assert_eq!((terms.monthly_bytes.get(), terms.anchor), (1_000_000_000, None));
///
/// let zero: QuotaSpec = serde_json::from_str(r#"{"monthly_bytes": 0}"#)?;
/// assert_eq!(zero.validate().unwrap_err().code, ErrorCode::QuotaBytesInvalid);
/// assert!(serde_json::from_str::<QuotaSpec>(r#"{"monthly_bytes": 1, "bytes": 2}"#).is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct QuotaSpec {
    /// Bytes (both directions together) the pair may forward per billing period.
    pub monthly_bytes: u64,
    /// Unix seconds (UTC) the monthly periods are counted from. Omitted: `now` when the quota
    /// is created, the existing anchor when it is replaced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub billing_anchor: Option<i64>,
}

impl QuotaSpec {
    /// Checks both fields: [`ErrorCode::QuotaBytesInvalid`] first, then
    /// [`ErrorCode::QuotaAnchorInvalid`].
    pub fn validate(&self) -> Result<QuotaTerms, Failure> {
        let monthly_bytes = MonthlyBytes::new(self.monthly_bytes)?;
        let anchor = self.billing_anchor.map(BillingAnchor::from_unix_secs).transpose()?;
        Ok(QuotaTerms { monthly_bytes, anchor })
    }
}

/// A validated [`QuotaSpec`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct QuotaTerms {
    /// The cap.
    pub monthly_bytes: MonthlyBytes,
    /// The anchor, when the operator gave one.
    pub anchor: Option<BillingAnchor>,
}

/// A partial change to an existing quota (`PATCH`, `quota credit`). Unknown fields are
/// refused, and a patch that changes nothing is [`ErrorCode::EmptyQuotaPatch`].
///
/// ```
/// use portunus_core::quota::QuotaPatch;
/// use portunus_core::ErrorCode;
///
/// let credit: QuotaPatch = serde_json::from_str(r#"{"clear_period_usage": true}"#)?;
/// let change = credit.validate()?;
/// assert!(change.clear_period_usage && change.monthly_bytes.is_none());
///
/// for empty in ["{}", r#"{"clear_period_usage": false}"#] {
///     let patch: QuotaPatch = serde_json::from_str(empty)?;
///     assert_eq!(patch.validate().unwrap_err().code, ErrorCode::EmptyQuotaPatch);
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct QuotaPatch {
    /// A new cap, in bytes per period; the period and its usage stay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monthly_bytes: Option<u64>,
    /// `true` forgets the usage of the current period (a one-shot credit); the period's
    /// boundaries stay. `false` is the same as leaving it out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clear_period_usage: Option<bool>,
}

impl QuotaPatch {
    /// Checks the patch: [`ErrorCode::EmptyQuotaPatch`] when it changes nothing, else
    /// [`ErrorCode::QuotaBytesInvalid`] for a bad cap.
    pub fn validate(&self) -> Result<QuotaChange, Failure> {
        let clear_period_usage = self.clear_period_usage == Some(true);
        if self.monthly_bytes.is_none() && !clear_period_usage {
            return Err(Failure::new(
                ErrorCode::EmptyQuotaPatch,
                "a quota patch needs monthly_bytes or \"clear_period_usage\": true",
            ));
        }
        let monthly_bytes = self.monthly_bytes.map(MonthlyBytes::new).transpose()?;
        Ok(QuotaChange { monthly_bytes, clear_period_usage })
    }
}

/// A validated [`QuotaPatch`]: at least one of its fields does something.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct QuotaChange {
    /// The new cap, if it changes.
    pub monthly_bytes: Option<MonthlyBytes>,
    /// Forget the current period's usage.
    pub clear_period_usage: bool,
}

/// A share of the cap whose crossing raises an event once per crossing
/// (`traffic_quota.threshold_crossed`). Ordered by percentage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub enum Threshold {
    /// 80 % of the cap: a warning before the pair is cut off.
    Percent80,
    /// 100 % of the cap: the pair is exhausted.
    Percent100,
}

impl Threshold {
    /// Every threshold, in ascending order.
    pub const ALL: [Threshold; 2] = [Threshold::Percent80, Threshold::Percent100];

    /// The share of the cap, in percent.
    pub const fn percent(self) -> u8 {
        match self {
            Threshold::Percent80 => 80,
            Threshold::Percent100 => 100,
        }
    }

    /// True when `used_bytes` reaches this share of `cap`.
    pub fn is_reached(self, used_bytes: u64, cap: MonthlyBytes) -> bool {
        u128::from(used_bytes) * 100 >= u128::from(cap.get()) * u128::from(self.percent())
    }

    /// The highest threshold `used_bytes` reaches, if any.
    pub fn highest_reached(used_bytes: u64, cap: MonthlyBytes) -> Option<Threshold> {
        Threshold::ALL.into_iter().rev().find(|t| t.is_reached(used_bytes, cap))
    }
}

impl TryFrom<u8> for Threshold {
    type Error = String;
    fn try_from(percent: u8) -> Result<Self, String> {
        Threshold::ALL
            .into_iter()
            .find(|t| t.percent() == percent)
            .ok_or_else(|| format!("not a quota threshold: {percent} %"))
    }
}

impl From<Threshold> for u8 {
    fn from(threshold: Threshold) -> u8 {
        threshold.percent()
    }
}

/// A period that ended, with what was used in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClosedPeriod {
    /// The period that ended.
    pub period: Period,
    /// Bytes used in it.
    pub used_bytes: u64,
}

/// What one call into a [`QuotaState`] decided. The caller turns these into events, metrics
/// and a `TrafficQuotaUpdate` for the client; after a call the state itself is the truth
/// (both `resumed` and `became_exhausted` are set when a new period began and its first
/// report exhausted it again).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[must_use]
pub struct Decisions {
    /// `now` had passed the period's end: the period that ended. A jump over several periods
    /// reports the last one the state held; the skipped ones had no traffic.
    pub rolled_over: Option<ClosedPeriod>,
    /// Thresholds newly crossed, ascending; each at most once until it re-arms.
    pub thresholds_crossed: Vec<Threshold>,
    /// The pair ran out of budget: the client must refuse and cut its traffic.
    pub became_exhausted: bool,
    /// The pair was exhausted and has budget again (new period, credit or a raised cap).
    pub resumed: bool,
}

impl Decisions {
    /// True when nothing changed that a client or an operator must hear about.
    pub fn is_empty(&self) -> bool {
        *self == Decisions::default()
    }
}

/// The meter of one (user, client) pair: its cap, its billing period and the usage in it.
///
/// A sans-io state machine: usage reports ([`QuotaState::handle_report`]), operator changes
/// ([`QuotaState::handle_change`], [`QuotaState::handle_replace`]) and the period's end
/// ([`QuotaState::handle_timeout`], due at [`QuotaState::poll_timeout`]) go in with `now`;
/// [`Decisions`] come out. Every input first starts a new period if `now` passed the current
/// one's end, so a timer that fires late (or not at all) loses nothing.
///
/// ```
/// use portunus_core::ids::Timestamp;
/// use portunus_core::quota::{QuotaSpec, QuotaState, Threshold};
///
/// let t0 = Timestamp::parse_rfc3339("2027-01-31T12:00:00Z").unwrap();
/// let spec = QuotaSpec { monthly_bytes: 1_000, billing_anchor: None };
/// let mut quota = QuotaState::new(spec.validate()?, t0);
/// assert_eq!(quota.period().end.to_rfc3339(), "2027-02-28T12:00:00.000Z");
///
/// let decided = quota.handle_report(1_000, t0);
/// assert_eq!(decided.thresholds_crossed, Threshold::ALL);
/// assert!(decided.became_exhausted && quota.is_exhausted());
///
/// // The next period starts with a fresh budget, on the anchor's day again.
/// let decided = quota.handle_timeout(quota.poll_timeout());
/// assert!(decided.resumed && !quota.is_exhausted());
/// assert_eq!(quota.period().end.to_rfc3339(), "2027-03-31T12:00:00.000Z");
/// # Ok::<(), portunus_core::Failure>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaState {
    monthly_bytes: MonthlyBytes,
    anchor: BillingAnchor,
    period: Period,
    used_bytes: u64,
    exhausted_at: Option<Timestamp>,
    last_report_at: Option<Timestamp>,
    /// The highest threshold already raised in this period; every lower one counts as
    /// raised too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    threshold_raised: Option<Threshold>,
}

impl QuotaState {
    /// A new quota at `now`, with no usage; without an anchor in `terms`, periods count
    /// from `now`.
    pub fn new(terms: QuotaTerms, now: Timestamp) -> Self {
        let anchor = terms.anchor.unwrap_or(BillingAnchor::at(now));
        QuotaState {
            monthly_bytes: terms.monthly_bytes,
            anchor,
            period: period_containing(anchor, now),
            used_bytes: 0,
            exhausted_at: None,
            last_report_at: None,
            threshold_raised: None,
        }
    }

    /// The cap.
    pub fn monthly_bytes(&self) -> MonthlyBytes {
        self.monthly_bytes
    }
    /// The anchor periods count from.
    pub fn anchor(&self) -> BillingAnchor {
        self.anchor
    }
    /// The current period (as of the last input; see [`QuotaState::status`]).
    pub fn period(&self) -> Period {
        self.period
    }
    /// Bytes used in the current period. May exceed the cap by what was in flight when the
    /// pair ran out.
    pub fn used_bytes(&self) -> u64 {
        self.used_bytes
    }
    /// Bytes left in the current period, zero once exhausted.
    pub fn remaining_bytes(&self) -> u64 {
        self.monthly_bytes.get().saturating_sub(self.used_bytes)
    }
    /// True when usage has reached the cap: the client forwards nothing for the pair.
    pub fn is_exhausted(&self) -> bool {
        self.exhausted_at.is_some()
    }
    /// When the pair last ran out of budget, while it still is out.
    pub fn exhausted_at(&self) -> Option<Timestamp> {
        self.exhausted_at
    }
    /// The latest `now` a usage report carried (never moves backwards).
    pub fn last_report_at(&self) -> Option<Timestamp> {
        self.last_report_at
    }

    /// When the current period ends: call [`QuotaState::handle_timeout`] then. Calling it
    /// earlier, or again, does nothing.
    pub fn poll_timeout(&self) -> Timestamp {
        self.period.end
    }

    /// Starts a new period if `now` has reached the current one's end: usage is reset,
    /// exhaustion cleared and thresholds re-armed. A `now` before the end (including a clock
    /// set back) changes nothing.
    pub fn handle_timeout(&mut self, now: Timestamp) -> Decisions {
        let mut decided = Decisions::default();
        self.roll_over(now, &mut decided);
        decided
    }

    /// Adds `bytes` the client forwarded for the pair, reported at `now`. The bytes count
    /// towards the period holding `now`, or the current one when the clock went back.
    pub fn handle_report(&mut self, bytes: u64, now: Timestamp) -> Decisions {
        let mut decided = Decisions::default();
        self.roll_over(now, &mut decided);
        self.used_bytes = self.used_bytes.saturating_add(bytes);
        self.last_report_at = Some(self.last_report_at.map_or(now, |last| last.max(now)));
        self.settle(now, &mut decided);
        decided
    }

    /// Applies an operator's patch at `now`. A lower cap may exhaust the pair and cross
    /// thresholds; a higher one (or a credit) may resume it and re-arms the thresholds usage
    /// no longer reaches. The period's boundaries never move.
    pub fn handle_change(&mut self, change: QuotaChange, now: Timestamp) -> Decisions {
        let mut decided = Decisions::default();
        self.roll_over(now, &mut decided);
        if let Some(monthly_bytes) = change.monthly_bytes {
            self.monthly_bytes = monthly_bytes;
        }
        if change.clear_period_usage {
            self.used_bytes = 0;
        }
        self.settle(now, &mut decided);
        decided
    }

    /// Replaces the quota's terms at `now` (a `PUT` over an existing quota). With the same
    /// anchor (or none given) this is a cap change that keeps the period and its usage; a
    /// different anchor starts over: the period holding `now` under the new anchor, with no
    /// usage.
    pub fn handle_replace(&mut self, terms: QuotaTerms, now: Timestamp) -> Decisions {
        let mut decided = Decisions::default();
        match terms.anchor {
            Some(anchor) if anchor != self.anchor => {
                self.anchor = anchor;
                self.period = period_containing(anchor, now);
                self.used_bytes = 0;
            }
            _ => self.roll_over(now, &mut decided),
        }
        self.monthly_bytes = terms.monthly_bytes;
        self.settle(now, &mut decided);
        decided
    }

    /// The `GET …/status` view at `now`: a period that has ended is shown as the new one,
    /// even before [`QuotaState::handle_timeout`] ran.
    pub fn status(&self, now: Timestamp) -> QuotaStatus {
        let mut current = self.clone();
        // Only the resulting state matters here; nothing is announced from a read.
        let _ = current.handle_timeout(now);
        QuotaStatus {
            monthly_bytes: current.monthly_bytes.get(),
            current_period_bytes_used: current.used_bytes,
            period_start: current.period.start,
            period_end: current.period.end,
            exhausted: current.is_exhausted(),
            exhausted_at: current.exhausted_at,
            last_report_at: current.last_report_at,
        }
    }

    fn roll_over(&mut self, now: Timestamp, decided: &mut Decisions) {
        if now < self.period.end {
            return;
        }
        let ended = ClosedPeriod { period: self.period, used_bytes: self.used_bytes };
        // The new period ends after `now` (before the anchor: after the anchor, later still),
        // and `now` is at or past the old end, so periods only ever move forwards.
        self.period = period_containing(self.anchor, now);
        self.used_bytes = 0;
        decided.rolled_over = Some(ended);
        self.settle(now, decided);
    }

    /// Brings exhaustion and thresholds in line with usage and the cap.
    fn settle(&mut self, now: Timestamp, decided: &mut Decisions) {
        let reached = Threshold::highest_reached(self.used_bytes, self.monthly_bytes);
        if reached > self.threshold_raised {
            let newly = Threshold::ALL.into_iter().filter(|t| Some(*t) > self.threshold_raised);
            decided.thresholds_crossed.extend(newly.filter(|t| Some(*t) <= reached));
        }
        self.threshold_raised = reached;
        let out_of_budget = self.used_bytes >= self.monthly_bytes.get();
        match (out_of_budget, self.exhausted_at) {
            (true, None) => {
                self.exhausted_at = Some(now);
                decided.became_exhausted = true;
            }
            (false, Some(_)) => {
                self.exhausted_at = None;
                decided.resumed = true;
            }
            _ => {}
        }
    }
}

/// The status of one pair's quota, as `GET /v1/users/{user}/quotas/{client}/status` and
/// `quota status` show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaStatus {
    /// The cap, in bytes per period.
    pub monthly_bytes: u64,
    /// Bytes used in the current period (may exceed the cap by what was in flight).
    pub current_period_bytes_used: u64,
    /// The current period's first instant.
    pub period_start: Timestamp,
    /// The current period's end (exclusive): when usage resets.
    pub period_end: Timestamp,
    /// True while the pair forwards nothing.
    pub exhausted: bool,
    /// When the pair ran out of budget, while it is exhausted.
    pub exhausted_at: Option<Timestamp>,
    /// The latest usage report from the client, if any.
    pub last_report_at: Option<Timestamp>,
}

/// A stored quota: one per (user, client) pair, which a grant must cover.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quota {
    /// The user whose traffic it caps.
    pub user: UserId,
    /// The client it applies on.
    pub client: ClientId,
    /// Creation time.
    pub created_at: Timestamp,
    /// The meter: cap, period and usage.
    pub state: QuotaState,
}

#[cfg(test)]
mod tests;
