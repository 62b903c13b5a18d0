//! The client's rate-limit scopes: one per capped rule and one per owner envelope, handed to
//! the data plane as each rule's [`LimitPath`].
//!
//! Invariants: a scope is updated in place whenever its caps change (a hot update keeps
//! bucket levels and open counts), never replaced while its rule or owner keeps caps; the
//! data plane is told a rule's path before the rule binds and again only when the path's
//! scopes change; every `SharedScope` runs on the data plane's limit clock
//! (`portunus_dataplane::limits::now`).

use std::collections::BTreeMap;
use std::sync::Arc;

use portunus_core::agent::Agent;
use portunus_core::ids::{RuleId, UserId};
use portunus_core::ratelimit::{Caps, LimitPath, OwnerCapsUpdate, SharedScope};
use portunus_core::rule::RuleDef;
use portunus_dataplane::limits;
use portunus_dataplane::ports::RuleRuntime;

/// Rate-limit scopes of one client process (kept across reconnects).
#[derive(Debug, Default)]
pub(crate) struct Limiter {
    /// Each owner's envelope on this client.
    owners: BTreeMap<UserId, Arc<SharedScope>>,
    /// The owner of each rule an envelope covers, from the envelopes' rule lists.
    owner_of: BTreeMap<RuleId, UserId>,
    /// Each capped rule's own scope.
    rules: BTreeMap<RuleId, Arc<SharedScope>>,
    /// The path each rule was last given.
    given: BTreeMap<RuleId, LimitPath>,
}

impl Limiter {
    /// Applies one envelope update from the server.
    pub(crate) fn apply(&mut self, update: OwnerCapsUpdate) {
        self.owner_of.retain(|_, owner| *owner != update.user);
        match update.caps {
            Some(caps) => {
                match self.owners.get(&update.user) {
                    Some(scope) => scope.update(caps, limits::now()),
                    None => {
                        self.owners
                            .insert(update.user.clone(), Arc::new(SharedScope::new(caps, limits::now())));
                    }
                }
                self.owner_of.extend(update.rules.iter().map(|rule| (*rule, update.user.clone())));
                tracing::info!(event = "rate_limit.owner_applied", user = %update.user, rules = update.rules.len());
            }
            None => {
                self.owners.remove(&update.user);
                tracing::info!(event = "rate_limit.owner_removed", user = %update.user);
            }
        }
    }

    /// Applies the full set a Welcome carries: owners it does not list have no envelope.
    pub(crate) fn sync(&mut self, updates: Vec<OwnerCapsUpdate>) {
        let listed: Vec<&UserId> = updates.iter().map(|u| &u.user).collect();
        let stale: Vec<UserId> = self.owners.keys().filter(|u| !listed.contains(u)).cloned().collect();
        for user in stale {
            self.apply(OwnerCapsUpdate { user, caps: None, rules: Vec::new() });
        }
        for update in updates {
            self.apply(update);
        }
    }

    /// Readies the rule's own scope for a bind of `def` (a fresh one: a new binding starts
    /// with full buckets and nothing open) and tells the data plane its path first.
    pub(crate) fn before_bind(&mut self, rule: RuleId, def: &RuleDef, runtime: &dyn RuleRuntime) {
        if def.rate_limit.is_unlimited() {
            self.rules.remove(&rule);
        } else {
            self.rules.insert(rule, Arc::new(SharedScope::new(def.rate_limit, limits::now())));
        }
        self.give(rule, runtime);
    }

    /// A hot update of a bound rule's caps: its scope keeps its levels and open count.
    pub(crate) fn retune(&mut self, rule: RuleId, caps: Caps, runtime: &dyn RuleRuntime) {
        match self.rules.get(&rule) {
            // Lifted caps stay as an unlimited scope while the rule lives, so its open
            // connections stay counted should caps come back.
            Some(scope) => scope.update(caps, limits::now()),
            None if caps.is_unlimited() => {}
            None => {
                self.rules.insert(rule, Arc::new(SharedScope::new(caps, limits::now())));
            }
        }
        tracing::info!(event = "rate_limit.rule_applied", rule = %rule, unlimited = caps.is_unlimited());
        self.give(rule, runtime);
    }

    /// Forgets a rule that was removed.
    pub(crate) fn forget(&mut self, rule: RuleId, runtime: &dyn RuleRuntime) {
        self.rules.remove(&rule);
        if self.given.remove(&rule).is_some() {
            runtime.set_limits(rule, LimitPath::default());
        }
    }

