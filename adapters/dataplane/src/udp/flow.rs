//! Flows: forwarding a received batch into flows (opening them as the table allows),
//! carrying each flow's replies back to its peer, ICMP eviction, and the idle reaper.
//!
//! Invariants: a flow's upstream socket is connected to the target, so the kernel hands its
//! reply task nothing but the target's datagrams, and the task sends them to exactly the
//! flow's source. A flow holds one `flows_active` unit of its port, and one active unit of its
//! (port, target) cell, from the moment its slot exists until the slot is dropped, which also
//! aborts its reply task; removing a flow from the table is therefore all it takes to end it.
//! Slots are dropped outside the table lock. What a flow delivers is counted in its cell, once
//! per batch (or per run of one target's flows within a batch), never per datagram. A flow is
//! admitted by its rule's limit path before its socket is made, and its slot holds the permit,
//! so a flow's concurrency slot is given back exactly when the flow ends.

use std::io;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use portunus_core::ratelimit::{Direction, LimitPath, Permit};
use portunus_core::rule::Host;

use portunus_core::udp::{FlowId, FlowKey, FlowTable, Inbound, UpstreamError};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::Interest;
use tokio::task::AbortHandle;

use super::{MAX_PENDING, PortIo, REFRESH_AFTER, Resolved, RuleIo};
use crate::limits;
use crate::sys::batch::{BATCH, Batch, DatagramFd, watch_reads, with_batch};
use crate::sys::upstream_error;

/// The I/O side of one flow.
#[derive(Debug)]
pub(crate) struct FlowIo {
    key: FlowKey,
    /// Connected to the flow's target.
    socket: DatagramFd,
    port: Arc<PortIo>,
    /// Index of the target in the rule's list, for health and per-target counts.
    target: usize,
    /// Set once the target answered; the first answer counts as a health success.
    answered: std::sync::atomic::AtomicBool,
    /// The flow's limit path when it capped bandwidth as the flow opened: every datagram
    /// either way is paid for here, or dropped.
    bandwidth: Option<LimitPath>,
    /// The pair's quota budget when the flow opened: each batch sent either way debits it,
    /// and once it is spent the flow drops what comes (a pair passes its cap by at most one
    /// batch per flow).
    budget: Option<Arc<crate::budget::QuotaBudget>>,
}

/// What the flow table keeps per flow.
#[derive(Debug)]
pub(crate) struct FlowSlot {
    io: Arc<FlowIo>,
    reply_task: Option<AbortHandle>,
    /// The flow's slots in its scopes, given back when the flow ends.
    _permit: Permit,
}

impl FlowSlot {
    fn new(io: Arc<FlowIo>, permit: Permit) -> Self {
        io.port.counters.flows_active.fetch_add(1, Relaxed);
        if let Some(cell) = io.port.target(io.target) {
            cell.connections_active.fetch_add(1, Relaxed);
        }
        FlowSlot { io, reply_task: None, _permit: permit }
    }
}

impl Drop for FlowSlot {
    fn drop(&mut self) {
        if let Some(task) = &self.reply_task {
            task.abort();
        }
        self.io.port.counters.flows_active.fetch_sub(1, Relaxed);
        if let Some(cell) = self.io.port.target(self.io.target) {
            cell.connections_active.fetch_sub(1, Relaxed);
        }
    }
}

/// Datagrams delivered peer → target by consecutive routes of one batch that share a target,
/// counted into that target's cell with one add per field when the target changes (so a
/// batch whose flows all go to one target costs what the whole-port count used to).
#[derive(Debug, Default)]
struct Tally {
    target: usize,
    datagrams: u64,
    bytes: u64,
}

impl Tally {
    fn add(&mut self, port: &PortIo, target: usize, datagrams: u64, bytes: u64) {
        if target != self.target {
            self.flush(port);
            self.target = target;
        }
        self.datagrams += datagrams;
        self.bytes += bytes;
    }

