//! The byte pump: moves bytes both ways between two connected TCP sockets until both
//! directions have ended, one fails, or the pair has been idle too long.
//!
//! Each direction runs its own loop over shared `&TcpStream`s (tokio lets one task wait for
//! "readable" on a socket while it waits for "writable" on the same socket), so there is no
//! split, no lock and no per-chunk allocation. The fast path (`splice`, Linux: a pipe per
//! direction, taken by a direction at its first bulk read; small messages before that are
//! copied, which costs fewer calls) and the userspace path (a 64 KiB buffer per direction) borrow their pipe or
//! buffer from a bounded pool only while the direction has bytes in flight, so an idle
//! connection holds its two sockets and nothing else (see `pool`). Both share the same
//! contract:
//!
//! - bytes are counted when delivered to the destination socket, with one `Relaxed` add per
//!   batch of at most [`BATCH`] bytes, so a mid-flow reset leaves both paths reporting exactly
//!   what reached the destination;
//! - end of stream on one side, once every byte read from it was delivered, becomes a
//!   `shutdown(Write)` on the other, and the opposite direction keeps running (half-close);
//! - any error ends both directions, and both sockets are then set to close abortively
//!   (`SO_LINGER` 0, so the caller's close sends a reset): a peer or target that saw the
//!   other side reset sees a reset too, never an end of stream it could take for a finished
//!   transfer. Bytes still in a send buffer at that moment are discarded by the kernel; they
//!   were counted when written, so an aborted connection's counts can exceed what its
//!   destination read by at most one socket send buffer. An idle timeout and a clean end stay
//!   orderly closes.
//!
//! A connection whose rule caps bandwidth runs on the userspace path whatever the rule's
//! path, and asks its caps before each write ([`crate::limits`]): it writes what they grant
//! and sleeps on the tokio timer for the rest, so it is slowed, never refused. Connections
//! without a cap carry no throttle and pay nothing for it.

mod copy;
mod pool;
#[cfg(target_os = "linux")]
mod splice;

use std::fmt;
use std::io;
use std::net::Shutdown;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use socket2::SockRef;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::counters::TrafficCounters;
use crate::events::{Once, RateLimit, RuleLabel};
use crate::limits::Throttle;

/// Largest batch counted with one add, and the userspace buffer size per direction.
pub const BATCH: usize = 64 * 1024;

/// Pipe capacity the fast path asks the kernel for; the default is accepted if refused.
pub const PIPE_REQUEST_BYTES: usize = 1024 * 1024;

/// How bytes are moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyPath {
    /// `splice(2)` through a pipe per direction (Linux); elsewhere this is the userspace path.
    Splice,
    /// `read` into a buffer and `write` it out.
    Userspace,
}

/// Which socket an error came from. Failover policy reads this, never the message text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The connecting client's socket.
    Peer,
    /// The socket to the target.
    Target,
    /// Neither: a local resource such as a pipe.
    Local,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Peer => "peer",
            Side::Target => "target",
            Side::Local => "local",
        })
    }
}

/// How a relay ended without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayEnd {
    /// Both directions reached end of stream and every byte was delivered.
    Closed,
    /// No byte moved either way for the idle timeout.
    IdleTimeout,
}

/// A relay that ended on an I/O error (a reset, a broken pipe, …).
#[derive(Debug, thiserror::Error)]
#[error("{side} socket failed")]
pub struct RelayError {
    /// Where the error happened.
    pub side: Side,
    /// The OS error.
    #[source]
    pub source: io::Error,
}

/// Test hook: makes the fast path meet a refusal the host would not otherwise produce, so
/// tests can exercise the fallbacks and their events. Never set in production.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpliceFault {
    /// The first splice of every direction fails with `ENOSYS`.
    Unsupported,
    /// The first splice out of every pipe fails with `ENOSYS`, after bytes went in.
    UnsupportedOnDrain,
    /// Growing a pipe fails with `EPERM`.
    PipeSizeRefused,
}

/// Once-per-rule notes about the copy path, and the test hook; shared by a rule's
/// connections.
#[derive(Debug)]
pub(crate) struct PathNotes {
    rule: RuleLabel,
    fault: Option<SpliceFault>,
    selected: Once,
    refused: Once,
    pipe_size_refused: Once,
    pipe_unavailable: RateLimit,
}

