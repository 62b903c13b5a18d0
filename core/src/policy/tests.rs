use proptest::prelude::*;

use super::*;
use crate::account::WebSession;
use crate::grant::GrantClient;
use crate::ids::{GrantId, SessionId, Timestamp};
use crate::secret::SecretHash;

fn client(n: u8) -> ClientId {
    ClientId::from_random([n; 10])
}

fn user(name: &str) -> Actor {
    Actor {
        principal: UserId::new(name),
        role: Role::User,
        must_change_password: false,
        credential: Credential::ApiToken,
        remote: None,
    }
}

fn grant(owner: &str, client: Option<u8>, ports: (u16, u16), protocols: &[Protocol]) -> Grant {
    Grant {
        id: GrantId::from_random([ports.0 as u8; 8]),
        user: UserId::new(owner),
        client: client.map_or(GrantClient::Any, |n| GrantClient::Client(super::tests::client(n))),
        ports: PortRange::new(ports.0, ports.1).unwrap(),
        protocols: protocols.to_vec(),
        created_at: Timestamp::from_millis(0),
    }
}

fn range(a: u16, b: u16) -> PortRange {
    PortRange::new(a, b).unwrap()
}

fn check(
    grants: &[Grant],
    who: &str,
    c: u8,
    ports: (u16, u16),
    protocol: Protocol,
    expected: Result<(), Denial>,
) {
    let actor = user(who);
    let action = Action::PushRule { client: &client(c), ports: range(ports.0, ports.1), protocol, grants };
    assert_eq!(authorize(&actor, &action), expected, "{who} → client {c} {ports:?} {protocol}");
}

#[test]
fn push_denials_name_the_first_missing_fact() {
    use Protocol::{Tcp, Udp};
    let grants = vec![
        grant("alice", Some(1), (20000, 20099), &[Tcp]),
        grant("alice", Some(1), (20100, 20199), &[Tcp, Udp]),
        grant("bob", None, (1, 65535), &[Tcp, Udp]),
    ];
    check(&grants, "alice", 1, (20000, 20099), Tcp, Ok(()));
    check(&grants, "alice", 2, (20000, 20000), Tcp, Err(Denial::ClientNotGranted));
    // Two grants side by side never add up to one.
    check(&grants, "alice", 1, (20050, 20150), Tcp, Err(Denial::PortOutsideGrant));
    check(&grants, "alice", 1, (20000, 20001), Udp, Err(Denial::ProtocolNotGranted));
    check(&grants, "alice", 1, (20100, 20101), Udp, Ok(()));
    // bob's wildcard grant covers every client, but never alice's requests.
    check(&grants, "bob", 9, (443, 443), Udp, Ok(()));
    check(&grants, "carol", 1, (20000, 20000), Tcp, Err(Denial::ClientNotGranted));
}

#[test]
fn users_touch_only_their_own_accounts_and_rules() {
    let alice = user("alice");
    let bob = UserId::new("bob");
    assert_eq!(authorize(&alice, &Action::AccessAccount(&alice.principal)), Ok(()));
    assert_eq!(authorize(&alice, &Action::AccessAccount(&bob)), Err(Denial::NotOwner));
    assert_eq!(authorize(&alice, &Action::AccessRule { owner: &bob }), Err(Denial::NotOwner));
    assert_eq!(authorize(&alice, &Action::Administer), Err(Denial::SuperadminOnly));
    assert_eq!(Denial::SuperadminOnly.code(), ErrorCode::NotOwner);
    assert_eq!(authorize(&Actor::operator(), &Action::AccessRule { owner: &bob }), Ok(()));
    assert_eq!(authorize(&Actor::operator(), &Action::Administer), Ok(()));
}

#[test]
fn clients_are_visible_through_a_grant_only() {
    let grants = vec![
        grant("alice", Some(1), (1, 10), &[Protocol::Tcp]),
        grant("bob", None, (1, 10), &[Protocol::Tcp]),
    ];
    let read =
        |who: &str, c: u8| authorize(&user(who), &Action::ReadClient { client: &client(c), grants: &grants });
    assert_eq!(read("alice", 1), Ok(()));
    assert_eq!(read("alice", 2), Err(Denial::ClientNotGranted));
    assert_eq!(read("bob", 2), Ok(()));
}

#[test]
fn a_temporary_password_allows_only_managing_oneself() {
    for role in [Role::User, Role::Superadmin] {
        let actor = Actor { role, must_change_password: true, ..user("alice") };
        assert_eq!(authorize(&actor, &Action::ManageSelf), Ok(()));
        assert_eq!(authorize(&actor, &Action::Administer), Err(Denial::PasswordChangeRequired));
        assert_eq!(authorize(&actor, &Action::List), Err(Denial::PasswordChangeRequired));
        assert_eq!(
            authorize(&actor, &Action::AccessAccount(&actor.principal)),
            Err(Denial::PasswordChangeRequired)
        );
    }
}

fn session() -> WebSession {
    WebSession {
        id: SessionId::from_random([1; 16]),
        user: UserId::new("alice"),
        hash: SecretHash::of("cookie"),
        csrf: SecretHash::of("csrf-token-value"),
        created_at: Timestamp::from_millis(0),
        expires_at: Timestamp::from_millis(1),
    }
}

