//! One accepted connection: pass its rate limits, connect a target, tune both legs, relay,
//! close.
//!
//! Invariants: a connection reads its rule's limit path once, first thing: refused, it is
//! closed before anything else happens (counted in `rate_limit_rejected`, not in the
//! connection counts); admitted, it holds its permit until its task ends, whichever way. A
//! connection with a bandwidth cap at that moment uses the userspace copy for its life.
//! The connection holds one `connections_active` unit of its port from accept,
//! and one of its (port, target) cell from the target's connect, until its task ends by any
//! route: finished, failed, idle, or aborted by unbind/shutdown (its port's accept task owns
//! it in a `JoinSet`, so it is cut when that task goes). It shares nothing mutable with
//! other connections but the rule's atomic counters and once-flags.

use std::sync::Arc;
use std::time::Duration;

use std::sync::atomic::Ordering::Relaxed;

use portunus_core::ids::RuleId;
use portunus_core::proxy_protocol::{self, Addresses};
use portunus_core::ratelimit::{LimitPath, Permit, Refusal};
use portunus_core::rule::ProxyVersion;
use socket2::{SockRef, TcpKeepalive};
use tokio::net::TcpStream;

use crate::counters::{TargetTraffic, TrafficCounters};
use crate::events::RateLimit;
use crate::limits::{self, Throttle};
use crate::relay::{self, CopyPath, PathNotes, RelayEnd, Sinks};
use crate::settings::{SharedSettings, TcpSettings};
use crate::target::{self, NotConnected, TargetPlan};

/// How often at most `rule.connect_failed` and `rule.accept_failed` are logged per rule.
const EVENT_PERIOD: Duration = Duration::from_secs(10);

/// How often at most `rule.rate_limited` is logged per rule.
pub(crate) const RATE_LIMITED_PERIOD: Duration = Duration::from_secs(1);

/// What every connection of one bound rule shares.
#[derive(Debug)]
pub(crate) struct RuleShared {
    pub(crate) id: RuleId,
    pub(crate) plan: TargetPlan,
    pub(crate) path: CopyPath,
    pub(crate) notes: PathNotes,
    pub(crate) settings: Arc<SharedSettings>,
    pub(crate) connect_failed: RateLimit,
    pub(crate) accept_failed: RateLimit,
    /// The keepalive idle time the listeners were bound with (accepted sockets inherit it).
    pub(crate) listener_keepalive: Option<Duration>,
    /// The traffic quota budget of the rule's (owner, client) pair, when it has one.
    pub(crate) budget: std::sync::Mutex<Option<Arc<crate::budget::QuotaBudget>>>,
    /// The scopes new connections pass (owner, then rule); the default limits nothing.
    pub(crate) limits: std::sync::Mutex<LimitPath>,
    /// Bounds `rule.rate_limited` to one event per second.
    pub(crate) rate_limited: RateLimit,
}

impl RuleShared {
    pub(crate) fn new(
        id: RuleId,
        plan: TargetPlan,
        path: CopyPath,
        notes: PathNotes,
        settings: Arc<SharedSettings>,
        listener_keepalive: Option<Duration>,
        limits: LimitPath,
    ) -> Self {
        RuleShared {
            budget: std::sync::Mutex::new(None),
            limits: std::sync::Mutex::new(limits),
            rate_limited: RateLimit::new(RATE_LIMITED_PERIOD),
            listener_keepalive,
            id,
            plan,
            path,
            notes,
            settings,
            connect_failed: RateLimit::new(EVENT_PERIOD),
            accept_failed: RateLimit::new(EVENT_PERIOD),
        }
    }

