//! The closed-set grant rule and ownership through the services: pushes, listings, removal
//! of uncovered rules when grants or users go.

use std::time::Duration;

use super::{enrolled, harness, spec};
use crate::ErrorCode;
use crate::capability::Capability;
use crate::policy::{Actor, Credential, Role};
use crate::ports::{ClientCommand, RuleStore};
use crate::rule::{Protocol, RuleState};
use crate::service::{NewGrant, NewUser, RuleFilter};

fn user(h: &super::Harness, id: &str) -> Actor {
    let new = NewUser { id: id.into(), role: Role::User, password: None };
    let created = h.plane.create_user(&Actor::operator(), &new).unwrap();
    Actor::for_user(&created, Credential::ApiToken, None)
}

fn grant(h: &super::Harness, user: &str, client: &str, ports: &str, protocols: &[Protocol]) -> String {
    let new = NewGrant {
        user: user.into(),
        client: client.into(),
        ports: ports.into(),
        protocols: protocols.to_vec(),
    };
    h.plane.run(|cx| h.plane.accounts.create_grant(cx, &Actor::operator(), &new)).unwrap().id.to_string()
}

#[test]
fn users_push_only_inside_one_grant_and_see_only_their_rules() {
    let h = harness();
    let (edge, _) = enrolled(&h, "edge-01");
    enrolled(&h, "edge-02");
    h.sessions.connect(&edge, &[Capability::Tcp, Capability::Udp, Capability::PortRange]);
    *h.sessions.outcome.lock().unwrap() = Some(RuleState::Active);
    let alice = user(&h, "alice");
    let bob = user(&h, "bob");
    grant(&h, "alice", "edge-01", "20000-20099", &[Protocol::Tcp]);
    grant(&h, "bob", "*", "30000-30099", &[Protocol::Tcp, Protocol::Udp]);

    let push = |actor: &Actor, client: &str, port: &str, protocol: Protocol| {
        let mut s = spec(0);
        s.listen_port = crate::rule::ListenSpec::Text(port.into());
        s.protocol = protocol;
        (h.plane.push_rule(actor, client, &s, Duration::from_secs(1))).map_err(|e| e.failure.code)
    };
    let code = |r: Result<crate::rule::Rule, ErrorCode>| r.map(|_| ());
    assert_eq!(code(push(&alice, "edge-02", "20000", Protocol::Tcp)), Err(ErrorCode::ClientNotGranted));
    assert_eq!(code(push(&alice, "edge-01", "20090-20100", Protocol::Tcp)), Err(ErrorCode::PortOutsideGrant));
    assert_eq!(code(push(&alice, "edge-01", "20000", Protocol::Udp)), Err(ErrorCode::ProtocolNotGranted));
    let mine = push(&alice, "edge-01", "20000-20009", Protocol::Tcp).unwrap();
    assert_eq!(mine.owner.as_str(), "alice");
    let bobs = push(&bob, "edge-01", "30000", Protocol::Udp).unwrap();
    assert!(h.store.list_rules().unwrap().len() == 2, "denied pushes store nothing");

    let listed: Vec<_> = h
        .plane
        .run(|cx| h.plane.rules.list_rules(cx, &alice, &RuleFilter::default()))
        .unwrap()
        .into_iter()
        .map(|v| v.rule.id)
        .collect();
    assert_eq!(listed, vec![mine.id]);
    let others = RuleFilter { owner: Some("bob".into()), ..Default::default() };
    assert_eq!(
        h.plane.run(|cx| h.plane.rules.list_rules(cx, &alice, &others)).unwrap_err().code,
        ErrorCode::NotOwner
    );
    let udp_only = RuleFilter { protocol: Some(Protocol::Udp), ..Default::default() };
    assert_eq!(
        h.plane.run(|cx| h.plane.rules.list_rules(cx, &Actor::operator(), &udp_only)).unwrap().len(),
        1
    );
    assert_eq!(
        h.plane.run(|cx| h.plane.rules.get_rule(cx, &alice, bobs.id)).unwrap_err().code,
        ErrorCode::NotOwner
    );
    assert_eq!(
        h.plane.run(|cx| h.plane.rules.remove_rule(cx, &alice, bobs.id)).unwrap_err().code,
        ErrorCode::NotOwner
    );
    assert_eq!(h.plane.rule_stats(&alice, bobs.id).unwrap_err().code, ErrorCode::NotOwner);
    assert!(h.plane.rule_stats(&alice, mine.id).is_ok());

    // Clients: alice sees the one her grant names; bob's wildcard shows both.
    let names = |actor: &Actor| -> Vec<String> {
        h.plane
            .run(|cx| h.plane.clients.list_clients(cx, actor))
            .unwrap()
            .into_iter()
            .map(|v| v.client.name.to_string())
            .collect()
    };
    assert_eq!(names(&alice), vec!["edge-01"]);
    assert_eq!(names(&bob), vec!["edge-01", "edge-02"]);
    assert_eq!(
        h.plane.run(|cx| h.plane.clients.get_client(cx, &alice, "edge-02")).unwrap_err().code,
        ErrorCode::ClientNotGranted
    );
    assert_eq!(
        h.plane.run(|cx| h.plane.clients.enroll_client(cx, &alice, "edge-03", None)).unwrap_err().code,
        ErrorCode::NotOwner
    );
}

