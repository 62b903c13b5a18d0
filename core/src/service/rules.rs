//! Pushing, removing and reading rules.

use std::collections::BTreeMap;
use std::time::Duration;

use super::ControlPlane;
use crate::capability;
use crate::error::{ErrorCode, Failure};
use crate::ids::{ClientId, RuleId, UserId};
use crate::policy::{Action, Actor, authorize};
use crate::ports::{ClientCommand, Write};
use crate::rule::{Protocol, Rule, RuleEvent, RuleLimits, RuleSpec, RuleState};
use crate::stats::{Counters, TargetCounters};

/// A push that did not end Active. `rule` is set when a rule was stored (Failed, or left
/// Pending by a timeout), so the operator learns its id.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{failure}")]
pub struct PushFailure {
    /// The code and message.
    pub failure: Failure,
    /// The stored rule, if any.
    pub rule: Option<Rule>,
}

impl From<Failure> for PushFailure {
    fn from(failure: Failure) -> Self {
        PushFailure { failure, rule: None }
    }
}

impl From<crate::policy::Denial> for PushFailure {
    fn from(denial: crate::policy::Denial) -> Self {
        PushFailure { failure: denial.into(), rule: None }
    }
}

impl From<crate::ports::StoreError> for PushFailure {
    fn from(err: crate::ports::StoreError) -> Self {
        PushFailure { failure: err.into(), rule: None }
    }
}

/// A rule with its client's name, for listings.
#[derive(Debug, Clone)]
pub struct RuleView {
    /// The rule.
    pub rule: Rule,
    /// Its client's current name.
    pub client_name: String,
}

/// Traffic of one rule.
#[derive(Debug, Clone)]
pub struct RuleStatsView {
    /// The rule.
    pub rule: RuleView,
    /// Whole-rule counters over every client instance.
    pub totals: Counters,
    /// Per listen port.
    pub per_port: BTreeMap<u16, Counters>,
    /// Per target, from the live instance.
    pub per_target: Vec<TargetCounters>,
}

/// Filters of a rule listing; every field that is set must match.
#[derive(Debug, Clone, Default)]
pub struct RuleFilter {
    /// Client id or name.
    pub client: Option<String>,
    /// Owner's user id.
    pub owner: Option<String>,
    /// Lifecycle state name (`pending`, `active`, `failed`).
    pub state: Option<String>,
    /// Protocol.
    pub protocol: Option<Protocol>,
}

/// Bounds on the activation wait a caller may ask for.
pub const MAX_ACK_TIMEOUT: Duration = Duration::from_secs(300);

impl ControlPlane {
    /// Validates `spec`, stores it for `client` and waits up to `ack_timeout` for the client
    /// to activate it.
    ///
    /// Outcomes: Active → `Ok`; a client that is not connected → `client_not_connected` with
    /// nothing stored; a port reserved by another rule of the same client → the rule is
    /// stored Failed(`port_in_use`); the client's own failure → its code; no answer →
    /// `ack_timeout` with the rule left Pending (it activates when the client answers).
    pub async fn push_rule(
        &self,
        actor: &Actor,
        client_ref: &str,
        spec: &RuleSpec,
        ack_timeout: Duration,
    ) -> Result<Rule, PushFailure> {
        let result = self.push_rule_unaudited(actor, client_ref, spec, ack_timeout).await;
        let (outcome, stored) = match &result {
            Ok(rule) => (Ok(()), Some(rule.id)),
            Err(push) => (Err(push.failure.clone()), push.rule.as_ref().map(|r| r.id)),
        };
        let target = match stored {
            Some(id) => format!("{client_ref} rule {id}"),
            None => client_ref.to_owned(),
        };
        match (result, self.audited(actor, "rule.push", Some(&target), outcome)) {
            (Ok(_), Err(unrecorded)) => Err(unrecorded.into()),
            (result, _) => result,
        }
    }

