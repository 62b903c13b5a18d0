use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;

use super::*;
use crate::error::ErrorCode;

fn spec(listen: &str, targets: &[&str]) -> RuleSpec {
    RuleSpec {
        name: None,
        protocol: Protocol::Tcp,
        listen_port: ListenSpec::Text(listen.to_owned()),
        listen_addr: None,
        target: None,
        targets: targets.iter().map(|t| t.to_string()).collect(),
        prefer_ipv6: false,
        health_check_interval_secs: None,
        sni_pattern: None,
        sni_fallback: false,
        rate_limit: None,
    }
}

/// Validates `listen` + `targets` and compares either the canonical text of the result or
/// the error code.
fn check(listen: &str, targets: &[&str], expected: Result<&str, ErrorCode>) {
    let got = spec(listen, targets).validate(RuleLimits::default());
    match (got, expected) {
        (Ok(def), Ok(text)) => {
            let rendered: Vec<String> = def.targets.iter().map(|t| t.to_string()).collect();
            assert_eq!(format!("{} -> {}", def.listen, rendered.join(" ")), text);
        }
        (Err(f), Err(code)) => assert_eq!(f.code, code, "{listen} {targets:?}: {f}"),
        (got, want) => panic!("{listen} {targets:?}: got {got:?}, want {want:?}"),
    }
}

#[test]
fn grammar_cases() {
    check("18080", &["127.0.0.1:8080"], Ok("18080 -> 127.0.0.1:8080"));
    check("20000-20099", &["10.0.0.5:30000-30099"], Ok("20000-20099 -> 10.0.0.5:30000-30099"));
    check("20000-20099", &["10.0.0.5:30000"], Ok("20000-20099 -> 10.0.0.5:30000"));
    check("80", &["[::1]:8080@3,proxy=v2"], Ok("80 -> [::1]:8080@3,proxy=v2"));
    check("80", &["Backend.Example.COM.:443"], Ok("80 -> backend.example.com:443"));
    check("80", &["a:1@1", "b:1@0"], Ok("80 -> a:1@1 b:1"));
    check("0", &["127.0.0.1:80"], Err(ErrorCode::InvalidPort));
    check("65536", &["127.0.0.1:80"], Err(ErrorCode::InvalidPort));
    check("http", &["127.0.0.1:80"], Err(ErrorCode::InvalidPort));
    check("200-100", &["127.0.0.1:80"], Err(ErrorCode::InvertedRange));
    check("1-2000", &["127.0.0.1:80"], Err(ErrorCode::ExceedsCap));
    check("100-109", &["127.0.0.1:200-208"], Err(ErrorCode::RangeMismatch));
    check("100", &["127.0.0.1:200-201"], Err(ErrorCode::RangeMismatch));
    check("80", &["::1:80"], Err(ErrorCode::InvalidTarget));
    check("80", &["[::1]80"], Err(ErrorCode::InvalidTarget));
    check("80", &["127.0.0.1"], Err(ErrorCode::InvalidTarget));
    check("80", &["127.0.0.1:0"], Err(ErrorCode::InvalidTarget));
    check("80", &["999.1.1.1:80"], Err(ErrorCode::InvalidTarget));
    check("80", &["host:80,proxy=v3"], Err(ErrorCode::InvalidTarget));
    check("80", &["host:80,proxy=v1,proxy=v2"], Err(ErrorCode::InvalidTarget));
    check("80", &["host:80@-1"], Err(ErrorCode::InvalidTarget));
    check("80", &["-bad-.example:80"], Err(ErrorCode::InvalidTarget));
    check("80", &[], Err(ErrorCode::TargetCount));
    check(
        "80",
        &["a:1", "b:1", "c:1", "d:1", "e:1", "f:1", "g:1", "h:1", "i:1"],
        Err(ErrorCode::TargetCount),
    );
    check("80", &["a:1", "a:1@2"], Err(ErrorCode::DuplicateTarget));
}

#[test]
fn target_and_targets_exclude_each_other() {
    let mut s = spec("80", &["a:1"]);
    s.target = Some("b:1".into());
    assert_eq!(s.validate(RuleLimits::default()).unwrap_err().code, ErrorCode::InvalidRequest);
}

