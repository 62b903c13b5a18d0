//! Onboarding, login, sessions, throttling, password changes and recovery, over the fake
//! ports and the manual clock.

use std::net::IpAddr;
use std::time::Duration;

use super::{Harness, harness};
use crate::ErrorCode;
use crate::audit::{AuditQuery, Outcome};
use crate::policy::{Actor, Credential, RequestOrigin, Role};
use crate::ports::{Clock, CredentialStore, UserStore};
use crate::secret::Secret;
use crate::service::offline::{self, Local};
use crate::service::{Credentials, NewUser};
use crate::test_support::{CountingEntropy, FakeHasher};

const PASSWORD: &str = "correct horse battery";

fn ip(last: u8) -> Option<IpAddr> {
    Some(IpAddr::from([192, 0, 2, last]))
}

fn onboard(h: &Harness) {
    let (token, _) =
        h.plane.run(|cx| h.plane.accounts.start_onboarding(cx)).unwrap().expect("onboarding is open");
    h.plane.complete_onboarding(token.expose(), "admin", PASSWORD, ip(1)).unwrap();
}

fn add_user(h: &Harness, id: &str, role: Role) {
    let new = NewUser { id: id.into(), role, password: Some(PASSWORD.into()) };
    h.plane.create_user(&Actor::operator(), &new).unwrap();
}

fn bearer(token: &str) -> Credentials<'_> {
    Credentials { bearer: Some(token), route: "GET /v1/auth/me", ..Default::default() }
}

/// The server's origins in these tests.
static ORIGINS: std::sync::LazyLock<Vec<String>> =
    std::sync::LazyLock::new(|| vec!["http://127.0.0.1:7080".to_owned()]);

fn cookie<'a>(value: &'a str, write: Option<(&'a str, &'a str)>) -> Credentials<'a> {
    let request = match write {
        None => RequestOrigin { safe_method: true, ..Default::default() },
        Some((origin, csrf)) => RequestOrigin {
            safe_method: false,
            origin: Some(origin),
            allowed_origins: &ORIGINS,
            csrf_token: Some(csrf),
        },
    };
    Credentials { session_cookie: Some(value), request, route: "POST /v1/rules", ..Default::default() }
}

#[test]
fn the_setup_token_rotates_on_every_start_and_expires_after_thirty_minutes() {
    let h = harness();
    let (first, expires_at) = h.plane.run(|cx| h.plane.accounts.start_onboarding(cx)).unwrap().unwrap();
    assert_eq!(expires_at.since(h.clock.now()), Duration::from_secs(1800));
    let (second, _) = h.plane.run(|cx| h.plane.accounts.start_onboarding(cx)).unwrap().unwrap();
    assert_ne!(first, second);
    let stale = h.plane.complete_onboarding(first.expose(), "admin", PASSWORD, ip(1)).unwrap_err();
    assert_eq!(stale.code, ErrorCode::Unauthenticated, "a rotated-away token no longer works");
    h.clock.advance(Duration::from_secs(1800));
    let expired = h.plane.complete_onboarding(second.expose(), "admin", PASSWORD, ip(1)).unwrap_err();
    assert_eq!(expired.code, ErrorCode::Unauthenticated);
    assert!(expired.message.contains("expired"), "{expired}");
}

#[test]
fn onboarding_creates_one_superadmin_and_closes_for_good() {
    let h = harness();
    let (token, _) = h.plane.run(|cx| h.plane.accounts.start_onboarding(cx)).unwrap().unwrap();
    let weak = h.plane.complete_onboarding(token.expose(), "admin", "short", ip(1)).unwrap_err();
    assert_eq!(weak.code, ErrorCode::WeakPassword);
    let admin = h.plane.complete_onboarding(token.expose(), "admin", PASSWORD, ip(1)).unwrap();
    assert_eq!(admin.role, Role::Superadmin);
    let again = h.plane.complete_onboarding(token.expose(), "admin2", PASSWORD, ip(1)).unwrap_err();
    assert_eq!(again.code, ErrorCode::OnboardingClosed);
    assert_eq!(
        h.plane.run(|cx| h.plane.accounts.start_onboarding(cx)).unwrap(),
        None,
        "a restart does not reopen it"
    );
    assert!(h.plane.accounts.onboarding_status(&*h.plane.store).unwrap().is_complete());
}

