//! First start, Web sessions and recovery on the real server: the printed setup token and
//! its rotation, onboarding under concurrency, the bootstrap gate, the session cookie and
//! CSRF, the generic login failure, throttling that survives a restart, offline password
//! recovery and `bootstrap-superadmin`.

use std::sync::{Arc, Barrier};

use serde_json::json;

use crate::harness::{Auth, Scenario, Server, ServerOpts};

const PASSWORD: &str = "first superadmin password";

#[test]
fn the_printed_setup_token_onboards_exactly_one_of_fifty_concurrent_attempts() {
    let scn = Scenario::new("onboarding");
    let mut server = Server::start(&scn, ServerOpts::default());
    let api = server.api();
    let operator = server.operator_token();
    let op = Auth::Bearer(&operator);
    let status = api.call("GET", "/v1/auth/onboarding", &Auth::None, None);
    assert_eq!((status.status, status.body["required"].as_bool()), (200, Some(true)), "{}", status.text);
    server.proc().wait_event("onboarding.setup_token_issued", &[]);

    // Until a superadmin exists only the operator token passes; a user's token gets 503.
    api.create_user(&op, "alice", "user", None);
    let alice = api.mint_token(&op, "alice");
    let gated = api.call("GET", "/v1/rules", &Auth::Bearer(&alice), None);
    assert_eq!((gated.status, gated.code()), (503, "bootstrap_required"), "{}", gated.text);
    assert_eq!(api.call("GET", "/v1/clients", &op, None).status, 200);

    // Every start while onboarding is open prints a new token; the old one stops working.
    let first = server.setup_token().expect("a fresh server prints a setup token");
    server.restart();
    let second = server.setup_token().expect("a restart prints a new setup token");
    assert_ne!(first, second);
    let stale = api.onboard(&first, "admin", PASSWORD);
    assert_eq!((stale.status, stale.code()), (401, "unauthenticated"), "{}", stale.text);

    let barrier = Arc::new(Barrier::new(50));
    let attempts: Vec<_> = (0..50)
        .map(|n| {
            let (api, token, barrier) = (api.clone(), second.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                api.onboard(&token, &format!("admin{n}"), PASSWORD)
            })
        })
        .collect();
    let results: Vec<_> = attempts.into_iter().map(|t| t.join().expect("attempt thread")).collect();
    let created: Vec<_> = results.iter().filter(|r| r.status == 201).collect();
    assert_eq!(
        created.len(),
        1,
        "exactly one attempt wins: {:?}",
        results.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    assert!(
        results
            .iter()
            .filter(|r| r.status != 201)
            .all(|r| r.status == 409 && r.code() == "conflict.onboarding_closed")
    );
    let admin = created[0].body["id"].as_str().expect("id").to_owned();
    assert_eq!(created[0].body["role"].as_str(), Some("superadmin"));

    let done = api.call("GET", "/v1/auth/onboarding", &Auth::None, None);
    assert_eq!(done.body["required"].as_bool(), Some(false));
    assert_eq!(api.call("GET", "/v1/rules", &Auth::Bearer(&alice), None).status, 200, "the gate is open");
    server.restart();
    assert_eq!(server.setup_token(), None, "onboarding never reopens");
    let session = api.login_ok(&admin, PASSWORD);
    assert_eq!(api.call("GET", "/v1/users", &Auth::Session(&session), None).status, 200);
    server.assert_no_secret_leaked();
}