impl PathNotes {
    pub(crate) fn new(rule: RuleLabel, fault: Option<SpliceFault>) -> Self {
        PathNotes {
            rule,
            fault,
            selected: Once::default(),
            refused: Once::default(),
            pipe_size_refused: Once::default(),
            pipe_unavailable: RateLimit::new(Duration::from_secs(10)),
        }
    }

    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    fn splice_selected(&self) {
        if self.selected.first() {
            tracing::info!(event = "proxy.splice_selected", rule = %self.rule);
        }
    }

    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    fn splice_refused(&self, err: &io::Error) {
        if self.refused.first() {
            tracing::warn!(
                event = "proxy.splice_unsupported_fallback",
                rule = %self.rule,
                errno_name = %crate::sys::errno_name(err),
            );
        }
    }

    #[cfg(target_os = "linux")]
    fn pipe_size_refused(&self, refusal: crate::sys::PipeSizeRefusal) {
        if self.pipe_size_refused.first() {
            tracing::warn!(
                event = "proxy.splice_pipe_size_failed",
                rule = %self.rule,
                requested_bytes = PIPE_REQUEST_BYTES as u64,
                actual_default_bytes = refusal.actual_bytes as u64,
                errno_name = ?refusal.errno,
            );
        }
    }

    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    fn pipe_unavailable(&self, err: &io::Error) {
        if self.pipe_unavailable.allow() {
            tracing::warn!(
                event = "proxy.splice_pipe_unavailable",
                rule = %self.rule,
                errno_name = %crate::sys::errno_name(err),
            );
        }
    }
}

/// Relays between `peer` and `target` until both directions end, then closes both (with a
/// reset on both after an error, see the module docs).
///
/// `counters.bytes_in` counts bytes delivered to `target`, `bytes_out` bytes delivered to
/// `peer`; connection counts are left alone. There is no idle timeout and events carry no
/// rule (and, like a rule's, are emitted once per process rather than once per call). This
/// is the entry point benches use to compare the two paths on a loopback pair.
pub async fn relay(
    peer: TcpStream,
    target: TcpStream,
    path: CopyPath,
    counters: &TrafficCounters,
) -> Result<RelayEnd, RelayError> {
    static STANDALONE: OnceLock<PathNotes> = OnceLock::new();
    let notes = STANDALONE.get_or_init(|| PathNotes::new(RuleLabel(None), None));
    let sinks =
        Sinks { to_target: &counters.bytes_in, to_peer: &counters.bytes_out, budget: None, throttle: None };
    run(&peer, &target, sinks, path, None, notes).await
}

/// Where a relay counts what it delivered: bytes that reached the target and bytes that
/// reached the peer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sinks<'a> {
    pub(crate) to_target: &'a AtomicU64,
    pub(crate) to_peer: &'a AtomicU64,
    /// The pair's quota budget, debited by both directions; a spent budget ends the relay.
    pub(crate) budget: Option<&'a crate::budget::QuotaBudget>,
    /// The connection's bandwidth caps, asked before each write; only with the userspace
    /// path (the fast path never waits on a bucket).
    pub(crate) throttle: Option<Throttle<'a>>,
}

/// The relay of one connection: both directions plus the idle watch.
pub(crate) async fn run(
    peer: &TcpStream,
    target: &TcpStream,
    sinks: Sinks<'_>,
    path: CopyPath,
    idle_timeout: Option<Duration>,
    notes: &PathNotes,
) -> Result<RelayEnd, RelayError> {
    let activity = Activity::new();
    let one_ended = AtomicBool::new(false);
    let inbound = Leg {
        src: peer,
        dst: target,
        dir: Direction::Inbound,
        delivered: sinks.to_target,
        budget: sinks.budget,
        throttle: sinks.throttle,
        one_ended: &one_ended,
    };
    let outbound = Leg {
        src: target,
        dst: peer,
        dir: Direction::Outbound,
        delivered: sinks.to_peer,
        budget: sinks.budget,
        throttle: sinks.throttle,
        one_ended: &one_ended,
    };
    let both = async {
        tokio::try_join!(pump(inbound, path, &activity, notes), pump(outbound, path, &activity, notes))
            .map(|_| RelayEnd::Closed)
    };
    let res = match idle_timeout.filter(|idle| !idle.is_zero()) {
        Some(idle) => tokio::select! {
            res = both => res,
            () = activity.idle_for(idle) => Ok(RelayEnd::IdleTimeout),
        },
        None => both.await,
    };
    if res.is_err() {
        abort_on_close(peer);
        abort_on_close(target);
    }
    res
}

