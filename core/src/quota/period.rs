//! Billing periods: calendar months counted from an anchor instant, in UTC.
//!
//! Period `k` (from 0) starts `k` calendar months after the anchor, on the anchor's day of the
//! month clamped to that month's length, at the anchor's time of day. The clamp never sticks:
//! an anchor on the 31st gives Jan 31, Feb 28 (29 in a leap year), Mar 31, Apr 30, … Periods
//! are half-open (`start <= t < end`), so consecutive periods share a boundary and never
//! overlap.
//!
//! Invariant: [`period_containing`] is computed in constant time from the anchor and `now` (no
//! walk month by month, however far the clock jumps), never panics, and is monotone: a later
//! `now` never yields an earlier period. Before the anchor it yields the first period.

use serde::{Deserialize, Serialize};

use super::BillingAnchor;
use crate::ids::Timestamp;

const SECS_PER_DAY: u64 = 86_400;

/// The first year Portunus computes dates in; no instant before 1970 is representable.
const EPOCH_YEAR: u64 = 1970;

/// Days in a 400-year Gregorian cycle (the calendar repeats exactly after it).
const DAYS_PER_400_YEARS: u64 = 146_097;

/// One billing period: `start` inclusive, `end` exclusive.
///
/// ```
/// use portunus_core::ids::Timestamp;
/// use portunus_core::quota::{BillingAnchor, period_containing};
///
/// // Anchored on 2027-01-31T12:00:00Z; `now` is 2028-02-10 (a leap year).
/// let anchor = BillingAnchor::from_unix_secs(1_801_396_800)?;
/// let period = period_containing(anchor, Timestamp::parse_rfc3339("2028-02-10T00:00:00Z").unwrap());
/// assert_eq!(period.start.to_rfc3339(), "2028-01-31T12:00:00.000Z");
/// assert_eq!(period.end.to_rfc3339(), "2028-02-29T12:00:00.000Z");
/// # Ok::<(), portunus_core::Failure>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Period {
    /// The first instant of the period.
    pub start: Timestamp,
    /// The first instant after the period: the next period's `start`.
    pub end: Timestamp,
}

impl Period {
    /// True when `now` lies in the period (`start <= now < end`).
    pub fn contains(&self, now: Timestamp) -> bool {
        self.start <= now && now < self.end
    }
}

/// The billing period of `anchor` that holds `now`.
///
/// Before the anchor (a quota anchored in the future, or a clock set back past it) this is
/// the first period, `[anchor, anchor + 1 month)`, which then does not contain `now`: billing
/// starts at the anchor and traffic before it counts towards the first period. From the
/// anchor on, the result always contains `now`. Boundaries are whole seconds; an `end` past
/// the largest [`Timestamp`] saturates to it.
pub fn period_containing(anchor: BillingAnchor, now: Timestamp) -> Period {
    let anchor_secs = anchor.unix_secs();
    let now_secs = now.as_millis() / 1000;
    let months = if now_secs <= anchor_secs {
        0
    } else {
        // Count whole calendar months between the two dates, then step back once when the
        // boundary of `now`'s month is still ahead of `now` (a day or a time of day later).
        let (anchor_year, anchor_month, _) = civil_from_days(anchor_secs / SECS_PER_DAY);
        let (now_year, now_month, _) = civil_from_days(now_secs / SECS_PER_DAY);
        let months = month_index(now_year, now_month).saturating_sub(month_index(anchor_year, anchor_month));
        if boundary_secs(anchor, months) > now_secs { months.saturating_sub(1) } else { months }
    };
    Period {
        start: timestamp(boundary_secs(anchor, months)),
        end: timestamp(boundary_secs(anchor, months + 1)),
    }
}

/// Unix seconds of the start of period `months` (period 0 starts at the anchor itself).
fn boundary_secs(anchor: BillingAnchor, months: u64) -> u64 {
    let anchor_secs = anchor.unix_secs();
    let (year, month, day) = civil_from_days(anchor_secs / SECS_PER_DAY);
    let index = month_index(year, month).saturating_add(months);
    let (year, month) = (index / 12, index % 12 + 1);
    let day = day.min(days_in_month(year, month));
    let days = days_before_year(year).saturating_add(days_before_month(year, month) + (day - 1));
    days.saturating_mul(SECS_PER_DAY).saturating_add(anchor_secs % SECS_PER_DAY)
}

fn timestamp(secs: u64) -> Timestamp {
    Timestamp::from_millis(secs.saturating_mul(1000))
}

/// Months since January of year 0, so that consecutive months differ by one.
fn month_index(year: u64, month: u64) -> u64 {
    year.saturating_mul(12) + (month - 1)
}

fn is_leap(year: u64) -> bool {
    year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400))
}

/// Days in `month` (1 to 12) of `year`.
pub(super) fn days_in_month(year: u64, month: u64) -> u64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Leap days in the years `1..=year`.
fn leap_days_through(year: u64) -> u64 {
    year / 4 - year / 100 + year / 400
}

/// Days from 1970-01-01 to January 1st of `year` (a year from 1970 on).
fn days_before_year(year: u64) -> u64 {
    let before = year.saturating_sub(1);
    let epoch_before = EPOCH_YEAR - 1;
    let through = |year: u64| year.saturating_mul(365).saturating_add(leap_days_through(year));
    through(before).saturating_sub(through(epoch_before))
}

/// Days from January 1st to the first of `month` (1 to 12) in `year`.
fn days_before_month(year: u64, month: u64) -> u64 {
    (1..month).map(|m| days_in_month(year, m)).sum()
}

/// Days since 1970-01-01 to a (year, month, day) of the proleptic Gregorian calendar.
pub(super) fn civil_from_days(days: u64) -> (u64, u64, u64) {
    // An estimate from the mean year length, off by at most one year either way; the two
    // corrections below each run at most once or twice.
    let mut year = EPOCH_YEAR + days.saturating_mul(400) / DAYS_PER_400_YEARS;
    while year > EPOCH_YEAR && days_before_year(year) > days {
        year -= 1;
    }
    while days_before_year(year + 1) <= days {
        year += 1;
    }
    let mut rest = days - days_before_year(year);
    let mut month = 1;
    while month < 12 && rest >= days_in_month(year, month) {
        rest -= days_in_month(year, month);
        month += 1;
    }
    (year, month, rest + 1)
}