    /// Gives every rule the agent holds its current path (after envelope changes).
    pub(crate) fn install(&mut self, agent: &Agent, runtime: &dyn RuleRuntime) {
        let held: Vec<RuleId> = agent.bound_rules().collect();
        for rule in held {
            self.give(rule, runtime);
        }
    }

    /// Tells the data plane `rule`'s path when its scopes changed.
    fn give(&mut self, rule: RuleId, runtime: &dyn RuleRuntime) {
        let owner = self.owner_of.get(&rule).and_then(|user| self.owners.get(user)).cloned();
        let path = LimitPath::new(owner, self.rules.get(&rule).cloned());
        let same = self.given.get(&rule).is_some_and(|given| same_scopes(given, &path));
        let unlimited = path.owner().is_none() && path.rule().is_none();
        if same || (unlimited && !self.given.contains_key(&rule)) {
            return;
        }
        runtime.set_limits(rule, path.clone());
        self.given.insert(rule, path);
    }
}

fn same_scopes(a: &LimitPath, b: &LimitPath) -> bool {
    let same = |x: Option<&Arc<SharedScope>>, y: Option<&Arc<SharedScope>>| match (x, y) {
        (Some(x), Some(y)) => Arc::ptr_eq(x, y),
        (None, None) => true,
        _ => false,
    };
    same(a.owner(), b.owner()) && same(a.rule(), b.rule())
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use portunus_core::ratelimit::{Direction, RateLimits};

    use super::*;

    #[derive(Default)]
    struct Recorder {
        given: Mutex<Vec<(RuleId, LimitPath)>>,
    }

    impl RuleRuntime for Recorder {
        fn apply_settings(&self, _: portunus_core::config::DataPlaneSettings) {}
        fn bind(
            &self,
            _: RuleId,
            _: RuleDef,
        ) -> portunus_dataplane::ports::BoxFuture<'_, Result<(), portunus_core::Failure>> {
            Box::pin(async { Ok(()) })
        }
        fn unbind(&self, _: RuleId) {}
        fn stop_accepting(&self) {}
        fn report(&self) -> Vec<(RuleId, portunus_core::stats::RuleReport)> {
            Vec::new()
        }
        fn set_limits(&self, rule: RuleId, path: LimitPath) {
            self.given.lock().unwrap().push((rule, path));
        }
    }

    fn caps(bps: u64) -> Caps {
        RateLimits { bandwidth_in_bps: Some(bps), ..Default::default() }.validate().unwrap()
    }

    fn envelope(user: &str, bps: Option<u64>, rules: &[u64]) -> OwnerCapsUpdate {
        OwnerCapsUpdate {
            user: UserId::new(user),
            caps: bps.map(caps),
            rules: rules.iter().map(|r| RuleId::new(*r)).collect(),
        }
    }

    #[test]
    fn an_envelope_binds_before_the_rule_and_updates_keep_the_same_scopes() {
        let runtime = Recorder::default();
        let mut limiter = Limiter::default();
        let (capped, plain) = (RuleId::new(1), RuleId::new(2));
        limiter.apply(envelope("alice", Some(200_000), &[1, 2]));
        let mut def = portunus_core::test_support::tcp_rule(8080);
        def.rate_limit = caps(1_000_000);
        limiter.before_bind(capped, &def, &runtime);
        def.rate_limit = Caps::default();
        limiter.before_bind(plain, &def, &runtime);
        {
            let given = runtime.given.lock().unwrap();
            assert_eq!(given.len(), 2);
            let (_, path) = &given[0];
            assert!(path.owner().is_some() && path.rule().is_some());
            assert!(given[1].1.owner().is_some() && given[1].1.rule().is_none());
        }
        // A new envelope level is a hot update: the same scope objects, nothing re-given.
        limiter.apply(envelope("alice", Some(400_000), &[1, 2]));
        let mut agent = Agent::default();
        limiter.install(&agent, &runtime);
        limiter.retune(capped, caps(2_000_000), &runtime);
        assert_eq!(runtime.given.lock().unwrap().len(), 2, "same scopes: the data plane is not told again");
        let path = runtime.given.lock().unwrap()[0].1.clone();
        assert_eq!(path.owner().unwrap().caps(), caps(400_000));
        assert_eq!(path.rule().unwrap().caps().bandwidth(Direction::In).unwrap().per_sec(), 2_000_000);
        // Lifting the envelope gives the rules paths without it.
        agent.handle(portunus_core::agent::ServerMsg::Sync(vec![]));
        limiter.sync(vec![]);
        limiter.forget(plain, &runtime);
        let given = runtime.given.lock().unwrap();
        assert_eq!(given.last().unwrap().0, plain);
        assert!(given.last().unwrap().1.owner().is_none());
    }
}
