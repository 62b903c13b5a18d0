//! UDP forwarding: one runtime per bound rule ([`UdpRule`]).
//!
//! Shape: a listener socket per listen port, each served by one task that receives batches
//! (`listen`); a flow per `(listen port, source)` with its own connected upstream socket and
//! one small task that carries the upstream's replies back out of the listener socket to
//! exactly that source (`flow`); one reaper task per rule that sleeps until the flow table
//! says a flow may have gone idle. Which flows open, live and go is decided by
//! [`portunus_core::udp::FlowTable`], one per rule (so the cap spans all its ports); this
//! module only does the I/O and counts.
//!
//! Invariants:
//! - a new flow passes the rule's limit path once, when it opens (a refusal drops the datagram
//!   that would have opened it), and holds its permit until it ends; a flow whose path capped
//!   bandwidth when it opened asks the caps for every datagram either way, and a datagram
//!   they have no room for is dropped, never delayed. Flows of a rule without caps lock no
//!   scope;
//! - no task ever waits on a send: every send is non-blocking, and a datagram that meets a
//!   full buffer is dropped (and counted), so a slow or blackholed upstream cannot delay
//!   another flow's datagrams, and a burst can drop datagrams but never ends a flow or a
//!   listener;
//! - an error of one flow ends at most that flow, never the listener;
//! - per-flow memory is a socket, a task and a table entry; datagram buffers are per thread
//!   ([`crate::sys::batch`]), never per flow;
//! - listeners never set `SO_REUSEADDR` or `SO_REUSEPORT` (on Linux two UDP sockets that
//!   both set it share a port), so a port held by anyone else is `port_in_use`;
//! - the flow-table lock is never held while a listener's socket lock is taken, and no
//!   datagram is sent or received under it (opening a flow's socket is the only system work
//!   done while it is held).

mod flow;
mod listen;

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::ports::Resolver;
use portunus_core::Failure;
use portunus_core::config::DataPlaneSettings;
use portunus_core::ids::RuleId;
use portunus_core::ratelimit::LimitPath;
use portunus_core::rule::RuleDef;
use portunus_core::stats::{Counters, RuleReport};
use portunus_core::udp::{FlowKey, FlowLimits, FlowTable};
use tokio::runtime::Handle;
use tokio::sync::Notify;
use tokio::task::AbortHandle;

use crate::counters::{self, PortView, TargetTraffic};
use crate::events::{RateLimit, RuleLabel};
use crate::listen::Family;
use crate::target::TargetPlan;

use self::flow::FlowSlot;
use self::listen::PortSocket;

/// How often at most each rate-limited UDP event is logged per rule.
const EVENT_PERIOD: Duration = Duration::from_secs(10);

/// Counters of one listen port of a UDP rule. Only `flows_active` goes down. What the
/// port's flows delivered is counted in the port's per-target cells ([`PortIo::targets`]).
#[derive(Debug, Default)]
pub(crate) struct UdpCounters {
    flows_total: AtomicU64,
    flows_active: AtomicU64,
    flows_dropped_overflow: AtomicU64,
    dns_failures: AtomicU64,
    open_failures: AtomicU64,
    /// Flow sockets not made for want of a file descriptor.
    fd_exhausted: AtomicU64,
    /// Flows opened to a target other than the most preferred one.
    failovers: AtomicU64,
    /// Datagrams received but not delivered (full buffer, send error, truncation). Not
    /// part of the report: it has no field there; it is logged.
    datagrams_dropped: AtomicU64,
    /// Datagrams from sources without a flow dropped because a connection cap refused
    /// the flow.
    rate_limit_rejected: AtomicU64,
    /// Datagrams of capped flows dropped because a bandwidth cap had no room for them.
    rate_limit_dropped: AtomicU64,
}

impl UdpCounters {
    fn snapshot(&self) -> Counters {
        Counters {
            connections_total: self.flows_total.load(Relaxed),
            connections_active: self.flows_active.load(Relaxed),
            flows_dropped_overflow: self.flows_dropped_overflow.load(Relaxed),
            dns_failures: self.dns_failures.load(Relaxed),
            connect_failures: self.open_failures.load(Relaxed),
            target_failovers: self.failovers.load(Relaxed),
            fd_exhausted: self.fd_exhausted.load(Relaxed),
            rate_limit_rejected: self.rate_limit_rejected.load(Relaxed),
            rate_limit_dropped: self.rate_limit_dropped.load(Relaxed),
            ..Counters::default()
        }
    }