    fn flush(&mut self, port: &PortIo) {
        if let Some(cell) = port.target(self.target) {
            cell.delivered_in(self.datagrams, self.bytes);
        }
        self.datagrams = 0;
        self.bytes = 0;
    }
}

/// A run of datagrams of one batch bound for one flow.
#[derive(Debug)]
pub(crate) struct Route {
    flow: Arc<FlowIo>,
    id: FlowId,
    range: Range<usize>,
}

/// Forwards the datagrams of `batch`, received on `port`, to their flows. Decisions are
/// made under one lock per batch; the sends happen after it is released.
pub(crate) fn forward_batch(
    io: &Arc<RuleIo>,
    port: &Arc<PortIo>,
    batch: &mut Batch,
    routes: &mut Vec<Route>,
) {
    let n = batch.len();
    let now = io.now();
    let mut overflow = 0u64;
    let mut dropped = 0u64;
    let mut rejected = 0u64;
    let mut over_cap = 0u64;
    let mut waiting: Vec<(FlowKey, usize, u16, Vec<u8>)> = Vec::new();
    let max_flows = {
        let mut table = io.lock_table();
        let mut start = 0;
        while start < n {
            if batch.truncated(start) {
                dropped += 1;
                start += 1;
                continue;
            }
            // Consecutive datagrams of one source are one decision and one send.
            let source = batch.source(start);
            let mut end = start + 1;
            while end < n && !batch.truncated(end) && batch.source(end) == source {
                end += 1;
            }
            let range = start..end;
            start = end;
            let Some(source) = source else {
                dropped += range.len() as u64;
                continue;
            };
            let key = FlowKey { listen_port: port.port, source };
            match table.handle_inbound(key, now) {
                Inbound::Forward { id, flow } => routes.push(Route { flow: Arc::clone(&flow.io), id, range }),
                Inbound::Open => match open(io, port, &mut table, key, now) {
                    Opened::Flow(flow, id) => routes.push(Route { flow, id, range }),
                    Opened::Resolve { target, target_port } => {
                        // The first datagram waits for the answer; the rest of the run (and
                        // any datagram of a source already waiting) is dropped.
                        let mut pending = io.lock_pending();
                        if pending.len() < MAX_PENDING && pending.insert(key) {
                            waiting.push((key, target, target_port, batch.payload(range.start).to_vec()));
                            dropped += range.len() as u64 - 1;
                        } else {
                            dropped += range.len() as u64;
                        }
                    }
                    Opened::Failed => dropped += range.len() as u64,
                    Opened::Refused => rejected += range.len() as u64,
                },
                Inbound::Overflow => overflow += range.len() as u64,
            }
        }
        table.limits().max_flows
    };
    for (key, target, target_port, first) in waiting {
        tokio::spawn(resolve_then_open(Arc::clone(io), Arc::clone(port), key, target, target_port, first));
    }
    if overflow > 0 {
        port.counters.flows_dropped_overflow.fetch_add(overflow, Relaxed);
        if io.notes.overflow.allow() {
            tracing::warn!(event = "rule.udp_flows_overflow", rule = %io.id, port = port.port, max_flows);
        }
    }
    let mut tally = Tally::default();
    for Route { flow, id, range } in routes.drain(..) {
        let len = range.len() as u64;
        let sent = send_paid(batch, &flow, Direction::In, range, None);
        tally.add(port, flow.target, sent.datagrams, sent.bytes);
        over_cap += sent.over_cap;
        dropped += len - sent.datagrams - sent.over_cap;
        if let Some((class, err)) = sent.evicting {
            evict(io, &flow, id, class, &err);
        }
    }
    tally.flush(port);
    if rejected > 0 {
        port.counters.rate_limit_rejected.fetch_add(rejected, Relaxed);
    }
    if over_cap > 0 {
        port.counters.rate_limit_dropped.fetch_add(over_cap, Relaxed);
    }
    if dropped + overflow + rejected + over_cap > 0 {
        port.counters.dropped(dropped + overflow + rejected + over_cap);
        if dropped > 0 {
            io.note_dropped(port, "to_upstream");
        }
    }
}

