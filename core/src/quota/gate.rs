//! The edge client's side of quotas: one gate per user whose rules it runs, holding the bytes
//! the server last said the pair may still forward, debited locally as the data plane counts
//! traffic, so the client stops a pair that runs out without waiting for the server.
//!
//! Sans-io: updates from the server and byte counts go in; [`GateChange`]s (suspend or resume
//! a user's rules) come out. Invariants: a gate is closed exactly while the server says the
//! pair is exhausted or its local budget is spent; a user without a gate is never stopped;
//! a removed quota reopens the pair.

use std::collections::BTreeMap;

use crate::ids::UserId;
use crate::quota::Quota;

/// What the server tells a client about one pair (`TrafficQuotaUpdate`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuotaUpdate {
    /// The pair has a quota: this much is left in the period, or it is exhausted.
    Set {
        /// The user whose rules it caps.
        user: UserId,
        /// Bytes the pair may still forward this period.
        remaining_bytes: u64,
        /// The server counts the pair as out of budget.
        exhausted: bool,
    },
    /// The pair has no quota any more.
    Remove {
        /// The user.
        user: UserId,
    },
}

impl QuotaUpdate {
    /// The update that states `quota` now.
    pub fn of(quota: &Quota) -> QuotaUpdate {
        QuotaUpdate::Set {
            user: quota.user.clone(),
            remaining_bytes: quota.state.remaining_bytes(),
            exhausted: quota.state.is_exhausted(),
        }
    }

    /// The user it is about.
    pub fn user(&self) -> &UserId {
        match self {
            QuotaUpdate::Set { user, .. } | QuotaUpdate::Remove { user } => user,
        }
    }
}

/// A [`QuotaUpdate`] with the rules it covers on the client it goes to: the rules of its
/// user there, as they are when it is sent (a push of another rule of the pair sends it
/// again).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairUpdate {
    /// The update.
    pub update: QuotaUpdate,
    /// The pair's rules on the client.
    pub rules: Vec<crate::ids::RuleId>,
}

/// What the client must do with a user's rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GateChange {
    /// Refuse new connections and flows, cut the live ones.
    Suspend(UserId),
    /// Forward again.
    Resume(UserId),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Gate {
    remaining: u64,
    closed: bool,
}

/// The gates of every user with a quota on this client.
#[derive(Debug, Default, Clone)]
pub struct QuotaGates {
    gates: BTreeMap<UserId, Gate>,
}

impl QuotaGates {
    /// Applies an update from the server.
    pub fn apply(&mut self, update: QuotaUpdate) -> Option<GateChange> {
        match update {
            QuotaUpdate::Set { user, remaining_bytes, exhausted } => {
                let was_closed = self.gates.get(&user).is_some_and(|g| g.closed);
                let closed = exhausted || remaining_bytes == 0;
                self.gates.insert(user.clone(), Gate { remaining: remaining_bytes, closed });
                change(user, was_closed, closed)
            }
            QuotaUpdate::Remove { user } => {
                let was_closed = self.gates.remove(&user).is_some_and(|g| g.closed);
                change(user, was_closed, false)
            }
        }
    }

    /// Debits `bytes` forwarded by `user`'s rules; closes the gate when the budget is spent.
    pub fn debit(&mut self, user: &UserId, bytes: u64) -> Option<GateChange> {
        let gate = self.gates.get_mut(user)?;
        gate.remaining = gate.remaining.saturating_sub(bytes);
        if gate.remaining == 0 && !gate.closed {
            gate.closed = true;
            return Some(GateChange::Suspend(user.clone()));
        }
        None
    }

    /// True unless `user`'s pair is out of budget.
    pub fn is_open(&self, user: &UserId) -> bool {
        self.gates.get(user).is_none_or(|g| !g.closed)
    }

    /// Bytes `user` may still forward (`None`: no quota).
    pub fn remaining(&self, user: &UserId) -> Option<u64> {
        self.gates.get(user).map(|g| g.remaining)
    }
}

fn change(user: UserId, was_closed: bool, closed: bool) -> Option<GateChange> {
    match (was_closed, closed) {
        (false, true) => Some(GateChange::Suspend(user)),
        (true, false) => Some(GateChange::Resume(user)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(user: &str, remaining_bytes: u64, exhausted: bool) -> QuotaUpdate {
        QuotaUpdate::Set { user: UserId::new(user), remaining_bytes, exhausted }
    }

    #[test]
    fn a_budget_spent_locally_suspends_once_and_a_new_budget_resumes() {
        let mut gates = QuotaGates::default();
        let alice = UserId::new("alice");
        assert_eq!(gates.apply(set("alice", 1_000, false)), None);
        assert_eq!(gates.debit(&alice, 600), None);
        assert_eq!(gates.remaining(&alice), Some(400));
        assert_eq!(gates.debit(&alice, 600), Some(GateChange::Suspend(alice.clone())));
        assert_eq!(gates.debit(&alice, 1), None, "suspended once");
        assert!(!gates.is_open(&alice));
        // The server's own verdict agrees: nothing changes.
        assert_eq!(gates.apply(set("alice", 0, true)), None);
        // A credit reopens it without a reconnect.
        assert_eq!(gates.apply(set("alice", 5_000, false)), Some(GateChange::Resume(alice.clone())));
        assert!(gates.is_open(&alice));
    }

    #[test]
    fn users_without_a_quota_are_never_stopped_and_a_removal_reopens() {
        let mut gates = QuotaGates::default();
        let (alice, bob) = (UserId::new("alice"), UserId::new("bob"));
        assert_eq!(gates.debit(&bob, u64::MAX), None);
        assert!(gates.is_open(&bob));
        assert_eq!(gates.apply(set("alice", 10, true)), Some(GateChange::Suspend(alice.clone())));
        assert_eq!(
            gates.apply(QuotaUpdate::Remove { user: alice.clone() }),
            Some(GateChange::Resume(alice.clone()))
        );
        assert_eq!(gates.apply(QuotaUpdate::Remove { user: alice.clone() }), None);
        assert!(gates.is_open(&alice));
    }
}
