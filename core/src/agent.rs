//! The client side of the control stream as a sans-io state machine: server messages go in,
//! data-plane commands and status reports come out.
//!
//! Invariants: a rule whose definition did not change is never unbound (its listeners and
//! open connections survive a reconnect); a rule that failed to bind is not retried unless
//! the server sends a changed definition; the agent outlives any number of streams.

use std::collections::{BTreeMap, VecDeque};

use crate::error::Failure;
use crate::ids::RuleId;
use crate::rule::RuleDef;

/// What the server told the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerMsg {
    /// The full rule set after a (re)connect: anything absent is removed.
    Sync(Vec<(RuleId, RuleDef)>),
    /// Run this rule (new or changed).
    Upsert(RuleId, RuleDef),
    /// Stop this rule.
    Remove(RuleId),
}

/// A rule's outcome as reported to the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every listen port bound.
    Active,
    /// Binding failed.
    Failed(Failure),
}

/// What the adapter must do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentCommand {
    /// Bind the rule's listeners (all or nothing) and report with
    /// [`Agent::handle_bind_result`].
    Bind(RuleId, RuleDef),
    /// Stop the rule's listeners and close its connections.
    Unbind(RuleId),
    /// Apply new caps to a bound rule in place (a hot update: listeners, connections and
    /// bucket levels stay); nothing else of the definition changed.
    Retune(RuleId, RuleDef),
    /// Tell the server the rule's outcome.
    Report(RuleId, Outcome),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Local {
    Binding,
    Bound,
    Failed(Failure),
}

/// The reconciler.
#[derive(Debug, Default)]
pub struct Agent {
    rules: BTreeMap<RuleId, (RuleDef, Local)>,
    commands: VecDeque<AgentCommand>,
}

impl Agent {
    /// Applies a server message.
    pub fn handle(&mut self, msg: ServerMsg) {
        match msg {
            ServerMsg::Sync(wanted) => {
                let wanted: BTreeMap<RuleId, RuleDef> = wanted.into_iter().collect();
                let gone: Vec<RuleId> =
                    self.rules.keys().filter(|id| !wanted.contains_key(id)).copied().collect();
                for id in gone {
                    self.remove(id);
                }
                for (id, def) in wanted {
                    self.upsert(id, def);
                }
            }
            ServerMsg::Upsert(id, def) => self.upsert(id, def),
            ServerMsg::Remove(id) => self.remove(id),
        }
    }

    /// Feeds back the result of an [`AgentCommand::Bind`]. Results for rules removed or
    /// changed meanwhile are ignored (the adapter has been told to unbind them).
    pub fn handle_bind_result(&mut self, id: RuleId, def: &RuleDef, result: Result<(), Failure>) {
        let Some((current, state)) = self.rules.get_mut(&id) else {
            return;
        };
        if current != def || *state != Local::Binding {
            return;
        }
        let outcome = match result {
            Ok(()) => {
                *state = Local::Bound;
                Outcome::Active
            }
            Err(failure) => {
                *state = Local::Failed(failure.clone());
                Outcome::Failed(failure)
            }
        };
        self.commands.push_back(AgentCommand::Report(id, outcome));
    }

    /// The next command, if any.
    pub fn poll_command(&mut self) -> Option<AgentCommand> {
        self.commands.pop_front()
    }

    /// The definition of a bound rule (to bind it again after a pause).
    pub fn bound_def(&self, id: RuleId) -> Option<&RuleDef> {
        self.rules.get(&id).filter(|(_, s)| *s == Local::Bound).map(|(def, _)| def)
    }

