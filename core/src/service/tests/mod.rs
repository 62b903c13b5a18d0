use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::capability::Capability;
use crate::error::ErrorCode;
use crate::policy::Actor;
use crate::ports::{ClientCommand, Clock, DisconnectReason};
use crate::rule::{ListenSpec, RuleEvent, RuleSpec, RuleState};
use crate::secret::Secret;
use crate::test_support::{FakeSessions, ManualClock, MemoryStore, Plane};

mod accounts;
mod quotas;
mod ratelimits;
mod rbac;
mod sni;

pub(super) struct Harness {
    pub plane: Plane,
    pub sessions: Arc<FakeSessions>,
    pub clock: Arc<ManualClock>,
    pub store: Arc<MemoryStore>,
}

/// A second control plane over the same store, sessions and clock: a server restart.
pub(super) fn rebuilt(h: &Harness) -> Plane {
    Plane::new(h.store.clone(), h.sessions.clone(), h.clock.clone())
}

pub(super) fn harness() -> Harness {
    let store = Arc::new(MemoryStore::default());
    let sessions = Arc::new(FakeSessions::default());
    let clock = Arc::new(ManualClock::at(1_000_000));
    let plane = Plane::new(store.clone(), sessions.clone(), clock.clone());
    Harness { plane, sessions, clock, store }
}

pub(super) fn spec(port: i64) -> RuleSpec {
    RuleSpec {
        name: None,
        protocol: Default::default(),
        listen_port: ListenSpec::Port(port),
        listen_addr: None,
        target: Some("127.0.0.1:8080".into()),
        targets: vec![],
        prefer_ipv6: false,
        health_check_interval_secs: None,
        sni_pattern: None,
        sni_fallback: false,
        rate_limit: None,
    }
}

/// Enrolls and redeems `name`; returns the client id and token.
/// A plain user, created by the operator, acting with an API token.
pub(super) fn user(h: &Harness, id: &str) -> Actor {
    let new = NewUser { id: id.into(), role: crate::policy::Role::User, password: None };
    let created = h.plane.create_user(&Actor::operator(), &new).unwrap();
    Actor::for_user(&created, crate::policy::Credential::ApiToken, None)
}

/// A grant of `ports` and `protocols` on `client` to `user`; returns its id.
pub(super) fn grant_ports(
    h: &Harness,
    user: &str,
    client: &str,
    ports: &str,
    protocols: &[crate::rule::Protocol],
) -> String {
    let new = NewGrant {
        user: user.into(),
        client: client.into(),
        ports: ports.into(),
        protocols: protocols.to_vec(),
    };
    h.plane.run(|cx| h.plane.accounts.create_grant(cx, &Actor::operator(), &new)).unwrap().id.to_string()
}

/// A grant of TCP ports 20000-20099 on `client` to `user`.
pub(super) fn grant(h: &Harness, user: &str, client: &str) {
    grant_ports(h, user, client, "20000-20099", &[crate::rule::Protocol::Tcp]);
}

pub(super) fn enrolled(h: &Harness, name: &str) -> (crate::ids::ClientId, Secret) {
    let ticket = h.plane.run(|cx| h.plane.clients.enroll_client(cx, &Actor::operator(), name, None)).unwrap();
    let redeemed = h.plane.run(|cx| h.plane.clients.redeem(cx, &ticket.uri.code)).unwrap();
    (redeemed.client.id, redeemed.token)
}

#[test]
fn enrollment_uri_carries_pin_and_loopback_endpoint() {
    let h = harness();
    let ticket =
        h.plane.run(|cx| h.plane.clients.enroll_client(cx, &Actor::operator(), "edge-01", None)).unwrap();
    let text = ticket.uri.render();
    assert!(
        text.starts_with(&format!("portunus://127.0.0.1:7443/enroll?pin=sha256:{}&code=", "ab".repeat(32))),
        "{text}"
    );
    assert_eq!(ticket.expires_at.since(h.clock.now()), Duration::from_secs(600));
}