    async fn push_rule_unaudited(
        &self,
        actor: &Actor,
        client_ref: &str,
        spec: &RuleSpec,
        ack_timeout: Duration,
    ) -> Result<Rule, PushFailure> {
        authorize(actor, &Action::List)?;
        if ack_timeout.is_zero() || ack_timeout > MAX_ACK_TIMEOUT {
            return Err(
                Failure::new(ErrorCode::OutOfRange, "ack timeout must be between 1 ms and 300 s").into()
            );
        }
        let def = spec.validate(RuleLimits { max_range_ports: self.settings.range_rule_max_ports })?;
        let client = self.find_client(client_ref)?;
        let allowed = |grants: &[crate::grant::Grant]| {
            authorize(
                actor,
                &Action::PushRule { client: &client.id, ports: def.listen, protocol: def.protocol, grants },
            )
        };
        allowed(&self.store.list_grants()?)?;
        if client.revoked_at.is_some() {
            return Err(Failure::new(
                ErrorCode::ClientRevoked,
                format!("client {} was revoked; re-enroll it first", client.name),
            )
            .into());
        }
        let session = self.link.session(&client.id).ok_or_else(|| {
            Failure::new(ErrorCode::ClientNotConnected, format!("client {} is not connected", client.name))
        })?;
        capability::gate(&def, &session.capabilities)?;

        let rule = {
            let _guard = self.write_lock();
            // The grant may have gone while the checks ran; decide again under the lock.
            allowed(&self.store.list_grants()?)?;
            let clash = self
                .store
                .rules_for_client(&client.id)?
                .into_iter()
                .find(|other| other.state.reserves_ports() && other.def.reserves_same_ports_as(&def));
            let now = self.clock.now();
            let state = match &clash {
                None => RuleState::Pending,
                Some(other) => RuleState::Failed {
                    code: ErrorCode::PortInUse,
                    message: format!(
                        "port {} already in use by rule {}",
                        first_shared_port(&def, &other.def),
                        other.id
                    ),
                },
            };
            let rule = Rule {
                id: self.store.next_rule_id()?,
                client: client.id.clone(),
                owner: actor.principal.clone(),
                def,
                state,
                created_at: now,
                updated_at: now,
            };
            self.store.commit(vec![Write::PutRule(rule.clone())])?;
            rule
        };
        if let RuleState::Failed { code, message } = &rule.state {
            return Err(PushFailure { failure: Failure::new(*code, message.clone()), rule: Some(rule) });
        }

        let outcome = self.link.await_outcome(rule.id, ack_timeout);
        let sent = self.link.send(&client.id, ClientCommand::Upsert { rule: rule.id, def: rule.def.clone() });
        if sent.is_err() {
            // The stream dropped between the check and the send: undo, as if it had been
            // down all along.
            let _guard = self.write_lock();
            self.store.commit(vec![Write::DeleteRule(rule.id)])?;
            return Err(Failure::new(
                ErrorCode::ClientNotConnected,
                format!("client {} is not connected", client.name),
            )
            .into());
        }
        match outcome.await {
            Some(RuleState::Active) => Ok(Rule { state: RuleState::Active, ..rule }),
            Some(RuleState::Failed { code, message }) => {
                let failure = Failure::new(code, message.clone());
                Err(PushFailure {
                    failure,
                    rule: Some(Rule { state: RuleState::Failed { code, message }, ..rule }),
                })
            }
            Some(other) => Err(PushFailure {
                failure: Failure::new(ErrorCode::Internal, format!("unexpected outcome {}", other.name())),
                rule: Some(rule),
            }),
            None => Err(PushFailure {
                failure: Failure::new(
                    ErrorCode::AckTimeout,
                    format!(
                        "client {} did not report an outcome within {ack_timeout:?}; the rule stays pending",
                        client.name
                    ),
                ),
                rule: Some(rule),
            }),
        }
    }