    fn dropped(&self, datagrams: u64) {
        if datagrams > 0 {
            self.datagrams_dropped.fetch_add(datagrams, Relaxed);
        }
    }
}

/// Builds a rule's report: totals are the sum over ports, the active gauge included; the
/// second part is the per-target traffic, summed over ports (see [`counters::rule_report`]).
fn rule_report<'a>(
    instance: u64,
    ports: impl IntoIterator<Item = &'a PortIo>,
    n_targets: usize,
) -> (RuleReport, Vec<Counters>) {
    let views =
        ports.into_iter().map(|p| PortView { port: p.port, own: p.counters.snapshot(), targets: &p.targets });
    counters::rule_report(instance, views, n_targets)
}

/// Rate limits of one rule's UDP events.
#[derive(Debug)]
struct Notes {
    icmp_evicted: RateLimit,
    overflow: RateLimit,
    open_failed: RateLimit,
    recv_failed: RateLimit,
    dropped: RateLimit,
    rate_limited: RateLimit,
}

impl Notes {
    fn new() -> Self {
        Notes {
            icmp_evicted: RateLimit::new(EVENT_PERIOD),
            overflow: RateLimit::new(EVENT_PERIOD),
            open_failed: RateLimit::new(EVENT_PERIOD),
            recv_failed: RateLimit::new(EVENT_PERIOD),
            dropped: RateLimit::new(EVENT_PERIOD),
            rate_limited: RateLimit::new(crate::conn::RATE_LIMITED_PERIOD),
        }
    }
}

/// One listen port of a UDP rule.
#[derive(Debug)]
pub(crate) struct PortIo {
    port: u16,
    socket: PortSocket,
    counters: UdpCounters,
    /// One cell per target of the rule, by index: what this port's flows to that target
    /// delivered, and the flows themselves.
    targets: Box<[TargetTraffic]>,
}

impl PortIo {
    fn new(port: u16, socket: PortSocket, n_targets: usize) -> Self {
        PortIo {
            port,
            socket,
            counters: UdpCounters::default(),
            targets: TargetTraffic::per_target(n_targets),
        }
    }

    /// The cell of target `idx`. The plan only hands out indices of the rule's targets, and
    /// every port has a cell for each, so `None` means a broken invariant (nothing counted).
    fn target(&self, idx: usize) -> Option<&TargetTraffic> {
        self.targets.get(idx)
    }
}

/// The addresses a DNS-name target last resolved to, and when.
#[derive(Debug, Clone)]
struct Resolved {
    addrs: Vec<IpAddr>,
    at: Instant,
}

/// How old a resolved address may get before new flows trigger a refresh in the background
/// (they keep using it meanwhile; the resolver decides what is still valid).
const REFRESH_AFTER: Duration = Duration::from_secs(5);

/// Most flows of one rule waiting for their target's first resolution.
const MAX_PENDING: usize = 256;

/// What the tasks of one UDP rule share.
#[derive(Debug)]
pub(crate) struct RuleIo {
    id: RuleId,
    ports: Vec<Arc<PortIo>>,
    table: Mutex<FlowTable<FlowSlot>>,
    /// Origin of the monotonic `now` the flow table is given.
    origin: Instant,
    /// Wakes the reaper when its next deadline may have moved earlier.
    reaper: Notify,
    notes: Notes,
    /// Target choice, health and resolution, shared with the TCP path's logic.
    plan: TargetPlan,
    /// Last answer per target index (DNS-name targets only).
    resolved: Mutex<Vec<Option<Resolved>>>,
    /// Per target index: a background refresh is running.
    refreshing: Vec<AtomicBool>,
    /// Sources whose first datagram waits for a resolution; later ones are dropped.
    pending: Mutex<HashSet<FlowKey>>,
    /// The scopes new flows pass (owner, then rule); the default limits nothing.
    limits: Mutex<LimitPath>,
    /// The traffic quota budget of the rule's (owner, client) pair, when it has one.
    budget: Mutex<Option<Arc<crate::budget::QuotaBudget>>>,
}