#[test]
fn codes_are_single_use_and_redeem_issues_a_working_token() {
    let h = harness();
    let ticket =
        h.plane.run(|cx| h.plane.clients.enroll_client(cx, &Actor::operator(), "edge-01", None)).unwrap();
    let redeemed = h.plane.run(|cx| h.plane.clients.redeem(cx, &ticket.uri.code)).unwrap();
    assert_eq!(
        h.plane.clients.authenticate_client(&*h.plane.store, redeemed.token.expose()).unwrap().id,
        redeemed.client.id
    );
    assert_eq!(
        h.plane.run(|cx| h.plane.clients.redeem(cx, &ticket.uri.code)).unwrap_err().code,
        ErrorCode::EnrollmentConsumed
    );
    assert_eq!(
        h.plane.run(|cx| h.plane.clients.redeem(cx, &Secret::new("0".repeat(40)))).unwrap_err().code,
        ErrorCode::EnrollmentNotFound
    );
}

#[test]
fn expired_codes_are_refused_and_stay_unconsumed() {
    let h = harness();
    let ticket =
        h.plane.run(|cx| h.plane.clients.enroll_client(cx, &Actor::operator(), "edge-01", Some(1))).unwrap();
    h.clock.advance(Duration::from_millis(999));
    let still_valid =
        h.plane.run(|cx| h.plane.clients.enroll_client(cx, &Actor::operator(), "edge-02", Some(1))).unwrap();
    h.clock.advance(Duration::from_millis(1));
    assert_eq!(
        h.plane.run(|cx| h.plane.clients.redeem(cx, &ticket.uri.code)).unwrap_err().code,
        ErrorCode::EnrollmentExpired
    );
    assert!(h.plane.run(|cx| h.plane.clients.redeem(cx, &still_valid.uri.code)).is_ok());
    assert_eq!(
        h.plane
            .run(|cx| h.plane.clients.enroll_client(cx, &Actor::operator(), "edge-03", Some(86_401)))
            .unwrap_err()
            .code,
        ErrorCode::OutOfRange
    );
}

#[test]
fn re_enrolling_rotates_the_token_and_drops_the_old_session() {
    let h = harness();
    let (id, old_token) = enrolled(&h, "edge-01");
    let (same_id, new_token) = enrolled(&h, "edge-01");
    assert_eq!(id, same_id, "re-enrollment keeps the client id");
    assert_eq!(
        h.plane.clients.authenticate_client(&*h.plane.store, old_token.expose()).unwrap_err(),
        AuthFailure::InvalidToken
    );
    assert!(h.plane.clients.authenticate_client(&*h.plane.store, new_token.expose()).is_ok());
    assert_eq!(h.sessions.disconnects.lock().unwrap().as_slice(), &[(id, DisconnectReason::TokenRotated)]);
}

#[test]
fn revoked_tokens_are_told_apart_from_unknown_ones() {
    let h = harness();
    let (id, token) = enrolled(&h, "edge-01");
    h.plane.run(|cx| h.plane.clients.revoke(cx, &Actor::operator(), "edge-01")).unwrap();
    assert_eq!(
        h.plane.clients.authenticate_client(&*h.plane.store, token.expose()).unwrap_err(),
        AuthFailure::TokenRevoked
    );
    assert_eq!(
        h.plane.clients.authenticate_client(&*h.plane.store, "garbage").unwrap_err(),
        AuthFailure::InvalidToken
    );
    assert_eq!(
        h.plane.clients.authenticate_client(&*h.plane.store, &format!("{id}.00")).unwrap_err(),
        AuthFailure::InvalidToken
    );
    assert_eq!(h.sessions.disconnects.lock().unwrap().last().unwrap().1, DisconnectReason::TokenRevoked);
}

#[test]
fn push_to_a_disconnected_client_stores_nothing() {
    let h = harness();
    enrolled(&h, "edge-01");
    let err =
        (h.plane.push_rule(&Actor::operator(), "edge-01", &spec(18080), Duration::from_secs(2))).unwrap_err();
    assert_eq!(err.failure.code, ErrorCode::ClientNotConnected);
    assert!(err.rule.is_none());
    assert!(crate::ports::RuleStore::list_rules(&*h.store).unwrap().is_empty());
}

#[test]
fn push_waits_for_the_clients_outcome() {
    let h = harness();
    let (id, _) = enrolled(&h, "edge-01");
    h.sessions.connect(&id, &[Capability::Tcp]);
    *h.sessions.outcome.lock().unwrap() = Some(RuleState::Active);
    let rule =
        (h.plane.push_rule(&Actor::operator(), "edge-01", &spec(18080), Duration::from_secs(2))).unwrap();
    assert_eq!(rule.state, RuleState::Active);
    assert_eq!(rule.owner.as_str(), "_operator");
    let sent = h.sessions.sent.lock().unwrap();
    assert!(matches!(&sent[0], (c, ClientCommand::Upsert { rule: r, .. }) if *c == id && *r == rule.id));
}