#[test]
fn login_sets_a_strict_cookie_and_cookie_writes_need_same_origin_and_csrf() {
    let scn = Scenario::new("web_sessions");
    let server = Server::start(&scn, ServerOpts::default());
    let api = server.api();
    assert_eq!(api.onboard(&server.setup_token().expect("setup token"), "admin", PASSWORD).status, 201);

    let (missing, _) = api.login("nobody", PASSWORD);
    let (wrong, _) = api.login("admin", "not the right password");
    assert_eq!((missing.status, wrong.status), (401, 401));
    assert_eq!(missing.body, wrong.body, "one generic answer whether or not the user exists");

    let session = api.login_ok("admin", PASSWORD);
    let cookie = session.set_cookie.to_ascii_lowercase();
    for attribute in ["httponly", "samesite=strict", "path=/", "max-age="] {
        assert!(cookie.contains(attribute), "{attribute} missing: {}", session.set_cookie);
    }
    assert!(!cookie.contains("secure"), "plain HTTP gets no Secure cookie: {}", session.set_cookie);
    // X-Forwarded-Proto from a peer that is not a configured proxy is not believed.
    let spoofed = login_with(&api, &[("X-Forwarded-Proto".into(), "https".into())]);
    assert!(!spoofed.contains("Secure"), "{spoofed}");

    let me = api.call("GET", "/v1/auth/me", &Auth::Session(&session), None);
    assert_eq!((me.status, me.body["id"].as_str()), (200, Some("admin")));
    let new_user = json!({"id": "carol"});
    let cookie_header = ("Cookie".to_owned(), format!("portunus_session={}", session.cookie));
    let origin = ("Origin".to_owned(), format!("http://{}", api.addr()));
    let csrf = ("X-CSRF-Token".to_owned(), session.csrf.clone());
    let body = new_user.to_string();
    for (headers, why) in [
        (vec![cookie_header.clone(), origin.clone()], "no CSRF header"),
        (vec![cookie_header.clone(), csrf.clone()], "no Origin"),
        (
            vec![cookie_header.clone(), ("Origin".into(), "http://evil.example".into()), csrf.clone()],
            "cross origin",
        ),
        (vec![cookie_header.clone(), origin.clone(), ("X-CSRF-Token".into(), "wrong".into())], "wrong token"),
        (
            // DNS rebinding: the page's origin and the Host header agree, but neither is ours.
            vec![
                cookie_header.clone(),
                ("Host".into(), format!("rebind.example:{}", api.addr().port())),
                ("Origin".into(), format!("http://rebind.example:{}", api.addr().port())),
                csrf.clone(),
            ],
            "a rebinding name",
        ),
        (
            vec![cookie_header.clone(), ("Origin".into(), format!("https://{}", api.addr())), csrf.clone()],
            "another scheme",
        ),
    ] {
        let refused = api.raw("POST", "/v1/users", &headers, Some(&body));
        assert_eq!((refused.status, refused.code()), (403, "csrf_failed"), "{why}: {}", refused.text);
    }
    let created = api.call("POST", "/v1/users", &Auth::Session(&session), Some(&new_user));
    assert_eq!(created.status, 201, "{}", created.text);

    // An invalid cookie never falls back to a valid bearer token.
    let operator = server.operator_token();
    let mixed = api.raw(
        "GET",
        "/v1/users",
        &[
            ("Cookie".into(), "portunus_session=ss_0.bad".into()),
            ("Authorization".into(), format!("Bearer {operator}")),
        ],
        None,
    );
    assert_eq!((mixed.status, mixed.code()), (401, "unauthenticated"), "{}", mixed.text);

    let out = api.call("POST", "/v1/auth/logout", &Auth::Session(&session), None);
    assert_eq!(out.status, 204, "{}", out.text);
    assert!(out.header("set-cookie").is_some_and(|c| c.contains("Max-Age=0")), "logout clears the cookie");
    assert_eq!(api.call("GET", "/v1/auth/me", &Auth::Session(&session), None).status, 401);
    server.assert_no_secret_leaked();
}

#[test]
fn five_failed_logins_lock_the_account_and_the_lockout_survives_a_restart() {
    let scn = Scenario::new("login_throttle");
    let mut server = Server::start(&scn, ServerOpts::default());
    let api = server.api();
    assert_eq!(api.onboard(&server.setup_token().expect("setup token"), "admin", PASSWORD).status, 201);
    for n in 0..5 {
        let (resp, _) = api.login("admin", &format!("wrong password number {n}"));
        assert_eq!(resp.status, 401, "attempt {n}: {}", resp.text);
    }
    let (locked, _) = api.login("admin", PASSWORD);
    assert_eq!((locked.status, locked.code()), (429, "rate_limited"), "{}", locked.text);
    server.restart();
    let (still, _) = api.login("admin", PASSWORD);
    assert_eq!(
        (still.status, still.code()),
        (429, "rate_limited"),
        "the lockout is in the store: {}",
        still.text
    );
    let rows = server.audit_rows();
    let denied_logins =
        rows.iter().filter(|r| r["action"] == "auth.login" && r["outcome"] == "denied").count();
    assert_eq!(denied_logins, 7, "five wrong passwords and two locked attempts are audited");
    server.assert_no_secret_leaked();
}

