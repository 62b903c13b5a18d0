//! Traffic counters: what a client reports per rule, and how the server folds reports from
//! successive client processes into totals that never go backwards.
//!
//! A client's counters start at zero whenever its rule runtime starts (a new `instance`).
//! The server keeps `base` (everything earlier instances delivered) plus the latest report
//! of the live instance, so a client restart or a server restart loses nothing.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ids::RuleId;

/// Counters of one rule (or one of its ports). Bytes count **delivered** bytes only.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Bytes from connecting peers delivered to targets.
    pub bytes_in: u64,
    /// Bytes from targets delivered back to peers.
    pub bytes_out: u64,
    /// TCP connections accepted (or UDP flows opened).
    pub connections_total: u64,
    /// TCP connections (or UDP flows) open now. A gauge, not summed across instances.
    pub connections_active: u64,
    /// UDP datagrams from peers forwarded to targets.
    pub datagrams_in: u64,
    /// UDP datagrams from targets forwarded to peers.
    pub datagrams_out: u64,
    /// New UDP flows refused because the rule's flow cap was reached.
    pub flows_dropped_overflow: u64,
    /// Connections or flows dropped because a DNS-name target did not resolve.
    pub dns_failures: u64,
    /// Connections that could not reach any target.
    pub connect_failures: u64,
    /// Connections that went to a lower-preference target because a better one was down.
    pub target_failovers: u64,
    /// Accepts, target connects and UDP flow sockets refused because this process (or the
    /// host) was out of file descriptors (`EMFILE`/`ENFILE`). Never held against a target.
    #[serde(default)]
    pub fd_exhausted: u64,
    /// New TCP connections closed at accept (or first datagrams of new UDP flows dropped)
    /// because a connection cap of the rule or its owner's envelope was reached.
    #[serde(default)]
    pub rate_limit_rejected: u64,
    /// Times a TCP direction waited for its bandwidth cap to refill.
    #[serde(default)]
    pub rate_limit_throttled: u64,
    /// UDP datagrams dropped because a bandwidth cap had no room for them.
    #[serde(default)]
    pub rate_limit_dropped: u64,
}

impl Counters {
    /// Field-wise sum of the monotonic counters; the gauge takes `later`'s value.
    pub fn plus(self, later: Counters) -> Counters {
        Counters {
            bytes_in: self.bytes_in.saturating_add(later.bytes_in),
            bytes_out: self.bytes_out.saturating_add(later.bytes_out),
            connections_total: self.connections_total.saturating_add(later.connections_total),
            connections_active: later.connections_active,
            datagrams_in: self.datagrams_in.saturating_add(later.datagrams_in),
            datagrams_out: self.datagrams_out.saturating_add(later.datagrams_out),
            flows_dropped_overflow: self.flows_dropped_overflow.saturating_add(later.flows_dropped_overflow),
            dns_failures: self.dns_failures.saturating_add(later.dns_failures),
            connect_failures: self.connect_failures.saturating_add(later.connect_failures),
            target_failovers: self.target_failovers.saturating_add(later.target_failovers),
            fd_exhausted: self.fd_exhausted.saturating_add(later.fd_exhausted),
            rate_limit_rejected: self.rate_limit_rejected.saturating_add(later.rate_limit_rejected),
            rate_limit_throttled: self.rate_limit_throttled.saturating_add(later.rate_limit_throttled),
            rate_limit_dropped: self.rate_limit_dropped.saturating_add(later.rate_limit_dropped),
        }
    }
}

/// Health of one target as the client sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetHealth {
    /// Taking connections.
    Healthy,
    /// Skipped until it recovers.
    Failed,
}

/// Counters of one target of a rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetCounters {
    /// Index into the rule's target list.
    pub index: u32,
    /// Current health.
    pub health: TargetHealth,
    /// Counters for connections that went to this target.
    pub counters: Counters,
}

/// One rule's report from a client.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleReport {
    /// Identifies the client-side runtime that counted; changes when it restarts.
    pub instance: u64,
    /// Whole-rule counters since `instance` started.
    pub totals: Counters,
    /// Per listen port, for range rules.
    pub per_port: BTreeMap<u16, Counters>,
    /// Per target.
    pub per_target: Vec<TargetCounters>,
}

