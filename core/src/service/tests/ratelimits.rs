//! Rate limits through the services: a rule's caps (validated, gated on the client's
//! capability, changed in place) and owner envelopes (who may set and read them, what the
//! client is told and when, what goes with a deleted user or client).

use std::time::Duration;

use super::{enrolled, grant, harness, spec, user};
use crate::ErrorCode;
use crate::capability::Capability;
use crate::policy::Actor;
use crate::ports::{ClientCommand, OwnerCapsStore, RuleStore};
use crate::ratelimit::{OwnerEnvelope, RateLimits};
use crate::rule::{RuleSpec, RuleState};
use crate::service::OwnerCapsService;

const ALL: &[Capability] = &[Capability::Tcp, Capability::Udp, Capability::RateLimit];

fn capped(port: i64, limits: RateLimits) -> RuleSpec {
    RuleSpec { rate_limit: Some(limits), ..spec(port) }
}

fn bandwidth(bps: u64) -> RateLimits {
    RateLimits { bandwidth_in_bps: Some(bps), ..RateLimits::default() }
}

#[test]
fn a_capped_push_is_validated_and_gated_on_the_clients_capability() {
    let h = harness();
    let (id, _) = enrolled(&h, "edge-01");
    *h.sessions.outcome.lock().unwrap() = Some(RuleState::Active);
    let push = |spec: &RuleSpec| {
        h.plane
            .push_rule(&Actor::operator(), "edge-01", spec, Duration::from_secs(2))
            .map_err(|p| p.failure.code)
    };
    h.sessions.connect(&id, &[Capability::Tcp]);
    assert_eq!(
        push(&capped(20001, bandwidth(1_000_000))).unwrap_err(),
        ErrorCode::RateLimitUnsupportedByClient
    );
    // An empty `rate_limit` caps nothing and needs no capability.
    assert!(push(&capped(20002, RateLimits::default())).is_ok());
    h.sessions.connect(&id, ALL);
    let zero = RateLimits { concurrent_connections: Some(0), ..RateLimits::default() };
    assert_eq!(push(&capped(20003, zero)).unwrap_err(), ErrorCode::ZeroCap);
    let orphan = RateLimits { new_connections_burst: Some(5), ..RateLimits::default() };
    assert_eq!(push(&capped(20003, orphan)).unwrap_err(), ErrorCode::BurstWithoutRate);
    let huge = RateLimits { bandwidth_in_burst_bytes: Some(u64::MAX), ..bandwidth(1_000_000) };
    assert_eq!(push(&capped(20003, huge)).unwrap_err(), ErrorCode::BurstOutOfRange);
    let rule = push(&capped(20003, bandwidth(1_000_000))).unwrap();
    assert_eq!(rule.def.rate_limit, bandwidth(1_000_000).validate().unwrap());
    assert_eq!(rule.def.to_spec().rate_limit.unwrap().bandwidth_in_burst_bytes, Some(1_000_000));
}

#[test]
fn new_caps_on_a_rule_are_stored_sent_and_audited_and_need_the_client_online() {
    let h = harness();
    let (id, _) = enrolled(&h, "edge-01");
    h.sessions.connect(&id, ALL);
    *h.sessions.outcome.lock().unwrap() = Some(RuleState::Active);
    let rule =
        h.plane.push_rule(&Actor::operator(), "edge-01", &spec(20010), Duration::from_secs(2)).unwrap();
    let set = |actor: &Actor, limits: RateLimits| {
        h.plane.run(|cx| h.plane.rules.set_rule_caps(cx, actor, rule.id, &limits)).map_err(|f| f.code)
    };
    let before = h.sessions.sent.lock().unwrap().len();
    let state = h.store.get_rule(rule.id).unwrap().unwrap().state;
    let view = set(&Actor::operator(), bandwidth(500_000)).unwrap();
    assert_eq!(view.rule.state, state, "a caps change keeps the rule's state");
    let stored = h.store.get_rule(rule.id).unwrap().unwrap();
    assert_eq!(stored.def.rate_limit, bandwidth(500_000).validate().unwrap());
    {
        let sent = h.sessions.sent.lock().unwrap();
        assert_eq!(sent.len(), before + 1);
        assert!(
            matches!(&sent[before].1, ClientCommand::Upsert { def, .. } if def.rate_limit == stored.def.rate_limit)
        );
    }
    let all = crate::audit::AuditQuery { after: None, from: None, to: None, outcome: None, limit: 500 };
    let last_action = || {
        use crate::ports::AuditStore;
        let page = h.store.audit_page(&all).unwrap();
        let last = page.iter().max_by_key(|r| r.seq).unwrap();
        (last.action.clone(), last.code.clone())
    };
    assert_eq!(last_action(), ("rule.set_caps".to_owned(), None));
    // The same caps again change and send nothing.
    set(&Actor::operator(), bandwidth(500_000)).unwrap();
    assert_eq!(h.sessions.sent.lock().unwrap().len(), before + 1);
    // Another owner's rule answers like a missing one; an offline client refuses.
    let mallory = user(&h, "mallory");
    assert_eq!(set(&mallory, bandwidth(1)).unwrap_err(), ErrorCode::RuleNotFound);
    h.sessions.drop_session(&id);
    assert_eq!(set(&Actor::operator(), RateLimits::default()).unwrap_err(), ErrorCode::ClientNotConnected);
    assert_eq!(last_action(), ("rule.set_caps".to_owned(), Some("client_not_connected".to_owned())));
    h.sessions.connect(&id, &[Capability::Tcp]);
    assert_eq!(set(&Actor::operator(), bandwidth(9)).unwrap_err(), ErrorCode::RateLimitUnsupportedByClient);
    // Lifting caps needs no capability.
    let lifted = set(&Actor::operator(), RateLimits::default()).unwrap();
    assert!(lifted.rule.def.rate_limit.is_unlimited());
}

