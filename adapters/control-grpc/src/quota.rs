//! The client's quota enforcement: the gates of core's `QuotaGates`, the pair each rule
//! belongs to, and which rules it paused.
//!
//! A pair's rules are paused by unbinding them in the data plane (listeners close, live
//! connections and flows are cut) while the agent keeps them as bound, and bound again from
//! the agent's definitions when the pair has budget again — no reconnect. Bytes are debited
//! from the counters the data plane reports, a few times a second, so a pair stops at most
//! one debit interval of traffic past its budget (the server's own count, from the stats
//! reports, stays the reference).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use portunus_core::agent::Agent;
use portunus_core::ids::{RuleId, UserId};
use portunus_core::quota::{GateChange, PairUpdate, QuotaGates, QuotaUpdate};
use portunus_core::stats::RuleReport;
use portunus_dataplane::budget::QuotaBudget;
use portunus_dataplane::ports::RuleRuntime;

/// The quota state of one client process (kept across reconnects).
#[derive(Debug, Default)]
pub(crate) struct Enforcer {
    gates: QuotaGates,
    owner_of: BTreeMap<RuleId, UserId>,
    /// Rules this enforcer unbound (or kept from binding) while their pair was out of budget.
    paused: BTreeSet<RuleId>,
    /// Bytes of each rule already debited: (runtime instance, in + out).
    debited: BTreeMap<RuleId, (u64, u64)>,
    /// Each pair's budget as the relays debit it, byte-exact per delivery.
    budgets: BTreeMap<UserId, Arc<QuotaBudget>>,
    /// Rules whose budget was taken away and must be told so.
    unbudgeted: BTreeSet<RuleId>,
}

impl Enforcer {
    /// True when some pair has a quota (debiting is worth doing).
    pub(crate) fn is_active(&self) -> bool {
        !self.owner_of.is_empty()
    }

    /// Applies one update from the server.
    pub(crate) fn apply(&mut self, pair: PairUpdate) -> Option<GateChange> {
        let user = pair.update.user().clone();
        let before: Vec<RuleId> =
            self.owner_of.iter().filter(|(_, o)| **o == user).map(|(r, _)| *r).collect();
        self.owner_of.retain(|_, owner| owner != &user);
        self.unbudgeted.extend(before.into_iter().filter(|rule| !pair.rules.contains(rule)));
        match &pair.update {
            QuotaUpdate::Set { remaining_bytes, exhausted, .. } => {
                let left = if *exhausted { 0 } else { *remaining_bytes };
                self.budgets
                    .entry(user.clone())
                    .or_insert_with(|| Arc::new(QuotaBudget::new(left)))
                    .set(left);
                self.owner_of.extend(pair.rules.iter().map(|rule| (*rule, user.clone())));
                tracing::info!(event = "traffic_quota.applied_set", user = %user,
                    remaining_bytes = *remaining_bytes, exhausted = *exhausted, rules = pair.rules.len());
            }
            QuotaUpdate::Remove { .. } => {
                tracing::info!(event = "traffic_quota.applied_remove", user = %user)
            }
        }
        self.gates.apply(pair.update)
    }

    /// Applies the full set a Welcome carries: pairs it does not list have no quota.
    pub(crate) fn sync(&mut self, pairs: Vec<PairUpdate>) -> Vec<GateChange> {
        let listed: BTreeSet<UserId> = pairs.iter().map(|p| p.update.user().clone()).collect();
        let stale: BTreeSet<UserId> =
            self.owner_of.values().filter(|u| !listed.contains(*u)).cloned().collect();
        let mut changes: Vec<GateChange> = stale
            .into_iter()
            .filter_map(|user| {
                self.apply(PairUpdate { update: QuotaUpdate::Remove { user }, rules: Vec::new() })
            })
            .collect();
        changes.extend(pairs.into_iter().filter_map(|pair| self.apply(pair)));
        changes
    }

    /// Debits what each pair's rules forwarded since the last call.
    pub(crate) fn debit(&mut self, reports: &[(RuleId, RuleReport)]) -> Vec<GateChange> {
        let mut grew: BTreeMap<UserId, u64> = BTreeMap::new();
        for (rule, report) in reports {
            let Some(owner) = self.owner_of.get(rule) else { continue };
            let total = report.totals.bytes_in.saturating_add(report.totals.bytes_out);
            let before = match self.debited.insert(*rule, (report.instance, total)) {
                Some((instance, bytes)) if instance == report.instance => bytes,
                // A new runtime instance of the rule (bound again) counts from zero.
                _ => 0,
            };
            *grew.entry(owner.clone()).or_default() += total.saturating_sub(before);
        }
        grew.into_iter().filter_map(|(user, bytes)| self.gates.debit(&user, bytes)).collect()
    }

    /// Hands every bound rule of a pair its budget, and takes it from rules that left a pair
    /// (cheap: one lock per rule; called after every change to quotas or rules).
    pub(crate) fn install(&mut self, agent: &Agent, runtime: &dyn RuleRuntime) {
        for rule in std::mem::take(&mut self.unbudgeted) {
            runtime.set_budget(rule, None);
        }
        for (rule, owner) in &self.owner_of {
            if agent.bound_def(*rule).is_some() {
                runtime.set_budget(*rule, self.budgets.get(owner).cloned());
            }
        }
    }

    /// True when `rule` must not forward now.
    pub(crate) fn holds(&self, rule: RuleId) -> bool {
        self.owner_of.get(&rule).is_some_and(|user| !self.gates.is_open(user))
    }

    /// Notes that `rule` was kept from binding because its pair is out of budget.
    pub(crate) fn note_paused(&mut self, rule: RuleId) {
        self.paused.insert(rule);
    }

    /// Pauses or resumes the rules of a pair.
    pub(crate) async fn enforce(&mut self, change: GateChange, agent: &Agent, runtime: &dyn RuleRuntime) {
        match change {
            GateChange::Suspend(user) => {
                let rules: Vec<RuleId> = self
                    .owner_of
                    .iter()
                    .filter(|(rule, owner)| **owner == user && agent.bound_def(**rule).is_some())
                    .map(|(rule, _)| *rule)
                    .collect();
                for rule in &rules {
                    runtime.unbind(*rule);
                    self.paused.insert(*rule);
                }
                tracing::warn!(event = "traffic_quota.suspended", user = %user, rules = rules.len());
            }
            GateChange::Resume(user) => {
                let rules: Vec<RuleId> = self
                    .paused
                    .iter()
                    .filter(|rule| self.owner_of.get(rule).is_none_or(|owner| *owner == user))
                    .copied()
                    .collect();
                let mut bound = 0usize;
                for rule in rules {
                    self.paused.remove(&rule);
                    let Some(def) = agent.bound_def(rule).cloned() else { continue };
                    match runtime.bind(rule, def).await {
                        Ok(()) => bound += 1,
                        Err(failure) => tracing::warn!(event = "rule.bind_failed", rule = %rule,
                            code = %failure.code, message = %failure.message),
                    }
                }
                tracing::info!(event = "traffic_quota.resumed", user = %user, rules = bound);
            }
        }
    }
}
