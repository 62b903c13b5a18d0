//! Users and grants through the CLI (the same endpoints the API serves): a user pushes only
//! inside a grant, sees only their rules, and loses the rules when the grant or the user
//! goes — on the client too. Plus the audit trail's query and durability, the
//! advertised-endpoint setting, and names that could pass for other names.

use serde_json::{Value, json};

use crate::harness::{Auth, Backend, ClientOpts, Scenario, connect, free_port, roundtrip, server_with_edge};

fn json_of(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

#[test]
fn users_and_grants_through_the_cli_bound_what_a_user_may_push_and_see() {
    let scn = Scenario::new("tenants_cli");
    let (server, client) = server_with_edge(&scn, &ClientOpts::default());
    // A superadmin opens the gate for user tokens.
    assert_eq!(server.cli_ok(&["user-add", "root", "--role", "superadmin"]).trim(), "root");
    let added = server.cli_ok(&["user-add", "alice", "--api-token"]);
    let alice = added.trim().strip_prefix("api_token=").expect("api_token=…").to_owned();
    scn.remember_secret("API token", alice.split_once('.').map_or(alice.as_str(), |(_, s)| s));
    server.cli_ok(&["user-add", "bob"]);

    let users = json_of(&server.cli_ok(&["user-list", "--format", "json"]));
    let ids: Vec<&str> = users.as_array().expect("array").iter().filter_map(|u| u["id"].as_str()).collect();
    assert_eq!(ids, ["alice", "bob", "root"]);
    let got = json_of(&server.cli_ok(&["user-get", "alice", "--format", "json"]));
    assert_eq!(got["role"].as_str(), Some("user"));
    assert!(server.cli_ok(&["user-list"]).contains("superadmin"), "the table shows roles");

    let backend = Backend::echo();
    let (p1, p2) = (free_port(), free_port());
    let grant = server
        .cli_ok(&["grant-add", "alice", "edge-01", &format!("{p1}-{p1}"), "--protocol", "tcp"])
        .trim()
        .to_owned();
    assert!(grant.starts_with("gr_"), "{grant}");
    let listed = json_of(&server.cli_ok(&["grant-list", "--user", "alice", "--format", "json"]));
    assert_eq!(listed[0]["id"].as_str(), Some(grant.as_str()));

    let as_alice = [("PORTUNUS_OPERATOR_TOKEN", alice.as_str())];
    let pushed =
        server.cli_with_env(&["push-rule", "edge-01", &p1.to_string(), &backend.target()], &as_alice);
    assert_eq!(pushed.code, 0, "{pushed:?}");
    let rule_id = pushed.stdout.trim().to_owned();
    roundtrip(&mut connect(p1), b"inside the grant");
    let outside =
        server.cli_with_env(&["push-rule", "edge-01", &p2.to_string(), &backend.target()], &as_alice);
    assert_eq!(outside.code, 6, "{outside:?}");
    assert!(outside.stderr.contains("port_outside_grant"), "{outside:?}");
    let udp = server.cli_with_env(
        &["push-rule", "edge-01", &p1.to_string(), "127.0.0.1:9", "--protocol", "udp"],
        &as_alice,
    );
    assert_eq!(udp.code, 6, "{udp:?}");
    assert!(udp.stderr.contains("protocol_not_granted"), "{udp:?}");
    let operators = server.push_rule("edge-01", p2, &backend.target());

    let mine = server.cli_with_env(&["list-rules", "--format", "json"], &as_alice);
    let mine = json_of(&mine.stdout);
    let ids: Vec<String> = mine.as_array().expect("array").iter().map(|r| r["id"].to_string()).collect();
    assert_eq!(ids, std::slice::from_ref(&rule_id), "alice sees only her rule");
    let by_owner = json_of(&server.cli_ok(&["list-rules", "--owner", "_operator", "--format", "json"]));
    assert_eq!(by_owner.as_array().expect("array").len(), 1);
    // Another owner's rule is not found, exactly as a rule that does not exist.
    let theirs = server.cli_with_env(&["rule-stats", &operators.to_string()], &as_alice);
    let absent = server.cli_with_env(&["rule-stats", "987654321"], &as_alice);
    assert_eq!((theirs.code, absent.code), (8, 8), "{theirs:?} {absent:?}");
    assert!(theirs.stderr.contains("rule_not_found"), "{theirs:?}");
    assert_eq!(theirs.stderr.replace(&operators.to_string(), "ID"), absent.stderr.replace("987654321", "ID"));
    let stats = server.cli_with_env(&["rule-stats", &rule_id, "--format", "json"], &as_alice);
    assert_eq!(stats.code, 0, "{stats:?}");

    // Revoking the grant removes the rule, on the client too.
    server.cli_ok(&["grant-revoke", &grant]);
    client.proc().wait_event("rule.unbound", &[("rule", &rule_id)]);
    assert!(server.rule(rule_id.parse().expect("id")).is_none());
    assert!(server.rule(operators).is_some(), "the operator's rule is not grant-bound");

    // Removing a user removes everything they had.
    let again = server.cli_ok(&["grant-add", "alice", "*", &format!("{p1}"), "--protocol", "tcp"]);
    assert!(again.starts_with("gr_"));
    let pushed =
        server.cli_with_env(&["push-rule", "edge-01", &p1.to_string(), &backend.target()], &as_alice);
    assert_eq!(pushed.code, 0, "{pushed:?}");
    let second = pushed.stdout.trim().to_owned();
    server.cli_ok(&["user-remove", "alice"]);
    client.proc().wait_event("rule.unbound", &[("rule", &second)]);
    let gone = server.cli(&["user-get", "alice"]);
    assert_eq!(gone.code, 8, "{gone:?}");
    assert_eq!(server.cli_with_env(&["list-rules"], &as_alice).code, 4, "the token went with the user");
    server.assert_no_secret_leaked();
}

#[test]
fn the_audit_trail_pages_filters_refuses_bad_parameters_and_survives_a_kill() {
    let scn = Scenario::new("audit_trail");
    let (mut server, _client) = server_with_edge(&scn, &ClientOpts::default());
    let api = server.api();
    let operator = server.operator_token();
    let op = Auth::Bearer(&operator);
    api.create_user(&op, "root", "superadmin", None);
    api.create_user(&op, "alice", "user", None);
    let alice = api.mint_token(&op, "alice");
    let denied = api.call("GET", "/v1/users", &Auth::Bearer(&alice), None);
    assert_eq!(denied.status, 403);
    assert_eq!(api.call("GET", "/v1/rules", &Auth::Bearer("tk_0000000000000000.nope"), None).status, 401);

    // A refused request's record is written behind: it reaches the trail within 200 ms.
    let rows = crate::harness::wait_until("the refusal's record", || {
        let rows = server.audit_rows();
        rows.iter().any(|r| r["action"] == "auth.request").then_some(rows)
    });
    let actions: Vec<&str> = rows.iter().filter_map(|r| r["action"].as_str()).collect();
    for expected in ["client.enroll", "user.create", "token.create", "user.list", "auth.request"] {
        assert!(actions.contains(&expected), "{expected} is not audited: {actions:?}");
    }
    let denial = rows.iter().find(|r| r["action"] == "user.list").expect("the denial");
    assert_eq!((denial["actor"].as_str(), denial["outcome"].as_str()), (Some("alice"), Some("denied")));
    assert_eq!(denial["code"].as_str(), Some("not_owner"));
    assert_eq!(denial["remote"].as_str(), Some("127.0.0.1"));
    assert!(denial["at"].as_str().is_some_and(|t| t.ends_with('Z')));

    let only_denied = api.call("GET", "/v1/audit?outcome=denied", &op, None);
    assert!(
        only_denied.body["records"].as_array().expect("records").iter().all(|r| r["outcome"] == "denied")
    );
    let first = api.call("GET", "/v1/audit?limit=1", &op, None);
    let cursor = first.body["next_cursor"].as_str().expect("a full page has a cursor").to_owned();
    let second = api.call("GET", &format!("/v1/audit?limit=1&cursor={cursor}"), &op, None);
    assert!(second.body["records"][0]["seq"].as_u64() > first.body["records"][0]["seq"].as_u64());
    let future = api.call("GET", "/v1/audit?from=2999-01-01T00:00:00Z", &op, None);
    assert_eq!(future.body["records"].as_array().map(Vec::len), Some(0));
    for (query, status, code) in [
        ("cursor=zz", 400, "validation.invalid_cursor"),
        ("from=2026-02-01T00:00:00Z&to=2026-01-01T00:00:00Z", 422, "validation.invalid_time_range"),
        ("from=yesterday", 400, "invalid_request"),
        ("outcome=maybe", 400, "invalid_request"),
        ("limit=0", 400, "validation.out_of_range"),
    ] {
        let bad = api.call("GET", &format!("/v1/audit?{query}"), &op, None);
        assert_eq!((bad.status, bad.code()), (status, code), "{query}: {}", bad.text);
    }

    let before = server.audit_rows();
    server.kill();
    server.start_again();
    let after = server.audit_rows();
    assert!(after.len() >= before.len());
    assert_eq!(&after[..before.len()], &before[..], "every acknowledged record survived kill -9");
    server.assert_no_secret_leaked();
}

#[test]
fn the_advertised_endpoint_override_is_validated_against_the_certificate_and_used_by_enrollment() {
    let scn = Scenario::new("advertised_endpoint_setting");
    let server = crate::harness::Server::start(&scn, crate::harness::ServerOpts::default());
    let api = server.api();
    let operator = server.operator_token();
    let op = Auth::Bearer(&operator);
    let path = "/v1/settings/advertised-endpoint";
    let initial = api.call("GET", path, &op, None);
    assert_eq!(initial.status, 200, "{}", initial.text);
    assert!(
        initial.body["effective"].as_str().is_some_and(|e| e.starts_with("127.0.0.1:")),
        "{}",
        initial.text
    );
    for (value, code) in [
        ("https://proxy.example.com:443", "endpoint_invalid"),
        ("proxy.example.com", "endpoint_invalid"),
        ("not-in-the-cert.example.com:7443", "endpoint_not_in_cert_san"),
    ] {
        let refused = api.call("PUT", path, &op, Some(&json!({"endpoint": value})));
        assert_eq!((refused.status, refused.code()), (422, code), "{value}: {}", refused.text);
    }
    assert_eq!(
        api.call("GET", path, &op, None).body["override"],
        Value::Null,
        "a refused value is not stored"
    );
    let set = api.call("PUT", path, &op, Some(&json!({"endpoint": "localhost:34567"})));
    assert_eq!(
        (set.status, set.body["effective"].as_str(), set.body["source"].as_str()),
        (200, Some("localhost:34567"), Some("override"))
    );
    let uri = server.enroll("edge-01");
    assert!(uri.starts_with("portunus://localhost:34567/"), "{uri}");
    let cleared = api.call("PUT", path, &op, Some(&json!({"endpoint": null})));
    assert_eq!(cleared.body["override"], Value::Null);
    scn.assert_logs_free_of_secrets();
}

#[test]
fn names_with_bidi_or_invisible_characters_are_refused_everywhere_the_api_takes_one() {
    let scn = Scenario::new("names_hidden_characters");
    let (server, _client) = server_with_edge(&scn, &ClientOpts::default());
    let api = server.api();
    let operator = server.operator_token();
    let op = Auth::Bearer(&operator);
    api.create_user(&op, "alice", "user", None);
    let long = format!("\u{202E}{}", "n".repeat(200));
    let rule = |name: &str| json!({"client": "edge-01", "rule": {"name": name, "listen_port": free_port(), "target": "127.0.0.1:9"}});
    let cases: [(&str, &str, Value); 7] = [
        ("POST", "/v1/clients", json!({"name": "edge\u{202E}10-"})),
        ("PATCH", "/v1/clients/edge-01", json!({"name": "edge\u{200B}01"})),
        ("POST", "/v1/users", json!({"id": "bob\u{2066}"})),
        ("POST", "/v1/users/alice/tokens", json!({"name": "ci\u{FEFF}"})),
        ("POST", "/v1/rules", rule("web\u{2067}admin\u{2069}")),
        ("POST", "/v1/rules", rule("\u{200F}web")),
        ("POST", "/v1/rules", rule(&long)),
    ];
    for (method, path, body) in cases {
        let refused = api.call(method, path, &op, Some(&body));
        assert_eq!(
            (refused.status, refused.code()),
            (400, "validation.invalid_name"),
            "{method} {path}: {}",
            refused.text
        );
        let message = refused.body["error"]["message"].as_str().expect("message");
        assert!(message.contains("\\u{"), "the hidden character shows escaped: {message}");
        assert!(!message.contains(&"n".repeat(65)), "at most 64 characters are quoted: {message}");
    }
    assert_eq!(server.clients().len(), 1, "nothing was created");
    assert!(server.rules().is_empty(), "nothing was stored");
    assert!(server.client("edge-01").is_some(), "the rename was refused");
}
