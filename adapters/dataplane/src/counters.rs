//! Live traffic counters: one [`TrafficCounters`] per listen port of a bound rule, and one
//! `TargetTraffic` cell per (listen port, target) pair.
//!
//! Invariant: every field only grows except the `connections_active` gauges, which are
//! incremented and decremented in pairs by one guard per connection (or flow). Delivered
//! traffic (bytes, datagrams) is counted in exactly one place, the cell of the port and
//! target it went through; the port's view and the target's view are sums over cells, done
//! when a report is built. So the hot path still does one `Relaxed` add per delivered batch
//! (at most 64 KiB) and direction, and never touches a second, shared cache line for the
//! per-target view.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use portunus_core::stats::{Counters, RuleReport};

/// Counters of one listen port (or of one stand-alone [`crate::relay()`] call).
///
/// Bytes are counted when delivered: written to the destination socket, after the splice
/// out of the pipe or the `write` succeeded. A connection that ends in a reset passes the
/// reset on, and the kernel then discards what it had not sent yet; those bytes stay counted. For a bound rule's port the byte counts live in
/// its per-target cells and the report adds them in; these fields then stay at zero.
#[derive(Debug, Default)]
pub struct TrafficCounters {
    pub(crate) bytes_in: AtomicU64,
    pub(crate) bytes_out: AtomicU64,
    pub(crate) connections_total: AtomicU64,
    pub(crate) connections_active: AtomicU64,
    pub(crate) connect_failures: AtomicU64,
    pub(crate) target_failovers: AtomicU64,
    pub(crate) dns_failures: AtomicU64,
    /// Accepts and target connects refused for want of a file descriptor.
    pub(crate) fd_exhausted: AtomicU64,
    /// Connections closed at accept by a connection cap (not in the connection counts).
    pub(crate) rate_limit_rejected: AtomicU64,
    /// Waits of a direction for its bandwidth cap to refill.
    pub(crate) rate_limit_throttled: AtomicU64,
}

impl TrafficCounters {
    /// A point-in-time copy. Fields are read one by one, so a copy taken mid-flow may mix
    /// values a few batches apart; each field on its own is exact.
    pub fn snapshot(&self) -> Counters {
        Counters {
            bytes_in: self.bytes_in.load(Relaxed),
            bytes_out: self.bytes_out.load(Relaxed),
            connections_total: self.connections_total.load(Relaxed),
            connections_active: self.connections_active.load(Relaxed),
            connect_failures: self.connect_failures.load(Relaxed),
            target_failovers: self.target_failovers.load(Relaxed),
            dns_failures: self.dns_failures.load(Relaxed),
            fd_exhausted: self.fd_exhausted.load(Relaxed),
            rate_limit_rejected: self.rate_limit_rejected.load(Relaxed),
            rate_limit_throttled: self.rate_limit_throttled.load(Relaxed),
            ..Counters::default()
        }
    }

    /// Bytes delivered from peers to targets so far.
    pub fn bytes_in(&self) -> u64 {
        self.bytes_in.load(Relaxed)
    }

    /// Bytes delivered from targets to peers so far.
    pub fn bytes_out(&self) -> u64 {
        self.bytes_out.load(Relaxed)
    }

    /// Connections open now.
    pub fn connections_active(&self) -> u64 {
        self.connections_active.load(Relaxed)
    }

    /// Counts an accepted connection; the returned guard keeps it "active" until dropped,
    /// whichever way the connection's task ends (including cancellation).
    pub(crate) fn open_connection(&self) -> ActiveGuard<'_> {
        self.connections_total.fetch_add(1, Relaxed);
        self.connections_active.fetch_add(1, Relaxed);
        ActiveGuard { active: &self.connections_active }
    }
}

/// What the connections (or flows) of one listen port delivered through one target.
#[derive(Debug, Default)]
pub(crate) struct TargetTraffic {
    pub(crate) bytes_in: AtomicU64,
    pub(crate) bytes_out: AtomicU64,
    datagrams_in: AtomicU64,
    datagrams_out: AtomicU64,
    /// Connections (or flows) that reached the target.
    connections_total: AtomicU64,
    pub(crate) connections_active: AtomicU64,
    /// Of those, the ones that went here because a more preferred target was down.
    target_failovers: AtomicU64,
}

impl TargetTraffic {
    /// One cell per target of a rule, for one listen port.
    pub(crate) fn per_target(n_targets: usize) -> Box<[TargetTraffic]> {
        (0..n_targets).map(|_| TargetTraffic::default()).collect()
    }