#[test]
fn only_the_operator_token_passes_before_a_superadmin_exists() {
    let h = harness();
    add_user(&h, "alice", Role::User);
    let minted =
        h.plane.run(|cx| h.plane.accounts.create_token(cx, &Actor::operator(), "alice", None)).unwrap();
    let refused =
        h.plane.run(|cx| h.plane.accounts.authenticate(cx, &bearer(minted.secret.expose()))).unwrap_err();
    assert_eq!(refused.code, ErrorCode::BootstrapRequired);
    assert!(h.plane.run(|cx| h.plane.accounts.authenticate(cx, &bearer("operator-secret"))).is_ok());
    assert_eq!(
        h.plane.run(|cx| h.plane.accounts.authenticate(cx, &bearer("nonsense"))).unwrap_err().code,
        ErrorCode::Unauthenticated
    );
    onboard(&h);
    let actor =
        h.plane.run(|cx| h.plane.accounts.authenticate(cx, &bearer(minted.secret.expose()))).unwrap().actor;
    assert_eq!(
        (actor.principal.as_str(), actor.role, actor.credential),
        ("alice", Role::User, Credential::ApiToken)
    );
}

#[test]
fn creating_a_superadmin_or_bootstrapping_one_closes_onboarding() {
    let h = harness();
    add_user(&h, "root", Role::Superadmin);
    assert!(h.plane.accounts.onboarding_status(&*h.plane.store).unwrap().is_complete());

    let h = harness();
    let local = Local { store: &*h.store, clock: &*h.clock, entropy: &CountingEntropy::default() };
    let token = offline::bootstrap_superadmin(&local).unwrap();
    assert!(h.plane.accounts.onboarding_status(&*h.plane.store).unwrap().is_complete());
    let actor = h.plane.run(|cx| h.plane.accounts.authenticate(cx, &bearer(token.expose()))).unwrap().actor;
    assert_eq!((actor.principal.as_str(), actor.role), ("_superadmin", Role::Superadmin));
    assert_eq!(offline::bootstrap_superadmin(&local).unwrap_err().code, ErrorCode::UserExists);
}

#[test]
fn wrong_logins_get_one_generic_answer_whether_or_not_the_user_exists() {
    let h = harness();
    onboard(&h);
    add_user(&h, "alice", Role::User);
    let missing = h.plane.login("nobody", PASSWORD, ip(2)).unwrap_err();
    let wrong = h.plane.login("alice", "wrong password!!", ip(3)).unwrap_err();
    assert_eq!((missing.code, &missing.message), (wrong.code, &wrong.message));
    assert_eq!(wrong.code, ErrorCode::Unauthenticated);
}

#[test]
fn a_session_cookie_authenticates_and_writes_need_same_origin_and_csrf() {
    let h = harness();
    onboard(&h);
    add_user(&h, "alice", Role::User);
    let login = h.plane.login("alice", PASSWORD, ip(2)).unwrap();
    let value = login.cookie.expose();
    let auth = h.plane.run(|cx| h.plane.accounts.authenticate(cx, &cookie(value, None))).unwrap();
    assert_eq!(
        (auth.actor.principal.as_str(), auth.session.clone()),
        ("alice", Some(login.session.id.clone()))
    );
    let csrf = login.csrf.expose();
    assert!(
        h.plane
            .run(|cx| h
                .plane
                .accounts
                .authenticate(cx, &cookie(value, Some(("http://127.0.0.1:7080", csrf)))))
            .is_ok()
    );
    let cross = h
        .plane
        .run(|cx| h.plane.accounts.authenticate(cx, &cookie(value, Some(("http://evil.example", csrf)))))
        .unwrap_err();
    assert_eq!(cross.code, ErrorCode::CsrfFailed);
    let no_token = h
        .plane
        .run(|cx| h.plane.accounts.authenticate(cx, &cookie(value, Some(("http://127.0.0.1:7080", "nope")))))
        .unwrap_err();
    assert_eq!(no_token.code, ErrorCode::CsrfFailed);

    // An invalid cookie never falls back to a valid bearer token.
    let both = Credentials { bearer: Some("operator-secret"), ..cookie("ss_00.bad", None) };
    assert_eq!(
        h.plane.run(|cx| h.plane.accounts.authenticate(cx, &both)).unwrap_err().code,
        ErrorCode::Unauthenticated
    );

    // Sessions end at logout and after their lifetime.
    let actor = auth.actor.clone();
    h.plane.run(|cx| h.plane.accounts.logout(cx, &actor, auth.session.as_ref())).unwrap();
    assert_eq!(
        h.plane.run(|cx| h.plane.accounts.authenticate(cx, &cookie(value, None))).unwrap_err().code,
        ErrorCode::Unauthenticated
    );
    let later = h.plane.login("alice", PASSWORD, ip(2)).unwrap();
    h.clock.advance(crate::account::SESSION_TTL);
    let expired = h
        .plane
        .run(|cx| h.plane.accounts.authenticate(cx, &cookie(later.cookie.expose(), None)))
        .unwrap_err();
    assert_eq!(expired.code, ErrorCode::Unauthenticated);
    assert!(h.store.get_session(&later.session.id).unwrap().is_none(), "an expired session is deleted");
}

