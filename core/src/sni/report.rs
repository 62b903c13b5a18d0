//! What an SNI listener reports: how its ClientHello peeks ended and how long they took.
//! The client counts, the server exposes; both read the bucket bounds from here.
//!
//! Invariant: every counter is cumulative since the listener's instance was bound, and
//! `peek_buckets` always has [`PEEK_BUCKETS_SECONDS`]`.len() + 1` cells (the last is +Inf).

use std::net::IpAddr;
use std::time::Duration;

use super::{MatchKind, Refusal};

/// Upper bounds (seconds) of the peek-duration histogram
/// `portunus_tls_client_hello_peek_duration_seconds`; the peek deadline is the last.
pub const PEEK_BUCKETS_SECONDS: &[f64] =
    &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0];

/// How long a listener waits for a complete ClientHello before it closes the connection.
pub const PEEK_DEADLINE: Duration = Duration::from_secs(3);

/// Most connections one SNI listener peeks at once. A new connection beyond it closes the
/// oldest peek (counted as shed): peers that trickle their hello can hold a slot for at
/// most the deadline and never keep a prompt client out, since each arrival makes room.
pub const MAX_CONCURRENT_PEEKS: usize = 256;

/// The histogram cell a peek of `elapsed` falls in: the first bound at or above it, or the
/// last cell (+Inf).
///
/// ```
/// use std::time::Duration;
/// use portunus_core::sni::{PEEK_BUCKETS_SECONDS, peek_bucket};
///
/// assert_eq!(peek_bucket(Duration::ZERO), 0);
/// assert_eq!(peek_bucket(Duration::from_millis(1)), 0);
/// assert_eq!(peek_bucket(Duration::from_millis(2)), 1);
/// assert_eq!(peek_bucket(Duration::from_secs(3)), PEEK_BUCKETS_SECONDS.len() - 1);
/// assert_eq!(peek_bucket(Duration::from_secs(4)), PEEK_BUCKETS_SECONDS.len());
/// ```
pub fn peek_bucket(elapsed: Duration) -> usize {
    let secs = elapsed.as_secs_f64();
    PEEK_BUCKETS_SECONDS.iter().position(|bound| secs <= *bound).unwrap_or(PEEK_BUCKETS_SECONDS.len())
}

/// How one peeked connection ended, for the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PeekEnd {
    /// Routed to a rule, found this way.
    Routed(MatchKind),
    /// A complete hello that no route takes, on a listener without a fallback.
    Miss,
    /// Not a ClientHello the reader accepts.
    Refused(Refusal),
    /// No complete hello within [`PEEK_DEADLINE`].
    TimedOut,
    /// Closed to make room for a newer peek (the per-listener bound was reached).
    Shed,
}

/// One SNI listener's counters, as the client reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SniListenerReport {
    /// The bind address; `None`: dual-stack any.
    pub listen_addr: Option<IpAddr>,
    /// The listen port.
    pub port: u16,
    /// Changes whenever the listener is bound anew.
    pub instance: u64,
    /// Connections routed to an exact pattern.
    pub routed_exact: u64,
    /// Connections routed to a `*.suffix` pattern.
    pub routed_wildcard: u64,
    /// Connections routed to the fallback rule.
    pub routed_fallback: u64,
    /// Complete hellos no route took (no fallback): closed.
    pub miss: u64,
    /// Hellos refused by the reader (not TLS, malformed, too large, SSL 3.0): closed.
    pub parse_failures: u64,
    /// Peeks that reached the deadline: closed.
    pub peek_timeouts: u64,
    /// Peeks closed to make room under the bound of concurrent peeks.
    pub peeks_shed: u64,
    /// Peek durations per histogram cell (not cumulative); the last cell is +Inf.
    pub peek_buckets: Vec<u64>,
    /// Sum of the peek durations, in microseconds.
    pub peek_sum_us: u64,
}

impl Default for SniListenerReport {
    fn default() -> Self {
        SniListenerReport {
            listen_addr: None,
            port: 0,
            instance: 0,
            routed_exact: 0,
            routed_wildcard: 0,
            routed_fallback: 0,
            miss: 0,
            parse_failures: 0,
            peek_timeouts: 0,
            peeks_shed: 0,
            peek_buckets: vec![0; PEEK_BUCKETS_SECONDS.len() + 1],
            peek_sum_us: 0,
        }
    }
}

impl SniListenerReport {
    /// Peeks observed in the histogram.
    pub fn peek_count(&self) -> u64 {
        self.peek_buckets.iter().sum()
    }

    /// The histogram with exactly one cell per bound plus +Inf: a report from the wire with
    /// fewer cells is padded with zeros, extra cells are added into +Inf.
    pub fn normalised(mut self) -> Self {
        let n = PEEK_BUCKETS_SECONDS.len() + 1;
        if self.peek_buckets.len() > n {
            let extra: u64 = self.peek_buckets.drain(n..).fold(0, u64::saturating_add);
            if let Some(last) = self.peek_buckets.last_mut() {
                *last = last.saturating_add(extra);
            }
        }
        self.peek_buckets.resize(n, 0);
        self
    }
}
