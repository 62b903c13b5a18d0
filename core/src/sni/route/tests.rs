//! Route patterns and the route table: validation, lookup order, and lookup agreeing with a
//! scan of the patterns.

use proptest::prelude::*;

use super::*;

#[test]
fn patterns_are_exact_hosts_or_one_label_wildcards() {
    let good = [
        ("api.example.com", "api.example.com"),
        ("API.EXAMPLE.COM", "api.example.com"),
        ("localhost", "localhost"),
        ("*.example.com", "*.example.com"),
        ("*.Example.Co.Uk", "*.example.co.uk"),
        ("xn--bcher-kva.example", "xn--bcher-kva.example"),
    ];
    for (text, canonical) in good {
        assert_eq!(SniPattern::parse(text).map(|p| p.to_string()).as_deref(), Ok(canonical), "{text}");
    }
    let bad = [
        "",
        "*",
        "*.",
        "*.com",
        "*.*.example.com",
        "a.*.example.com",
        "*example.com",
        "*a.example.com",
        "**.example.com",
        "api.example.com.",
        "*.example.com.",
        ".example.com",
        "127.0.0.1",
        "*.0.0.1",
        "bücher.example",
        "a_b.example",
        " api.example.com",
        "api..example.com",
    ];
    for text in bad {
        let err = SniPattern::parse(text).unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidSniPattern, "{text}");
    }
    let long_suffix = format!("{}.{}.{}.{}", "a".repeat(63), "b".repeat(63), "c".repeat(63), "d".repeat(60));
    assert_eq!(long_suffix.len(), 252);
    assert!(SniPattern::parse(&format!("*.{long_suffix}")).is_err());
    assert!(SniPattern::parse(&format!("*.{}", &long_suffix[1..])).is_ok());
}

#[test]
fn invalid_pattern_errors_carry_the_code_and_a_short_quote() {
    let text = format!("{}*", "x".repeat(500));
    let failure: Failure = SniPattern::parse(&text).unwrap_err().into();
    assert_eq!(failure.code.as_str(), "validation.invalid_sni_pattern");
    assert_eq!((failure.code.exit_status(), failure.code.http_status()), (2, 400));
    assert!(failure.message.len() < 300, "{}", failure.message);
}

fn pattern(text: &str) -> Option<SniPattern> {
    Some(SniPattern::parse(text).unwrap())
}

fn host(text: &str) -> HostName {
    HostName::parse(text).unwrap()
}

#[test]
fn lookup_prefers_exact_then_wildcard_then_fallback() {
    let mut routes = SniRoutes::default();
    routes.insert(pattern("api.example.com"), 1).unwrap();
    routes.insert(pattern("*.example.com"), 2).unwrap();
    routes.insert(pattern("*.eu.example.com"), 3).unwrap();
    assert_eq!(routes.lookup(Some(&host("api.example.com"))), Some((&1, MatchKind::Exact)));
    assert_eq!(routes.lookup(Some(&host("www.example.com"))), Some((&2, MatchKind::Wildcard)));
    assert_eq!(routes.lookup(Some(&host("api.eu.example.com"))), Some((&3, MatchKind::Wildcard)));
    // A wildcard covers one label: neither its suffix nor two labels below it.
    assert_eq!(routes.lookup(Some(&host("example.com"))), None);
    assert_eq!(routes.lookup(Some(&host("a.b.example.com"))), None);
    assert_eq!(routes.lookup(Some(&host("localhost"))), None);
    assert_eq!(routes.lookup(None), None);

    routes.insert(None, 9).unwrap();
    assert_eq!(routes.lookup(Some(&host("a.b.example.com"))), Some((&9, MatchKind::Fallback)));
    assert_eq!(routes.lookup(None), Some((&9, MatchKind::Fallback)));
    assert_eq!(routes.lookup(Some(&host("api.example.com"))), Some((&1, MatchKind::Exact)));
    assert_eq!(routes.len(), 4);
}