/// What opening a flow came to.
pub(crate) enum Opened {
    /// Open, with its id.
    Flow(Arc<FlowIo>, FlowId),
    /// The chosen target is a DNS name not resolved yet: resolve it, then open.
    Resolve {
        /// Target index.
        target: usize,
        /// Target port for this listen port.
        target_port: u16,
    },
    /// Could not be opened (counted and logged).
    Failed,
    /// A connection cap of the rule's limit path refused the flow (logged; the caller counts
    /// the datagrams it drops).
    Refused,
}

/// Why [`open_to`] opened no flow.
pub(crate) enum NotOpened {
    /// The socket could not be made (counted and logged).
    Failed,
    /// The limit path refused the flow (logged, not counted).
    Refused,
}

/// Picks the target for a new flow on `port`: the first candidate in health order whose
/// address is known now. A DNS-name target with an answer is used at once (a stale answer
/// triggers one background refresh); one without an answer yet asks for a resolution.
fn choose(io: &Arc<RuleIo>, port: &PortIo) -> Option<(usize, u16, Option<SocketAddr>)> {
    let candidate = io.plan.candidates(port.port).next()?;
    let addr = match candidate.host {
        Host::Ip(ip) => Some(SocketAddr::new(*ip, candidate.port)),
        Host::Name(_) => {
            let resolved = io.lock_resolved().get(candidate.idx).cloned().flatten();
            match resolved {
                Some(r) if !r.addrs.is_empty() => {
                    if r.at.elapsed() >= REFRESH_AFTER && !io.refreshing[candidate.idx].swap(true, Relaxed) {
                        tokio::spawn(refresh(Arc::clone(io), candidate.idx));
                    }
                    Some(SocketAddr::new(r.addrs[0], candidate.port))
                }
                _ => None,
            }
        }
    };
    Some((candidate.idx, candidate.port, addr))
}

/// Opens the flow for `key` if its target's address is known (see [`choose`]). Runs under
/// the table lock, so the cap check and the insert are one step.
fn open(
    io: &Arc<RuleIo>,
    port: &Arc<PortIo>,
    table: &mut FlowTable<FlowSlot>,
    key: FlowKey,
    now: Duration,
) -> Opened {
    match choose(io, port) {
        None => Opened::Failed,
        Some((target, target_port, None)) => Opened::Resolve { target, target_port },
        Some((target, _, Some(addr))) => match open_to(io, port, table, key, now, target, addr) {
            Ok((flow, id)) => Opened::Flow(flow, id),
            Err(NotOpened::Failed) => Opened::Failed,
            Err(NotOpened::Refused) => Opened::Refused,
        },
    }
}