#[test]
fn owner_envelopes_need_a_grant_and_reach_the_client_before_the_owners_next_rule() {
    let h = harness();
    let (edge, token) = enrolled(&h, "edge-01");
    enrolled(&h, "edge-02");
    let alice = user(&h, "alice");
    grant(&h, "alice", "edge-01");
    let op = Actor::operator();
    let envelope = OwnerEnvelope(RateLimits { concurrent_connections: Some(10), ..RateLimits::default() });
    let set = |actor: &Actor, user: &str, client: &str, envelope: &OwnerEnvelope| {
        h.plane
            .run(|cx| OwnerCapsService.set_owner_caps(cx, actor, user, client, envelope))
            .map_err(|f| f.code)
    };
    assert_eq!(set(&op, "alice", "edge-02", &envelope).unwrap_err(), ErrorCode::ClientNotGranted);
    assert_eq!(set(&op, "nobody", "edge-01", &envelope).unwrap_err(), ErrorCode::UserNotFound);
    assert_eq!(set(&alice, "alice", "edge-01", &envelope).unwrap_err(), ErrorCode::NotOwner);
    assert_eq!(
        set(&op, "alice", "edge-01", &OwnerEnvelope::default()).unwrap_err(),
        ErrorCode::EmptyEnvelope
    );
    h.sessions.connect(&edge, &[Capability::Tcp]);
    assert_eq!(set(&op, "alice", "edge-01", &envelope).unwrap_err(), ErrorCode::RateLimitUnsupportedByClient);
    assert!(h.store.list_owner_caps().unwrap().is_empty(), "refusals store nothing");

    h.sessions.connect(&edge, ALL);
    let made = set(&op, "alice", "edge-01", &envelope).unwrap();
    assert_eq!(made.caps.concurrent_connections, Some(10));
    assert!(matches!(
        &h.sessions.sent.lock().unwrap().last().unwrap().1,
        ClientCommand::OwnerCaps(update) if update.user.as_str() == "alice" && update.caps.is_some()
    ));
    // Alice reads her own; bob hears "not found" for hers.
    let bob = user(&h, "bob");
    let get = |actor: &Actor| {
        h.plane.run(|cx| OwnerCapsService.get_owner_caps(cx, actor, "alice", "edge-01")).map_err(|f| f.code)
    };
    assert_eq!(get(&alice).unwrap(), made);
    assert_eq!(get(&bob).unwrap_err(), ErrorCode::OwnerCapsNotFound);
    let listed = |actor: &Actor| h.plane.run(|cx| OwnerCapsService.list_owner_caps(cx, actor, None)).unwrap();
    assert_eq!((listed(&op).len(), listed(&alice).len(), listed(&bob).len()), (1, 1, 0));

    // Alice's next rule: her envelope (naming the new rule) goes out ahead of it.
    *h.sessions.outcome.lock().unwrap() = Some(RuleState::Active);
    let before = h.sessions.sent.lock().unwrap().len();
    let rule = h.plane.push_rule(&alice, "edge-01", &spec(20020), Duration::from_secs(2)).unwrap();
    {
        let sent = h.sessions.sent.lock().unwrap();
        assert!(
            matches!(&sent[before].1, ClientCommand::OwnerCaps(update) if update.rules == vec![rule.id]),
            "{:?}",
            &sent[before..]
        );
        assert!(matches!(&sent[before + 1].1, ClientCommand::Upsert { rule: r, .. } if *r == rule.id));
    }
    // A reconnect's plan carries the envelope with alice's rules.
    h.sessions.drop_session(&edge);
    let plan = h.plane.run(|cx| h.plane.clients.session_opened(cx, token.expose(), "1.0", 0)).unwrap();
    assert_eq!(plan.owner_caps.len(), 1);
    assert_eq!(plan.owner_caps[0].rules, vec![rule.id]);

    // Deleting it tells the client; deleting alice takes any envelope with her.
    h.sessions.connect(&edge, ALL);
    let delete = |actor: &Actor| {
        h.plane
            .run(|cx| OwnerCapsService.delete_owner_caps(cx, actor, "alice", "edge-01"))
            .map_err(|f| f.code)
    };
    assert_eq!(delete(&alice).unwrap_err(), ErrorCode::NotOwner);
    delete(&op).unwrap();
    assert!(matches!(
        &h.sessions.sent.lock().unwrap().last().unwrap().1,
        ClientCommand::OwnerCaps(update) if update.caps.is_none()
    ));
    assert_eq!(delete(&op).unwrap_err(), ErrorCode::OwnerCapsNotFound);
    set(&op, "alice", "edge-01", &envelope).unwrap();
    h.plane.run(|cx| h.plane.accounts.delete_user(cx, &op, "alice")).unwrap();
    assert!(h.store.list_owner_caps().unwrap().is_empty(), "the envelope went with its user");
}