#[test]
fn revoking_a_grant_removes_the_rules_no_remaining_grant_covers_on_the_client_too() {
    let h = harness();
    let (edge, _) = enrolled(&h, "edge-01");
    h.sessions.connect(&edge, &[Capability::Tcp]);
    *h.sessions.outcome.lock().unwrap() = Some(RuleState::Active);
    let alice = user(&h, "alice");
    let narrow = grant(&h, "alice", "edge-01", "20000-20009", &[Protocol::Tcp]);
    let wide = grant(&h, "alice", "*", "20000-20999", &[Protocol::Tcp]);
    let a = (h.plane.push_rule(&alice, "edge-01", &spec(20005), Duration::from_secs(1))).unwrap();
    let b = (h.plane.push_rule(&alice, "edge-01", &spec(20500), Duration::from_secs(1))).unwrap();

    let (_, removed) =
        h.plane.run(|cx| h.plane.accounts.delete_grant(cx, &Actor::operator(), &narrow)).unwrap();
    assert!(removed.is_empty(), "the wide grant still covers both rules");
    let (_, removed) =
        h.plane.run(|cx| h.plane.accounts.delete_grant(cx, &Actor::operator(), &wide)).unwrap();
    let mut ids: Vec<_> = removed.iter().map(|r| r.id).collect();
    ids.sort();
    assert_eq!(ids, vec![a.id, b.id]);
    assert!(h.store.list_rules().unwrap().is_empty());
    let sent = h.sessions.sent.lock().unwrap();
    assert!(sent.iter().any(|(_, c)| *c == ClientCommand::Remove { rule: a.id }));
    assert!(sent.iter().any(|(_, c)| *c == ClientCommand::Remove { rule: b.id }));
    drop(sent);
    assert_eq!(
        h.plane.run(|cx| h.plane.accounts.delete_grant(cx, &Actor::operator(), &wide)).unwrap_err().code,
        ErrorCode::GrantNotFound
    );
}

#[test]
fn deleting_a_user_removes_their_rules_and_grants() {
    let h = harness();
    let (edge, _) = enrolled(&h, "edge-01");
    h.sessions.connect(&edge, &[Capability::Tcp]);
    *h.sessions.outcome.lock().unwrap() = Some(RuleState::Active);
    let alice = user(&h, "alice");
    grant(&h, "alice", "edge-01", "20000", &[Protocol::Tcp]);
    let rule = (h.plane.push_rule(&alice, "edge-01", &spec(20000), Duration::from_secs(1))).unwrap();
    let kept = (h.plane.push_rule(&Actor::operator(), "edge-01", &spec(1), Duration::from_secs(1))).unwrap();
    h.plane.run(|cx| h.plane.accounts.delete_user(cx, &Actor::operator(), "alice")).unwrap();
    let left: Vec<_> = h.store.list_rules().unwrap().into_iter().map(|r| r.id).collect();
    assert_eq!(left, vec![kept.id]);
    assert!(
        h.sessions.sent.lock().unwrap().iter().any(|(_, c)| *c == ClientCommand::Remove { rule: rule.id })
    );
    assert!(h.plane.run(|cx| h.plane.accounts.list_grants(cx, &Actor::operator(), None)).unwrap().is_empty());
}

#[test]
fn clients_rename_by_id_and_only_revoked_ones_can_be_deleted() {
    let h = harness();
    let (edge, _) = enrolled(&h, "edge-01");
    enrolled(&h, "edge-02");
    let renamed = h
        .plane
        .run(|cx| h.plane.clients.rename_client(cx, &Actor::operator(), edge.as_str(), "edge-renamed"))
        .unwrap();
    assert_eq!((renamed.id.clone(), renamed.name.as_str()), (edge.clone(), "edge-renamed"));
    let taken = h
        .plane
        .run(|cx| h.plane.clients.rename_client(cx, &Actor::operator(), edge.as_str(), "edge-02"))
        .unwrap_err();
    assert_eq!(taken.code, ErrorCode::ClientNameTaken);
    let live =
        h.plane.run(|cx| h.plane.clients.delete_client(cx, &Actor::operator(), "edge-renamed")).unwrap_err();
    assert_eq!(live.code, ErrorCode::ClientNotRevoked);
    h.plane.run(|cx| h.plane.clients.revoke(cx, &Actor::operator(), edge.as_str())).unwrap();
    let ticket = h
        .plane
        .run(|cx| h.plane.clients.reenroll_client(cx, &Actor::operator(), edge.as_str(), None))
        .unwrap();
    assert_eq!(ticket.client.id, edge);
    h.plane.run(|cx| h.plane.clients.delete_client(cx, &Actor::operator(), edge.as_str())).unwrap();
    assert_eq!(
        h.plane.run(|cx| h.plane.clients.get_client(cx, &Actor::operator(), edge.as_str())).unwrap_err().code,
        ErrorCode::ClientNotFound
    );
    assert_eq!(
        h.plane.run(|cx| h.plane.clients.redeem(cx, &ticket.uri.code)).unwrap_err().code,
        ErrorCode::FailedPrecondition,
        "an enrollment of a deleted client cannot be redeemed"
    );
}