/// Opens the flow for `key` to `addr` (target `target`): admitted by the rule's limit path,
/// a connected socket and the task that carries its replies.
fn open_to(
    io: &Arc<RuleIo>,
    port: &Arc<PortIo>,
    table: &mut FlowTable<FlowSlot>,
    key: FlowKey,
    now: Duration,
    target: usize,
    addr: SocketAddr,
) -> Result<(Arc<FlowIo>, FlowId), NotOpened> {
    let budget = io.budget();
    if budget.as_ref().is_some_and(|b| b.remaining() == 0) {
        // The pair is out of budget: no new flow (the rule is about to be paused).
        return Err(NotOpened::Failed);
    }
    let path = io.limits();
    let permit = match path.admit(limits::now()) {
        Ok(permit) => permit,
        Err(refusal) => {
            crate::conn::note_rate_limited(&io.notes.rate_limited, io.id, refusal);
            return Err(NotOpened::Refused);
        }
    };
    let bandwidth = path.has_bandwidth_cap().then_some(path);
    let socket = match connect_upstream(addr) {
        Ok(socket) => socket,
        Err(err) if crate::sys::is_descriptor_exhaustion(&err) => {
            // This process's shortage, not the target's: counted apart, never against it.
            port.counters.fd_exhausted.fetch_add(1, Relaxed);
            io.plan.fd_exhausted("udp_flow", &err);
            return Err(NotOpened::Failed);
        }
        Err(err) => {
            port.counters.open_failures.fetch_add(1, Relaxed);
            io.plan.note_failed(target);
            if io.notes.open_failed.allow() {
                tracing::warn!(
                    event = "rule.udp_flow_open_failed",
                    rule = %io.id,
                    port = port.port,
                    target = %addr,
                    errno_name = %crate::sys::errno_name(&err),
                );
            }
            return Err(NotOpened::Failed);
        }
    };
    let flow = Arc::new(FlowIo {
        key,
        socket,
        port: Arc::clone(port),
        target,
        answered: std::sync::atomic::AtomicBool::new(false),
        bandwidth,
        budget,
    });
    let was_empty = table.is_empty();
    // `open` only refuses after `Inbound::Open` if the caller broke the protocol; the slot
    // it hands back is then dropped, which undoes its gauge unit and releases its permit.
    let (id, slot) =
        table.open(key, FlowSlot::new(Arc::clone(&flow), permit), now).map_err(|_| NotOpened::Failed)?;
    let task = tokio::spawn(pump_replies(Arc::clone(io), Arc::clone(&flow), id));
    slot.reply_task = Some(task.abort_handle());
    port.counters.flows_total.fetch_add(1, Relaxed);
    let failed_over = io.plan.is_failover(target);
    if let Some(cell) = port.target(target) {
        cell.note_opened(failed_over);
    }
    if failed_over {
        port.counters.failovers.fetch_add(1, Relaxed);
    }
    if was_empty {
        io.reaper.notify_one();
    }
    Ok((flow, id))
}

/// Resolves target `target` for the waiting source `key`, then opens its flow and sends the
/// datagram it was holding. A failed resolution drops that datagram, counts a DNS failure and
/// logs `rule.udp_dns_failed` (through the plan); the rule goes on.
async fn resolve_then_open(
    io: Arc<RuleIo>,
    port: Arc<PortIo>,
    key: FlowKey,
    target: usize,
    target_port: u16,
    first: Vec<u8>,
) {
    let answer = match io.plan.target(target).map(|t| t.host.clone()) {
        Some(host) => io.plan.addresses(&host).await,
        None => Err(crate::ports::ResolveFailure { reason: "no_target".into() }),
    };
    let addrs = match answer {
        Ok(addrs) if !addrs.is_empty() => addrs,
        _ => {
            port.counters.dns_failures.fetch_add(1, Relaxed);
            port.counters.dropped(1);
            io.plan.note_dns_failed(target);
            io.plan.record(target, false);
            io.lock_pending().remove(&key);
            return;
        }
    };
    if let Some(slot) = io.lock_resolved().get_mut(target) {
        *slot = Some(Resolved { addrs: addrs.clone(), at: Instant::now() });
    }
    let addr = SocketAddr::new(addrs[0], target_port);
    let opened = {
        let mut table = io.lock_table();
        let now = io.now();
        match table.handle_inbound(key, now) {
            Inbound::Forward { id, flow } => Some((Arc::clone(&flow.io), id)),
            Inbound::Open => match open_to(&io, &port, &mut table, key, now, target, addr) {
                Ok(opened) => Some(opened),
                Err(NotOpened::Failed) => None,
                Err(NotOpened::Refused) => {
                    port.counters.rate_limit_rejected.fetch_add(1, Relaxed);
                    port.counters.dropped(1);
                    None
                }
            },
            Inbound::Overflow => {
                port.counters.flows_dropped_overflow.fetch_add(1, Relaxed);
                None
            }
        }
    };
    io.lock_pending().remove(&key);
    let Some((flow, id)) = opened else { return };
    if let Some(caps) = &flow.bandwidth
        && !caps.try_take(Direction::In, first.len() as u64, limits::now())
    {
        port.counters.rate_limit_dropped.fetch_add(1, Relaxed);
        port.counters.dropped(1);
        return;
    }
    match flow.socket.get_ref().send(&first) {
        Ok(n) => {
            if let Some(cell) = port.target(flow.target) {
                cell.delivered_in(1, n as u64);
            }
            if let Some(budget) = &flow.budget {
                let _ = budget.debit(n as u64);
            }
        }
        Err(err) => {
            port.counters.dropped(1);
            let class = upstream_error(&err);
            if class.evicts() {
                evict(&io, &flow, id, class, &err);
            }
        }
    }
}

