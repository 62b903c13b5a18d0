//! Target choice and connect for one accepted connection (or new UDP flow).
//!
//! [`TargetPlan::candidates`] is the single place that decides which targets are tried and in
//! what order: healthy targets before failed ones, each by preference, from core's
//! `HealthBook`. Every connect attempt (and every active probe) feeds the book; DNS-name
//! targets are resolved here through core's `Resolver` port, per connection.
//!
//! Invariants: a connection tries each candidate at most once, each attempt bounded by the
//! connect timeout, and the first success wins; the health lock is held only to read the
//! order or record a result, never across a resolve or a dial. Running out of file
//! descriptors is this process's fault, never a target's: such an attempt feeds neither the
//! health book nor a target's failure count, and ends the connection's tries at once (every
//! other target would fail the same way, and failing over would only hide the shortage).

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crate::ports::{ResolveFailure, Resolver};
use portunus_core::health::HealthBook;
use portunus_core::rule::{Host, PortRange, RuleDef, Target};
use portunus_core::stats::{Counters, TargetCounters, TargetHealth};
use tokio::net::{TcpSocket, TcpStream};

use crate::events::{RateLimit, RuleLabel};

/// Most addresses of one DNS answer a connection tries before moving to the next target.
const ADDRESSES_PER_TARGET: usize = 4;

/// How often at most `rule.fd_exhausted` is logged per rule (every occurrence is counted).
const FD_EXHAUSTED_PERIOD: Duration = Duration::from_secs(1);

/// Per-target counts of attempts that reached no target, and so no (port, target) cell of
/// [`crate::counters::TargetTraffic`]: those count everything a connection did on a target.
#[derive(Debug, Default)]
struct TargetStats {
    connect_failures: AtomicU64,
    dns_failures: AtomicU64,
}

/// A rule's targets, their health, and how to resolve them; fixed when the rule is bound.
pub(crate) struct TargetPlan {
    rule: RuleLabel,
    /// `rule.dns_failed` (TCP) or `rule.udp_dns_failed` (UDP).
    dns_event: &'static str,
    listen: PortRange,
    targets: Vec<Target>,
    prefer_ipv6: bool,
    health: Mutex<HealthBook>,
    /// The most preferred target: fixed by priorities at bind time, whatever the health.
    preferred: Option<usize>,
    stats: Vec<TargetStats>,
    resolver: Option<Arc<dyn Resolver>>,
    dns_failed: RateLimit,
    fd_exhausted: RateLimit,
}

impl std::fmt::Debug for TargetPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TargetPlan")
            .field("rule", &self.rule)
            .field("targets", &self.targets)
            .finish_non_exhaustive()
    }
}

/// One place to try for one connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Candidate<'a> {
    /// Index into the rule's target list.
    pub(crate) idx: usize,
    pub(crate) host: &'a Host,
    pub(crate) port: u16,
    pub(crate) target: &'a Target,
}

/// A connection that reached a target.
#[derive(Debug)]
pub(crate) struct Connected<'a> {
    pub(crate) stream: TcpStream,
    /// Index of the target it reached in the rule's list.
    pub(crate) idx: usize,
    /// The target it reached.
    pub(crate) target: &'a Target,
    /// True when it is not the most preferred target (that one was failed or refused).
    pub(crate) failed_over: bool,
}

/// Why a connection reached no target.
#[derive(Debug)]
pub(crate) enum NotConnected {
    /// Every candidate failed.
    Unreachable(ConnectFailure),
    /// This process or host ran out of file descriptors before a target answered; the
    /// candidates tried until then are not blamed.
    OutOfDescriptors {
        /// `EMFILE` or `ENFILE`.
        errno_name: String,
        /// How many candidates failed earlier because their name did not resolve.
        dns_failures: u64,
    },
}

/// Every candidate failed. Describes the most preferred one, which is what an operator
/// looks at first.
#[derive(Debug)]
pub(crate) struct ConnectFailure {
    pub(crate) target: String,
    pub(crate) reason: String,
    pub(crate) errno_name: String,
    pub(crate) n_tried: usize,
    /// How many candidates failed because their name did not resolve.
    pub(crate) dns_failures: u64,
}