/// The server's running totals for one rule; persisted so server restarts lose nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleTotals {
    /// Sum of what finished instances delivered.
    pub base: Counters,
    /// Per-port sums of finished instances.
    pub base_per_port: BTreeMap<u16, Counters>,
    /// Per-target sums of finished instances, by index into the rule's target list.
    #[serde(default)]
    pub base_per_target: BTreeMap<u32, Counters>,
    /// The live instance's latest report.
    pub live: RuleReport,
}

impl RuleTotals {
    /// Folds a new report in. A report from a new instance retires the previous one into
    /// `base`; a report from the live instance replaces it (counters are cumulative).
    pub fn record(&mut self, report: RuleReport) {
        if report.instance != self.live.instance {
            let old = std::mem::take(&mut self.live);
            let mut retired = old.totals;
            retired.connections_active = 0;
            self.base = self.base.plus(retired);
            for (port, counters) in old.per_port {
                let mut counters = counters;
                counters.connections_active = 0;
                let slot = self.base_per_port.entry(port).or_default();
                *slot = slot.plus(counters);
            }
            for target in old.per_target {
                let mut counters = target.counters;
                counters.connections_active = 0;
                let slot = self.base_per_target.entry(target.index).or_default();
                *slot = slot.plus(counters);
            }
        }
        self.live = report;
    }

    /// Marks the live instance gone (client disconnected): active gauges drop to zero but
    /// the counts stay.
    pub fn client_gone(&mut self) {
        self.live.totals.connections_active = 0;
        for counters in self.live.per_port.values_mut() {
            counters.connections_active = 0;
        }
        for target in &mut self.live.per_target {
            target.counters.connections_active = 0;
        }
    }

    /// Totals over every instance.
    pub fn totals(&self) -> Counters {
        self.base.plus(self.live.totals)
    }

    /// Per-port totals over every instance.
    pub fn per_port(&self) -> BTreeMap<u16, Counters> {
        let mut out = self.base_per_port.clone();
        for (port, counters) in &self.live.per_port {
            let slot = out.entry(*port).or_default();
            *slot = slot.plus(*counters);
        }
        out
    }

    /// Per-target totals over every instance, by target index; health is the live
    /// instance's (healthy for a target it has not reported).
    pub fn per_target(&self) -> Vec<TargetCounters> {
        let mut out: BTreeMap<u32, TargetCounters> = self
            .base_per_target
            .iter()
            .map(|(&index, &counters)| {
                (index, TargetCounters { index, health: TargetHealth::Healthy, counters })
            })
            .collect();
        for target in &self.live.per_target {
            let slot = out.entry(target.index).or_insert(TargetCounters {
                index: target.index,
                health: TargetHealth::Healthy,
                counters: Counters::default(),
            });
            slot.health = target.health;
            slot.counters = slot.counters.plus(target.counters);
        }
        out.into_values().collect()
    }
}

/// The latest totals of every rule, keyed by id.
pub type StatsBook = BTreeMap<RuleId, RuleTotals>;

/// The client side of traffic reporting: only what changed since the last report goes out.
///
/// Reports are cumulative, so leaving an unchanged rule out loses nothing; an idle client
/// sends nothing at all. After a reconnect ([`ReportGate::reset`]) everything is sent once,
/// since the server marks a disconnected client's live counters gone.
#[derive(Debug, Default)]
pub struct ReportGate {
    sent: BTreeMap<RuleId, RuleReport>,
}

impl ReportGate {
    /// The reports of `current` that differ from what was last sent (a rule never reported
    /// counts as changed only once it has counted something). Forgets rules no longer bound.
    pub fn changed(&mut self, current: Vec<(RuleId, RuleReport)>) -> Vec<(RuleId, RuleReport)> {
        let live: std::collections::BTreeSet<RuleId> = current.iter().map(|(id, _)| *id).collect();
        self.sent.retain(|id, _| live.contains(id));
        let mut out = Vec::new();
        for (id, report) in current {
            let unchanged = match self.sent.get(&id) {
                Some(previous) => previous == &report,
                None => report.is_idle(),
            };
            if !unchanged {
                self.sent.insert(id, report.clone());
                out.push((id, report));
            }
        }
        out
    }

    /// A new stream: the next call sends every rule that has counted anything.
    pub fn reset(&mut self) {
        self.sent.clear();
    }
}