/// Re-resolves target `target` in the background, so new flows keep using fresh addresses
/// without waiting. A failure keeps the last answer (the resolver serves it stale while it
/// may) and is logged by the plan.
async fn refresh(io: Arc<RuleIo>, target: usize) {
    if let Some(host) = io.plan.target(target).map(|t| t.host.clone())
        && let Ok(addrs) = io.plan.addresses(&host).await
        && !addrs.is_empty()
        && let Some(slot) = io.lock_resolved().get_mut(target)
    {
        *slot = Some(Resolved { addrs, at: Instant::now() });
    }
    io.refreshing[target].store(false, Relaxed);
}

/// A non-blocking UDP socket connected to `target` (on an ephemeral port).
fn connect_upstream(target: SocketAddr) -> io::Result<DatagramFd> {
    #[cfg(target_os = "linux")]
    let socket = Socket::new(Domain::for_address(target), Type::DGRAM.nonblocking(), Some(Protocol::UDP))?;
    #[cfg(not(target_os = "linux"))]
    let socket = {
        let socket = Socket::new(Domain::for_address(target), Type::DGRAM, Some(Protocol::UDP))?;
        socket.set_nonblocking(true)?;
        socket
    };
    socket.connect(&target.into())?;
    watch_reads(socket.into())
}

/// What one `send_all` (or `send_paid`) delivered.
#[derive(Debug, Default)]
struct Sent {
    datagrams: u64,
    bytes: u64,
    /// Datagrams dropped because the flow's bandwidth caps had no room for them.
    over_cap: u64,
    /// The ICMP-class error that stopped it, if one did.
    evicting: Option<(UpstreamError, io::Error)>,
}

/// Sends datagrams `range` of `batch` for `flow` in `direction` (towards its target through
/// its socket, or back to its source through `dest`'s listener socket) like [`send_all`].
/// A flow with a bandwidth cap pays for each datagram first, all or nothing, and one the
/// caps have no room for is dropped (`over_cap`); the paid runs between are sent as runs.
fn send_paid(
    batch: &mut Batch,
    flow: &FlowIo,
    direction: Direction,
    range: Range<usize>,
    dest: Option<(&std::net::UdpSocket, SocketAddr)>,
) -> Sent {
    let socket = match dest {
        Some((listener, _)) => listener,
        None => flow.socket.get_ref(),
    };
    let dest = dest.map(|(_, addr)| addr);
    if flow.budget.as_ref().is_some_and(|budget| budget.remaining() == 0) {
        // Spent: nothing more goes either way (counted as dropped by the caller).
        return Sent::default();
    }
    let sent = send_capped(batch, flow, direction, socket, range, dest);
    if let Some(budget) = &flow.budget {
        let _ = budget.debit(sent.bytes);
    }
    sent
}

