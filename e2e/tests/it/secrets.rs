//! No log line carries a secret: one scenario walks every path that handles the operator
//! token, client tokens and enrollment codes, with debug logging on, then reads every log
//! file it produced.

use crate::harness::{
    Backend, Client, ClientOpts, Scenario, Server, ServerOpts, connect, free_port, roundtrip,
};

#[test]
fn no_log_line_carries_a_token_an_enrollment_code_or_the_key() {
    let scn = Scenario::new("secrets_never_logged");
    let debug = ("PORTUNUS_LOG", "debug");
    let server = Server::start(&scn, ServerOpts::default().env(debug.0, debug.1));
    let client_opts = ClientOpts::default().env(debug.0, debug.1);

    // Enroll, connect, forward.
    let bundle = scn.path("edge-01.bundle.json");
    let uri = server.enroll("edge-01");
    Client::enroll_ok(&scn, &uri, &bundle);
    let client = Client::start_connected(&scn, &bundle, &client_opts);
    let backend = Backend::echo();
    let port = free_port();
    server.push_rule("edge-01", port, &backend.target());
    roundtrip(&mut connect(port), b"bytes with a token nearby");

    // A consumed code, and a second client that never connects.
    assert_eq!(Client::enroll(&scn, &uri, &scn.path("again.bundle.json")).code, 4);
    let expiring = server.enroll_output("edge-02", &["--expires-in", "60"]);
    assert_eq!(expiring.code, 0);

    // A wrong operator token is refused and not echoed.
    let wrong_operator = "not-the-operator-token-0123456789abcdef";
    scn.remember_secret("wrong operator token", wrong_operator);
    let refused = server.cli_with_env(&["list-clients"], &[("PORTUNUS_OPERATOR_TOKEN", wrong_operator)]);
    assert_eq!(refused.code, 4, "{refused:?}");

    // Revoke, then rotate by re-enrolling; the old token is refused.
    let old_copy = scn.path("edge-01.old.bundle.json");
    std::fs::copy(&bundle, &old_copy).expect("copy bundle");
    server.cli_ok(&["revoke", "edge-01"]);
    assert_eq!(client.proc().wait_exit(), 4);
    Client::enroll_ok(&scn, &server.enroll("edge-01"), &bundle);
    let old = Client::start(&scn, &old_copy, &client_opts);
    assert_eq!(old.proc().wait_exit(), 4);
    let renewed = Client::start_connected(&scn, &bundle, &client_opts);
    roundtrip(&mut connect(port), b"after rotation");
    drop(renewed);
    drop(server);

    // enroll codes (3), client tokens (2), operator token, key lines, the wrong token.
    assert!(scn.n_secrets() >= 8, "the scenario handled fewer secrets than expected");
    assert!(scn.log_files().len() >= 10, "the scenario produced fewer logs than expected");
    scn.assert_logs_free_of_secrets();
}

