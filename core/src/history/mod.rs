//! Traffic history: bytes per (user, client, rule) in one-minute samples, rolled up into
//! one-hour samples, for charts of where the bytes went.
//!
//! Sans-io: the runtime feeds [`MinuteBook::add`] with the growth of each rule's counters as
//! reports arrive and writes what [`MinuteBook::take_ended`] hands back once a minute has
//! ended; the hourly rollup ([`rollup`]) and the retention cut-offs ([`Bucket::retention`]) are
//! plain functions of the samples and `now`.
//!
//! Invariants: a sample exists only for a minute (or hour) with traffic; a sample's `start` is
//! aligned to its bucket; rolling an hour up twice writes the same samples (its keys are the
//! hour and the pair's rule, so the second write replaces the first).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{ErrorCode, Failure};
use crate::ids::{ClientId, RuleId, Timestamp, UserId};

/// The size of one sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Bucket {
    /// One minute (`1m`), kept 7 days.
    #[serde(rename = "1m")]
    Minute,
    /// One hour (`1h`), kept 90 days.
    #[serde(rename = "1h")]
    Hour,
}

impl Bucket {
    /// Both, smallest first.
    pub const ALL: [Bucket; 2] = [Bucket::Minute, Bucket::Hour];

    /// `1m` or `1h`; anything else is [`ErrorCode::InvalidBucket`].
    pub fn parse(text: &str) -> Result<Bucket, Failure> {
        match text {
            "1m" => Ok(Bucket::Minute),
            "1h" => Ok(Bucket::Hour),
            other => Err(Failure::new(
                ErrorCode::InvalidBucket,
                format!("bucket must be 1m or 1h, not {}", crate::ids::quoted(other)),
            )),
        }
    }

    /// The bucket's name in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Bucket::Minute => "1m",
            Bucket::Hour => "1h",
        }
    }

    /// Its length.
    pub fn width(self) -> Duration {
        match self {
            Bucket::Minute => Duration::from_secs(60),
            Bucket::Hour => Duration::from_secs(3_600),
        }
    }

    /// How long its samples are kept.
    pub fn retention(self) -> Duration {
        match self {
            Bucket::Minute => Duration::from_secs(7 * 86_400),
            Bucket::Hour => Duration::from_secs(90 * 86_400),
        }
    }

    /// The start of the bucket holding `at`.
    pub fn start_of(self, at: Timestamp) -> Timestamp {
        let width = width_ms(self);
        Timestamp::from_millis(at.as_millis() / width * width)
    }

    /// Samples older than this are pruned at `now`.
    pub fn oldest_kept(self, now: Timestamp) -> Timestamp {
        self.start_of(Timestamp::from_millis(now.as_millis().saturating_sub(ms(self.retention()))))
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn width_ms(bucket: Bucket) -> u64 {
    ms(bucket.width())
}

/// Whose traffic a sample counts.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TrafficKey {
    /// The rule's owner.
    pub user: UserId,
    /// The client the rule runs on.
    pub client: ClientId,
    /// The rule.
    pub rule: RuleId,
}

/// Bytes one rule forwarded in one bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrafficSample {
    /// The bucket's size.
    pub bucket: Bucket,
    /// The bucket's first instant (aligned).
    pub start: Timestamp,
    /// Whose traffic.
    pub key: TrafficKey,
    /// Bytes from peers to targets.
    pub bytes_in: u64,
    /// Bytes from targets to peers.
    pub bytes_out: u64,
}

/// Traffic of minutes that have not ended yet, in memory until they have.
#[derive(Debug, Default)]
pub struct MinuteBook {
    open: BTreeMap<(Timestamp, TrafficKey), (u64, u64)>,
}

impl MinuteBook {
    /// Counts bytes forwarded by `key`'s rule, reported at `now`, in the minute holding `now`.
    pub fn add(&mut self, now: Timestamp, key: TrafficKey, bytes_in: u64, bytes_out: u64) {
        if bytes_in == 0 && bytes_out == 0 {
            return;
        }
        let slot = self.open.entry((Bucket::Minute.start_of(now), key)).or_default();
        slot.0 = slot.0.saturating_add(bytes_in);
        slot.1 = slot.1.saturating_add(bytes_out);
    }

    /// The samples of every minute that ended by `now`, removed from the book.
    pub fn take_ended(&mut self, now: Timestamp) -> Vec<TrafficSample> {
        let current = Bucket::Minute.start_of(now);
        let ended: Vec<(Timestamp, TrafficKey)> =
            self.open.keys().take_while(|(start, _)| *start < current).cloned().collect();
        ended
            .into_iter()
            .filter_map(|slot| self.open.remove_entry(&slot))
            .map(|((start, key), (bytes_in, bytes_out))| TrafficSample {
                bucket: Bucket::Minute,
                start,
                key,
                bytes_in,
                bytes_out,
            })
            .collect()
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }
}

/// The one-hour samples of the hour starting at `hour` (aligned), from its one-minute
/// samples (others are ignored).
pub fn rollup(hour: Timestamp, minutes: &[TrafficSample]) -> Vec<TrafficSample> {
    let end = hour.as_millis().saturating_add(width_ms(Bucket::Hour));
    let mut sums: BTreeMap<&TrafficKey, (u64, u64)> = BTreeMap::new();
    for sample in minutes {
        let inside = sample.bucket == Bucket::Minute
            && sample.start.as_millis() >= hour.as_millis()
            && sample.start.as_millis() < end;
        if inside {
            let sum = sums.entry(&sample.key).or_default();
            sum.0 = sum.0.saturating_add(sample.bytes_in);
            sum.1 = sum.1.saturating_add(sample.bytes_out);
        }
    }
    sums.into_iter()
        .map(|(key, (bytes_in, bytes_out))| TrafficSample {
            bucket: Bucket::Hour,
            start: hour,
            key: key.clone(),
            bytes_in,
            bytes_out,
        })
        .collect()
}

