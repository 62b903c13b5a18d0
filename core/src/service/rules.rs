//! Pushing, removing and reading rules.
//!
//! A push waits on a client, so it is two pure steps: [`RuleService::begin_push`] decides
//! (validate, authorize, reserve the ports, the rule to store and the command to send) and
//! [`RuleService::complete_push`] turns what happened on the stream into the answer (and,
//! for a command that could not be delivered, the batch that undoes the push). Waiting for
//! the client, and for how long, belongs to the caller.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{Cx, Effect, client_not_found, find_client};
use crate::capability;
use crate::config::ServerSettings;
use crate::error::{ErrorCode, Failure};
use crate::ids::{ClientId, RuleId, UserId};
use crate::policy::{Action, Actor, authorize};
use crate::ports::{ClientCommand, ClientStore, GrantStore, RuleIds, RuleStore, Write};
use crate::rule::{ListenClash, Protocol, Rule, RuleDef, RuleEvent, RuleLimits, RuleSpec, RuleState};
use crate::stats::{Counters, RuleTotals, TargetCounters};

/// A push that did not end Active. `rule` is set when a rule was stored (Failed, or left
/// Pending by a timeout), so the operator learns its id.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{failure}")]
pub struct PushFailure {
    /// The code and message.
    pub failure: Failure,
    /// The stored rule, if any (boxed: the failure travels through `Result`s).
    pub rule: Option<Box<Rule>>,
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
    /// Its client is revoked: nothing forwards the rule until the client is re-enrolled.
    pub client_revoked: bool,
}

impl RuleView {
    /// The state an operator is shown: the stored lifecycle state, except that a rule that
    /// would be bound (`pending`, `active`) on a revoked client is `suspended`; it is kept
    /// and sent again when the client is re-enrolled.
    pub fn shown_state(&self) -> &'static str {
        if self.client_revoked && self.rule.state.is_replayed() { SUSPENDED } else { self.rule.state.name() }
    }
}

/// The shown state of a pending or active rule whose client is revoked.
pub const SUSPENDED: &str = "suspended";

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
    /// Shown state name (`pending`, `active`, `failed`, `suspended`; see [`RuleView::shown_state`]).
    pub state: Option<String>,
    /// Protocol.
    pub protocol: Option<Protocol>,
}

/// Bounds on the activation wait a caller may ask for.
pub const MAX_ACK_TIMEOUT: Duration = Duration::from_secs(300);

/// A push that was decided and stored Pending: send `command` to `rule.client`, wait for
/// its outcome, then call [`RuleService::complete_push`].
#[derive(Debug, Clone)]
pub struct Begun {
    /// The stored rule (Pending).
    pub rule: Rule,
    /// Its client's name, for messages.
    pub client_name: String,
    /// What to queue on the client's stream.
    pub command: ClientCommand,
}

/// What became of a pushed command on the client's stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushOutcome {
    /// The client reported this state (Active, or Failed with its code).
    Reported(RuleState),
    /// No outcome within the caller's wait; the rule stays Pending and activates when the
    /// client answers.
    TimedOut,
    /// The stream was gone when the command was to be queued.
    NotDelivered,
}

/// Rules: push, remove, list, read.
#[derive(Debug, Clone)]
pub struct RuleService {
    limits: RuleLimits,
}

impl RuleService {
    /// A rule service with the server's limits.
    pub fn new(settings: &ServerSettings) -> Self {
        RuleService { limits: RuleLimits { max_range_ports: settings.range_rule_max_ports } }
    }