impl RuleIo {
    fn lock_table(&self) -> MutexGuard<'_, FlowTable<FlowSlot>> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn lock_resolved(&self) -> MutexGuard<'_, Vec<Option<Resolved>>> {
        self.resolved.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn lock_pending(&self) -> MutexGuard<'_, HashSet<FlowKey>> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The pair's quota budget now.
    fn budget(&self) -> Option<Arc<crate::budget::QuotaBudget>> {
        self.budget.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The limit path new flows pass now.
    fn limits(&self) -> LimitPath {
        self.limits.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Time since the rule's origin, as the flow table takes it.
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    /// Logs how many datagrams were dropped so far on `port`, at most once per period.
    fn note_dropped(&self, port: &PortIo, reason: &'static str) {
        if self.notes.dropped.allow() {
            tracing::debug!(
                event = "rule.udp_datagrams_dropped",
                rule = %self.id,
                port = port.port,
                reason,
                dropped_total = port.counters.datagrams_dropped.load(Relaxed),
            );
        }
    }
}

/// A bound UDP rule: its listeners, flows and tasks. Dropping it closes the listeners at
/// once (the ports are free when the drop returns) and ends every flow.
#[derive(Debug)]
pub(crate) struct UdpRule {
    instance: u64,
    io: Arc<RuleIo>,
    tasks: Vec<AbortHandle>,
}

impl UdpRule {
    /// Binds every listen port of `def` (all or nothing; failures carry `port_in_use` or
    /// `io_error` and name the port) and starts the rule's tasks on `runtime`.
    pub(crate) fn bind(
        runtime: &Handle,
        family: &Family,
        id: RuleId,
        def: &RuleDef,
        settings: &DataPlaneSettings,
        resolver: Option<Arc<dyn Resolver>>,
        limits: LimitPath,
    ) -> Result<UdpRule, Failure> {
        // Sockets register with the runtime's reactor, which needs its context.
        let _runtime = runtime.enter();
        let sockets = listen::bind_all(family, def)?;
        let plan = TargetPlan::with_context(def, RuleLabel(Some(id)), resolver);
        let ports = sockets
            .into_iter()
            .map(|(port, socket)| Arc::new(PortIo::new(port, PortSocket::new(socket), def.targets.len())))
            .collect::<Vec<_>>();
        let io = Arc::new(RuleIo {
            id,
            ports,
            table: Mutex::new(FlowTable::new(FlowLimits::from_settings(settings))),
            origin: Instant::now(),
            reaper: Notify::new(),
            notes: Notes::new(),
            resolved: Mutex::new(vec![None; def.targets.len()]),
            refreshing: def.targets.iter().map(|_| AtomicBool::new(false)).collect(),
            pending: Mutex::new(HashSet::new()),
            limits: Mutex::new(limits),
            budget: Mutex::new(None),
            plan,
        });
        let mut tasks = Vec::with_capacity(io.ports.len() + 1);
        for port in &io.ports {
            tasks.push(runtime.spawn(listen::serve_port(Arc::clone(&io), Arc::clone(port))).abort_handle());
        }
        tasks.push(runtime.spawn(flow::reap(Arc::clone(&io))).abort_handle());
        Ok(UdpRule { instance: rand::random::<u64>().max(1), io, tasks })
    }

    /// The rule's counters since it was bound.
    pub(crate) fn report(&self) -> RuleReport {
        let ports = self.io.ports.iter().map(|p| &**p);
        let (mut report, traffic) = rule_report(self.instance, ports, self.io.plan.n_targets());
        report.per_target = self.io.plan.report(&traffic);
        report
    }

    /// New flow limits: a new cap applies to flows opened from now on (existing flows are
    /// never evicted for it), a new idle time from the next sweep on.
    pub(crate) fn apply_settings(&self, settings: &DataPlaneSettings) {
        self.io.lock_table().set_limits(FlowLimits::from_settings(settings));
        self.io.reaper.notify_one();
    }

    /// Gives the rule its pair's quota budget (or takes it away): every flow debits it per
    /// batch sent either way and drops what comes once it is spent; a spent budget opens no
    /// new flow.
    pub(crate) fn set_budget(&self, budget: Option<Arc<crate::budget::QuotaBudget>>) {
        *self.io.budget.lock().unwrap_or_else(PoisonError::into_inner) = budget;
    }

    /// Replaces the limit path of flows opened from now on.
    pub(crate) fn set_limits(&self, path: LimitPath) {
        *self.io.limits.lock().unwrap_or_else(PoisonError::into_inner) = path;
    }

    /// Live flows.
    pub(crate) fn n_flows(&self) -> usize {
        self.io.lock_table().len()
    }
}

impl Drop for UdpRule {
    fn drop(&mut self) {
        // Listeners first, without the table lock (a listener task may hold its socket's
        // lock while it waits for the table's).
        for port in &self.io.ports {
            port.socket.close();
        }
        for task in &self.tasks {
            task.abort();
        }
        let flows: Vec<_> = self.io.lock_table().drain().collect();
        // Dropped outside the lock: each aborts its reply task, which owns its socket.
        drop(flows);
    }
}

#[cfg(test)]
mod tests;