impl RuleReport {
    /// True when nothing was ever counted (no traffic, no failures) and no target is
    /// marked failed.
    pub fn is_idle(&self) -> bool {
        self.totals == Counters::default()
            && self.per_port.values().all(|c| *c == Counters::default())
            && self
                .per_target
                .iter()
                .all(|t| t.counters == Counters::default() && t.health == TargetHealth::Healthy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn report(instance: u64, bytes: u64, active: u64) -> RuleReport {
        RuleReport {
            instance,
            totals: Counters { bytes_in: bytes, connections_active: active, ..Default::default() },
            ..Default::default()
        }
    }

    #[test]
    fn the_gate_sends_only_changes_and_everything_after_a_reset() {
        let id = RuleId::new(1);
        let idle = RuleId::new(2);
        let mut gate = ReportGate::default();
        assert!(gate.changed(vec![(idle, RuleReport::default())]).is_empty(), "an idle rule is not reported");
        assert_eq!(gate.changed(vec![(id, report(1, 10, 1)), (idle, RuleReport::default())]).len(), 1);
        assert!(gate.changed(vec![(id, report(1, 10, 1))]).is_empty(), "unchanged");
        assert_eq!(gate.changed(vec![(id, report(1, 11, 1))]), vec![(id, report(1, 11, 1))]);
        gate.reset();
        assert_eq!(gate.changed(vec![(id, report(1, 11, 1))]).len(), 1, "a new stream hears everything once");
        // A rule that went away and came back is reported again.
        assert!(gate.changed(vec![]).is_empty());
        assert_eq!(gate.changed(vec![(id, report(1, 11, 1))]).len(), 1);
    }

    #[test]
    fn per_target_counters_survive_a_client_restart_and_a_disconnect_clears_their_gauge() {
        let target = |index: u32, bytes: u64, active: u64| TargetCounters {
            index,
            health: TargetHealth::Healthy,
            counters: Counters { bytes_in: bytes, connections_active: active, ..Default::default() },
        };
        let mut t = RuleTotals::default();
        t.record(RuleReport {
            instance: 1,
            per_target: vec![target(0, 100, 2), target(1, 5, 0)],
            ..Default::default()
        });
        t.client_gone();
        assert!(t.per_target().iter().all(|c| c.counters.connections_active == 0), "{:?}", t.per_target());
        t.record(RuleReport { instance: 2, per_target: vec![target(0, 7, 1)], ..Default::default() });
        let merged = t.per_target();
        assert_eq!(merged.len(), 2);
        assert_eq!((merged[0].counters.bytes_in, merged[0].counters.connections_active), (107, 1));
        assert_eq!((merged[1].counters.bytes_in, merged[1].counters.connections_active), (5, 0));
    }

    #[test]
    fn totals_stored_before_fd_exhausted_existed_still_decode() {
        let stored = r#"{"bytes_in":5,"bytes_out":6,"connections_total":1,"connections_active":0,
            "datagrams_in":0,"datagrams_out":0,"flows_dropped_overflow":0,"dns_failures":0,
            "connect_failures":2,"target_failovers":0}"#;
        let counters: Counters = serde_json::from_str(stored).expect("old counters decode");
        assert_eq!((counters.bytes_in, counters.connect_failures, counters.fd_exhausted), (5, 2, 0));
        let later = Counters { fd_exhausted: 3, ..Counters::default() };
        assert_eq!(counters.plus(later).fd_exhausted, 3);
    }

    #[test]
    fn a_client_restart_keeps_earlier_bytes() {
        let mut t = RuleTotals::default();
        t.record(report(7, 100, 1));
        t.record(report(7, 150, 2));
        t.record(report(9, 10, 1));
        assert_eq!(t.totals().bytes_in, 160);
        assert_eq!(t.totals().connections_active, 1);
    }

    proptest! {
        #[test]
        fn totals_never_go_backwards(steps in proptest::collection::vec((0u64..3, 0u64..1000), 1..50)) {
            let mut t = RuleTotals::default();
            let mut per_instance = BTreeMap::new();
            let mut last = 0;
            for (instance, add) in steps {
                let slot = per_instance.entry(instance + 1).or_insert(0u64);
                *slot += add;
                t.record(report(instance + 1, *slot, 0));
                prop_assert!(t.totals().bytes_in >= last);
                last = t.totals().bytes_in;
            }
        }
    }
}