#[test]
fn five_failed_logins_lock_the_subject_for_a_minute_then_longer_and_survive_a_restart() {
    let h = harness();
    onboard(&h);
    add_user(&h, "alice", Role::User);
    for n in 0..5 {
        // Each from another address, so only the per-subject key reaches five.
        let err = h.plane.login("alice", "wrong password!!", ip(10 + n)).unwrap_err();
        assert_eq!(err.code, ErrorCode::Unauthenticated);
    }
    let locked = h.plane.login("alice", PASSWORD, ip(20)).unwrap_err();
    assert_eq!(locked.code, ErrorCode::RateLimited, "even the right password waits");
    h.clock.advance(Duration::from_secs(59));
    assert_eq!(h.plane.login("alice", PASSWORD, ip(20)).unwrap_err().code, ErrorCode::RateLimited);

    // The lockout lives in the store: a new control plane over the same store still sees it.
    let restarted = super::rebuilt(&h);
    assert_eq!(restarted.login("alice", PASSWORD, ip(20)).unwrap_err().code, ErrorCode::RateLimited);
    h.clock.advance(Duration::from_secs(1));

    // Five more failures inside the window lock for twice as long.
    for n in 0..5 {
        let err = restarted.login("alice", "wrong password!!", ip(30 + n)).unwrap_err();
        assert_eq!(err.code, ErrorCode::Unauthenticated);
    }
    h.clock.advance(Duration::from_secs(119));
    assert_eq!(h.plane.login("alice", PASSWORD, ip(40)).unwrap_err().code, ErrorCode::RateLimited);
    h.clock.advance(Duration::from_secs(1));
    assert!(h.plane.login("alice", PASSWORD, ip(40)).is_ok());
}

#[test]
fn one_address_is_throttled_across_subjects() {
    let h = harness();
    onboard(&h);
    for name in ["u1", "u2", "u3", "u4", "u5"] {
        let _ = h.plane.login(name, "wrong password!!", ip(9));
    }
    assert_eq!(h.plane.login("admin", PASSWORD, ip(9)).unwrap_err().code, ErrorCode::RateLimited);
    assert!(h.plane.login("admin", PASSWORD, ip(8)).is_ok(), "other addresses are not affected");
}