/// [`send_paid`] past the quota: pays each datagram to the bandwidth caps, if any.
fn send_capped(
    batch: &mut Batch,
    flow: &FlowIo,
    direction: Direction,
    socket: &std::net::UdpSocket,
    range: Range<usize>,
    dest: Option<SocketAddr>,
) -> Sent {
    let Some(caps) = &flow.bandwidth else {
        return send_all(batch, socket, range, dest);
    };
    let now = limits::now();
    let mut sent = Sent::default();
    let mut run = range.start;
    for i in range.clone() {
        if caps.try_take(direction, batch.bytes(i..i + 1), now) {
            continue;
        }
        sent.over_cap += 1;
        if run < i {
            sent.add(send_all(batch, socket, run..i, dest));
            if sent.evicting.is_some() {
                return sent;
            }
        }
        run = i + 1;
    }
    if run < range.end {
        sent.add(send_all(batch, socket, run..range.end, dest));
    }
    sent
}

impl Sent {
    /// Adds what a later send of the same flow delivered.
    fn add(&mut self, later: Sent) {
        self.datagrams += later.datagrams;
        self.bytes += later.bytes;
        self.over_cap += later.over_cap;
        if later.evicting.is_some() {
            self.evicting = later.evicting;
        }
    }
}

/// Sends datagrams `range` of `batch` through `socket` (to `dest`, or its connected peer)
/// without ever waiting: a full buffer drops the rest, an error that concerns one datagram
/// drops that one, and an ICMP-class error stops and is handed back.
fn send_all(
    batch: &mut Batch,
    socket: &std::net::UdpSocket,
    range: Range<usize>,
    dest: Option<SocketAddr>,
) -> Sent {
    let mut sent = Sent::default();
    let mut next = range.start;
    while next < range.end {
        match batch.send(socket, next..range.end, dest) {
            // A non-empty send returns at least one or an error; never loop on zero.
            Ok(0) => break,
            Ok(k) => {
                sent.bytes += batch.bytes(next..next + k);
                sent.datagrams += k as u64;
                next += k;
            }
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
            Err(err) => {
                let class = upstream_error(&err);
                if class.evicts() {
                    sent.evicting = Some((class, err));
                    break;
                }
                next += 1;
            }
        }
    }
    sent
}

/// Ends flow `id` on an ICMP-class error, whichever of its two paths met it first.
fn evict(io: &RuleIo, flow: &FlowIo, id: FlowId, class: UpstreamError, err: &io::Error) {
    let gone = io.lock_table().handle_upstream_error(&flow.key, id, class);
    if gone.is_some() {
        io.plan.note_failed(flow.target);
        io.plan.record(flow.target, false);
    }
    if gone.is_some() && io.notes.icmp_evicted.allow() {
        tracing::warn!(
            event = "rule.udp_flow_evicted_icmp",
            rule = %io.id,
            port = flow.port.port,
            reason = class.as_str(),
            errno_name = %crate::sys::errno_name(err),
        );
    }
    // Dropped outside the lock; when this runs in the flow's own reply task, the abort it
    // triggers takes effect once the task returns.
    drop(gone);
}

/// Whether a flow's reply task goes on.
enum Next {
    Continue,
    Stop,
}

/// Carries the upstream's datagrams of one flow back to its peer until the flow is gone.
async fn pump_replies(io: Arc<RuleIo>, flow: Arc<FlowIo>, id: FlowId) {
    loop {
        // A reflected ICMP error shows as EPOLLERR alone, which is not "readable".
        let Ok(guard) = flow.socket.ready(Interest::READABLE | Interest::ERROR).await else {
            return;
        };
        // Readiness is only cleared by a call that comes back empty-handed (`try_io`).
        let ready = guard.ready();
        drop(guard);
        if ready.is_error() && matches!(take_error(&io, &flow, id), Next::Stop) {
            return;
        }
        if ready.is_readable() && matches!(relay_replies(&io, &flow, id), Next::Stop) {
            return;
        }
        if ready.is_read_closed() {
            // Only a shutdown, which nothing here does, closes a UDP socket's read side; the
            // state never clears (waiting again would spin), so the flow ends here.
            drop(io.lock_table().remove(&flow.key, id));
            return;
        }
    }
}