/// The most samples (buckets) one query may span: a week of minutes, or 90 days of hours.
pub const MAX_BUCKETS: u64 = 10_080;

/// A validated traffic query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrafficQuery {
    /// First instant asked for (inclusive).
    pub from: Timestamp,
    /// Last instant asked for (exclusive).
    pub to: Timestamp,
    /// Sample size.
    pub bucket: Bucket,
    /// Only this user's traffic.
    pub user: Option<UserId>,
    /// Only this client's traffic.
    pub client: Option<ClientId>,
}

impl TrafficQuery {
    /// Checks a window of unix seconds at `now`: `to` before `from` is
    /// [`ErrorCode::InvalidTimeRange`], a `from` older than the bucket keeps is
    /// [`ErrorCode::BucketOutOfRetention`], more than [`MAX_BUCKETS`] buckets is
    /// [`ErrorCode::TrafficWindowTooLarge`]. Without a bucket: `1m` when the window fits in
    /// its retention, else `1h`.
    pub fn new(
        from_secs: i64,
        to_secs: i64,
        bucket: Option<Bucket>,
        now: Timestamp,
    ) -> Result<Self, Failure> {
        let secs = |s: i64| Timestamp::from_millis(u64::try_from(s).unwrap_or(0).saturating_mul(1_000));
        if from_secs < 0 || to_secs < 0 {
            return Err(Failure::new(
                ErrorCode::InvalidTimeRange,
                "from and to are unix seconds, not negative",
            ));
        }
        let (from, to) = (secs(from_secs), secs(to_secs));
        if to < from {
            return Err(Failure::new(ErrorCode::InvalidTimeRange, "to is before from"));
        }
        let bucket = bucket.unwrap_or(if from >= Bucket::Minute.oldest_kept(now) {
            Bucket::Minute
        } else {
            Bucket::Hour
        });
        if from < bucket.oldest_kept(now) {
            return Err(Failure::new(
                ErrorCode::BucketOutOfRetention,
                format!(
                    "{} samples are kept for {} days: from must be after {}",
                    bucket.as_str(),
                    bucket.retention().as_secs() / 86_400,
                    bucket.oldest_kept(now).to_rfc3339()
                ),
            ));
        }
        let buckets = to.since(from).as_millis().div_ceil(u128::from(width_ms(bucket)));
        if buckets > u128::from(MAX_BUCKETS) {
            return Err(Failure::new(
                ErrorCode::TrafficWindowTooLarge,
                format!("the window spans {buckets} {} buckets; at most {MAX_BUCKETS}", bucket.as_str()),
            ));
        }
        Ok(TrafficQuery { from, to, bucket, user: None, client: None })
    }

    /// True when `sample` answers this query.
    pub fn selects(&self, sample: &TrafficSample) -> bool {
        sample.bucket == self.bucket
            && sample.start >= self.bucket.start_of(self.from)
            && sample.start < self.to
            && self.user.as_ref().is_none_or(|u| u == &sample.key.user)
            && self.client.as_ref().is_none_or(|c| c == &sample.key.client)
    }
}

/// Samples and their sums, as a traffic query answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TrafficAnswer {
    /// `1m` or `1h`.
    pub bucket: String,
    /// The samples, oldest first.
    pub samples: Vec<TrafficPoint>,
    /// Bytes from peers to targets over the window.
    pub total_bytes_in: u64,
    /// Bytes from targets to peers over the window.
    pub total_bytes_out: u64,
}

/// One sample as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TrafficPoint {
    /// The bucket's first instant, unix seconds.
    pub start: i64,
    /// The rule's owner.
    pub user: String,
    /// The client (id).
    pub client: String,
    /// The rule.
    pub rule: u64,
    /// Bytes from peers to targets.
    pub bytes_in: u64,
    /// Bytes from targets to peers.
    pub bytes_out: u64,
}

impl TrafficAnswer {
    /// The answer made of `samples` (already selected), sorted by time.
    pub fn of(bucket: Bucket, mut samples: Vec<TrafficSample>) -> TrafficAnswer {
        samples.sort_by(|a, b| (a.start, &a.key).cmp(&(b.start, &b.key)));
        let total_bytes_in = samples.iter().fold(0u64, |sum, s| sum.saturating_add(s.bytes_in));
        let total_bytes_out = samples.iter().fold(0u64, |sum, s| sum.saturating_add(s.bytes_out));
        TrafficAnswer {
            bucket: bucket.as_str().to_owned(),
            samples: samples
                .into_iter()
                .map(|s| TrafficPoint {
                    start: i64::try_from(s.start.as_millis() / 1_000).unwrap_or(i64::MAX),
                    user: s.key.user.as_str().to_owned(),
                    client: s.key.client.as_str().to_owned(),
                    rule: s.key.rule.get(),
                    bytes_in: s.bytes_in,
                    bytes_out: s.bytes_out,
                })
                .collect(),
            total_bytes_in,
            total_bytes_out,
        }
    }
}

#[cfg(test)]
mod tests;