#[test]
fn reset_password_gives_a_temporary_password_that_only_lets_the_user_change_it() {
    let h = harness();
    onboard(&h);
    add_user(&h, "alice", Role::User);
    let token =
        h.plane.run(|cx| h.plane.accounts.create_token(cx, &Actor::operator(), "alice", Some("ci"))).unwrap();
    let old_session = h.plane.login("alice", PASSWORD, ip(2)).unwrap();

    let local = Local { store: &*h.store, clock: &*h.clock, entropy: &CountingEntropy::default() };
    let temporary = offline::reset_password(&local, &FakeHasher, "alice", false).unwrap();
    assert!(
        h.plane.run(|cx| h.plane.accounts.authenticate(cx, &bearer(token.secret.expose()))).is_err(),
        "API tokens are revoked"
    );
    assert!(
        h.plane
            .run(|cx| h.plane.accounts.authenticate(cx, &cookie(old_session.cookie.expose(), None)))
            .is_err(),
        "sessions end"
    );
    assert!(h.plane.login("alice", PASSWORD, ip(2)).is_err(), "the old password is gone");

    let login = h.plane.login("alice", temporary.expose(), ip(2)).unwrap();
    let actor = h
        .plane
        .run(|cx| h.plane.accounts.authenticate(cx, &cookie(login.cookie.expose(), None)))
        .unwrap()
        .actor;
    assert!(actor.must_change_password);
    assert_eq!(h.plane.accounts.whoami(&*h.plane.store, &actor).unwrap().id.as_str(), "alice");
    assert_eq!(
        h.plane.run(|cx| h.plane.rules.list_rules(cx, &actor, &Default::default())).unwrap_err().code,
        ErrorCode::PasswordChangeRequired
    );
    assert_eq!(
        h.plane.run(|cx| h.plane.accounts.get_user(cx, &actor, "alice")).unwrap_err().code,
        ErrorCode::PasswordChangeRequired
    );
    let wrong = h.plane.change_password(&actor, "not it at all", "a brand new password", None).unwrap_err();
    assert_eq!(wrong.code, ErrorCode::Unauthenticated);
    h.plane
        .change_password(&actor, temporary.expose(), "a brand new password", Some(&login.session.id))
        .unwrap();
    let actor = h
        .plane
        .run(|cx| h.plane.accounts.authenticate(cx, &cookie(login.cookie.expose(), None)))
        .unwrap()
        .actor;
    assert!(!actor.must_change_password);
    assert!(h.plane.run(|cx| h.plane.rules.list_rules(cx, &actor, &Default::default())).is_ok());
    assert_eq!(
        offline::reset_password(&local, &FakeHasher, "ghost", false).unwrap_err().code,
        ErrorCode::UserNotFound
    );
}

#[test]
fn the_last_superadmin_cannot_be_deleted_and_deleting_a_user_revokes_everything() {
    let h = harness();
    onboard(&h);
    assert_eq!(
        h.plane.run(|cx| h.plane.accounts.delete_user(cx, &Actor::operator(), "admin")).unwrap_err().code,
        ErrorCode::LastSuperadmin
    );
    add_user(&h, "alice", Role::User);
    let token =
        h.plane.run(|cx| h.plane.accounts.create_token(cx, &Actor::operator(), "alice", None)).unwrap();
    h.plane.run(|cx| h.plane.accounts.delete_user(cx, &Actor::operator(), "alice")).unwrap();
    assert!(h.store.get_user(&crate::ids::UserId::new("alice")).unwrap().is_none());
    assert!(h.store.list_api_tokens().unwrap().is_empty());
    assert_eq!(
        h.plane.run(|cx| h.plane.accounts.authenticate(cx, &bearer(token.secret.expose()))).unwrap_err().code,
        ErrorCode::Unauthenticated
    );
    assert_eq!(
        h.plane.run(|cx| h.plane.accounts.delete_user(cx, &Actor::operator(), "alice")).unwrap_err().code,
        ErrorCode::UserNotFound
    );
}

#[test]
fn the_audit_trail_records_mutations_and_denials_without_secrets() {
    let h = harness();
    let (setup, _) = h.plane.run(|cx| h.plane.accounts.start_onboarding(cx)).unwrap().unwrap();
    h.plane.complete_onboarding(setup.expose(), "admin", PASSWORD, ip(1)).unwrap();
    add_user(&h, "alice", Role::User);
    let minted =
        h.plane.run(|cx| h.plane.accounts.create_token(cx, &Actor::operator(), "alice", None)).unwrap();
    let _ = h.plane.login("alice", "wrong password!!", ip(7));
    let alice =
        h.plane.run(|cx| h.plane.accounts.authenticate(cx, &bearer(minted.secret.expose()))).unwrap().actor;
    let _ = h.plane.run(|cx| h.plane.accounts.list_users(cx, &alice));
    let query = AuditQuery::new(None, None, None, None, None).unwrap();
    let page = h.plane.run(|cx| h.plane.admin.audit_page(cx, &Actor::operator(), &query)).unwrap();
    let actions: Vec<(&str, Outcome)> = page.records.iter().map(|r| (r.action.as_str(), r.outcome)).collect();
    assert_eq!(
        actions,
        vec![
            ("auth.onboarding", Outcome::Success),
            ("user.create", Outcome::Success),
            ("token.create", Outcome::Success),
            ("auth.login", Outcome::Denied),
            ("user.list", Outcome::Denied),
        ]
    );
    assert_eq!(page.records[3].remote.as_deref(), Some("192.0.2.7"));
    let text = format!("{:?}", page.records);
    for secret in [setup.expose(), minted.secret.expose(), PASSWORD, "wrong password!!"] {
        assert!(!text.contains(secret), "an audit record holds a secret");
    }
    let denied = AuditQuery::new(None, None, None, Some("denied"), Some(1)).unwrap();
    let first = h.plane.run(|cx| h.plane.admin.audit_page(cx, &Actor::operator(), &denied)).unwrap();
    assert_eq!(first.records.len(), 1);
    let cursor = first.next_cursor.expect("a full page has a next cursor");
    let next = AuditQuery::new(Some(&cursor), None, None, Some("denied"), Some(1)).unwrap();
    assert_eq!(
        h.plane.run(|cx| h.plane.admin.audit_page(cx, &Actor::operator(), &next)).unwrap().records[0].action,
        "user.list"
    );
    assert_eq!(
        h.plane.run(|cx| h.plane.admin.audit_page(cx, &alice, &query)).unwrap_err().code,
        ErrorCode::NotOwner
    );
}