/// Reads the socket's pending error: an ICMP-class one evicts the flow. With none pending
/// (the other path already consumed it), the error readiness is cleared.
fn take_error(io: &RuleIo, flow: &FlowIo, id: FlowId) -> Next {
    let pending = flow.socket.try_io(Interest::ERROR, |socket| {
        socket.take_error()?.ok_or_else(|| io::ErrorKind::WouldBlock.into())
    });
    match pending {
        Ok(err) => {
            let class = upstream_error(&err);
            if class.evicts() {
                evict(io, flow, id, class, &err);
                return Next::Stop;
            }
            Next::Continue
        }
        Err(_) => Next::Continue,
    }
}

/// Receives one batch from the upstream and sends it to the flow's peer through the
/// listener socket.
fn relay_replies(io: &RuleIo, flow: &FlowIo, id: FlowId) -> Next {
    with_batch(|batch| {
        let received = flow.socket.try_io(Interest::READABLE, |socket| {
            let n = batch.recv(socket)?;
            if n < BATCH { Err(io::ErrorKind::WouldBlock.into()) } else { Ok(()) }
        });
        if let Err(err) = received
            && err.kind() != io::ErrorKind::WouldBlock
        {
            let class = upstream_error(&err);
            if class.evicts() {
                evict(io, flow, id, class, &err);
                return Next::Stop;
            }
            return Next::Continue;
        }
        let n = batch.len();
        if n == 0 {
            return Next::Continue;
        }
        if !io.lock_table().handle_reply(&flow.key, id, io.now()) {
            return Next::Stop;
        }
        if !flow.answered.swap(true, Relaxed) {
            io.plan.record(flow.target, true);
        }
        let port = &flow.port;
        let (mut delivered, mut bytes, mut over_cap) = (0u64, 0u64, 0u64);
        let outcome = port.socket.with(|listener| {
            let mut start = 0;
            while start < n {
                // Skip the (never expected) truncated datagrams; send the runs between them.
                let mut end = start;
                while end < n && !batch.truncated(end) {
                    end += 1;
                }
                if end > start {
                    let to_source = Some((listener.get_ref(), flow.key.source));
                    let sent = send_paid(batch, flow, Direction::Out, start..end, to_source);
                    delivered += sent.datagrams;
                    bytes += sent.bytes;
                    over_cap += sent.over_cap;
                }
                start = end + 1;
            }
        });
        if let Some(cell) = port.target(flow.target) {
            cell.delivered_out(delivered, bytes);
        }
        if over_cap > 0 {
            port.counters.rate_limit_dropped.fetch_add(over_cap, Relaxed);
        }
        let dropped = n as u64 - delivered;
        if dropped > 0 {
            port.counters.dropped(dropped);
            if dropped > over_cap {
                io.note_dropped(port, "to_peer");
            }
        }
        if outcome.is_none() { Next::Stop } else { Next::Continue }
    })
}

/// Reaps idle flows of one rule: sleeps until the table's next deadline (or until woken
/// because it may have moved earlier), then sweeps.
pub(crate) async fn reap(io: Arc<RuleIo>) {
    loop {
        let next = io.lock_table().poll_timeout();
        let woken = io.reaper.notified();
        match next {
            Some(at) => {
                let deadline = tokio::time::Instant::from_std(io.origin + at);
                tokio::select! {
                    () = tokio::time::sleep_until(deadline) => {}
                    () = woken => continue,
                }
            }
            None => {
                woken.await;
                continue;
            }
        }
        let gone = io.lock_table().handle_timeout(io.now());
        if !gone.is_empty() {
            tracing::debug!(event = "rule.udp_flows_expired", rule = %io.id, flows = gone.len());
        }
        // Dropped outside the lock: closes the sockets and aborts the reply tasks.
        drop(gone);
    }
}