#[test]
fn the_store_keeps_only_hashes_of_tokens_and_codes() {
    let scn = Scenario::new("store_holds_hashes");
    let mut server = Server::start(&scn, ServerOpts::default());
    let bundle = scn.path("edge-01.bundle.json");
    Client::enroll_ok(&scn, &server.enroll("edge-01"), &bundle);
    let pending_uri = server.enroll("edge-02");
    let pending_code = pending_uri.split("code=").nth(1).expect("uri has a code").to_owned();
    let bundle_text = std::fs::read_to_string(&bundle).expect("bundle");
    let bundle_json: serde_json::Value = serde_json::from_str(&bundle_text).expect("bundle JSON");
    let token = bundle_json["token"].as_str().expect("token").to_owned();
    let token_secret = token.split_once('.').map_or(token.as_str(), |(_, s)| s).to_owned();
    let api = server.api();
    let operator = server.operator_token();
    let op = crate::harness::Auth::Bearer(&operator);
    let password = "a password that must never be stored";
    api.create_user(&op, "alice", "user", Some(password));
    let api_token = api.mint_token(&op, "alice");
    let api_secret = api_token.split_once('.').map_or(api_token.as_str(), |(_, s)| s).to_owned();
    let session = api.login_ok("alice", password);
    let cookie_secret = session.cookie.split_once('.').map_or(session.cookie.as_str(), |(_, s)| s).to_owned();
    let setup = server.setup_token().expect("a setup token");
    assert_eq!(server.stop(), 0);

    let store = std::fs::read(server.data_dir().join("portunus.redb")).expect("read the store file");
    let contains = |needle: &str| store.windows(needle.len()).any(|w| w == needle.as_bytes());
    assert!(!contains(&token_secret), "the store holds a client token in plain text");
    assert!(!contains(&pending_code), "the store holds an enrollment code in plain text");
    for (what, secret) in [
        ("a password", password),
        ("an API token", api_secret.as_str()),
        ("a session cookie", cookie_secret.as_str()),
        ("a CSRF token", session.csrf.as_str()),
        ("the setup token", setup.as_str()),
    ] {
        assert!(!contains(secret), "the store holds {what} in plain text");
    }
}

#[test]
fn no_log_line_or_audit_row_carries_a_password_an_api_token_a_cookie_or_a_setup_token() {
    use serde_json::json;

    use crate::harness::Auth;

    let scn = Scenario::new("account_secrets_never_logged");
    let mut server = Server::start(&scn, ServerOpts::default().env("PORTUNUS_LOG", "debug"));
    let api = server.api();
    let setup = server.setup_token().expect("a setup token");
    let wrong = "a wrong guess of a password";
    scn.remember_secret("wrong password", wrong);
    assert_eq!(api.onboard(&setup, "admin", wrong).status, 201);
    let (refused, _) = api.login("admin", "yet another wrong password");
    scn.remember_secret("wrong password", "yet another wrong password");
    assert_eq!(refused.status, 401);
    let admin = api.login_ok("admin", wrong);
    let admin_auth = Auth::Session(&admin);
    api.create_user(&admin_auth, "alice", "user", Some("alice's password 123"));
    let token = api.mint_token(&admin_auth, "alice");
    assert_eq!(api.call("GET", "/v1/auth/me", &Auth::Bearer(&token), None).status, 200);
    let alice = api.login_ok("alice", "alice's password 123");
    let change = json!({"current_password": "alice's password 123", "new_password": "alice's next password"});
    scn.remember_secret("password", "alice's next password");
    assert_eq!(api.call("PUT", "/v1/auth/password", &Auth::Session(&alice), Some(&change)).status, 204);
    let cross_site = api.raw(
        "POST",
        "/v1/auth/logout",
        &[
            ("Cookie".into(), format!("portunus_session={}", alice.cookie)),
            ("Origin".into(), "http://evil.example".into()),
            ("X-CSRF-Token".into(), alice.csrf.clone()),
        ],
        None,
    );
    assert_eq!(cross_site.status, 403);
    assert_eq!(api.call("POST", "/v1/auth/logout", &Auth::Session(&alice), None).status, 204);
    let cli_user = server.cli_ok(&["user-add", "carol", "--api-token"]);
    let carol = cli_user.trim().strip_prefix("api_token=").expect("api_token=").to_owned();
    scn.remember_secret("API token", carol.split_once('.').map_or(carol.as_str(), |(_, s)| s));

    assert_eq!(server.stop(), 0);
    let reset = server.cli_ok(&["reset-password", "alice", "--temporary"]);
    let temporary = reset.trim().strip_prefix("temporary_password=").expect("temporary_password=").to_owned();
    scn.remember_secret("temporary password", &temporary);
    server.start_again();
    api.login_ok("alice", &temporary);

    assert!(scn.n_secrets() >= 14, "the scenario handled fewer secrets than expected: {}", scn.n_secrets());
    server.assert_no_secret_leaked();
}