#[test]
fn duplicate_patterns_and_a_second_fallback_are_refused() {
    let mut routes = SniRoutes::default();
    routes.insert(pattern("api.example.com"), "a").unwrap();
    routes.insert(pattern("*.example.com"), "w").unwrap();
    routes.insert(None, "f").unwrap();

    let taken = routes.insert(pattern("API.example.com"), "b").unwrap_err();
    assert_eq!(taken, RouteError::PatternTaken { pattern: pattern("api.example.com").unwrap() });
    assert_eq!(taken.code(), ErrorCode::SniPatternTaken);
    assert_eq!(routes.insert(pattern("*.EXAMPLE.com"), "b").unwrap_err().code(), ErrorCode::SniPatternTaken);
    let fallback = routes.insert(None, "g").unwrap_err();
    assert_eq!(fallback, RouteError::FallbackTaken);
    let failure = Failure::from(fallback);
    assert_eq!((failure.code.as_str(), failure.code.exit_status()), ("conflict.sni_fallback_taken", 5));
    assert_eq!(ErrorCode::SniPatternTaken.as_str(), "conflict.sni_pattern_taken");
    assert_eq!(ErrorCode::SniPatternTaken.http_status(), 409);

    // The refused inserts changed nothing.
    assert_eq!(routes.len(), 3);
    assert_eq!(routes.lookup(Some(&host("api.example.com"))), Some((&"a", MatchKind::Exact)));
    assert_eq!(routes.lookup(None), Some((&"f", MatchKind::Fallback)));
    // An exact name and the wildcard above it are different patterns.
    routes.insert(pattern("www.example.com"), "x").unwrap();
}

#[test]
fn removing_a_route_leaves_its_siblings() {
    let mut routes = SniRoutes::default();
    routes.insert(pattern("api.example.com"), 1).unwrap();
    routes.insert(pattern("*.example.com"), 2).unwrap();
    routes.insert(None, 3).unwrap();
    assert_eq!(routes.remove(pattern("api.example.com").as_ref()), Some(1));
    assert_eq!(routes.remove(pattern("api.example.com").as_ref()), None);
    assert_eq!(routes.lookup(Some(&host("api.example.com"))), Some((&2, MatchKind::Wildcard)));
    assert_eq!(routes.remove(None), Some(3));
    routes.insert(None, 4).unwrap();
    assert_eq!(routes.remove(pattern("*.example.com").as_ref()), Some(2));
    assert_eq!(routes.lookup(Some(&host("api.example.com"))), Some((&4, MatchKind::Fallback)));
    assert_eq!(routes.remove(None), Some(4));
    assert!(routes.is_empty());
}

#[test]
fn ten_thousand_names_on_one_listener_all_resolve() {
    let mut routes = SniRoutes::default();
    for idx in 0..10_000 {
        routes.insert(pattern(&format!("svc-{idx}.example.com")), idx).unwrap();
        routes.insert(pattern(&format!("*.tenant-{idx}.example.net")), idx).unwrap();
    }
    for idx in (0..10_000).step_by(997) {
        assert_eq!(
            routes.lookup(Some(&host(&format!("svc-{idx}.example.com")))),
            Some((&idx, MatchKind::Exact))
        );
        let name = host(&format!("www.tenant-{idx}.example.net"));
        assert_eq!(routes.lookup(Some(&name)), Some((&idx, MatchKind::Wildcard)));
    }
    assert_eq!(routes.len(), 20_000);
}

fn pattern_text() -> impl Strategy<Value = String> {
    prop_oneof!["(\\*\\.)?[ab](\\.[ab]){0,3}", "[ab*.]{0,8}"]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn lookup_agrees_with_a_scan_of_the_patterns(
        texts in proptest::collection::vec(pattern_text(), 0..12),
        with_fallback in any::<bool>(),
        names in proptest::collection::vec("[ab](\\.[ab]){0,4}", 1..10),
    ) {
        let mut routes = SniRoutes::default();
        let mut model: Vec<(SniPattern, usize)> = Vec::new();
        for (idx, text) in texts.iter().enumerate() {
            let Ok(parsed) = SniPattern::parse(text) else { continue };
            let fresh = !model.iter().any(|(p, _)| *p == parsed);
            prop_assert_eq!(routes.insert(Some(parsed.clone()), idx).is_ok(), fresh);
            if fresh {
                model.push((parsed, idx));
            }
        }
        if with_fallback {
            routes.insert(None, usize::MAX).unwrap();
        }
        for name in names {
            let name = host(&name);
            let exact = model.iter().find(|(p, _)| matches!(p, SniPattern::Exact(_)) && p.matches(&name));
            let wildcard = model.iter().find(|(p, _)| matches!(p, SniPattern::Wildcard(_)) && p.matches(&name));
            let expected = match (exact, wildcard) {
                (Some((_, idx)), _) => Some((*idx, MatchKind::Exact)),
                (None, Some((_, idx))) => Some((*idx, MatchKind::Wildcard)),
                (None, None) if with_fallback => Some((usize::MAX, MatchKind::Fallback)),
                (None, None) => None,
            };
            prop_assert_eq!(routes.lookup(Some(&name)).map(|(v, k)| (*v, k)), expected);
        }
    }
}
