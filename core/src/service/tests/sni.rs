//! SNI rules in a push: validation, the capability gate, and which rules may share a port.

use std::time::Duration;

use super::{enrolled, harness, spec};
use crate::capability::Capability;
use crate::error::ErrorCode;
use crate::policy::Actor;
use crate::rule::{ListenSpec, Protocol, RuleSpec, RuleState, SniRoute};
use crate::sni::SniPattern;

const WAIT: Duration = Duration::from_secs(2);

fn sni(port: i64, pattern: &str) -> RuleSpec {
    RuleSpec { sni_pattern: Some(pattern.into()), ..spec(port) }
}

fn fallback(port: i64) -> RuleSpec {
    RuleSpec { sni_fallback: true, ..spec(port) }
}

/// A harness with `edge-01` connected, announcing `caps`, answering every push Active.
fn connected(caps: &[Capability]) -> super::Harness {
    let h = harness();
    let (id, _) = enrolled(&h, "edge-01");
    h.sessions.connect(&id, caps);
    *h.sessions.outcome.lock().unwrap() = Some(RuleState::Active);
    h
}

fn push(h: &super::Harness, spec: &RuleSpec) -> Result<crate::rule::Rule, crate::service::PushFailure> {
    h.plane.push_rule(&Actor::operator(), "edge-01", spec, WAIT)
}

fn n_stored(h: &super::Harness) -> usize {
    crate::ports::RuleStore::list_rules(&*h.store).unwrap().len()
}

#[test]
fn several_sni_rules_and_one_fallback_share_a_port() {
    let h = connected(&[Capability::Tcp, Capability::Sni]);
    let api = push(&h, &sni(443, "API.example.com")).unwrap();
    assert_eq!(api.def.sni, Some(SniRoute::Pattern(SniPattern::parse("api.example.com").unwrap())));
    push(&h, &sni(443, "*.example.com")).unwrap();
    push(&h, &sni(443, "www.example.org")).unwrap();
    let last = push(&h, &fallback(443)).unwrap();
    assert_eq!(last.def.sni, Some(SniRoute::Fallback));
    assert_eq!(n_stored(&h), 4);
    // The input form comes back from the stored definition.
    assert_eq!(api.def.to_spec().sni_pattern.as_deref(), Some("api.example.com"));
    assert!(last.def.to_spec().sni_fallback);
}

#[test]
fn duplicate_patterns_and_a_second_fallback_are_refused_with_their_codes() {
    let h = connected(&[Capability::Tcp, Capability::Sni]);
    let first = push(&h, &sni(443, "api.example.com")).unwrap();
    push(&h, &fallback(443)).unwrap();
    // Compared lowercased.
    let taken = push(&h, &sni(443, "API.Example.COM")).unwrap_err();
    assert_eq!(taken.failure.code, ErrorCode::SniPatternTaken);
    assert!(taken.failure.message.contains(&format!("rule {}", first.id)), "{}", taken.failure);
    assert!(taken.rule.is_none());
    let second = push(&h, &fallback(443)).unwrap_err();
    assert_eq!(second.failure.code, ErrorCode::SniFallbackTaken);
    assert_eq!((second.failure.code.exit_status(), second.failure.code.http_status()), (5, 409));
    assert_eq!(n_stored(&h), 2, "refusals store nothing");
    // The same pattern on another port is another listener.
    push(&h, &sni(8443, "api.example.com")).unwrap();
}

#[test]
fn a_plain_rule_and_an_sni_rule_never_share_a_port_in_either_order() {
    let h = connected(&[Capability::Tcp, Capability::Sni, Capability::PortRange]);
    let plain = push(&h, &spec(443)).unwrap();
    for refused in [sni(443, "api.example.com"), fallback(443)] {
        let err = push(&h, &refused).unwrap_err();
        assert_eq!(err.failure.code, ErrorCode::LegacyToSniUnsupported);
        assert!(err.failure.message.contains(&format!("rule {}", plain.id)), "{}", err.failure);
    }
    push(&h, &sni(8443, "api.example.com")).unwrap();
    let mut range = spec(0);
    range.listen_port = ListenSpec::Text("8440-8449".into());
    for refused in [spec(8443), range] {
        let err = push(&h, &refused).unwrap_err();
        assert_eq!(err.failure.code, ErrorCode::LegacyToSniUnsupported);
        assert_eq!(err.failure.code.exit_status(), 5);
    }
    assert_eq!(n_stored(&h), 2);
}

#[test]
fn sni_rules_on_different_addresses_of_one_port_clash_as_port_in_use() {
    let h = connected(&[Capability::Tcp, Capability::Sni]);
    push(&h, &sni(443, "api.example.com")).unwrap();
    let mut loopback = sni(443, "www.example.com");
    loopback.listen_addr = Some("127.0.0.1".parse().unwrap());
    assert_eq!(push(&h, &loopback).unwrap_err().failure.code, ErrorCode::PortInUse);
}

#[test]
fn a_client_without_the_sni_capability_gets_sni_unsupported_by_client() {
    let h = connected(&[Capability::Tcp]);
    for refused in [sni(443, "api.example.com"), fallback(443)] {
        let err = push(&h, &refused).unwrap_err();
        assert_eq!(err.failure.code, ErrorCode::SniUnsupportedByClient);
        assert_eq!((err.failure.code.exit_status(), err.failure.code.http_status()), (3, 422));
    }
    assert_eq!(n_stored(&h), 0);
}

#[test]
fn sni_fields_are_validated_with_codes() {
    let h = connected(&[Capability::Tcp, Capability::Udp, Capability::Sni, Capability::PortRange]);
    let code = |spec: RuleSpec| push(&h, &spec).unwrap_err().failure.code;
    for bad in ["*", "*.com", "a.*.example.com", "api.example.com.", "127.0.0.1", "bücher.example", ""] {
        assert_eq!(code(sni(443, bad)), ErrorCode::InvalidSniPattern, "{bad:?}");
    }
    assert_eq!(
        code(RuleSpec { sni_fallback: true, ..sni(443, "api.example.com") }),
        ErrorCode::InvalidRequest
    );
    assert_eq!(
        code(RuleSpec { protocol: Protocol::Udp, ..sni(443, "api.example.com") }),
        ErrorCode::ProtocolMismatch
    );
    let mut range = sni(0, "api.example.com");
    range.listen_port = ListenSpec::Text("443-444".into());
    assert_eq!(code(range), ErrorCode::InvalidRequest);
    assert_eq!(n_stored(&h), 0);
}

#[test]
fn a_removed_sni_rule_frees_its_pattern_and_the_last_one_frees_the_port() {
    let h = connected(&[Capability::Tcp, Capability::Sni]);
    let api = push(&h, &sni(443, "api.example.com")).unwrap();
    h.plane.run(|cx| h.plane.rules.remove_rule(cx, &Actor::operator(), api.id)).unwrap();
    let again = push(&h, &sni(443, "api.example.com")).unwrap();
    h.plane.run(|cx| h.plane.rules.remove_rule(cx, &Actor::operator(), again.id)).unwrap();
    push(&h, &spec(443)).unwrap();
}