/// Connections of the planes in this process, and the most seen since memory was last given
/// back.
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
/// Set while a release of free memory is scheduled.
static RELEASE_PENDING: AtomicBool = AtomicBool::new(false);

/// A burst of at least this many concurrent relays is worth giving memory back after.
const RELEASE_AFTER_PEAK: usize = 256;

/// How long after the burst ebbed the release waits, so that it runs once the closing
/// connections (their tasks, their sockets' registrations) are gone rather than among them.
const RELEASE_DELAY: Duration = Duration::from_secs(1);

/// One forwarded connection of a plane in [`LIVE`]. When a burst ebbs (the count falls to
/// an eighth of a peak of at least [`RELEASE_AFTER_PEAK`]), the connection that ends there
/// schedules one `malloc_trim` a moment later, so RSS comes back near its idle level after
/// many connections close; a steady or small load never triggers it. The trim runs on a
/// worker (a few milliseconds once per burst): a blocking-pool thread would itself keep
/// memory, its stack and its arena, for a while. Needs the runtime's timer, which a plane
/// always has (connects have deadlines); the standalone [`relay`] does not count.
pub(crate) struct Census;

impl Census {
    /// Counts one connection in until the census is dropped.
    pub(crate) fn enter() -> Self {
        let live = LIVE.fetch_add(1, Relaxed) + 1;
        PEAK.fetch_max(live, Relaxed);
        Census
    }
}

impl Drop for Census {
    fn drop(&mut self) {
        let live = LIVE.fetch_sub(1, Relaxed).saturating_sub(1);
        let peak = PEAK.load(Relaxed);
        if peak < RELEASE_AFTER_PEAK || live.saturating_mul(8) > peak || RELEASE_PENDING.swap(true, Relaxed) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            RELEASE_PENDING.store(false, Relaxed);
            return;
        };
        // Clears the flag however the task ends, dropped unpolled with its runtime included.
        let pending = ReleasePending;
        runtime.spawn(async move {
            let _pending = pending;
            tokio::time::sleep(RELEASE_DELAY).await;
            PEAK.store(LIVE.load(Relaxed), Relaxed);
            crate::sys::release_free_memory();
        });
    }
}

/// Clears [`RELEASE_PENDING`] when dropped.
struct ReleasePending;

impl Drop for ReleasePending {
    fn drop(&mut self) {
        RELEASE_PENDING.store(false, Relaxed);
    }
}

/// Makes the coming close of `stream` abortive: `SO_LINGER` with a zero timeout turns the
/// close into a reset and discards unsent bytes. Once per failed connection, never per chunk.
/// A socket already reset refuses nothing here, and one that does is closed as it is.
fn abort_on_close(stream: &TcpStream) {
    if let Err(err) = SockRef::from(stream).set_linger(Some(Duration::ZERO)) {
        tracing::debug!(errno_name = %crate::sys::errno_name(&err), "abortive close not armed");
    }
}

async fn pump(
    leg: Leg<'_>,
    path: CopyPath,
    activity: &Activity,
    notes: &PathNotes,
) -> Result<(), RelayError> {
    match path {
        #[cfg(target_os = "linux")]
        CopyPath::Splice => splice::pump(leg, activity, notes).await,
        #[cfg(not(target_os = "linux"))]
        CopyPath::Splice => {
            let _ = notes;
            copy::pump(leg, activity).await
        }
        CopyPath::Userspace => copy::pump(leg, activity).await,
    }
}

/// What the relays of this process hold in their pools now. For tests and the measuring
/// example (`examples/idle_conns.rs`).
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    /// Pipes lent to legs with bytes in flight (0 off Linux).
    pub pipes_lent: usize,
    /// Empty pipes waiting for reuse (0 off Linux).
    pub pipes_idle: usize,
    /// Userspace buffers lent to legs with bytes in flight.
    pub buffers_lent: usize,
    /// Userspace buffers waiting for reuse.
    pub buffers_idle: usize,
}