    /// Step one of a push: validates `spec` for `client_ref`, checks the grant, the client's
    /// session and capabilities, and reserves the ports. Stages the rule and the push's
    /// audit record.
    ///
    /// Outcomes: `Ok` → the rule is stored Pending, send [`Begun::command`]; a client that is
    /// not connected → `client_not_connected` with nothing stored; a port reserved by
    /// another rule of the same client → `port_in_use` with nothing stored. Only the client
    /// itself fails a stored rule (a bind it could not make, reported through
    /// [`ClientService::rule_outcome`](super::ClientService::rule_outcome)). The refusal
    /// names the clashing rule only to an actor who may read it, so a user learns that a
    /// port is taken but nothing about another owner's rule.
    pub fn begin_push<
        S: ClientStore
            + GrantStore
            + RuleStore
            + RuleIds
            + crate::ports::QuotaStore
            + crate::ports::OwnerCapsStore
            + ?Sized,
    >(
        &self,
        cx: &mut Cx<'_, S>,
        actor: &Actor,
        client_ref: &str,
        spec: &RuleSpec,
        ack_timeout: Duration,
    ) -> Result<Begun, PushFailure> {
        let result = self.decide_push(cx, actor, client_ref, spec, ack_timeout);
        let (outcome, stored) = match &result {
            Ok(begun) => (Ok(()), Some(begun.rule.id)),
            Err(push) => (Err(push.failure.clone()), push.rule.as_ref().map(|r| r.id)),
        };
        let target = match stored {
            Some(id) => format!("{client_ref} rule {id}"),
            None => client_ref.to_owned(),
        };
        let _ = cx.audited(actor, "rule.push", Some(&target), outcome);
        // A client no grant of the caller names answers exactly like a missing one (the audit
        // row above keeps `client_not_granted`), so a push cannot probe for client names.
        result.map_err(|mut push| {
            if push.failure.code == ErrorCode::ClientNotGranted {
                push.failure = client_not_found(client_ref);
            }
            push
        })
    }

    fn decide_push<
        S: ClientStore
            + GrantStore
            + RuleStore
            + RuleIds
            + crate::ports::QuotaStore
            + crate::ports::OwnerCapsStore
            + ?Sized,
    >(
        &self,
        cx: &mut Cx<'_, S>,
        actor: &Actor,
        client_ref: &str,
        spec: &RuleSpec,
        ack_timeout: Duration,
    ) -> Result<Begun, PushFailure> {
        authorize(actor, &Action::List)?;
        if ack_timeout.is_zero() || ack_timeout > MAX_ACK_TIMEOUT {
            return Err(
                Failure::new(ErrorCode::OutOfRange, "ack timeout must be between 1 ms and 300 s").into()
            );
        }
        let def = spec.validate(self.limits)?;
        let client = find_client(cx.store, client_ref)?;
        authorize(
            actor,
            &Action::PushRule {
                client: &client.id,
                ports: def.listen,
                protocol: def.protocol,
                grants: &cx.store.list_grants()?,
            },
        )?;
        if client.revoked_at.is_some() {
            return Err(Failure::new(
                ErrorCode::ClientRevoked,
                format!("client {} was revoked; re-enroll it first", client.name),
            )
            .into());
        }
        let session = cx.sessions.session(&client.id).ok_or_else(|| not_connected(client.name.as_str()))?;
        capability::gate(&def, &session.capabilities)?;

        let rules = cx.store.rules_for_client(&client.id)?;
        let reserving = rules
            .iter()
            .filter(|other| other.state.reserves_ports() && other.def.reserves_same_ports_as(&def));
        for other in reserving {
            listener_clash(actor, &def, other)?;
        }
        let rule = Rule {
            id: cx.store.next_rule_id()?,
            client: client.id.clone(),
            owner: actor.principal.clone(),
            def,
            state: RuleState::Pending,
            created_at: cx.now,
            updated_at: cx.now,
        };
        cx.stage([Write::PutRule(rule.clone())]);
        // The pair's quota learns of its new rule before the rule binds (effects go out
        // ahead of the command).
        if let Some(quota) = cx.store.get_quota(&rule.owner, &rule.client)? {
            let mut update = super::quotas::pair_update(&quota, &rules);
            update.rules.push(rule.id);
            cx.effect(super::Effect::Send {
                client: rule.client.clone(),
                command: ClientCommand::Quota(Box::new(update)),
            });
        }
        // So does the owner's envelope on the client, which binds before the rule's caps.
        if let Some(envelope) = cx.store.get_owner_caps(&rule.owner, &rule.client)? {
            let mut update = crate::ratelimit::OwnerCapsUpdate::of(&envelope, &rules);
            update.rules.push(rule.id);
            cx.effect(super::Effect::Send {
                client: rule.client.clone(),
                command: ClientCommand::OwnerCaps(Box::new(update)),
            });
        }
        let command = ClientCommand::Upsert { rule: rule.id, def: Box::new(rule.def.clone()) };
        Ok(Begun { rule, client_name: client.name.to_string(), command })
    }