#[test]
fn no_answer_is_ack_timeout_with_the_rule_left_pending() {
    let h = harness();
    let (id, _) = enrolled(&h, "edge-01");
    h.sessions.connect(&id, &[Capability::Tcp]);
    let err =
        (h.plane.push_rule(&Actor::operator(), "edge-01", &spec(18080), Duration::from_secs(2))).unwrap_err();
    assert_eq!(err.failure.code, ErrorCode::AckTimeout);
    let rule = err.rule.unwrap();
    assert_eq!(
        h.plane.run(|cx| h.plane.rules.get_rule(cx, &Actor::operator(), rule.id)).unwrap().rule.state,
        RuleState::Pending
    );
}

#[test]
fn a_port_reserved_by_a_failed_rule_fails_the_next_push_with_port_in_use() {
    let h = harness();
    let (id, _) = enrolled(&h, "edge-01");
    h.sessions.connect(&id, &[Capability::Tcp, Capability::Udp]);
    let failed =
        RuleState::Failed { code: ErrorCode::PortInUse, message: "port 18080 already in use".into() };
    *h.sessions.outcome.lock().unwrap() = Some(failed);
    let first =
        (h.plane.push_rule(&Actor::operator(), "edge-01", &spec(18080), Duration::from_secs(2))).unwrap_err();
    let first_id = first.rule.unwrap().id;
    // The client reports the failure; the store records it.
    let state = h
        .plane
        .run(|cx| {
            h.plane.clients.rule_outcome(
                cx,
                &id,
                first_id,
                RuleEvent::Failed { code: ErrorCode::PortInUse, message: "x".into() },
            )
        })
        .unwrap();
    assert!(matches!(state, Some(RuleState::Failed { .. })));
    *h.sessions.outcome.lock().unwrap() = Some(RuleState::Active);
    let second =
        (h.plane.push_rule(&Actor::operator(), "edge-01", &spec(18080), Duration::from_secs(2))).unwrap_err();
    assert_eq!(second.failure.code, ErrorCode::PortInUse);
    assert!(second.failure.message.contains(&format!("rule {first_id}")), "{}", second.failure);
    assert!(second.rule.is_none(), "a clash the server sees is refused, not stored");
    // UDP on the same number is a different reservation.
    let mut udp = spec(18080);
    udp.protocol = crate::rule::Protocol::Udp;
    assert!((h.plane.push_rule(&Actor::operator(), "edge-01", &udp, Duration::from_secs(2))).is_ok());
    // Removing the failed rule frees the port.
    h.plane.run(|cx| h.plane.rules.remove_rule(cx, &Actor::operator(), first_id)).unwrap();
    assert!((h.plane.push_rule(&Actor::operator(), "edge-01", &spec(18080), Duration::from_secs(2))).is_ok());
}

#[test]
fn a_push_clashing_with_a_live_rule_is_refused_and_stores_nothing() {
    let h = harness();
    let (id, _) = enrolled(&h, "edge-01");
    h.sessions.connect(&id, &[Capability::Tcp, Capability::PortRange]);
    *h.sessions.outcome.lock().unwrap() = Some(RuleState::Active);
    let first =
        h.plane.push_rule(&Actor::operator(), "edge-01", &spec(18080), Duration::from_secs(2)).unwrap();
    h.plane.run(|cx| h.plane.clients.rule_outcome(cx, &id, first.id, RuleEvent::Activated)).unwrap();
    let n_sent = h.sessions.sent.lock().unwrap().len();
    let mut range = spec(0);
    range.listen_port = ListenSpec::Text("18078-18082".into());
    for clashing in [spec(18080), range] {
        let refused =
            h.plane.push_rule(&Actor::operator(), "edge-01", &clashing, Duration::from_secs(2)).unwrap_err();
        assert_eq!(refused.failure.code, ErrorCode::PortInUse);
        assert_eq!(refused.failure.message, format!("port 18080 already in use by rule {}", first.id));
        assert!(refused.rule.is_none());
    }
    let stored: Vec<_> =
        crate::ports::RuleStore::list_rules(&*h.store).unwrap().into_iter().map(|r| r.id).collect();
    assert_eq!(stored, vec![first.id], "only the first rule is stored");
    assert_eq!(h.sessions.sent.lock().unwrap().len(), n_sent, "nothing was sent for the refused pushes");
    // Nothing of the refusals lingers: once the first rule goes, the port is free.
    h.plane.run(|cx| h.plane.rules.remove_rule(cx, &Actor::operator(), first.id)).unwrap();
    let again =
        h.plane.push_rule(&Actor::operator(), "edge-01", &spec(18080), Duration::from_secs(2)).unwrap();
    assert_eq!(again.state, RuleState::Active);
}