#[test]
fn reset_password_works_offline_prints_a_temporary_password_once_and_forces_a_change() {
    let scn = Scenario::new("reset_password");
    let mut server = Server::start(&scn, ServerOpts::default());
    let api = server.api();
    assert_eq!(api.onboard(&server.setup_token().expect("setup token"), "admin", PASSWORD).status, 201);
    let admin = api.login_ok("admin", PASSWORD);
    let admin_auth = Auth::Session(&admin);
    api.create_user(&admin_auth, "alice", "user", Some("alice's first password"));
    let token = api.mint_token(&admin_auth, "alice");
    let old_session = api.login_ok("alice", "alice's first password");

    let refused = server.cli(&["reset-password", "alice", "--temporary"]);
    assert_eq!(refused.code, 75, "reset-password while serve runs: {refused:?}");
    assert!(refused.stderr.contains("store_in_use"), "{refused:?}");
    assert!(refused.stdout.is_empty());

    assert_eq!(server.stop(), 0);
    let reset = server.cli(&["reset-password", "alice", "--temporary"]);
    assert_eq!(reset.code, 0, "{reset:?}");
    let lines: Vec<&str> = reset.stdout.lines().collect();
    assert_eq!(lines.len(), 1, "exactly one line: {reset:?}");
    let temporary = lines[0].strip_prefix("temporary_password=").expect("temporary_password=…").to_owned();
    scn.remember_secret("temporary password", &temporary);
    let missing = server.cli(&["reset-password", "nobody"]);
    assert_eq!(missing.code, 8, "{missing:?}");
    server.start_again();

    assert_eq!(api.call("GET", "/v1/rules", &Auth::Bearer(&token), None).status, 401, "API tokens revoked");
    assert_eq!(
        api.call("GET", "/v1/auth/me", &Auth::Session(&old_session), None).status,
        401,
        "sessions ended"
    );
    let session = api.login_ok("alice", &temporary);
    let me = api.call("GET", "/v1/auth/me", &Auth::Session(&session), None);
    assert_eq!((me.status, me.body["must_change_password"].as_bool()), (200, Some(true)), "{}", me.text);
    let limited = api.call("GET", "/v1/rules", &Auth::Session(&session), None);
    assert_eq!((limited.status, limited.code()), (403, "password_change_required"), "{}", limited.text);
    let new_password = "alice's own new password";
    scn.remember_secret("password", new_password);
    let change = json!({"current_password": temporary, "new_password": new_password});
    let changed = api.call("PUT", "/v1/auth/password", &Auth::Session(&session), Some(&change));
    assert_eq!(changed.status, 204, "{}", changed.text);
    assert_eq!(api.call("GET", "/v1/rules", &Auth::Session(&session), None).status, 200);
    api.login_ok("alice", new_password);
    server.assert_no_secret_leaked();
}

#[test]
fn bootstrap_superadmin_gives_automation_a_token_and_closes_onboarding() {
    let scn = Scenario::new("bootstrap_superadmin");
    let dir = scn.path("srv");
    let first = crate::harness::run_server_cli(
        &scn,
        &["--data-dir", &dir.to_string_lossy(), "bootstrap-superadmin"],
        &[],
    );
    assert_eq!(first.code, 0, "{first:?}");
    let token = first.stdout.trim().strip_prefix("api_token=").expect("api_token=…").to_owned();
    scn.remember_secret("bootstrap API token", token.split_once('.').map_or(token.as_str(), |(_, s)| s));

    let mut server = Server::start_in(&scn, &dir, ServerOpts::default());
    assert_eq!(server.setup_token(), None, "no onboarding once a superadmin exists");
    let api = server.api();
    let me = api.call("GET", "/v1/auth/me", &Auth::Bearer(&token), None);
    assert_eq!(
        (me.status, me.body["id"].as_str(), me.body["role"].as_str()),
        (200, Some("_superadmin"), Some("superadmin"))
    );
    assert_eq!(api.call("GET", "/v1/users", &Auth::Bearer(&token), None).status, 200);
    assert_eq!(server.stop(), 0);
    let again = server.cli(&["bootstrap-superadmin"]);
    assert_eq!(again.code, 5, "{again:?}");
    assert!(again.stderr.contains("conflict.user_exists"), "{again:?}");
    server.start_again();
    server.assert_no_secret_leaked();
}