    /// Step two of a push: the answer for what happened on the stream. A command that could
    /// not be delivered undoes the push (the rule is deleted, as if the client had been
    /// offline all along), staged with its own audit record.
    pub fn complete_push<S: ?Sized>(
        &self,
        cx: &mut Cx<'_, S>,
        actor: &Actor,
        begun: Begun,
        outcome: PushOutcome,
        ack_timeout: Duration,
    ) -> Result<RuleView, PushFailure> {
        let Begun { rule, client_name, .. } = begun;
        match outcome {
            PushOutcome::Reported(RuleState::Active) => Ok(RuleView {
                rule: Rule { state: RuleState::Active, ..rule },
                client_name,
                client_revoked: false,
            }),
            PushOutcome::Reported(RuleState::Failed { code, message }) => Err(PushFailure {
                failure: Failure::new(code, message.clone()),
                rule: Some(Box::new(Rule { state: RuleState::Failed { code, message }, ..rule })),
            }),
            PushOutcome::Reported(RuleState::Removed) => Err(PushFailure {
                failure: Failure::new(
                    ErrorCode::RuleNotFound,
                    format!("rule {} was removed before client {client_name} answered", rule.id),
                ),
                rule: None,
            }),
            PushOutcome::Reported(other) => Err(PushFailure {
                failure: Failure::new(ErrorCode::Internal, format!("unexpected outcome {}", other.name())),
                rule: Some(Box::new(rule)),
            }),
            PushOutcome::TimedOut => Err(PushFailure {
                failure: Failure::new(
                    ErrorCode::AckTimeout,
                    format!(
                        "client {client_name} did not report an outcome within {ack_timeout:?}; the rule stays pending"
                    ),
                ),
                rule: Some(Box::new(rule)),
            }),
            PushOutcome::NotDelivered => {
                cx.stage([Write::DeleteRule(rule.id)]);
                cx.effect(Effect::ForgetRules(vec![rule.id]));
                let failure = not_connected(&client_name);
                let _ =
                    cx.audited(actor, "rule.push_undone", Some(&rule.id.to_string()), Ok::<(), Failure>(()));
                Err(failure.into())
            }
        }
    }

    /// Removes a rule: deletes it (and its reservation) and tells the client if it is
    /// connected; an offline client drops it when it reconnects and resynchronises. A rule
    /// of another owner answers `rule_not_found`, exactly as a missing one.
    pub fn remove_rule<S: RuleStore + ?Sized>(
        &self,
        cx: &mut Cx<'_, S>,
        actor: &Actor,
        id: RuleId,
    ) -> Result<Rule, Failure> {
        let result = (|| {
            let rule = reachable_rule(cx.store, actor, id)?;
            rule.state
                .on(RuleEvent::Removed)
                .map_err(|err| Failure::new(ErrorCode::Internal, err.to_string()))?;
            Ok(rule)
        })();
        if let Ok(rule) = &result {
            cx.stage([Write::DeleteRule(id)]);
            cx.rules_deleted(std::slice::from_ref(rule));
        }
        let result = result.map(|rule| Rule { state: RuleState::Removed, ..rule });
        cx.audited(actor, "rule.remove", Some(&id.to_string()), result).map_err(|f| hide_foreign(id, f))
    }

    /// Replaces a rule's own caps (`PATCH /v1/rules/{id}`; its owner or a superadmin); empty
    /// `limits` lift them. The client must be connected and, for caps that limit anything,
    /// have announced rate-limit support: it applies the change in place (listeners and
    /// connections stay, each bucket keeps its level). Not acknowledged: the rule's state is
    /// unchanged and a client that fails to apply it reports so as for any rule.
    pub fn set_rule_caps<S: ClientStore + RuleStore + ?Sized>(
        &self,
        cx: &mut Cx<'_, S>,
        actor: &Actor,
        id: RuleId,
        limits: &crate::ratelimit::RateLimits,
    ) -> Result<RuleView, Failure> {
        let now = cx.now;
        let result = (|| {
            let rule = reachable_rule(cx.store, actor, id)?;
            let caps = limits.validate()?;
            let client = cx
                .store
                .get_client(&rule.client)?
                .ok_or_else(|| Failure::new(ErrorCode::ClientNotFound, format!("rule {id} has no client")))?;
            if client.revoked_at.is_some() {
                return Err(Failure::new(
                    ErrorCode::ClientRevoked,
                    format!("client {} was revoked; re-enroll it first", client.name),
                ));
            }
            let session =
                cx.sessions.session(&client.id).ok_or_else(|| not_connected(client.name.as_str()))?;
            let def = crate::rule::RuleDef { rate_limit: caps, ..rule.def.clone() };
            capability::gate(&def, &session.capabilities)?;
            let changed = def != rule.def;
            let rule = Rule { def, updated_at: if changed { now } else { rule.updated_at }, ..rule };
            if changed {
                cx.stage([Write::PutRule(rule.clone())]);
                cx.effect(super::Effect::Send {
                    client: rule.client.clone(),
                    command: ClientCommand::Upsert { rule: rule.id, def: Box::new(rule.def.clone()) },
                });
            }
            Ok(RuleView { rule, client_name: client.name.to_string(), client_revoked: false })
        })();
        cx.audited(actor, "rule.set_caps", Some(&id.to_string()), result).map_err(|f| hide_foreign(id, f))
    }