fn lock(book: &Mutex<HealthBook>) -> MutexGuard<'_, HealthBook> {
    book.lock().unwrap_or_else(PoisonError::into_inner)
}

impl TargetPlan {
    /// A plan without a resolver (DNS-name targets then fail) and without a rule label.
    #[cfg(test)]
    pub(crate) fn new(def: &RuleDef) -> Self {
        Self::with_context(def, RuleLabel(None), None)
    }

    /// A plan for a bound rule.
    pub(crate) fn with_context(def: &RuleDef, rule: RuleLabel, resolver: Option<Arc<dyn Resolver>>) -> Self {
        let preference: Vec<usize> = def.targets_by_preference().into_iter().map(|(idx, _)| idx).collect();
        TargetPlan {
            rule,
            dns_event: match def.protocol {
                portunus_core::rule::Protocol::Tcp => "rule.dns_failed",
                portunus_core::rule::Protocol::Udp => "rule.udp_dns_failed",
            },
            listen: def.listen,
            targets: def.targets.clone(),
            prefer_ipv6: def.prefer_ipv6,
            preferred: preference.first().copied(),
            health: Mutex::new(HealthBook::new(preference)),
            stats: def.targets.iter().map(|_| TargetStats::default()).collect(),
            resolver,
            dns_failed: RateLimit::new(Duration::from_secs(1)),
            fd_exhausted: RateLimit::new(FD_EXHAUSTED_PERIOD),
        }
    }

    /// The targets a connection that arrived on `listen_port` tries, best first.
    pub(crate) fn candidates(&self, listen_port: u16) -> impl Iterator<Item = Candidate<'_>> + '_ {
        let order = lock(&self.health).attempt_order();
        order.into_iter().map(move |idx| {
            let target = &self.targets[idx];
            Candidate { idx, host: &target.host, port: target.port_for(self.listen, listen_port), target }
        })
    }

    /// Records one attempt on target `idx` and reports a health change.
    pub(crate) fn record(&self, idx: usize, ok: bool) {
        let transition = lock(&self.health).handle_result(idx, ok);
        if let Some(t) = transition {
            let target = self.targets.get(idx).map(ToString::to_string).unwrap_or_default();
            let health = match t.health {
                TargetHealth::Healthy => "healthy",
                TargetHealth::Failed => "failed",
            };
            tracing::warn!(event = "rule.target_health_changed", rule = %self.rule, target = %target, health);
        }
    }

    /// The addresses of `host`: itself for an IP, the resolver's answer for a name. A failed
    /// resolution emits `rule.dns_failed` (rate-limited; every failure is counted).
    pub(crate) async fn addresses(&self, host: &Host) -> Result<Vec<IpAddr>, ResolveFailure> {
        let name = match host {
            Host::Ip(ip) => return Ok(vec![*ip]),
            Host::Name(name) => name,
        };
        let result = match &self.resolver {
            Some(resolver) => resolver.resolve(name, self.prefer_ipv6).await,
            None => Err(ResolveFailure { reason: "no_resolver".into() }),
        };
        if let Err(failure) = &result
            && self.dns_failed.allow()
        {
            tracing::warn!(event = self.dns_event, rule = %self.rule, host = %name, reason = %failure.reason);
        }
        result
    }

    /// Target `idx` of the rule (`None` out of range).
    pub(crate) fn target(&self, idx: usize) -> Option<&Target> {
        self.targets.get(idx)
    }

    /// How many targets the rule has.
    pub(crate) fn n_targets(&self) -> usize {
        self.targets.len()
    }

    /// True when target `idx` is not the most preferred one: a connection or flow that goes
    /// there has failed over.
    pub(crate) fn is_failover(&self, idx: usize) -> bool {
        self.preferred.is_some_and(|p| p != idx)
    }

    /// Counts a failed connect (or a UDP flow evicted by an ICMP error) of target `idx`.
    pub(crate) fn note_failed(&self, idx: usize) {
        if let Some(s) = self.stats.get(idx) {
            s.connect_failures.fetch_add(1, Relaxed);
        }
    }

