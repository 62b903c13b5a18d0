//! Pure helpers: latency percentiles and per-phase outcome tallies.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

/// The nearest-rank percentile `p` (0 < p ≤ 100) of `sorted` (ascending); `None` when empty.
pub fn percentile(sorted: &[Duration], p: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let n = sorted.len();
    let rank = ((p.clamp(0.0, 100.0) / 100.0) * n as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, n) - 1])
}

/// Milliseconds with three decimals, for tables and JSON.
pub fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

/// A latency sample set summarised.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    /// Samples.
    pub count: usize,
    /// Median, ms.
    pub p50_ms: Option<f64>,
    /// 90th percentile, ms.
    pub p90_ms: Option<f64>,
    /// 99th percentile, ms.
    pub p99_ms: Option<f64>,
    /// Slowest, ms.
    pub max_ms: Option<f64>,
}

impl Summary {
    /// Summarises `samples` (any order).
    pub fn of(samples: &[Duration]) -> Self {
        let mut sorted = samples.to_vec();
        sorted.sort_unstable();
        Summary {
            count: sorted.len(),
            p50_ms: percentile(&sorted, 50.0).map(ms),
            p90_ms: percentile(&sorted, 90.0).map(ms),
            p99_ms: percentile(&sorted, 99.0).map(ms),
            max_ms: sorted.last().copied().map(ms),
        }
    }
}

/// How the calls of one phase ended.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Tally {
    /// Calls that succeeded.
    pub ok: u64,
    /// Calls that timed out (HTTP 504 `ack_timeout`, or no answer in time).
    pub timeouts: u64,
    /// Every other failure.
    pub errors: u64,
    /// Failures by kind, e.g. `409 port_in_use`.
    pub kinds: BTreeMap<String, u64>,
}

impl Tally {
    /// Counts one success.
    pub fn ok(&mut self) {
        self.ok += 1;
    }

    /// Counts one timeout of `kind`.
    pub fn timeout(&mut self, kind: &str) {
        self.timeouts += 1;
        *self.kinds.entry(kind.to_owned()).or_default() += 1;
    }

    /// Counts one error of `kind`.
    pub fn error(&mut self, kind: &str) {
        self.errors += 1;
        *self.kinds.entry(kind.to_owned()).or_default() += 1;
    }

    /// `kind×n, …`, or `-`.
    pub fn kinds_text(&self) -> String {
        if self.kinds.is_empty() {
            return "-".into();
        }
        self.kinds.iter().map(|(k, n)| format!("{k}×{n}")).collect::<Vec<_>>().join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn millis(v: &[u64]) -> Vec<Duration> {
        let mut out: Vec<Duration> = v.iter().map(|&m| Duration::from_millis(m)).collect();
        out.sort_unstable();
        out
    }

    #[test]
    fn nearest_rank_percentiles() {
        let samples = millis(&(1..=100).collect::<Vec<_>>());
        assert_eq!(percentile(&samples, 50.0), Some(Duration::from_millis(50)));
        assert_eq!(percentile(&samples, 90.0), Some(Duration::from_millis(90)));
        assert_eq!(percentile(&samples, 99.0), Some(Duration::from_millis(99)));
        assert_eq!(percentile(&samples, 100.0), Some(Duration::from_millis(100)));
        let few = millis(&[7, 3, 5]);
        assert_eq!(percentile(&few, 50.0), Some(Duration::from_millis(5)));
        assert_eq!(percentile(&few, 99.0), Some(Duration::from_millis(7)));
        assert_eq!(percentile(&few, 1.0), Some(Duration::from_millis(3)));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn summary_sorts_its_input() {
        let s = Summary::of(&[Duration::from_millis(9), Duration::from_millis(1), Duration::from_millis(5)]);
        assert_eq!((s.count, s.p50_ms, s.max_ms), (3, Some(5.0), Some(9.0)));
        assert_eq!(Summary::of(&[]).p99_ms, None);
    }

    #[test]
    fn tallies_count_by_kind() {
        let mut t = Tally::default();
        assert_eq!(t.kinds_text(), "-");
        t.ok();
        t.timeout("504 ack_timeout");
        t.error("409 port_in_use");
        t.timeout("504 ack_timeout");
        assert_eq!((t.ok, t.timeouts, t.errors), (1, 2, 1));
        assert_eq!(t.kinds_text(), "409 port_in_use×1, 504 ack_timeout×2");
    }
}