#[test]
fn proxy_protocol_on_udp_is_a_protocol_mismatch() {
    let mut s = spec("53", &["127.0.0.1:53,proxy=v1"]);
    s.protocol = Protocol::Udp;
    assert_eq!(s.validate(RuleLimits::default()).unwrap_err().code, ErrorCode::ProtocolMismatch);
}

#[test]
fn json_refuses_unknown_fields_and_accepts_numeric_ports() {
    let ok: RuleSpec = serde_json::from_str(r#"{"listen_port":18080,"target":"127.0.0.1:8080"}"#).unwrap();
    assert_eq!(ok.validate(RuleLimits::default()).unwrap().listen, PortRange::single(18080).unwrap());
    let err = serde_json::from_str::<RuleSpec>(r#"{"listen_port":1,"target":"a:1","bogus":1}"#).unwrap_err();
    assert!(err.to_string().contains("bogus"), "{err}");
}

#[test]
fn toml_form_matches_json_form() {
    let from_toml: RuleSpec =
        toml::from_str("name = \"web\"\nprotocol = \"tcp\"\nlisten_port = 8080\ntarget = \"127.0.0.1:80\"\n")
            .unwrap();
    let from_json: RuleSpec =
        serde_json::from_str(r#"{"name":"web","protocol":"tcp","listen_port":8080,"target":"127.0.0.1:80"}"#)
            .unwrap();
    assert_eq!(from_toml, from_json);
}

#[test]
fn target_port_maps_by_offset() {
    let def = spec("20000-20099", &["10.0.0.5:30000-30099"]).validate(RuleLimits::default()).unwrap();
    assert_eq!(def.targets[0].port_for(def.listen, 20000), 30000);
    assert_eq!(def.targets[0].port_for(def.listen, 20042), 30042);
    assert_eq!(def.targets[0].port_for(def.listen, 20099), 30099);
}

#[test]
fn required_capabilities_follow_features() {
    let plain = spec("80", &["127.0.0.1:80"]).validate(RuleLimits::default()).unwrap();
    assert_eq!(plain.required_capabilities(), vec![Capability::Tcp]);
    let fancy =
        spec("80-81", &["a.example:80-81,proxy=v1", "127.0.0.1:90"]).validate(RuleLimits::default()).unwrap();
    assert_eq!(
        fancy.required_capabilities(),
        vec![
            Capability::Tcp,
            Capability::PortRange,
            Capability::MultiTarget,
            Capability::DnsTarget,
            Capability::ProxyProtocol
        ]
    );
}

#[test]
fn wildcard_bind_clashes_with_specific_addresses() {
    let mut a = spec("80", &["127.0.0.1:1"]).validate(RuleLimits::default()).unwrap();
    let mut b = a.clone();
    assert!(a.reserves_same_ports_as(&b));
    a.listen_addr = Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)));
    assert!(a.reserves_same_ports_as(&b), "None binds [::], which covers 127.0.0.1");
    b.listen_addr = Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)));
    assert!(!a.reserves_same_ports_as(&b));
    b.listen_addr = Some(IpAddr::V6(Ipv6Addr::UNSPECIFIED));
    assert!(a.reserves_same_ports_as(&b));
    b.protocol = Protocol::Udp;
    assert!(!a.reserves_same_ports_as(&b), "TCP and UDP may share a port");
}

#[test]
fn failed_rule_keeps_port_reserved_until_removed() {
    let failed = RuleState::Failed { code: ErrorCode::PortInUse, message: "port 80".into() };
    assert!(failed.reserves_ports());
    assert!(!failed.is_replayed());
    assert!(failed.on(RuleEvent::Activated).is_err(), "no auto-retry out of Failed");
    assert_eq!(failed.on(RuleEvent::Removed), Ok(RuleState::Removed));
    assert!(!RuleState::Removed.reserves_ports());
}

fn arb_event() -> impl Strategy<Value = RuleEvent> {
    prop_oneof![
        Just(RuleEvent::Activated),
        Just(RuleEvent::Removed),
        Just(RuleEvent::Failed { code: ErrorCode::PortInUse, message: String::new() }),
    ]
}