#[test]
fn cookie_writes_need_same_origin_and_the_csrf_token() {
    let s = session();
    let allowed = ["http://127.0.0.1:7080".to_owned(), "https://ops.example.com:443".to_owned()];
    let write = |origin: Option<&'static str>, token: Option<&'static str>| RequestOrigin {
        safe_method: false,
        origin,
        allowed_origins: &allowed,
        csrf_token: token,
    };
    assert!(check_csrf(&RequestOrigin { safe_method: true, ..Default::default() }, &s).is_ok());
    assert!(check_csrf(&write(Some("http://127.0.0.1:7080"), Some("csrf-token-value")), &s).is_ok());
    assert!(check_csrf(&write(Some("https://OPS.example.com"), Some("csrf-token-value")), &s).is_ok());
    for bad in [
        write(None, Some("csrf-token-value")),
        write(Some("http://evil.example:7080"), Some("csrf-token-value")),
        write(Some("http://127.0.0.1:7080.evil"), Some("csrf-token-value")),
        // Scheme and port count: same host, other scheme or port is another origin.
        write(Some("https://127.0.0.1:7080"), Some("csrf-token-value")),
        write(Some("http://ops.example.com"), Some("csrf-token-value")),
        write(Some("https://ops.example.com:8443"), Some("csrf-token-value")),
        write(Some("null"), Some("csrf-token-value")),
        write(Some("http://127.0.0.1:7080"), None),
        write(Some("http://127.0.0.1:7080"), Some("wrong")),
    ] {
        assert_eq!(check_csrf(&bad, &s).unwrap_err().code, ErrorCode::CsrfFailed, "{bad:?}");
    }
}

fn arb_protocols() -> impl Strategy<Value = Vec<Protocol>> {
    prop_oneof![
        Just(vec![Protocol::Tcp]),
        Just(vec![Protocol::Udp]),
        Just(vec![Protocol::Tcp, Protocol::Udp]),
    ]
}

fn arb_range() -> impl Strategy<Value = PortRange> {
    (1u16..200, 0u16..40).prop_map(|(start, len)| range(start, start.saturating_add(len)))
}

fn arb_grant() -> impl Strategy<Value = Grant> {
    (prop_oneof![Just("alice"), Just("bob")], proptest::option::of(0u8..3), arb_range(), arb_protocols())
        .prop_map(|(owner, c, ports, protocols)| Grant {
            id: GrantId::from_random([0; 8]),
            user: UserId::new(owner),
            client: c.map_or(GrantClient::Any, |n| GrantClient::Client(client(n))),
            ports,
            protocols,
            created_at: Timestamp::from_millis(0),
        })
}

fn arb_protocol() -> impl Strategy<Value = Protocol> {
    prop_oneof![Just(Protocol::Tcp), Just(Protocol::Udp)]
}

proptest! {
    #[test]
    fn push_allowed_iff_one_grant_covers_all(
        grants in proptest::collection::vec(arb_grant(), 0..6),
        c in 0u8..3,
        ports in arb_range(),
        protocol in arb_protocol(),
    ) {
        let me = UserId::new("alice");
        let expected = grants.iter().any(|g| g.user == me && g.covers(&client(c), ports, protocol));
        let decided = check_push(&grants, &me, &client(c), ports, protocol);
        prop_assert_eq!(decided.is_ok(), expected);
    }

    #[test]
    fn superadmins_may_push_anything_users_never_outside_their_grants(
        grants in proptest::collection::vec(arb_grant(), 0..6),
        c in 0u8..3,
        ports in arb_range(),
        protocol in arb_protocol(),
    ) {
        let action = Action::PushRule { client: &client(c), ports, protocol, grants: &grants };
        prop_assert!(authorize(&Actor::operator(), &action).is_ok());
        if authorize(&user("alice"), &action).is_ok() {
            prop_assert!(grants.iter().any(|g| g.user.as_str() == "alice" && g.covers(&client(c), ports, protocol)));
        }
    }

    #[test]
    fn range_cover_implies_overlap(a in arb_range(), b in arb_range()) {
        if a.covers(b) {
            prop_assert!(a.overlaps(b) && b.overlaps(a));
        }
    }
}

#[test]
fn only_a_superadmin_free_to_act_sees_everything() {
    assert!(Actor::operator().sees_everything());
    assert!(Actor { role: Role::Superadmin, ..user("root") }.sees_everything());
    assert!(!Actor { role: Role::Superadmin, must_change_password: true, ..user("root") }.sees_everything());
    assert!(!user("alice").sees_everything());
}

#[test]
fn forwarded_headers_count_only_from_trusted_proxies() {
    let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
    let proxy = ip("10.0.0.2");
    let trusted = [proxy, ip("10.0.0.3")];
    // From anyone else, the headers are ignored.
    assert_eq!(
        forwarded_client(ip("203.0.113.9"), &trusted, Some("198.51.100.1"), Some("https")),
        (ip("203.0.113.9"), false)
    );
    // From a trusted proxy: the nearest untrusted hop, and its scheme.
    assert_eq!(
        forwarded_client(proxy, &trusted, Some("198.51.100.1"), Some("https")),
        (ip("198.51.100.1"), true)
    );
    assert_eq!(
        forwarded_client(proxy, &trusted, Some("6.6.6.6, 198.51.100.1, 10.0.0.3"), Some("HTTPS")),
        (ip("198.51.100.1"), true),
        "a client-supplied left part is not believed past the first untrusted hop"
    );
    assert_eq!(forwarded_client(proxy, &trusted, None, Some("http")), (proxy, false));
    assert_eq!(
        forwarded_client(proxy, &trusted, None, Some("https, http")),
        (proxy, false),
        "a scheme the client sent itself stands left of the proxy's"
    );
    assert_eq!(forwarded_client(proxy, &trusted, Some("not-an-ip"), None), (proxy, false));
}
