//! The closed-set grant rule and ownership through the services: pushes, listings, removal
//! of uncovered rules when grants or users go.

use std::time::Duration;

use super::{enrolled, grant_ports, harness, spec, user};
use crate::ErrorCode;
use crate::capability::Capability;
use crate::policy::Actor;
use crate::ports::{ClientCommand, RuleStore};
use crate::rule::{Protocol, RuleState};
use crate::service::{PushFailure, RuleFilter};

#[test]
fn users_push_only_inside_one_grant_and_see_only_their_rules() {
    let h = harness();
    let (edge, _) = enrolled(&h, "edge-01");
    enrolled(&h, "edge-02");
    h.sessions.connect(&edge, &[Capability::Tcp, Capability::Udp, Capability::PortRange]);
    *h.sessions.outcome.lock().unwrap() = Some(RuleState::Active);
    let alice = user(&h, "alice");
    let bob = user(&h, "bob");
    grant_ports(&h, "alice", "edge-01", "20000-20099", &[Protocol::Tcp]);
    grant_ports(&h, "bob", "*", "30000-30099", &[Protocol::Tcp, Protocol::Udp]);

    let push = |actor: &Actor, client: &str, port: &str, protocol: Protocol| {
        let mut s = spec(0);
        s.listen_port = crate::rule::ListenSpec::Text(port.into());
        s.protocol = protocol;
        (h.plane.push_rule(actor, client, &s, Duration::from_secs(1))).map_err(|e| e.failure.code)
    };
    let code = |r: Result<crate::rule::Rule, ErrorCode>| r.map(|_| ());
    assert_eq!(code(push(&alice, "edge-02", "20000", Protocol::Tcp)), Err(ErrorCode::ClientNotFound));
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
        ErrorCode::RuleNotFound
    );
    assert_eq!(
        h.plane.run(|cx| h.plane.rules.remove_rule(cx, &alice, bobs.id)).unwrap_err().code,
        ErrorCode::RuleNotFound
    );
    assert_eq!(h.plane.rule_stats(&alice, bobs.id).unwrap_err().code, ErrorCode::RuleNotFound);
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
    // An ungranted client answers as a missing one would (no oracle on client names).
    assert_eq!(
        h.plane.run(|cx| h.plane.clients.get_client(cx, &alice, "edge-02")).unwrap_err().code,
        ErrorCode::ClientNotFound
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
    let narrow = grant_ports(&h, "alice", "edge-01", "20000-20009", &[Protocol::Tcp]);
    let wide = grant_ports(&h, "alice", "*", "20000-20999", &[Protocol::Tcp]);
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
    grant_ports(&h, "alice", "edge-01", "20000", &[Protocol::Tcp]);
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

/// Alice and bob on `edge-01`, each granted every TCP port; the client answers Active.
fn two_tenants() -> (super::Harness, Actor, Actor) {
    let h = harness();
    let (edge, _) = enrolled(&h, "edge-01");
    enrolled(&h, "edge-02");
    h.sessions.connect(&edge, &[Capability::Tcp, Capability::PortRange]);
    *h.sessions.outcome.lock().unwrap() = Some(RuleState::Active);
    let (alice, bob) = (user(&h, "alice"), user(&h, "bob"));
    grant_ports(&h, "alice", "*", "1-65535", &[Protocol::Tcp]);
    grant_ports(&h, "bob", "edge-01", "1-65535", &[Protocol::Tcp]);
    (h, alice, bob)
}

fn push_port(h: &super::Harness, actor: &Actor, listen: &str) -> Result<crate::rule::Rule, PushFailure> {
    let mut s = spec(0);
    s.listen_port = crate::rule::ListenSpec::Text(listen.into());
    h.plane.push_rule(actor, "edge-01", &s, Duration::from_secs(1))
}

#[test]
fn a_clash_with_another_owners_rule_says_only_that_the_port_is_taken() {
    let (h, alice, bob) = two_tenants();
    let bobs = push_port(&h, &bob, "21000-21009").unwrap();
    let refused = push_port(&h, &alice, "21005").unwrap_err();
    assert_eq!(refused.failure.code, ErrorCode::PortInUse);
    assert_eq!(refused.failure.message, "port 21005 already in use");
    assert!(refused.rule.is_none(), "nothing stored, no rule id in the answer");
    // A clash with one's own rule, or any clash a superadmin meets, names the rule.
    let own = push_port(&h, &bob, "21009-21012").unwrap_err();
    assert_eq!(own.failure.message, format!("port 21009 already in use by rule {}", bobs.id));
    let operator = push_port(&h, &Actor::operator(), "21000").unwrap_err();
    assert_eq!(operator.failure.message, format!("port 21000 already in use by rule {}", bobs.id));
    assert_eq!(h.store.list_rules().unwrap().len(), 1, "refused pushes store nothing");
}

#[test]
fn another_owners_rule_answers_every_rule_route_exactly_as_a_missing_one() {
    let (h, alice, bob) = two_tenants();
    let bobs = push_port(&h, &bob, "22000").unwrap();
    let missing = crate::ids::RuleId::new(bobs.id.get() + 1000);
    let routes: [(&str, &dyn Fn(crate::ids::RuleId) -> crate::Failure); 3] = [
        ("get", &|id| h.plane.run(|cx| h.plane.rules.get_rule(cx, &alice, id)).unwrap_err()),
        ("stats", &|id| h.plane.rule_stats(&alice, id).unwrap_err()),
        ("remove", &|id| h.plane.run(|cx| h.plane.rules.remove_rule(cx, &alice, id)).unwrap_err()),
    ];
    for (route, call) in routes {
        let (foreign, absent) = (call(bobs.id), call(missing));
        assert_eq!(
            (foreign.code, absent.code),
            (ErrorCode::RuleNotFound, ErrorCode::RuleNotFound),
            "{route}"
        );
        assert_eq!(
            foreign.message.replace(&bobs.id.to_string(), "ID"),
            absent.message.replace(&missing.to_string(), "ID"),
            "{route}"
        );
    }
    assert!(h.store.get_rule(bobs.id).unwrap().is_some(), "bob's rule is untouched");
    // The audit trail, the superadmins' own, still tells a denial from a miss.
    let query = crate::audit::AuditQuery::new(None, None, None, None, Some(500)).unwrap();
    let page = h.plane.run(|cx| h.plane.admin.audit_page(cx, &Actor::operator(), &query)).unwrap();
    let alices = |target: crate::ids::RuleId| -> Vec<Option<String>> {
        let target = target.to_string();
        page.records
            .iter()
            .filter(|r| r.actor == "alice" && r.target.as_deref() == Some(target.as_str()))
            .map(|r| r.code.clone())
            .collect()
    };
    // get, stats and remove each leave one record, the miss as well as the denial.
    assert_eq!(alices(bobs.id), vec![Some("not_owner".to_owned()); 3]);
    assert_eq!(alices(missing), vec![Some("rule_not_found".to_owned()); 3]);
}

#[test]
fn a_users_rule_counts_are_of_their_own_rules_only() {
    let (h, alice, bob) = two_tenants();
    push_port(&h, &bob, "23000").unwrap();
    push_port(&h, &bob, "23001").unwrap();
    push_port(&h, &alice, "23002").unwrap();
    let counts = |actor: &Actor| -> Vec<(String, usize)> {
        h.plane
            .run(|cx| h.plane.clients.list_clients(cx, actor))
            .unwrap()
            .into_iter()
            .map(|v| (v.client.name.to_string(), v.n_rules))
            .collect()
    };
    let one =
        |actor: &Actor| h.plane.run(|cx| h.plane.clients.get_client(cx, actor, "edge-01")).unwrap().n_rules;
    assert_eq!(counts(&alice), vec![("edge-01".into(), 1), ("edge-02".into(), 0)]);
    assert_eq!(counts(&bob), vec![("edge-01".into(), 2)]);
    assert_eq!(counts(&Actor::operator()), vec![("edge-01".into(), 3), ("edge-02".into(), 0)]);
    assert_eq!((one(&alice), one(&bob), one(&Actor::operator())), (1, 2, 3));
}

#[test]
fn an_ungranted_client_and_another_users_grant_answer_exactly_as_missing_ones() {
    let (h, alice, bob) = two_tenants();
    // Bob's grants name only edge-01: edge-02 exists but is not his to see.
    let client = |name: &str| h.plane.run(|cx| h.plane.clients.get_client(cx, &bob, name)).unwrap_err();
    let (foreign, absent) = (client("edge-02"), client("edge-99"));
    assert_eq!((foreign.code, absent.code), (ErrorCode::ClientNotFound, ErrorCode::ClientNotFound));
    assert_eq!(foreign.message.replace("edge-02", "NAME"), absent.message.replace("edge-99", "NAME"));

    let grants = h.plane.run(|cx| h.plane.accounts.list_grants(cx, &Actor::operator(), None)).unwrap();
    let alices = grants.iter().find(|g| g.user.as_str() == "alice").expect("alice's grant").id.to_string();
    let bobs = grants.iter().find(|g| g.user.as_str() == "bob").expect("bob's grant").id.to_string();
    let missing = bobs.replace(|c: char| c.is_ascii_alphanumeric() && c != '_', "0");
    assert!(grants.iter().all(|g| g.id.to_string() != missing));
    let grant = |id: &str| h.plane.run(|cx| h.plane.accounts.get_grant(cx, &bob, id)).unwrap_err();
    let (foreign, absent) = (grant(&alices), grant(&missing));
    assert_eq!((foreign.code, absent.code), (ErrorCode::GrantNotFound, ErrorCode::GrantNotFound));
    assert_eq!(foreign.message.replace(&alices, "ID"), absent.message.replace(&missing, "ID"));
    // His own still answers, and so does a superadmin.
    assert!(h.plane.run(|cx| h.plane.accounts.get_grant(cx, &bob, &bobs)).is_ok());
    assert!(h.plane.run(|cx| h.plane.accounts.get_grant(cx, &Actor::operator(), &alices)).is_ok());
    assert!(h.plane.run(|cx| h.plane.clients.get_client(cx, &alice, "edge-02")).is_ok());

    // The audit trail still tells a denial from a miss; both leave a row.
    let query = crate::audit::AuditQuery::new(None, None, None, None, Some(500)).unwrap();
    let page = h.plane.run(|cx| h.plane.admin.audit_page(cx, &Actor::operator(), &query)).unwrap();
    let codes = |target: &str| -> Vec<Option<String>> {
        page.records
            .iter()
            .filter(|r| r.actor == "bob" && r.target.as_deref() == Some(target))
            .map(|r| r.code.clone())
            .collect()
    };
    assert_eq!(codes("edge-02"), vec![Some("client_not_granted".to_owned())]);
    assert_eq!(codes("edge-99"), vec![Some("client_not_found".to_owned())]);
    assert_eq!(codes(&alices), vec![Some("not_owner".to_owned())]);
    assert_eq!(codes(&missing), vec![Some("grant_not_found".to_owned())]);
}