fn arb_host() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<Ipv4Addr>().prop_map(|ip| ip.to_string()),
        any::<Ipv6Addr>().prop_map(|ip| format!("[{ip}]")),
        "[a-z]([a-z0-9-]{0,8}[a-z0-9])?(\\.[a-z][a-z0-9]{0,5}){0,3}",
    ]
}

proptest! {
    #[test]
    fn lifecycle_never_leaves_failed_except_through_removed(events in proptest::collection::vec(arb_event(), 0..20)) {
        let mut state = RuleState::Pending;
        let mut was_failed = false;
        for event in events {
            if let Ok(next) = state.on(event) {
                if was_failed {
                    prop_assert!(matches!(next, RuleState::Failed { .. } | RuleState::Removed), "left Failed for {next:?}");
                }
                state = next;
            }
            was_failed |= matches!(state, RuleState::Failed { .. });
            if state == RuleState::Removed {
                prop_assert!(state.on(RuleEvent::Activated).is_err());
            }
        }
    }

    #[test]
    fn overlap_is_symmetric(a in 1u16.., al in 0u16..100, b in 1u16.., bl in 0u16..100) {
        let ra = PortRange::new(a, a.saturating_add(al)).unwrap();
        let rb = PortRange::new(b, b.saturating_add(bl)).unwrap();
        prop_assert_eq!(ra.overlaps(rb), rb.overlaps(ra));
        prop_assert_eq!(ra.overlaps(rb), ra.iter().any(|p| rb.contains(p)));
    }

    #[test]
    fn validated_rules_render_back_to_an_equal_rule(
        host in arb_host(), port in 1u16..60000, len in 0u16..5, prio in 0u16..10, proxy in 0u8..3,
    ) {
        let proxy = ["", ",proxy=v1", ",proxy=v2"][usize::from(proxy)];
        let target = format!("{host}:{port}-{}@{prio}{proxy}", port + len);
        let listen = format!("{}-{}", 1000, 1000 + len);
        let def = spec(&listen, &[&target]).validate(RuleLimits::default()).unwrap();
        let again = def.to_spec().validate(RuleLimits::default()).unwrap();
        prop_assert_eq!(def, again);
    }

    #[test]
    fn target_parser_never_panics(text in "\\PC{0,64}") {
        let _ = parse_target(&text);
        let _ = parse_listen(&text);
    }
}

#[test]
fn rule_names_refuse_bidi_and_invisible_characters() {
    let named = |name: &str| RuleSpec { name: Some(name.to_owned()), ..spec("80", &["127.0.0.1:8080"]) };
    assert!(named("web – café").validate(RuleLimits::default()).is_ok());
    for bad in ["web\u{202E}gpj", "\u{2066}web\u{2069}", "w\u{200B}eb", "\u{FEFF}web", "web\u{7}"] {
        let refused = named(bad).validate(RuleLimits::default()).unwrap_err();
        assert_eq!(refused.code, ErrorCode::InvalidName, "{bad:?}");
        assert!(refused.message.starts_with("rule name \""), "{}", refused.message);
    }
}

#[test]
fn sni_routes_survive_the_stored_json_and_old_rows_have_none() {
    let with = |pattern: Option<&str>, fallback: bool| {
        RuleSpec {
            sni_pattern: pattern.map(Into::into),
            sni_fallback: fallback,
            ..spec("443", &["127.0.0.1:8443"])
        }
        .validate(RuleLimits::default())
        .unwrap()
    };
    for def in [with(Some("*.Example.com"), false), with(None, true), with(None, false)] {
        let json = serde_json::to_string(&def).unwrap();
        assert_eq!(serde_json::from_str::<RuleDef>(&json).unwrap(), def, "{json}");
        assert_eq!(def.to_spec().validate(RuleLimits::default()).unwrap(), def);
    }
    assert!(
        serde_json::to_string(&with(Some("api.example.com"), false))
            .unwrap()
            .contains(r#""sni":{"pattern":"api.example.com"}"#)
    );
    // A row written before SNI existed has no `sni` key; a stored pattern is checked again.
    let plain = serde_json::to_value(with(None, false)).unwrap();
    assert!(plain.get("sni").is_none());
    let mut bad = serde_json::to_value(with(Some("api.example.com"), false)).unwrap();
    bad["sni"]["pattern"] = "*".into();
    assert!(serde_json::from_value::<RuleDef>(bad).is_err());
}