    /// The rules `actor` may see (every rule for superadmins, their own for users) that
    /// match `filter`, ordered by id. A user asking for another owner's rules is refused
    /// with `not_owner`.
    pub fn list_rules<S: ClientStore + GrantStore + RuleStore + ?Sized>(
        &self,
        cx: &mut Cx<'_, S>,
        actor: &Actor,
        filter: &RuleFilter,
    ) -> Result<Vec<RuleView>, Failure> {
        let store = cx.store;
        let result = (|| {
            authorize(actor, &Action::List)?;
            if let Some(owner) = &filter.owner {
                authorize(actor, &Action::AccessRule { owner: &UserId::new(owner.as_str()) })?;
            }
            let rules = match &filter.client {
                Some(reference) => {
                    let client = find_client(store, reference)?;
                    // Filtering by a client no grant of theirs names answers like a missing
                    // client, not with an empty list that would confirm the name exists.
                    let grants = store.list_grants()?;
                    if authorize(actor, &Action::ReadClient { client: &client.id, grants: &grants }).is_err()
                    {
                        return Err(client_not_found(reference));
                    }
                    store.rules_for_client(&client.id)?
                }
                None => store.list_rules()?,
            };
            let clients: BTreeMap<ClientId, (String, bool)> = store
                .list_clients()?
                .into_iter()
                .map(|c| (c.id, (c.name.to_string(), c.revoked_at.is_some())))
                .collect();
            Ok(rules
                .into_iter()
                .filter(|rule| authorize(actor, &Action::AccessRule { owner: &rule.owner }).is_ok())
                .filter(|rule| filter.owner.as_deref().is_none_or(|o| rule.owner.as_str() == o))
                .filter(|rule| filter.protocol.is_none_or(|p| rule.def.protocol == p))
                .map(|rule| {
                    let (client_name, client_revoked) =
                        clients.get(&rule.client).cloned().unwrap_or_default();
                    RuleView { client_name, client_revoked, rule }
                })
                .filter(|view| filter.state.as_deref().is_none_or(|s| view.shown_state() == s))
                .collect())
        })();
        cx.audited_read(actor, "rule.list", None, result)
    }

    /// One rule. A rule of another owner answers `rule_not_found`, exactly as a missing
    /// one (the audit trail records the denial).
    pub fn get_rule<S: ClientStore + RuleStore + ?Sized>(
        &self,
        cx: &mut Cx<'_, S>,
        actor: &Actor,
        id: RuleId,
    ) -> Result<RuleView, Failure> {
        let store = cx.store;
        let result = (|| {
            let rule = reachable_rule(store, actor, id)?;
            let client = store.get_client(&rule.client)?;
            let client_name = client.as_ref().map(|c| c.name.to_string()).unwrap_or_default();
            let client_revoked = client.is_some_and(|c| c.revoked_at.is_some());
            Ok(RuleView { rule, client_name, client_revoked })
        })();
        let target = id.to_string();
        cx.audited_lookup(
            actor,
            "rule.get",
            &target,
            result,
            &[ErrorCode::NotOwner],
            ErrorCode::RuleNotFound,
            || rule_not_found(id),
        )
    }