/// The pools' state now; see [`PoolStats`].
#[doc(hidden)]
pub fn pool_stats() -> PoolStats {
    #[cfg(target_os = "linux")]
    let (pipes_lent, pipes_idle) = (splice::PIPES.lent(), splice::PIPES.idle());
    #[cfg(not(target_os = "linux"))]
    let (pipes_lent, pipes_idle) = (0, 0);
    PoolStats {
        pipes_lent,
        pipes_idle,
        buffers_lent: copy::BUFFERS.lent(),
        buffers_idle: copy::BUFFERS.idle(),
    }
}

#[cfg(target_os = "linux")]
#[doc(hidden)]
pub use splice::{PIPES_KEPT, PIPES_KEPT_QUIET, PIPES_MAX};

/// Which way a leg moves bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    /// Peer to target.
    Inbound,
    /// Target to peer.
    Outbound,
}

impl Direction {
    /// The direction as rate limits name it (`in` is peer to target).
    fn capped(self) -> portunus_core::ratelimit::Direction {
        match self {
            Direction::Inbound => portunus_core::ratelimit::Direction::In,
            Direction::Outbound => portunus_core::ratelimit::Direction::Out,
        }
    }
}

/// One direction: read from `src`, deliver to `dst`, count into `delivered`.
#[derive(Clone, Copy)]
struct Leg<'a> {
    src: &'a TcpStream,
    dst: &'a TcpStream,
    dir: Direction,
    delivered: &'a AtomicU64,
    budget: Option<&'a crate::budget::QuotaBudget>,
    throttle: Option<Throttle<'a>>,
    /// Set by the first leg to reach end of stream.
    one_ended: &'a AtomicBool,
}

impl Leg<'_> {
    fn src_failed(&self, source: io::Error) -> RelayError {
        let side = match self.dir {
            Direction::Inbound => Side::Peer,
            Direction::Outbound => Side::Target,
        };
        RelayError { side, source }
    }

    fn dst_failed(&self, source: io::Error) -> RelayError {
        let side = match self.dir {
            Direction::Inbound => Side::Target,
            Direction::Outbound => Side::Peer,
        };
        RelayError { side, source }
    }

    /// Counts `n` delivered bytes with one relaxed add per step of at most [`BATCH`], so a
    /// counter never jumps by more than 64 KiB at once, whatever one system call moved; and
    /// debits the pair's quota budget, failing the relay once it is spent (the overrun is at
    /// most this one delivery per live connection).
    fn delivered(&self, n: usize, activity: &Activity) -> Result<(), RelayError> {
        let mut left = n;
        while left > 0 {
            let step = left.min(BATCH);
            self.delivered.fetch_add(step as u64, Relaxed);
            left -= step;
        }
        activity.touch();
        match self.budget {
            Some(budget) if !budget.debit(n as u64) => {
                Err(RelayError { side: Side::Peer, source: io::Error::other("traffic quota exhausted") })
            }
            _ => Ok(()),
        }
    }

    /// Forwards end of stream: no more bytes will reach `dst` from this leg. A failure here
    /// means `dst` is already gone, which the opposite leg reports on its own.
    ///
    /// The second leg to end skips the call: both directions are then over and the caller
    /// closes both sockets at once, which sends the same FIN (every byte of `dst` was read,
    /// so the close cannot turn into a reset).
    fn half_close(&self) {
        if self.one_ended.swap(true, Relaxed) {
            return;
        }
        if let Err(err) = SockRef::from(self.dst).shutdown(Shutdown::Write) {
            tracing::debug!(errno_name = %crate::sys::errno_name(&err), "half-close of a dead socket");
        }
    }
}

/// When bytes last moved either way, for the idle timeout.
struct Activity {
    start: Instant,
    /// Nanoseconds after `start` of the last read or delivery.
    last_nanos: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Activity { start: Instant::now(), last_nanos: AtomicU64::new(0) }
    }

    fn touch(&self) {
        let nanos = u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.last_nanos.store(nanos, Relaxed);
    }

    /// Resolves once nothing moved for `idle`. Sleeps until the earliest moment that could
    /// be true, so an active connection wakes this about once per `idle`, not per batch.
    async fn idle_for(&self, idle: Duration) {
        loop {
            let last = self.start + Duration::from_nanos(self.last_nanos.load(Relaxed));
            let due = last + idle;
            if due <= Instant::now() {
                return;
            }
            tokio::time::sleep_until(due).await;
        }
    }
}

fn is_would_block(err: &io::Error) -> bool {
    err.kind() == io::ErrorKind::WouldBlock
}