    /// The limit path new connections pass now.
    pub(crate) fn limits(&self) -> LimitPath {
        self.limits.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replaces the limit path of connections accepted from now on.
    pub(crate) fn set_limits(&self, path: LimitPath) {
        *self.limits.lock().unwrap_or_else(|p| p.into_inner()) = path;
    }
}

/// Logs a refused connection or flow, at most once per [`RATE_LIMITED_PERIOD`] per rule.
pub(crate) fn note_rate_limited(gate: &RateLimit, rule: RuleId, refusal: Refusal) {
    if gate.allow() {
        tracing::info!(
            event = "rule.rate_limited",
            rule = %rule,
            scope = refusal.scope.as_str(),
            cap = refusal.cap.as_str(),
        );
    }
}

/// One listen port of a bound rule.
#[derive(Debug)]
pub(crate) struct PortState {
    pub(crate) port: u16,
    /// Accepts, failures and failovers of the port; its bytes are in `targets`.
    pub(crate) counters: TrafficCounters,
    /// One cell per target of the rule, by index: what this port's connections to that
    /// target delivered.
    pub(crate) targets: Box<[TargetTraffic]>,
}

impl PortState {
    /// A port of a rule with `n_targets` targets, nothing counted yet.
    pub(crate) fn new(port: u16, n_targets: usize) -> Self {
        PortState {
            port,
            counters: TrafficCounters::default(),
            targets: TargetTraffic::per_target(n_targets),
        }
    }
}

/// Serves one accepted connection to its end.
pub(crate) async fn serve(rule: Arc<RuleShared>, port: Arc<PortState>, peer: TcpStream) {
    serve_replaying(rule, port, peer, Vec::new()).await;
}

/// Serves a connection whose first bytes were already read from `peer` (an SNI listener's
/// ClientHello peek): `replay` reaches the target unchanged, before anything else.
pub(crate) async fn serve_replaying(
    rule: Arc<RuleShared>,
    port: Arc<PortState>,
    peer: TcpStream,
    replay: Vec<u8>,
) {
    let Some(admitted) = admit(&rule, &port) else {
        // Accept-then-close: dropping `peer` closes the socket before anything is read.
        return;
    };
    let _active = port.counters.open_connection();
    let _census = relay::Census::enter();
    let tcp = rule.settings.tcp();
    forward(&rule, &port, peer, tcp, &replay, &admitted).await;
}

/// A connection that passed its rule's limit path: the permit holds its slots until the
/// connection ends; `bandwidth` is set when a scope capped bandwidth at accept.
struct Admitted {
    _permit: Permit,
    bandwidth: Option<LimitPath>,
}

/// Reads the rule's limit path and admits the connection, or counts and logs the refusal.
/// A rule without caps locks nothing here.
fn admit(rule: &RuleShared, port: &PortState) -> Option<Admitted> {
    let path = rule.limits();
    match path.admit(limits::now()) {
        Ok(permit) => {
            let bandwidth = path.has_bandwidth_cap().then_some(path);
            Some(Admitted { _permit: permit, bandwidth })
        }
        Err(refusal) => {
            port.counters.rate_limit_rejected.fetch_add(1, Relaxed);
            note_rate_limited(&rule.rate_limited, rule.id, refusal);
            None
        }
    }
}

async fn forward(
    rule: &RuleShared,
    port: &PortState,
    peer: TcpStream,
    tcp: TcpSettings,
    replay: &[u8],
    admitted: &Admitted,
) {
    // The pair's quota budget, read once per connection. A spent one takes no new
    // connection: closed before any target is tried.
    let budget = rule.budget.lock().unwrap_or_else(|p| p.into_inner()).clone();
    if budget.as_ref().is_some_and(|b| b.remaining() == 0) {
        tracing::debug!(event = "rule.connection_refused", rule = %rule.id, port = port.port, reason = "traffic_quota");
        return;
    }
    // The peer leg inherited the listener's options; only settings changed since the bind
    // need setting again.
    if tcp.keepalive != rule.listener_keepalive {
        tune(&peer, tcp.keepalive);
    }

    let (target, idx, proxy) =
        match target::connect_first(&rule.plan, port.port, tcp.connect_timeout, tcp.keepalive).await {
            Ok(connected) => {
                if connected.failed_over {
                    port.counters.target_failovers.fetch_add(1, Relaxed);
                }
                (connected.stream, connected.idx, connected.target.proxy)
            }
            Err(NotConnected::OutOfDescriptors { errno_name, dns_failures }) => {
                // Not the targets' fault: no connect failure, no health change, no failover.
                port.counters.fd_exhausted.fetch_add(1, Relaxed);
                port.counters.dns_failures.fetch_add(dns_failures, Relaxed);
                rule.plan.fd_exhausted_named("connect", &errno_name);
                return;
            }
            Err(NotConnected::Unreachable(failure)) => {
                port.counters.connect_failures.fetch_add(1, Relaxed);
                port.counters.dns_failures.fetch_add(failure.dns_failures, Relaxed);
                if rule.connect_failed.allow() {
                    tracing::warn!(
                        event = "rule.connect_failed",
                        rule = %rule.id,
                        target = %failure.target,
                        errno_name = %failure.errno_name,
                        reason = %failure.reason,
                        targets_tried = failure.n_tried,
                    );
                }
                // Dropping `peer` closes the accepted socket.
                return;
            }
        };
    // The plan only hands out indices of the rule's targets, and every port has a cell for
    // each; the check keeps a broken invariant from becoming a panic.
    let Some(cell) = port.targets.get(idx) else { return };
    let _on_target = cell.open_connection(rule.plan.is_failover(idx));
    if let Some(version) = proxy
        && let Err(why) = send_proxy_header(&peer, &target, version).await
    {
        tracing::debug!(event = "rule.proxy_header_failed", rule = %rule.id, port = port.port, reason = why);
        return;
    }
    if !replay.is_empty() {
        if let Some(caps) = &admitted.bandwidth {
            // The peeked hello is inbound traffic like the rest: paid for before it is sent.
            let throttle = Throttle { path: caps, waits: &port.counters.rate_limit_throttled };
            let mut owed = replay.len();
            while owed > 0 {
                owed -= throttle.grant(portunus_core::ratelimit::Direction::In, owed).await.clamp(1, owed);
            }
        }
        if let Err(why) = crate::sni::replay(&target, replay).await {
            tracing::debug!(event = "rule.sni_replay_failed", rule = %rule.id, port = port.port, reason = why);
            return;
        }
        cell.bytes_in.fetch_add(replay.len() as u64, Relaxed);
    }
    // A bandwidth cap is counted per chunk in userspace; the fast path never waits on it.
    let (path, throttle) = match &admitted.bandwidth {
        Some(caps) => {
            (CopyPath::Userspace, Some(Throttle { path: caps, waits: &port.counters.rate_limit_throttled }))
        }
        None => (rule.path, None),
    };
    let sinks =
        Sinks { to_target: &cell.bytes_in, to_peer: &cell.bytes_out, budget: budget.as_deref(), throttle };
    match relay::run(&peer, &target, sinks, path, tcp.idle_timeout, &rule.notes).await {
        Ok(RelayEnd::Closed) => {}
        Ok(RelayEnd::IdleTimeout) => {
            tracing::debug!(event = "rule.connection_idle_closed", rule = %rule.id, port = port.port);
        }
        Err(err) => {
            tracing::debug!(
                event = "rule.connection_failed",
                rule = %rule.id,
                port = port.port,
                side = %err.side,
                errno_name = %crate::sys::errno_name(&err.source),
            );
        }
    }
}

/// How long a target may take to accept the PROXY header; one that never reads must not wedge
/// the connection.
const PROXY_HEADER_DEADLINE: Duration = Duration::from_secs(5);

/// Writes the PROXY protocol header carrying the peer's address (IPv4-mapped addresses as
/// IPv4) before any client byte. The header is not counted as delivered traffic.
async fn send_proxy_header(
    peer: &TcpStream,
    target: &TcpStream,
    version: ProxyVersion,
) -> Result<(), &'static str> {
    let (src, dst) = match (peer.peer_addr(), peer.local_addr()) {
        (Ok(src), Ok(dst)) => (src, dst),
        _ => return Err("peer_gone"),
    };
    let mut header = Vec::with_capacity(64);
    proxy_protocol::encode(version, &Addresses::of(src, dst), &mut header);
    let write = async {
        let mut written = 0;
        while written < header.len() {
            target.writable().await.map_err(|_| "target_gone")?;
            match target.try_write(&header[written..]) {
                Ok(0) => return Err("target_gone"),
                Ok(n) => written += n,
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return Err("target_gone"),
            }
        }
        Ok(())
    };
    tokio::time::timeout(PROXY_HEADER_DEADLINE, write).await.map_err(|_| "deadline")?
}

/// `TCP_NODELAY` and keepalive on one leg. Failures are not fatal: the socket may already
/// be reset, which the relay reports on its own.
fn tune(stream: &TcpStream, keepalive: Option<Duration>) {
    if let Err(err) = tune_socket(&SockRef::from(stream), keepalive) {
        tracing::debug!(errno_name = %crate::sys::errno_name(&err), "socket options not applied");
    }
}

/// Sets `TCP_NODELAY` and keepalive (with `keepalive` as the idle time, if given) on a
/// socket; on a listener, accepted sockets inherit both.
pub(crate) fn tune_socket(sock: &socket2::Socket, keepalive: Option<Duration>) -> std::io::Result<()> {
    sock.set_tcp_nodelay(true)?;
    match keepalive {
        Some(idle) => sock.set_tcp_keepalive(&TcpKeepalive::new().with_time(idle)),
        None => sock.set_keepalive(true),
    }
}

#[cfg(test)]
mod tests;