/// Logs in as `admin` with extra headers; returns the `Set-Cookie` header (its secrets are
/// remembered so the log checks can look for them).
fn login_with(api: &crate::harness::Api, headers: &[(String, String)]) -> String {
    let login = serde_json::json!({"user_id": "admin", "password": PASSWORD});
    let resp = api.raw("POST", "/v1/auth/login", headers, Some(&login.to_string()));
    assert_eq!(resp.status, 200, "{}", resp.text);
    let cookie = resp.header("set-cookie").expect("cookie").to_owned();
    if let Some(value) = cookie.split(';').next().and_then(|kv| kv.strip_prefix("portunus_session=")) {
        api.scenario().remember_secret("session cookie", value.split_once('.').map_or(value, |(_, s)| s));
    }
    api.scenario().remember_secret("CSRF token", resp.body["csrf_token"].as_str().expect("csrf"));
    cookie
}

#[test]
fn behind_a_configured_proxy_its_forwarded_scheme_counts_and_only_the_public_origin_may_write() {
    let scn = Scenario::new("web_behind_proxy");
    let dir = scn.path("srv");
    std::fs::create_dir_all(&dir).expect("data dir");
    std::fs::write(
        dir.join("server.toml"),
        "public_origins = [\"https://ops.example.test\"]\ntrusted_proxies = [\"127.0.0.1\"]\n",
    )
    .expect("server.toml");
    let server = Server::start_in(&scn, &dir, ServerOpts::default());
    let api = server.api();
    assert_eq!(api.onboard(&server.setup_token().expect("setup token"), "admin", PASSWORD).status, 201);
    // The proxy (127.0.0.1, trusted) says the browser used HTTPS: the cookie is Secure.
    let forwarded = [
        ("X-Forwarded-Proto".to_owned(), "https".to_owned()),
        ("X-Forwarded-For".to_owned(), "198.51.100.7".to_owned()),
    ];
    let cookie = login_with(&api, &forwarded);
    assert!(cookie.contains("; Secure"), "{cookie}");
    let session = api.login_ok("admin", PASSWORD);
    let cookie_header = ("Cookie".to_owned(), format!("portunus_session={}", session.cookie));
    let csrf = ("X-CSRF-Token".to_owned(), session.csrf.clone());
    let write = |origin: &str, user: &str| {
        let headers = [cookie_header.clone(), csrf.clone(), ("Origin".to_owned(), origin.to_owned())];
        api.raw("POST", "/v1/users", &headers, Some(&json!({"id": user}).to_string()))
    };
    // Only the configured public origin may write; the listener's own address no longer may.
    let direct = write(&format!("http://{}", api.addr()), "dave");
    assert_eq!((direct.status, direct.code()), (403, "csrf_failed"), "{}", direct.text);
    let public = write("https://ops.example.test", "erin");
    assert_eq!(public.status, 201, "{}", public.text);
    // The audit trail names the client the proxy forwarded for, not the proxy.
    let operator = server.operator_token();
    // Refusals are audited write-behind: poll.
    let denied_remotes = || -> Vec<String> {
        let page = api.call("GET", "/v1/audit?outcome=denied", &Auth::Bearer(&operator), None);
        let records = page.body["records"].as_array().cloned().unwrap_or_default();
        records
            .iter()
            .filter(|r| r["code"] == "csrf_failed")
            .filter_map(|r| r["remote"].as_str().map(str::to_owned))
            .collect()
    };
    let first = crate::harness::wait_until("the refused write's record", || {
        let remotes = denied_remotes();
        (!remotes.is_empty()).then_some(remotes)
    });
    assert_eq!(first, ["127.0.0.1"], "no X-Forwarded-For was sent with it");
    let forwarded_write = {
        let headers = [
            cookie_header.clone(),
            csrf.clone(),
            ("Origin".to_owned(), "https://evil.example".to_owned()),
            // What the client sent, then the line the proxy added: the proxy's word counts.
            ("X-Forwarded-For".to_owned(), "203.0.113.66".to_owned()),
            ("X-Forwarded-For".to_owned(), "198.51.100.7".to_owned()),
        ];
        api.raw("POST", "/v1/users", &headers, Some(&json!({"id": "frank"}).to_string()))
    };
    assert_eq!(forwarded_write.status, 403, "{}", forwarded_write.text);
    crate::harness::wait_until("the forwarded client in the record", || {
        denied_remotes().iter().any(|r| r == "198.51.100.7").then_some(())
    });
    assert!(!denied_remotes().iter().any(|r| r == "203.0.113.66"), "a client-sent address was believed");
    server.assert_no_secret_leaked();
}