    /// Removes a rule: deletes it (and its reservation) durably, then tells the client if it
    /// is connected; an offline client drops it when it reconnects and resynchronises.
    pub fn remove_rule(&self, actor: &Actor, id: RuleId) -> Result<Rule, Failure> {
        let result = (|| {
            let rule = {
                let _guard = self.write_lock();
                let rule = self.require_rule(id)?;
                authorize(actor, &Action::AccessRule { owner: &rule.owner })?;
                rule.state
                    .on(RuleEvent::Removed)
                    .map_err(|err| Failure::new(ErrorCode::Internal, err.to_string()))?;
                self.store.commit(vec![Write::DeleteRule(id)])?;
                rule
            };
            self.rules_deleted(std::slice::from_ref(&rule));
            Ok(Rule { state: RuleState::Removed, ..rule })
        })();
        self.audited(actor, "rule.remove", Some(&id.to_string()), result)
    }

    /// The rules `actor` may see (every rule for superadmins, their own for users) that
    /// match `filter`, ordered by id. A user asking for another owner's rules is refused
    /// with `not_owner`.
    pub fn list_rules(&self, actor: &Actor, filter: &RuleFilter) -> Result<Vec<RuleView>, Failure> {
        let result = (|| {
            authorize(actor, &Action::List)?;
            if let Some(owner) = &filter.owner {
                authorize(actor, &Action::AccessRule { owner: &UserId::new(owner.as_str()) })?;
            }
            let clients: BTreeMap<ClientId, String> =
                self.store.list_clients()?.into_iter().map(|c| (c.id, c.name.to_string())).collect();
            let rules = match &filter.client {
                Some(reference) => self.store.rules_for_client(&self.find_client(reference)?.id)?,
                None => self.store.list_rules()?,
            };
            Ok(rules
                .into_iter()
                .filter(|rule| authorize(actor, &Action::AccessRule { owner: &rule.owner }).is_ok())
                .filter(|rule| filter.owner.as_deref().is_none_or(|o| rule.owner.as_str() == o))
                .filter(|rule| filter.state.as_deref().is_none_or(|s| rule.state.name() == s))
                .filter(|rule| filter.protocol.is_none_or(|p| rule.def.protocol == p))
                .map(|rule| RuleView {
                    client_name: clients.get(&rule.client).cloned().unwrap_or_default(),
                    rule,
                })
                .collect())
        })();
        self.audited_read(actor, "rule.list", None, result)
    }

    /// One rule.
    pub fn get_rule(&self, actor: &Actor, id: RuleId) -> Result<RuleView, Failure> {
        let result = (|| {
            let rule = self.require_rule(id)?;
            authorize(actor, &Action::AccessRule { owner: &rule.owner })?;
            let client_name =
                self.store.get_client(&rule.client)?.map(|c| c.name.to_string()).unwrap_or_default();
            Ok(RuleView { rule, client_name })
        })();
        self.audited_read(actor, "rule.get", Some(&id.to_string()), result)
    }

    /// One rule's traffic.
    pub fn rule_stats(&self, actor: &Actor, id: RuleId) -> Result<RuleStatsView, Failure> {
        let rule = self.get_rule(actor, id)?;
        let stats = self.stats_lock();
        let totals = stats.book.get(&id).cloned().unwrap_or_default();
        Ok(RuleStatsView {
            rule,
            totals: totals.totals(),
            per_port: totals.per_port(),
            per_target: totals.live.per_target.clone(),
        })
    }

    pub(super) fn require_rule(&self, id: RuleId) -> Result<Rule, Failure> {
        self.store.get_rule(id)?.ok_or_else(|| Failure::new(ErrorCode::RuleNotFound, format!("no rule {id}")))
    }
}

fn first_shared_port(a: &crate::rule::RuleDef, b: &crate::rule::RuleDef) -> u16 {
    a.listen.start().max(b.listen.start())
}