    /// Logs `rule.fd_exhausted` (rate-limited per rule; the caller counts every occurrence):
    /// `during` names the step that found no descriptor (`accept`, `connect`, `udp_flow`).
    pub(crate) fn fd_exhausted(&self, during: &'static str, err: &io::Error) {
        self.fd_exhausted_named(during, &crate::sys::errno_name(err));
    }

    /// [`TargetPlan::fd_exhausted`] with the errno already named.
    pub(crate) fn fd_exhausted_named(&self, during: &'static str, errno_name: &str) {
        if self.fd_exhausted.allow() {
            tracing::warn!(event = "rule.fd_exhausted", rule = %self.rule, during, errno_name);
        }
    }

    /// Counts a failed resolution of target `idx`.
    pub(crate) fn note_dns_failed(&self, idx: usize) {
        if let Some(s) = self.stats.get(idx) {
            s.dns_failures.fetch_add(1, Relaxed);
        }
    }

    /// Active probe: one TCP connect to every target, outside any lock, each result recorded.
    /// A probe that finds no free descriptor records nothing and ends the round.
    pub(crate) async fn probe_all(&self, timeout: Duration) {
        let dial = |addr| connect_one(addr, Some(timeout), None);
        for (idx, target) in self.targets.iter().enumerate() {
            let port = target.ports.start();
            let ok = match self.addresses(&target.host).await {
                Ok(addrs) => match connect_any(&addrs, port, &dial).await {
                    Ok(_) => true,
                    Err(DialError { blame: Blame::Local, .. }) => return,
                    Err(DialError { blame: Blame::Target, .. }) => false,
                },
                Err(_) => false,
            };
            self.record(idx, ok);
        }
    }

    /// Per-target counters and health, for the rule's report: `traffic[idx]` (what the
    /// connections or flows on target `idx` did, summed over the rule's ports) plus the
    /// failed attempts counted here. A target missing from `traffic` counts only those.
    pub(crate) fn report(&self, traffic: &[Counters]) -> Vec<TargetCounters> {
        let book = lock(&self.health);
        self.stats
            .iter()
            .enumerate()
            .map(|(idx, s)| TargetCounters {
                index: idx as u32,
                health: book.health(idx),
                counters: Counters {
                    connect_failures: s.connect_failures.load(Relaxed),
                    dns_failures: s.dns_failures.load(Relaxed),
                    ..traffic.get(idx).copied().unwrap_or_default()
                },
            })
            .collect()
    }
}

impl Candidate<'_> {
    fn label(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// Connects to the first candidate that answers within `timeout` (`None`: the OS decides).
pub(crate) async fn connect_first(
    plan: &TargetPlan,
    listen_port: u16,
    timeout: Option<Duration>,
    keepalive: Option<Duration>,
) -> Result<Connected<'_>, NotConnected> {
    connect_first_with(plan, listen_port, &|addr| connect_one(addr, timeout, keepalive)).await
}

/// [`connect_first`] with the dial of one address supplied, so tests can script failures
/// the host would not produce on demand.
async fn connect_first_with<'p, F, D>(
    plan: &'p TargetPlan,
    listen_port: u16,
    dial: &F,
) -> Result<Connected<'p>, NotConnected>
where
    F: Fn(SocketAddr) -> D,
    D: Future<Output = Result<TcpStream, DialError>>,
{
    let mut first_failure: Option<(String, String, String)> = None;
    let mut n_tried = 0;
    let mut dns_failures = 0;
    for candidate in plan.candidates(listen_port) {
        n_tried += 1;
        let stats = &plan.stats[candidate.idx];
        let attempt = match plan.addresses(candidate.host).await {
            Ok(addrs) => connect_any(&addrs, candidate.port, dial).await,
            Err(failure) => {
                dns_failures += 1;
                stats.dns_failures.fetch_add(1, Relaxed);
                Err(DialError {
                    reason: format!("dns: {}", failure.reason),
                    errno_name: "-".to_owned(),
                    blame: Blame::Target,
                })
            }
        };
        match attempt {
            Ok(stream) => {
                plan.record(candidate.idx, true);
                let failed_over = plan.is_failover(candidate.idx);
                return Ok(Connected { stream, idx: candidate.idx, target: candidate.target, failed_over });
            }
            Err(DialError { errno_name, blame: Blame::Local, .. }) => {
                return Err(NotConnected::OutOfDescriptors { errno_name, dns_failures });
            }
            Err(DialError { reason, errno_name, blame: Blame::Target }) => {
                plan.record(candidate.idx, false);
                stats.connect_failures.fetch_add(1, Relaxed);
                first_failure.get_or_insert((candidate.label(), reason, errno_name));
            }
        }
    }
    // A validated rule has at least one target; the "-" case only guards the invariant.
    let (target, reason, errno_name) =
        first_failure.unwrap_or_else(|| ("-".to_owned(), "no_targets".to_owned(), "-".to_owned()));
    Err(NotConnected::Unreachable(ConnectFailure { target, reason, errno_name, n_tried, dns_failures }))
}