    /// One rule's traffic; `totals` looks up the in-memory traffic book. Refused as
    /// [`RuleService::get_rule`] refuses.
    pub fn rule_stats<S: ClientStore + RuleStore + ?Sized>(
        &self,
        cx: &mut Cx<'_, S>,
        actor: &Actor,
        id: RuleId,
        totals: &dyn Fn(RuleId) -> Option<RuleTotals>,
    ) -> Result<RuleStatsView, Failure> {
        let rule = self.get_rule(cx, actor, id)?;
        let totals = totals(id).unwrap_or_default();
        Ok(RuleStatsView {
            rule,
            totals: totals.totals(),
            per_port: totals.per_port(),
            per_target: totals.per_target(),
        })
    }
}

fn not_connected(client: &str) -> Failure {
    Failure::new(ErrorCode::ClientNotConnected, format!("client {client} is not connected"))
}

pub(super) fn require_rule<S: RuleStore + ?Sized>(store: &S, id: RuleId) -> Result<Rule, Failure> {
    store.get_rule(id)?.ok_or_else(|| rule_not_found(id))
}

fn rule_not_found(id: RuleId) -> Failure {
    Failure::new(ErrorCode::RuleNotFound, format!("no rule {id}"))
}

/// Rule `id` if `actor` may act on it. A temporary password is refused before the rule is
/// looked up, so that refusal says nothing about which ids exist; another owner's rule is
/// refused with `not_owner`, for the audit trail, and [`hide_foreign`] turns that into
/// the caller's answer.
fn reachable_rule<S: RuleStore + ?Sized>(store: &S, actor: &Actor, id: RuleId) -> Result<Rule, Failure> {
    authorize(actor, &Action::List)?;
    let rule = require_rule(store, id)?;
    authorize(actor, &Action::AccessRule { owner: &rule.owner })?;
    Ok(rule)
}

/// The caller's answer for a rule of another owner: exactly what a rule that does not exist
/// gets, so rule ids are no oracle of other tenants' rules.
fn hide_foreign(id: RuleId, failure: Failure) -> Failure {
    if failure.code == ErrorCode::NotOwner { rule_not_found(id) } else { failure }
}

fn first_shared_port(a: &crate::rule::RuleDef, b: &crate::rule::RuleDef) -> u16 {
    a.listen.start().max(b.listen.start())
}

/// Whether `def` may listen beside `other`, a rule of the same client whose ports overlap
/// it (see [`RuleDef::listen_clash`]): only SNI rules on the same address and port, with
/// different routes, share a listener. The refusal names `other` only to an actor who may
/// read it.
fn listener_clash(actor: &Actor, def: &RuleDef, other: &Rule) -> Result<(), Failure> {
    let Some(clash) = def.listen_clash(&other.def) else { return Ok(()) };
    let port = first_shared_port(def, &other.def);
    let holder = named_rule(actor, other);
    let message = match clash {
        ListenClash::Ports => return Err(port_taken(actor, def, other)),
        ListenClash::PlainAndSni if def.sni.is_some() => {
            format!("port {port} is held by a plain TCP rule{holder}; an SNI rule cannot share it")
        }
        ListenClash::PlainAndSni => {
            format!("port {port} is held by an SNI rule{holder}; a plain TCP rule cannot share it")
        }
        ListenClash::SecondFallback => format!("port {port} already has a fallback rule{holder}"),
        ListenClash::SamePattern => {
            let pattern = def.sni.as_ref().map(ToString::to_string).unwrap_or_default();
            format!("port {port} already routes SNI pattern {pattern}{holder}")
        }
    };
    Err(Failure::new(clash.code(), message))
}

/// ` (rule ID)` when `actor` may read `rule`, else nothing: another owner's rule is never
/// named.
fn named_rule(actor: &Actor, rule: &Rule) -> String {
    if authorize(actor, &Action::AccessRule { owner: &rule.owner }).is_ok() {
        format!(" (rule {})", rule.id)
    } else {
        String::new()
    }
}

/// The refusal of a push whose ports `other` already reserves. The clashing rule is named
/// only when `actor` may read it; to anyone else the port is simply taken.
fn port_taken(actor: &Actor, def: &crate::rule::RuleDef, other: &Rule) -> Failure {
    let port = first_shared_port(def, &other.def);
    let message = if authorize(actor, &Action::AccessRule { owner: &other.owner }).is_ok() {
        format!("port {port} already in use by rule {}", other.id)
    } else {
        format!("port {port} already in use")
    };
    Failure::new(ErrorCode::PortInUse, message)
}