    /// Ids of rules that are bound now.
    pub fn bound_rules(&self) -> impl Iterator<Item = RuleId> + '_ {
        self.rules.iter().filter(|(_, (_, s))| *s == Local::Bound).map(|(id, _)| *id)
    }

    fn upsert(&mut self, id: RuleId, def: RuleDef) {
        match self.rules.get(&id) {
            Some((current, state)) if *current == def => {
                // Unchanged: keep listeners and connections, and restate the outcome so a
                // server that missed it (restart, lost stream) converges.
                match state {
                    Local::Bound => self.commands.push_back(AgentCommand::Report(id, Outcome::Active)),
                    Local::Failed(f) => {
                        self.commands.push_back(AgentCommand::Report(id, Outcome::Failed(f.clone())))
                    }
                    Local::Binding => {}
                }
            }
            Some((current, Local::Bound)) if current.differs_only_in_caps(&def) => {
                self.rules.insert(id, (def.clone(), Local::Bound));
                self.commands.push_back(AgentCommand::Retune(id, def));
                self.commands.push_back(AgentCommand::Report(id, Outcome::Active));
            }
            Some(_) => {
                self.commands.push_back(AgentCommand::Unbind(id));
                self.rules.insert(id, (def.clone(), Local::Binding));
                self.commands.push_back(AgentCommand::Bind(id, def));
            }
            None => {
                self.rules.insert(id, (def.clone(), Local::Binding));
                self.commands.push_back(AgentCommand::Bind(id, def));
            }
        }
    }

    fn remove(&mut self, id: RuleId) {
        if self.rules.remove(&id).is_some() {
            self.commands.push_back(AgentCommand::Unbind(id));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;
    use crate::rule::{ListenSpec, Protocol, RuleLimits, RuleSpec};

    fn def(port: i64) -> RuleDef {
        RuleSpec {
            name: None,
            protocol: Protocol::Tcp,
            listen_port: ListenSpec::Port(port),
            listen_addr: None,
            target: Some("127.0.0.1:9".into()),
            targets: vec![],
            prefer_ipv6: false,
            health_check_interval_secs: None,
            sni_pattern: None,
            sni_fallback: false,
            rate_limit: None,
        }
        .validate(RuleLimits::default())
        .unwrap()
    }

    fn drain(agent: &mut Agent) -> Vec<AgentCommand> {
        std::iter::from_fn(|| agent.poll_command()).collect()
    }

    /// Binds every rule the agent asks for, succeeding, and returns all commands seen.
    fn run(agent: &mut Agent) -> Vec<AgentCommand> {
        let mut seen = Vec::new();
        while let Some(cmd) = agent.poll_command() {
            if let AgentCommand::Bind(id, d) = &cmd {
                agent.handle_bind_result(*id, d, Ok(()));
            }
            seen.push(cmd);
        }
        seen
    }

    #[test]
    fn reconnect_keeps_unchanged_rules_and_reconciles_the_rest() {
        let (r1, r2, r3) = (RuleId::new(1), RuleId::new(2), RuleId::new(3));
        let mut agent = Agent::default();
        agent.handle(ServerMsg::Sync(vec![(r1, def(1001)), (r2, def(1002))]));
        run(&mut agent);
        // While offline, r2 was removed and r3 added on the server.
        agent.handle(ServerMsg::Sync(vec![(r1, def(1001)), (r3, def(1003))]));
        let cmds = run(&mut agent);
        assert_eq!(
            cmds,
            vec![
                AgentCommand::Unbind(r2),
                AgentCommand::Report(r1, Outcome::Active),
                AgentCommand::Bind(r3, def(1003)),
                AgentCommand::Report(r3, Outcome::Active),
            ]
        );
        assert_eq!(agent.bound_rules().collect::<Vec<_>>(), vec![r1, r3]);
    }

    #[test]
    fn a_changed_definition_rebinds() {
        let r = RuleId::new(7);
        let mut agent = Agent::default();
        agent.handle(ServerMsg::Upsert(r, def(1)));
        run(&mut agent);
        agent.handle(ServerMsg::Upsert(r, def(2)));
        assert_eq!(drain(&mut agent), vec![AgentCommand::Unbind(r), AgentCommand::Bind(r, def(2))]);
    }

    #[test]
    fn a_failed_bind_is_reported_and_not_retried() {
        let r = RuleId::new(3);
        let failure = Failure::new(ErrorCode::PortInUse, "port 1 already in use");
        let mut agent = Agent::default();
        agent.handle(ServerMsg::Upsert(r, def(1)));
        assert_eq!(drain(&mut agent), vec![AgentCommand::Bind(r, def(1))]);
        agent.handle_bind_result(r, &def(1), Err(failure.clone()));
        assert_eq!(drain(&mut agent), vec![AgentCommand::Report(r, Outcome::Failed(failure.clone()))]);
        agent.handle(ServerMsg::Sync(vec![(r, def(1))]));
        assert_eq!(drain(&mut agent), vec![AgentCommand::Report(r, Outcome::Failed(failure))]);
    }

    #[test]
    fn stale_bind_results_are_ignored() {
        let r = RuleId::new(4);
        let mut agent = Agent::default();
        agent.handle(ServerMsg::Upsert(r, def(1)));
        drain(&mut agent);
        agent.handle(ServerMsg::Remove(r));
        assert_eq!(drain(&mut agent), vec![AgentCommand::Unbind(r)]);
        agent.handle_bind_result(r, &def(1), Ok(()));
        assert_eq!(drain(&mut agent), vec![]);
    }

    #[test]
    fn new_caps_alone_retune_a_bound_rule_in_place_and_anything_else_rebinds() {
        let r = RuleId::new(5);
        let capped = |port: i64, bps: u64| RuleDef {
            rate_limit: crate::ratelimit::RateLimits { bandwidth_in_bps: Some(bps), ..Default::default() }
                .validate()
                .unwrap(),
            ..def(port)
        };
        let mut agent = Agent::default();
        agent.handle(ServerMsg::Upsert(r, def(1)));
        run(&mut agent);
        agent.handle(ServerMsg::Upsert(r, capped(1, 100_000)));
        assert_eq!(
            drain(&mut agent),
            vec![AgentCommand::Retune(r, capped(1, 100_000)), AgentCommand::Report(r, Outcome::Active)]
        );
        assert_eq!(agent.bound_def(r), Some(&capped(1, 100_000)), "the rule stays bound with its new caps");
        // Lifting the caps is a hot update too; a new port is not.
        agent.handle(ServerMsg::Upsert(r, def(1)));
        assert!(matches!(drain(&mut agent)[0], AgentCommand::Retune(..)));
        agent.handle(ServerMsg::Upsert(r, capped(2, 100_000)));
        assert_eq!(
            drain(&mut agent),
            vec![AgentCommand::Unbind(r), AgentCommand::Bind(r, capped(2, 100_000))]
        );
        // While a bind is in flight, a caps change binds again rather than racing it.
        agent.handle(ServerMsg::Upsert(r, capped(2, 200_000)));
        assert_eq!(
            drain(&mut agent),
            vec![AgentCommand::Unbind(r), AgentCommand::Bind(r, capped(2, 200_000))]
        );
    }
}