    /// Counts a TCP connection that reached the target; the guard keeps it active until
    /// dropped.
    pub(crate) fn open_connection(&self, failed_over: bool) -> ActiveGuard<'_> {
        self.note_opened(failed_over);
        self.connections_active.fetch_add(1, Relaxed);
        ActiveGuard { active: &self.connections_active }
    }

    /// Counts a connection or flow that reached the target (the gauge is the caller's).
    pub(crate) fn note_opened(&self, failed_over: bool) {
        self.connections_total.fetch_add(1, Relaxed);
        if failed_over {
            self.target_failovers.fetch_add(1, Relaxed);
        }
    }

    /// Counts datagrams delivered peer → target.
    pub(crate) fn delivered_in(&self, datagrams: u64, bytes: u64) {
        if datagrams > 0 {
            self.datagrams_in.fetch_add(datagrams, Relaxed);
            self.bytes_in.fetch_add(bytes, Relaxed);
        }
    }

    /// Counts datagrams delivered target → peer.
    pub(crate) fn delivered_out(&self, datagrams: u64, bytes: u64) {
        if datagrams > 0 {
            self.datagrams_out.fetch_add(datagrams, Relaxed);
            self.bytes_out.fetch_add(bytes, Relaxed);
        }
    }

    /// Everything the cell counts.
    fn snapshot(&self) -> Counters {
        Counters {
            connections_total: self.connections_total.load(Relaxed),
            connections_active: self.connections_active.load(Relaxed),
            target_failovers: self.target_failovers.load(Relaxed),
            ..self.traffic()
        }
    }

    /// Only the delivered traffic: what the port's view takes from the cell (the port counts
    /// its connections itself, including those that reached no target).
    fn traffic(&self) -> Counters {
        Counters {
            bytes_in: self.bytes_in.load(Relaxed),
            bytes_out: self.bytes_out.load(Relaxed),
            datagrams_in: self.datagrams_in.load(Relaxed),
            datagrams_out: self.datagrams_out.load(Relaxed),
            ..Counters::default()
        }
    }
}

/// Holds one unit of a `connections_active` gauge.
pub(crate) struct ActiveGuard<'a> {
    active: &'a AtomicU64,
}

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        self.active.fetch_sub(1, Relaxed);
    }
}

/// One listen port as a report sees it: its own counters (traffic fields left out or zero)
/// and its per-target cells.
pub(crate) struct PortView<'a> {
    pub(crate) port: u16,
    pub(crate) own: Counters,
    pub(crate) targets: &'a [TargetTraffic],
}

/// Builds a rule's report from its ports: `per_port` has one entry per listen port (its own
/// counters plus the traffic of its cells), `totals` is the field-wise sum of those. Also
/// returns, per target index (`n_targets` of them), the sum of that target's cells over
/// every port; the caller adds health and the attempt counts and sets `per_target`.
pub(crate) fn rule_report<'a>(
    instance: u64,
    ports: impl IntoIterator<Item = PortView<'a>>,
    n_targets: usize,
) -> (RuleReport, Vec<Counters>) {
    let mut totals = Counters::default();
    let mut per_port = BTreeMap::new();
    let mut per_target = vec![Counters::default(); n_targets];
    for view in ports {
        let mut port = view.own;
        for (cell, target) in view.targets.iter().zip(per_target.iter_mut()) {
            port = add(port, cell.traffic());
            *target = add(*target, cell.snapshot());
        }
        totals = add(totals, port);
        per_port.insert(view.port, port);
    }
    (RuleReport { instance, totals, per_port, per_target: Vec::new() }, per_target)
}

/// Field-wise sum, gauge included (unlike `Counters::plus`, which folds successive
/// instances and keeps the later gauge).
fn add(a: Counters, b: Counters) -> Counters {
    Counters {
        bytes_in: a.bytes_in.saturating_add(b.bytes_in),
        bytes_out: a.bytes_out.saturating_add(b.bytes_out),
        connections_total: a.connections_total.saturating_add(b.connections_total),
        connections_active: a.connections_active.saturating_add(b.connections_active),
        datagrams_in: a.datagrams_in.saturating_add(b.datagrams_in),
        datagrams_out: a.datagrams_out.saturating_add(b.datagrams_out),
        flows_dropped_overflow: a.flows_dropped_overflow.saturating_add(b.flows_dropped_overflow),
        dns_failures: a.dns_failures.saturating_add(b.dns_failures),
        connect_failures: a.connect_failures.saturating_add(b.connect_failures),
        target_failovers: a.target_failovers.saturating_add(b.target_failovers),
        fd_exhausted: a.fd_exhausted.saturating_add(b.fd_exhausted),
        rate_limit_rejected: a.rate_limit_rejected.saturating_add(b.rate_limit_rejected),
        rate_limit_throttled: a.rate_limit_throttled.saturating_add(b.rate_limit_throttled),
        rate_limit_dropped: a.rate_limit_dropped.saturating_add(b.rate_limit_dropped),
    }
}

#[cfg(test)]
mod tests;