#[test]
fn capability_gate_runs_before_anything_is_stored() {
    let h = harness();
    let (id, _) = enrolled(&h, "edge-01");
    h.sessions.connect(&id, &[Capability::Tcp]);
    let mut udp = spec(5353);
    udp.protocol = crate::rule::Protocol::Udp;
    let err = (h.plane.push_rule(&Actor::operator(), "edge-01", &udp, Duration::from_secs(2))).unwrap_err();
    assert_eq!(err.failure.code, ErrorCode::UnsupportedProtocol);
    assert!(crate::ports::RuleStore::list_rules(&*h.store).unwrap().is_empty());
}

#[test]
fn replay_sends_pending_and_active_rules_but_never_failed_ones() {
    let h = harness();
    let (id, token) = enrolled(&h, "edge-01");
    h.sessions.connect(&id, &[Capability::Tcp]);
    let mut ids = Vec::new();
    for (port, outcome) in [(1, RuleState::Active), (2, RuleState::Pending), (3, RuleState::Active)] {
        *h.sessions.outcome.lock().unwrap() = (outcome != RuleState::Pending).then_some(outcome.clone());
        let pushed = h.plane.push_rule(&Actor::operator(), "edge-01", &spec(port), Duration::from_secs(1));
        let rule_id = pushed.map(|r| r.id).unwrap_or_else(|e| e.rule.unwrap().id);
        let event = if outcome == RuleState::Active { Some(RuleEvent::Activated) } else { None };
        if let Some(event) = event {
            h.plane.run(|cx| h.plane.clients.rule_outcome(cx, &id, rule_id, event)).unwrap();
        }
        ids.push(rule_id);
    }
    h.plane
        .run(|cx| {
            h.plane.clients.rule_outcome(
                cx,
                &id,
                ids[2],
                RuleEvent::Failed { code: ErrorCode::PortInUse, message: "taken".into() },
            )
        })
        .unwrap();
    let plan = h.plane.run(|cx| h.plane.clients.session_opened(cx, token.expose(), "1.0", 0)).unwrap();
    let replayed: Vec<_> = plan.rules.iter().map(|(r, _)| *r).collect();
    assert_eq!(replayed, vec![ids[0], ids[1]]);
    // A stream whose client was revoked since its handshake is refused at the same step.
    h.plane.run(|cx| h.plane.clients.revoke(cx, &Actor::operator(), "edge-01")).unwrap();
    let refused = h.plane.run(|cx| h.plane.clients.session_opened(cx, token.expose(), "1.0", 0)).unwrap_err();
    assert_eq!(refused.code, ErrorCode::TokenRevoked);
}

#[test]
fn a_second_process_with_the_same_token_is_refused_while_the_first_is_connected() {
    use crate::test_support::FAKE_INSTANCE;
    let h = harness();
    let (id, token) = enrolled(&h, "edge-01");
    let open =
        |instance: u64| h.plane.run(|cx| h.plane.clients.session_opened(cx, token.expose(), "1.0", instance));
    h.sessions.connect(&id, &[Capability::Tcp]);
    let refused = open(FAKE_INSTANCE + 1).unwrap_err();
    assert_eq!(refused.code, ErrorCode::ClientAlreadyConnected);
    assert!(
        refused.message.contains("edge-01") && refused.message.contains("already connected"),
        "{refused:?}"
    );
    // The same process reconnecting replaces its own stream; so does a client without an
    // instance (older versions).
    assert!(open(FAKE_INSTANCE).is_ok());
    assert!(open(0).is_ok());
    // Once the first has gone, the second gets its turn.
    h.sessions.drop_session(&id);
    assert!(open(FAKE_INSTANCE + 1).is_ok());
}

