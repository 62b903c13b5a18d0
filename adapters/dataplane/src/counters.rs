//! Live traffic counters: one [`TrafficCounters`] per listen port of a bound rule.
//!
//! Invariant: every field only grows except `connections_active`, which is incremented and
//! decremented in pairs by one guard per connection. The hot path does one `Relaxed` add per
//! delivered batch (at most 64 KiB) and direction; rule totals are the sum over ports, done
//! when a report is built, so the pump never touches a second, shared cache line.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use portunus_core::stats::{Counters, RuleReport};

/// Counters of one listen port (or of one stand-alone [`crate::relay()`] call).
///
/// Bytes are counted when delivered: written to the destination socket, after the splice
/// out of the pipe or the `write` succeeded.
#[derive(Debug, Default)]
pub struct TrafficCounters {
    pub(crate) bytes_in: AtomicU64,
    pub(crate) bytes_out: AtomicU64,
    pub(crate) connections_total: AtomicU64,
    pub(crate) connections_active: AtomicU64,
    pub(crate) connect_failures: AtomicU64,
    pub(crate) target_failovers: AtomicU64,
    pub(crate) dns_failures: AtomicU64,
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
        ActiveGuard { counters: self }
    }
}

/// Holds one unit of `connections_active`.
pub(crate) struct ActiveGuard<'a> {
    counters: &'a TrafficCounters,
}

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        self.counters.connections_active.fetch_sub(1, Relaxed);
    }
}

/// Builds a rule's report from its per-port counters: `totals` is the field-wise sum, and
/// `per_port` has one entry per listen port.
pub(crate) fn rule_report<'a>(
    instance: u64,
    ports: impl IntoIterator<Item = (u16, &'a TrafficCounters)>,
) -> RuleReport {
    let mut totals = Counters::default();
    let mut per_port = BTreeMap::new();
    for (port, counters) in ports {
        let snap = counters.snapshot();
        totals = add(totals, snap);
        per_port.insert(port, snap);
    }
    RuleReport { instance, totals, per_port, per_target: Vec::new() }
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
    }
}

#[cfg(test)]
mod tests;
