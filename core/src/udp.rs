//! The UDP flow-table policy: which datagrams open a flow, which flows live on, and which go.
//!
//! A flow is one `(listen port, source address)` pair of a rule. The data plane gives each
//! flow its own connected upstream socket (the `T` this table carries for it) and asks this
//! table, with the time passed in, what to do with every datagram, reply, upstream error and
//! timer tick. The table reads no clock and owns no socket.
//!
//! Invariants a reader must not break:
//! - the cap is per rule (one table per rule, across all its ports) and is checked only when a
//!   flow would open: an existing flow is never evicted to make room, and a lowered cap
//!   shrinks nothing, it only refuses new flows until enough have gone;
//! - a flow goes only when it has been silent in **both** directions for the idle time, when
//!   its upstream reports an ICMP-class error (port, host or network unreachable), or when
//!   the caller removes it;
//! - a [`FlowId`] is never reused, so a late reply or error for a flow that was already
//!   replaced under the same key never touches its successor.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use crate::config::DataPlaneSettings;

/// Sweeps happen at most this many times per idle period; a silent flow therefore lives at
/// most `idle + idle / SWEEPS_PER_IDLE` (plus scheduling delay), never less than `idle`.
const SWEEPS_PER_IDLE: u32 = 16;

/// The shortest pause between two sweeps, whatever the idle time.
const MIN_SWEEP_INTERVAL: Duration = Duration::from_millis(1);

/// Identifies a flow: the listen port the peer's datagrams arrive on, and the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    /// The rule's listen port the datagrams arrived on.
    pub listen_port: u16,
    /// The peer's address, as the listener socket reported it.
    pub source: SocketAddr,
}

/// One flow's identity over the table's whole life; a key that comes back after its flow
/// went gets a new id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowId(u64);

impl FlowId {
    /// The number, for logs.
    pub const fn get(self) -> u64 {
        self.0
    }
}

/// The two settings the policy runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowLimits {
    /// Silence in both directions after which a flow is reaped.
    pub idle: Duration,
    /// Most flows the rule may have at once, across all its ports. Zero admits none.
    pub max_flows: u32,
}

impl FlowLimits {
    /// The limits from the data-plane settings (`udp_flow_idle`, `udp_max_flows_per_rule`).
    pub fn from_settings(settings: &DataPlaneSettings) -> Self {
        FlowLimits { idle: settings.udp_flow_idle, max_flows: settings.udp_max_flows_per_rule }
    }

    /// How long the table lets pass between two sweeps.
    fn sweep_interval(self) -> Duration {
        (self.idle / SWEEPS_PER_IDLE).max(MIN_SWEEP_INTERVAL)
    }
}

/// What to do with a datagram from a peer.
#[derive(Debug, PartialEq, Eq)]
pub enum Inbound<'a, T> {
    /// The flow exists (its inbound activity is now recorded): send through `flow`.
    Forward {
        /// The flow's id.
        id: FlowId,
        /// The caller's handle for the flow.
        flow: &'a T,
    },
    /// There is no flow yet and there is room: build the upstream, then [`FlowTable::open`].
    Open,
    /// There is no flow and the rule is at its cap: drop the datagram and count it.
    Overflow,
}

/// An error the upstream socket of a flow reported, as the data plane classified it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamError {
    /// ICMP port unreachable (`ECONNREFUSED` on a connected socket).
    PortUnreachable,
    /// ICMP host unreachable (`EHOSTUNREACH`).
    HostUnreachable,
    /// ICMP network unreachable (`ENETUNREACH`).
    NetworkUnreachable,
    /// Anything else (a full buffer, a message too long…): the flow stays.
    Other,
}

impl UpstreamError {
    /// True for the ICMP-class errors that end a flow: the target said it cannot be reached,
    /// so the flow's socket is rebuilt on the next datagram rather than kept.
    pub const fn evicts(self) -> bool {
        matches!(
            self,
            UpstreamError::PortUnreachable
                | UpstreamError::HostUnreachable
                | UpstreamError::NetworkUnreachable
        )
    }

    /// Stable snake_case name, for events.
    pub const fn as_str(self) -> &'static str {
        match self {
            UpstreamError::PortUnreachable => "port_unreachable",
            UpstreamError::HostUnreachable => "host_unreachable",
            UpstreamError::NetworkUnreachable => "network_unreachable",
            UpstreamError::Other => "other",
        }
    }
}

/// A flow the table let go of, handed back so the caller can close its upstream.
#[derive(Debug, PartialEq, Eq)]
pub struct Gone<T> {
    /// Its key.
    pub key: FlowKey,
    /// Its id.
    pub id: FlowId,
    /// The caller's handle.
    pub flow: T,
}

#[derive(Debug)]
struct Entry<T> {
    id: FlowId,
    /// Latest datagram from the peer.
    last_in: Duration,
    /// Latest datagram from the upstream.
    last_out: Duration,
    flow: T,
}

impl<T> Entry<T> {
    /// When the flow has been silent both ways for `idle`.
    fn expires_at(&self, idle: Duration) -> Duration {
        self.last_in.max(self.last_out).saturating_add(idle)
    }
}