#[test]
fn outcomes_from_the_wrong_client_are_ignored() {
    let h = harness();
    let (a, _) = enrolled(&h, "edge-a");
    let (b, _) = enrolled(&h, "edge-b");
    h.sessions.connect(&a, &[Capability::Tcp]);
    let rule = (h.plane.push_rule(&Actor::operator(), "edge-a", &spec(1), Duration::from_secs(1)))
        .unwrap_err()
        .rule
        .unwrap();
    assert_eq!(
        h.plane.run(|cx| h.plane.clients.rule_outcome(cx, &b, rule.id, RuleEvent::Activated)).unwrap(),
        None
    );
    assert_eq!(
        h.plane.run(|cx| h.plane.rules.get_rule(cx, &Actor::operator(), rule.id)).unwrap().rule.state,
        RuleState::Pending
    );
}

#[test]
fn stats_survive_flush_and_reload() {
    let h = harness();
    let (id, _) = enrolled(&h, "edge-01");
    h.sessions.connect(&id, &[Capability::Tcp]);
    *h.sessions.outcome.lock().unwrap() = Some(RuleState::Active);
    let rule = (h.plane.push_rule(&Actor::operator(), "edge-01", &spec(1), Duration::from_secs(1))).unwrap();
    let report = crate::stats::RuleReport {
        instance: 5,
        totals: crate::stats::Counters { bytes_in: 42, bytes_out: 7, ..Default::default() },
        ..Default::default()
    };
    h.plane.record_stats(&id, vec![(rule.id, report)]).unwrap();
    assert_eq!(h.plane.flush_stats().unwrap(), 1);
    let reloaded = rebuilt(&h);
    assert_eq!(reloaded.rule_stats(&Actor::operator(), rule.id).unwrap().totals.bytes_in, 42);
}

#[test]
fn client_names_are_validated() {
    let h = harness();
    for bad in ["", "Edge", "cl_0123", "-x", "a b"] {
        assert_eq!(
            h.plane
                .run(|cx| h.plane.clients.enroll_client(cx, &Actor::operator(), bad, None))
                .unwrap_err()
                .code,
            ErrorCode::InvalidName,
            "{bad}"
        );
    }
}

#[test]
fn the_operator_token_is_the_operator_principal() {
    let h = harness();
    let bearer = |token: &'static str| Credentials {
        bearer: Some(token),
        route: "GET /v1/clients",
        ..Default::default()
    };
    assert_eq!(
        h.plane.run(|cx| h.plane.accounts.authenticate(cx, &bearer("operator-secret"))).unwrap().actor,
        Actor::operator()
    );
    assert_eq!(
        h.plane.run(|cx| h.plane.accounts.authenticate(cx, &bearer(""))).unwrap_err().code,
        ErrorCode::Unauthenticated
    );
    assert_eq!(
        h.plane.run(|cx| h.plane.accounts.authenticate(cx, &bearer("operator-secreT"))).unwrap_err().code,
        ErrorCode::Unauthenticated
    );
}

#[test]
fn a_clients_report_keeps_only_the_ports_and_targets_its_rule_has() {
    use crate::stats::{Counters, RuleReport, TargetCounters, TargetHealth};
    let h = harness();
    let (id, _) = enrolled(&h, "edge-01");
    h.sessions.connect(&id, &[Capability::Tcp]);
    *h.sessions.outcome.lock().unwrap() = Some(RuleState::Active);
    let rule =
        h.plane.push_rule(&Actor::operator(), "edge-01", &spec(18080), Duration::from_secs(1)).unwrap();
    let some = Counters { bytes_in: 1, ..Default::default() };
    let target = |index: u32| TargetCounters { index, health: TargetHealth::Healthy, counters: some };
    let report = RuleReport {
        instance: 1,
        totals: some,
        per_port: [(18080, some), (18081, some), (1, some)].into(),
        per_target: vec![target(0), target(1), target(u32::MAX)],
    };
    let owned = crate::service::owned_reports(&*h.store, &id, vec![(rule.id, report)]).unwrap();
    assert_eq!(owned.len(), 1);
    let kept = &owned[0].1;
    assert_eq!(kept.per_port.keys().copied().collect::<Vec<_>>(), vec![18080], "only the rule's own port");
    assert_eq!(kept.per_target.iter().map(|t| t.index).collect::<Vec<_>>(), vec![0], "only its one target");
    // Another client's rule is not this client's to report on.
    let (other, _) = enrolled(&h, "edge-02");
    let report = RuleReport { instance: 1, totals: some, ..Default::default() };
    assert!(crate::service::owned_reports(&*h.store, &other, vec![(rule.id, report)]).unwrap().is_empty());
}