#[test]
fn an_endpoint_override_must_parse_and_be_covered_before_it_is_stored() {
    let h = harness();
    let invalid = h
        .plane
        .run(|cx| h.plane.admin.set_endpoint_override(cx, &Actor::operator(), Some("https://x:1")))
        .unwrap_err();
    assert_eq!(invalid.code, ErrorCode::EndpointInvalid);
    let uncovered = h
        .plane
        .run(|cx| h.plane.admin.set_endpoint_override(cx, &Actor::operator(), Some("far.example.com:7443")))
        .unwrap_err();
    assert_eq!(uncovered.code, ErrorCode::EndpointNotInCertSan);
    assert_eq!(
        h.plane.run(|cx| h.plane.admin.endpoint_settings(cx, &Actor::operator())).unwrap().override_,
        None,
        "nothing was saved"
    );
    let view = h
        .plane
        .run(|cx| h.plane.admin.set_endpoint_override(cx, &Actor::operator(), Some("127.0.0.1:34567")))
        .unwrap();
    assert_eq!(view.effective.as_deref(), Some("127.0.0.1:34567"));
    let ticket =
        h.plane.run(|cx| h.plane.clients.enroll_client(cx, &Actor::operator(), "edge-01", None)).unwrap();
    assert!(ticket.uri.render().starts_with("portunus://127.0.0.1:34567/"), "enrollment uses the override");
    let cleared =
        h.plane.run(|cx| h.plane.admin.set_endpoint_override(cx, &Actor::operator(), None)).unwrap();
    assert_eq!(cleared.effective.as_deref(), Some("127.0.0.1:7443"));
}

#[test]
fn temporary_and_secret_values_never_show_in_debug_output() {
    let secret = Secret::new("super-secret-value-123");
    assert!(!format!("{secret:?}").contains("super"));
}

#[test]
fn user_ids_and_token_names_with_hidden_characters_are_refused() {
    let h = harness();
    onboard(&h);
    for id in ["ali\u{202E}ce", "\u{200B}alice", "alice\u{FEFF}"] {
        let new = NewUser { id: id.into(), role: Role::User, password: None };
        assert_eq!(h.plane.create_user(&Actor::operator(), &new).unwrap_err().code, ErrorCode::InvalidName);
    }
    add_user(&h, "alice", Role::User);
    for name in ["ci\u{2066}prod\u{2069}", "c\u{200D}i", &format!("{}\u{202E}", "n".repeat(100))] {
        let refused = h
            .plane
            .run(|cx| h.plane.accounts.create_token(cx, &Actor::operator(), "alice", Some(name)))
            .unwrap_err();
        assert_eq!(refused.code, ErrorCode::InvalidName, "{name:?}");
        assert!(
            !refused.message.contains(&"n".repeat(65)),
            "quotes at most 64 characters: {}",
            refused.message
        );
    }
    assert!(
        h.plane
            .run(|cx| h.plane.accounts.create_token(cx, &Actor::operator(), "alice", Some("ci – prod")))
            .is_ok()
    );
}