/// The flows of one rule.
///
/// Every time argument (`now`) is the time since an origin the caller picks once (a
/// monotonic clock); the table only compares them. Calls with a `now` earlier than one seen
/// before are harmless: activity never moves backwards.
#[derive(Debug)]
pub struct FlowTable<T> {
    limits: FlowLimits,
    flows: HashMap<FlowKey, Entry<T>>,
    next_id: u64,
    last_sweep: Option<Duration>,
}

impl<T> FlowTable<T> {
    /// An empty table.
    pub fn new(limits: FlowLimits) -> Self {
        FlowTable { limits, flows: HashMap::new(), next_id: 1, last_sweep: None }
    }

    /// The limits in force.
    pub fn limits(&self) -> FlowLimits {
        self.limits
    }

    /// Replaces the limits. A lower cap evicts nothing; a new idle time applies to every
    /// flow from the next sweep on (call [`FlowTable::poll_timeout`] again).
    pub fn set_limits(&mut self, limits: FlowLimits) {
        self.limits = limits;
    }

    /// Live flows.
    pub fn len(&self) -> usize {
        self.flows.len()
    }

    /// True when no flow is live.
    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    /// The live flow for `key`, if any.
    pub fn get(&self, key: &FlowKey) -> Option<(FlowId, &T)> {
        self.flows.get(key).map(|e| (e.id, &e.flow))
    }

    /// A datagram from `key.source` arrived on `key.listen_port` at `now`. Never removes a
    /// flow; records the activity when the flow exists.
    pub fn handle_inbound(&mut self, key: FlowKey, now: Duration) -> Inbound<'_, T> {
        let room = self.has_room();
        match self.flows.get_mut(&key) {
            Some(entry) => {
                entry.last_in = entry.last_in.max(now);
                Inbound::Forward { id: entry.id, flow: &entry.flow }
            }
            None if room => Inbound::Open,
            None => Inbound::Overflow,
        }
    }

    /// Opens the flow for `key` (after [`Inbound::Open`]), with its first datagram at `now`,
    /// and lends the stored handle back (to finish setting it up with the id). Hands `flow`
    /// back when the key already has a flow or the rule is at its cap, so a caller that
    /// skipped the check still cannot exceed it.
    pub fn open(&mut self, key: FlowKey, flow: T, now: Duration) -> Result<(FlowId, &mut T), T> {
        if self.flows.contains_key(&key) || !self.has_room() {
            return Err(flow);
        }
        let id = FlowId(self.next_id);
        self.next_id += 1;
        let entry = self.flows.entry(key).insert_entry(Entry { id, last_in: now, last_out: now, flow });
        Ok((id, &mut entry.into_mut().flow))
    }

    /// The upstream of flow `id` answered at `now`. False when that flow is gone (evicted,
    /// reaped or replaced): the caller stops serving it.
    pub fn handle_reply(&mut self, key: &FlowKey, id: FlowId, now: Duration) -> bool {
        match self.flows.get_mut(key) {
            Some(entry) if entry.id == id => {
                entry.last_out = entry.last_out.max(now);
                true
            }
            _ => false,
        }
    }

    /// The upstream of flow `id` reported `error`. ICMP-class errors evict the flow, which is
    /// handed back; other errors, and errors of a flow already gone, change nothing.
    pub fn handle_upstream_error(&mut self, key: &FlowKey, id: FlowId, error: UpstreamError) -> Option<T> {
        if error.evicts() { self.remove(key, id) } else { None }
    }

    /// Removes flow `id` whatever its state; `None` when it is already gone.
    pub fn remove(&mut self, key: &FlowKey, id: FlowId) -> Option<T> {
        match self.flows.get(key) {
            Some(entry) if entry.id == id => self.flows.remove(key).map(|e| e.flow),
            _ => None,
        }
    }

    /// Reaps every flow silent both ways for at least the idle time at `now`, and hands them
    /// back. Calling it early, late or twice is harmless: it only ever removes flows that
    /// are idle at `now`.
    pub fn handle_timeout(&mut self, now: Duration) -> Vec<Gone<T>> {
        self.last_sweep = Some(self.last_sweep.map_or(now, |t| t.max(now)));
        let idle = self.limits.idle;
        self.flows
            .extract_if(|_, entry| entry.expires_at(idle) <= now)
            .map(|(key, entry)| Gone { key, id: entry.id, flow: entry.flow })
            .collect()
    }

    /// When [`FlowTable::handle_timeout`] should run next: the earliest time a flow could
    /// be idle, but no sooner than one sweep interval (idle / 16, at least 1 ms) after the
    /// last sweep, so busy tables are swept a bounded number of times per idle period.
    /// `None` while the table is empty.
    pub fn poll_timeout(&self) -> Option<Duration> {
        let idle = self.limits.idle;
        let earliest = self.flows.values().map(|e| e.expires_at(idle)).min()?;
        let not_before =
            self.last_sweep.map_or(Duration::ZERO, |t| t.saturating_add(self.limits.sweep_interval()));
        Some(earliest.max(not_before))
    }

    /// Removes every flow (the rule is going away) and hands them back.
    pub fn drain(&mut self) -> impl Iterator<Item = Gone<T>> + '_ {
        self.flows.drain().map(|(key, entry)| Gone { key, id: entry.id, flow: entry.flow })
    }

    fn has_room(&self) -> bool {
        self.flows.len() < self.limits.max_flows as usize
    }
}

#[cfg(test)]
mod tests;