/// Who a failed dial says something about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Blame {
    /// The target or the path to it: counts against the target's health.
    Target,
    /// This process or host (out of descriptors): says nothing about the target.
    Local,
}

impl Blame {
    /// The failover decision for one OS error met while dialling.
    fn of(err: &io::Error) -> Blame {
        if crate::sys::is_descriptor_exhaustion(err) { Blame::Local } else { Blame::Target }
    }
}

/// One failed dial.
#[derive(Debug)]
struct DialError {
    reason: String,
    errno_name: String,
    blame: Blame,
}

impl DialError {
    fn of(err: &io::Error) -> DialError {
        DialError {
            reason: reason(err).to_owned(),
            errno_name: crate::sys::errno_name(err),
            blame: Blame::of(err),
        }
    }
}

/// Tries up to [`ADDRESSES_PER_TARGET`] of `addrs` in order; the error is the first
/// failure, or the one that blames this process (which ends the tries at once).
async fn connect_any<F, D>(addrs: &[IpAddr], port: u16, dial: &F) -> Result<TcpStream, DialError>
where
    F: Fn(SocketAddr) -> D,
    D: Future<Output = Result<TcpStream, DialError>>,
{
    let mut first = None;
    for ip in addrs.iter().take(ADDRESSES_PER_TARGET) {
        match dial(SocketAddr::new(*ip, port)).await {
            Ok(stream) => return Ok(stream),
            Err(err) if err.blame == Blame::Local => return Err(err),
            Err(err) => {
                first.get_or_insert(err);
            }
        }
    }
    Err(first.unwrap_or_else(|| DialError {
        reason: "no_addresses".to_owned(),
        errno_name: "-".to_owned(),
        blame: Blame::Target,
    }))
}

/// One connect. The socket gets `TCP_NODELAY` and keepalive before connecting, and
/// `TCP_QUICKACK` off, so the handshake's final ACK rides on the first data segment instead of
/// costing both ends a packet of its own (about 4 % more connections per second measured).
async fn connect_one(
    addr: SocketAddr,
    timeout: Option<Duration>,
    keepalive: Option<Duration>,
) -> Result<TcpStream, DialError> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4() } else { TcpSocket::new_v6() }
        .map_err(|err| DialError::of(&err))?;
    let sock = socket2::SockRef::from(&socket);
    // Options are an optimisation: a failure to set one never fails the connection.
    let _ = crate::conn::tune_socket(&sock, keepalive);
    let _ = sock.set_tcp_quickack(false);
    let connect = socket.connect(addr);
    let res = match timeout {
        Some(limit) => match tokio::time::timeout(limit, connect).await {
            Ok(res) => res,
            Err(_elapsed) => {
                return Err(DialError {
                    reason: "timeout".to_owned(),
                    errno_name: "ETIMEDOUT".to_owned(),
                    blame: Blame::Target,
                });
            }
        },
        None => connect.await,
    };
    res.map_err(|err| DialError::of(&err))
}

fn reason(err: &io::Error) -> &'static str {
    match err.kind() {
        io::ErrorKind::ConnectionRefused => "connection_refused",
        io::ErrorKind::TimedOut => "timeout",
        io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable => "unreachable",
        io::ErrorKind::AddrNotAvailable => "address_not_available",
        _ => "io_error",
    }
}

#[cfg(test)]
mod tests;
