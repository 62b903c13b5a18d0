//! The operator surface of rate limits on the real binaries: each validation code answers
//! alike through the API and the CLI and stores nothing; owner envelopes go round the CLI
//! (set, get, list, replace, delete) with their audit rows, and a user reads only their own;
//! a client that announces no rate-limit support refuses caps with the capability code; and
//! `PATCH /v1/rules/{id}` replaces a rule's caps as `GET /v1/rules/{id}` then shows. No
//! traffic here: what caps do to forwarded bytes is `rate_limits.rs`.

use serde_json::{Value, json};

use crate::harness::{Api, Auth, ClientOpts, Scenario, Server, free_port, server_with_edge};

/// Runs an operator command that must fail with `code` (printed on stderr) and exit `status`.
fn cli_fails(server: &Server, args: &[&str], env: &[(&str, &str)], code: &str, status: i32) {
    let out = server.cli_with_env(args, env);
    assert_eq!(out.code, status, "`portunus-server {}`: {out:?}", args.join(" "));
    assert!(out.stderr.contains(code), "`portunus-server {}` names {code}: {out:?}", args.join(" "));
}

/// Parses a command's JSON output.
fn json_of(stdout: &str) -> Value {
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

/// Pushes a rule through the API as `auth` and returns its id.
fn push(api: &Api, auth: &Auth<'_>, port: u16, rate_limit: Option<Value>) -> String {
    let mut rule = json!({"listen_port": port, "target": "127.0.0.1:9"});
    if let Some(limits) = rate_limit {
        rule["rate_limit"] = limits;
    }
    let pushed = api.call("POST", "/v1/rules", auth, Some(&json!({"client": "edge-01", "rule": rule})));
    assert_eq!(pushed.status, 201, "{}", pushed.text);
    pushed.body["id"].as_u64().expect("rule id").to_string()
}

#[test]
fn each_validation_code_answers_alike_through_the_api_and_the_cli_and_stores_nothing() {
    let scn = Scenario::new("rate_limit_api_validation");
    let (server, _client) = server_with_edge(&scn, &ClientOpts::default());
    let api = server.api();
    let operator = server.operator_token();
    let op = Auth::Bearer(&operator);
    api.users_with_tokens(&op, &["alice"]);
    api.grant_port(&op, "alice", free_port());
    let rule = push(&api, &op, free_port(), None);
    let envelope = "/v1/users/alice/owner-caps/edge-01";

    // Every body is refused by the rule's PATCH, by the envelope's PUT and inside a push.
    let invalid = [
        (json!({"bandwidth_in_bps": 0}), "validation.zero_cap"),
        (json!({"concurrent_connections": 0}), "validation.zero_cap"),
        (json!({"new_connections_per_sec": 0, "new_connections_burst": 5}), "validation.zero_cap"),
        (json!({"bandwidth_out_burst_bytes": 100_000}), "validation.burst_without_rate"),
        (json!({"new_connections_burst": 10}), "validation.burst_without_rate"),
        (
            json!({"new_connections_per_sec": 100, "new_connections_burst": 1}),
            "validation.burst_out_of_range",
        ),
        (
            json!({"new_connections_per_sec": 100, "new_connections_burst": 6_001}),
            "validation.burst_out_of_range",
        ),
        (
            json!({"bandwidth_in_bps": 10_000_000, "bandwidth_in_burst_bytes": 65_536}),
            "validation.burst_out_of_range",
        ),
        (json!({"bandwidth_in_bps": 2_000_000_000_000_u64}), "validation.out_of_range"),
    ];
    let n_rules = || api.call("GET", "/v1/rules", &op, None).body.as_array().map_or(0, Vec::len);
    for (limits, code) in &invalid {
        let patched =
            api.call("PATCH", &format!("/v1/rules/{rule}"), &op, Some(&json!({"rate_limit": limits})));
        assert_eq!((patched.status, patched.code()), (400, *code), "PATCH {limits}: {}", patched.text);
        let set = api.call("PUT", envelope, &op, Some(limits));
        assert_eq!((set.status, set.code()), (400, *code), "PUT {limits}: {}", set.text);
        let body = json!({"client": "edge-01", "rule": {"listen_port": free_port(), "target": "127.0.0.1:9", "rate_limit": limits}});
        let pushed = api.call("POST", "/v1/rules", &op, Some(&body));
        assert_eq!((pushed.status, pushed.code()), (400, *code), "push {limits}: {}", pushed.text);
        assert!(pushed.body["error"].get("rule_id").is_none(), "nothing stored: {}", pushed.text);
    }
    // An empty envelope is refused; on a rule an empty object is the way to lift its caps.
    let empty = api.call("PUT", envelope, &op, Some(&json!({})));
    assert_eq!((empty.status, empty.code()), (400, "validation.empty_envelope"), "{}", empty.text);
    let lifted = api.call("PATCH", &format!("/v1/rules/{rule}"), &op, Some(&json!({"rate_limit": {}})));
    assert_eq!(lifted.status, 200, "{}", lifted.text);
    // Unknown or missing fields are the request's shape, not a cap.
    for (method, path, body) in [
        ("PUT", envelope.to_owned(), json!({"bandwidth_bps": 1_000})),
        ("PATCH", format!("/v1/rules/{rule}"), json!({"rate_limit": {"bandwidth_bps": 1_000}})),
        ("PATCH", format!("/v1/rules/{rule}"), json!({"rate_limit": {}, "name": "x"})),
        ("PATCH", format!("/v1/rules/{rule}"), json!({})),
        ("PATCH", format!("/v1/rules/{rule}"), json!({"rate_limit": {"concurrent_connections": -1}})),
    ] {
        let refused = api.call(method, &path, &op, Some(&body));
        assert_eq!(
            (refused.status, refused.code()),
            (400, "invalid_request"),
            "{method} {body}: {}",
            refused.text
        );
    }

    // The CLI's flags reach the same checks, exit 2 and name the code.
    let id = rule.as_str();
    let port = free_port().to_string();
    let cases: [(&[&str], &str); 6] = [
        (&["set-rule-caps", id, "--bandwidth-in-bps", "0"], "validation.zero_cap"),
        (&["set-rule-caps", id, "--bandwidth-out-burst", "100000"], "validation.burst_without_rate"),
        (
            &[
                "owner-cap",
                "set",
                "alice",
                "edge-01",
                "--new-connections-per-sec",
                "100",
                "--new-connections-burst",
                "1",
            ],
            "validation.burst_out_of_range",
        ),
        (&["owner-cap", "set", "alice", "edge-01", "--concurrent-connections", "0"], "validation.zero_cap"),
        (&["owner-cap", "set", "alice", "edge-01"], "validation.empty_envelope"),
        (
            &["push-rule", "edge-01", &port, "127.0.0.1:9", "--bandwidth-in-burst", "70000"],
            "validation.burst_without_rate",
        ),
    ];
    for (args, code) in cases {
        cli_fails(&server, args, &[], code, 2);
    }

    // Nothing of it was stored: no envelope, the one rule, uncapped.
    assert_eq!(api.call("GET", "/v1/owner-caps", &op, None).body, json!([]));
    assert_eq!(n_rules(), 1);
    let shown = api.call("GET", &format!("/v1/rules/{rule}"), &op, None);
    assert!(shown.body["spec"].get("rate_limit").is_none(), "{}", shown.text);
    assert_eq!(shown.body["state"], "active", "{}", shown.text);
}

#[test]
fn owner_envelopes_go_round_the_cli_with_audit_rows_and_a_user_reads_only_their_own() {
    let scn = Scenario::new("rate_limit_api_envelopes");
    let (server, _client) = server_with_edge(&scn, &ClientOpts::default());
    let api = server.api();
    let operator = server.operator_token();
    let op = Auth::Bearer(&operator);
    let tokens = api.users_with_tokens(&op, &["alice", "bob", "dave"]);
    let (alice, bob) = (Auth::Bearer(&tokens[0]), Auth::Bearer(&tokens[1]));
    let as_alice = [("PORTUNUS_OPERATOR_TOKEN", tokens[0].as_str())];
    let as_bob = [("PORTUNUS_OPERATOR_TOKEN", tokens[1].as_str())];
    api.grant_port(&op, "alice", free_port());
    api.grant_port(&op, "bob", free_port());

    // The pair must exist and be granted; dave has no grant.
    cli_fails(
        &server,
        &["owner-cap", "set", "nobody", "edge-01", "--concurrent-connections", "5"],
        &[],
        "user_not_found",
        8,
    );
    cli_fails(
        &server,
        &["owner-cap", "set", "dave", "edge-01", "--concurrent-connections", "5"],
        &[],
        "client_not_granted",
        6,
    );
    cli_fails(
        &server,
        &["owner-cap", "set", "alice", "edge-99", "--concurrent-connections", "5"],
        &[],
        "client_not_found",
        8,
    );

    // Set: every burst comes back written out (one second of the rate, at least 64 KiB).
    let set = json_of(&server.cli_ok(&[
        "owner-cap",
        "set",
        "alice",
        "edge-01",
        "--bandwidth-in-bps",
        "1000000",
        "--bandwidth-out-bps",
        "1000",
        "--new-connections-per-sec",
        "20",
        "--concurrent-connections",
        "50",
        "--format",
        "json",
    ]));
    let view = &set[0];
    assert_eq!(view["user"], "alice", "{set}");
    let edge_id = api.call("GET", "/v1/clients/edge-01", &op, None).body["id"].clone();
    assert_eq!(view["client"], edge_id, "the client by id: {set}");
    assert_eq!(
        view["caps"],
        json!({
            "bandwidth_in_bps": 1_000_000, "bandwidth_in_burst_bytes": 1_000_000,
            "bandwidth_out_bps": 1_000, "bandwidth_out_burst_bytes": 65_536,
            "new_connections_per_sec": 20, "new_connections_burst": 20,
            "concurrent_connections": 50
        }),
        "{set}"
    );
    let got = json_of(&server.cli_ok(&["owner-cap", "get", "alice", "edge-01", "--format", "json"]));
    assert_eq!(got[0]["caps"], view["caps"], "{got}");
    let table = server.cli_ok(&["owner-cap", "get", "alice", "edge-01"]);
    assert!(table.starts_with("USER") && table.contains("IN_BYTES/S"), "{table}");
    assert!(
        table.lines().nth(1).is_some_and(|row| row.starts_with("alice") && row.contains("1000000")),
        "{table}"
    );
    let listed = json_of(&server.cli_ok(&["owner-cap", "list", "--format", "json"]));
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    let of_bob = json_of(&server.cli_ok(&["owner-cap", "list", "--user", "bob", "--format", "json"]));
    assert_eq!(of_bob, json!([]));

    // Alice reads her own, through the API and the CLI, but never sets one.
    let own = api.call("GET", "/v1/users/alice/owner-caps/edge-01", &alice, None);
    assert_eq!((own.status, own.body["caps"].clone()), (200, view["caps"].clone()), "{}", own.text);
    let mine = server.cli_with_env(&["owner-cap", "get", "alice", "edge-01", "--format", "json"], &as_alice);
    assert_eq!((mine.code, json_of(&mine.stdout)[0]["caps"].clone()), (0, view["caps"].clone()), "{mine:?}");
    assert_eq!(api.call("GET", "/v1/owner-caps", &alice, None).body.as_array().map(Vec::len), Some(1));
    let by_alice = api.call(
        "PUT",
        "/v1/users/alice/owner-caps/edge-01",
        &alice,
        Some(&json!({"concurrent_connections": 500})),
    );
    assert_eq!((by_alice.status, by_alice.code()), (403, "not_owner"), "{}", by_alice.text);
    cli_fails(
        &server,
        &["owner-cap", "set", "alice", "edge-01", "--concurrent-connections", "500"],
        &as_alice,
        "not_owner",
        6,
    );
    cli_fails(&server, &["owner-cap", "delete", "alice", "edge-01"], &as_alice, "not_owner", 6);

    // Bob hears about alice's envelope exactly what a missing one answers.
    let theirs = api.call("GET", "/v1/users/alice/owner-caps/edge-01", &bob, None);
    let missing = api.call("GET", "/v1/users/bob/owner-caps/edge-01", &bob, None);
    assert_eq!((theirs.status, theirs.code()), (404, "owner_caps_not_found"), "{}", theirs.text);
    assert_eq!((missing.status, missing.code()), (404, "owner_caps_not_found"), "{}", missing.text);
    assert_eq!(theirs.text.replace("alice", "bob"), missing.text);
    cli_fails(&server, &["owner-cap", "get", "alice", "edge-01"], &as_bob, "owner_caps_not_found", 8);
    assert_eq!(api.call("GET", "/v1/owner-caps", &bob, None).body, json!([]));
    let filtered = api.call("GET", "/v1/owner-caps?user=alice", &bob, None);
    assert_eq!(filtered.status, 403, "{}", filtered.text);

    // Replacing sets the envelope as a whole: caps not given are lifted, creation time kept.
    let replaced = json_of(&server.cli_ok(&[
        "owner-cap",
        "set",
        "alice",
        "edge-01",
        "--concurrent-connections",
        "30",
        "--format",
        "json",
    ]));
    assert_eq!(replaced[0]["caps"], json!({"concurrent_connections": 30}), "{replaced}");
    assert_eq!(replaced[0]["created_at"], view["created_at"], "{replaced}");

    // Delete, then every operation on the pair answers not found.
    let deleted = server.cli(&["owner-cap", "delete", "alice", "edge-01"]);
    assert_eq!(deleted.code, 0, "{deleted:?}");
    assert!(deleted.stderr.contains("removed"), "{deleted:?}");
    cli_fails(&server, &["owner-cap", "get", "alice", "edge-01"], &[], "owner_caps_not_found", 8);
    cli_fails(&server, &["owner-cap", "delete", "alice", "edge-01"], &[], "owner_caps_not_found", 8);
    let gone = api.call("DELETE", "/v1/users/alice/owner-caps/edge-01", &op, None);
    assert_eq!((gone.status, gone.code()), (404, "owner_caps_not_found"), "{}", gone.text);
    assert_eq!(api.call("GET", "/v1/owner-caps", &op, None).body, json!([]));

    // The audit trail has each write, refused or not, under the pair.
    let rows = server.audit_rows();
    let with = |action: &str, outcome: &str| {
        rows.iter()
            .filter(|r| r["action"] == action && r["outcome"] == outcome && r["target"] == "alice edge-01")
            .count()
    };
    assert_eq!(with("owner_caps.set", "success"), 2, "set and replaced");
    assert_eq!(with("owner_caps.set", "denied"), 2, "alice's two attempts (API and CLI)");
    assert_eq!(with("owner_caps.delete", "success"), 1);
    assert!(with("owner_caps.delete", "denied") >= 1, "alice's delete");
    assert!(
        rows.iter().any(|r| r["action"] == "owner_caps.set" && r["code"] == "client_not_granted"),
        "the refused set for dave is audited"
    );
}

#[test]
fn a_client_without_rate_limit_support_refuses_caps_with_the_capability_code() {
    let scn = Scenario::new("rate_limit_api_gate");
    let edge = ClientOpts::default().env("PORTUNUS_CLIENT_CAPABILITIES", "tcp,udp");
    let (server, _client) = server_with_edge(&scn, &edge);
    let api = server.api();
    let operator = server.operator_token();
    let op = Auth::Bearer(&operator);
    api.users_with_tokens(&op, &["alice"]);
    api.grant_port(&op, "alice", free_port());
    let shown = api.call("GET", "/v1/clients/edge-01", &op, None);
    assert_eq!(shown.body["capabilities"], json!(["tcp", "udp"]), "{}", shown.text);

    // A capped push is refused and stores nothing; through the CLI it exits 3.
    let body = json!({"client": "edge-01", "rule": {"listen_port": free_port(), "target": "127.0.0.1:9", "rate_limit": {"concurrent_connections": 5}}});
    let pushed = api.call("POST", "/v1/rules", &op, Some(&body));
    assert_eq!((pushed.status, pushed.code()), (422, "rate_limit_unsupported_by_client"), "{}", pushed.text);
    let port = free_port().to_string();
    let out = server.cli(&["push-rule", "edge-01", &port, "127.0.0.1:9", "--bandwidth-in-bps", "1000000"]);
    assert_eq!(out.code, 3, "{out:?}");
    assert!(
        out.stderr.contains("rate_limit_unsupported_by_client") && out.stdout.trim().is_empty(),
        "{out:?}"
    );
    assert_eq!(api.call("GET", "/v1/rules", &op, None).body, json!([]));

    // An envelope for the client is refused alike.
    let set = api.call(
        "PUT",
        "/v1/users/alice/owner-caps/edge-01",
        &op,
        Some(&json!({"concurrent_connections": 5})),
    );
    assert_eq!((set.status, set.code()), (422, "rate_limit_unsupported_by_client"), "{}", set.text);
    cli_fails(
        &server,
        &["owner-cap", "set", "alice", "edge-01", "--new-connections-per-sec", "10"],
        &[],
        "rate_limit_unsupported_by_client",
        3,
    );
    assert_eq!(api.call("GET", "/v1/owner-caps", &op, None).body, json!([]));

    // An uncapped rule still works; capping it is refused, lifting (nothing) is not.
    let rule = push(&api, &op, free_port(), None);
    let capped = api.call(
        "PATCH",
        &format!("/v1/rules/{rule}"),
        &op,
        Some(&json!({"rate_limit": {"concurrent_connections": 5}})),
    );
    assert_eq!((capped.status, capped.code()), (422, "rate_limit_unsupported_by_client"), "{}", capped.text);
    cli_fails(
        &server,
        &["set-rule-caps", &rule, "--concurrent-connections", "5"],
        &[],
        "rate_limit_unsupported_by_client",
        3,
    );
    let lifted = server.cli(&["set-rule-caps", &rule]);
    assert_eq!(lifted.code, 0, "{lifted:?}");
    let shown = api.call("GET", &format!("/v1/rules/{rule}"), &op, None);
    assert!(shown.body["spec"].get("rate_limit").is_none(), "{}", shown.text);
}

#[test]
fn patch_replaces_a_rules_caps_as_get_shows_and_an_empty_object_lifts_them() {
    let scn = Scenario::new("rate_limit_api_patch");
    let (server, client) = server_with_edge(&scn, &ClientOpts::default());
    let api = server.api();
    let operator = server.operator_token();
    let op = Auth::Bearer(&operator);
    let tokens = api.users_with_tokens(&op, &["alice"]);
    let alice = Auth::Bearer(&tokens[0]);

    // Pushed with a cap through the CLI: the spec shows it with its burst written out.
    let port = free_port().to_string();
    let id = server.cli_ok(&["push-rule", "edge-01", &port, "127.0.0.1:9", "--bandwidth-in-bps", "2000000"]);
    let id = id.trim().to_owned();
    let path = format!("/v1/rules/{id}");
    let spec = |resp: &Value| resp["spec"]["rate_limit"].clone();
    let first = api.call("GET", &path, &op, None);
    assert_eq!(
        spec(&first.body),
        json!({"bandwidth_in_bps": 2_000_000, "bandwidth_in_burst_bytes": 2_000_000})
    );

    // PATCH replaces the caps as a whole (the bandwidth cap is gone); GET shows the same.
    let patched = api.call(
        "PATCH",
        &path,
        &op,
        Some(&json!({"rate_limit": {"new_connections_per_sec": 50, "concurrent_connections": 10}})),
    );
    assert_eq!(patched.status, 200, "{}", patched.text);
    let want =
        json!({"new_connections_per_sec": 50, "new_connections_burst": 50, "concurrent_connections": 10});
    assert_eq!(spec(&patched.body), want, "{}", patched.text);
    let now = api.call("GET", &path, &op, None);
    assert_eq!(spec(&now.body), want, "{}", now.text);
    assert_eq!(now.body["state"], "active", "a change of caps keeps the rule's state");
    assert_eq!(now.body["spec"]["listen_port"], first.body["spec"]["listen_port"]);
    assert_eq!(now.body["created_at"], first.body["created_at"]);
    let listed = api.call("GET", "/v1/rules", &op, None);
    assert_eq!(spec(&listed.body[0]), want, "the listing shows it too");

    // The CLI sets caps (JSON: the rule as the API returns it) and, without a flag, lifts them.
    let out = server.cli_ok(&["set-rule-caps", &id, "--bandwidth-out-bps", "1000", "--format", "json"]);
    assert_eq!(
        spec(&json_of(&out)),
        json!({"bandwidth_out_bps": 1_000, "bandwidth_out_burst_bytes": 65_536}),
        "{out}"
    );
    let table = server.cli_ok(&["set-rule-caps", &id, "--concurrent-connections", "3"]);
    assert!(table.starts_with("RULE") && table.contains("MAX_CONNS"), "{table}");
    assert_eq!(spec(&api.call("GET", &path, &op, None).body), json!({"concurrent_connections": 3}));
    let lifted = server.cli(&["set-rule-caps", &id]);
    assert_eq!(lifted.code, 0, "{lifted:?}");
    assert!(lifted.stderr.contains("lifted"), "{lifted:?}");
    let bare = api.call("GET", &path, &op, None);
    assert!(bare.body["spec"].get("rate_limit").is_none(), "{}", bare.text);

    // A user caps her own rule, not someone else's (which answers as a missing rule).
    let alice_port = free_port();
    api.grant_port(&op, "alice", alice_port);
    let hers = push(&api, &alice, alice_port, Some(json!({"concurrent_connections": 8})));
    let own = api.call("PATCH", &format!("/v1/rules/{hers}"), &alice, Some(&json!({"rate_limit": {}})));
    assert_eq!(own.status, 200, "{}", own.text);
    assert!(own.body["spec"].get("rate_limit").is_none(), "{}", own.text);
    let foreign = api.call("PATCH", &path, &alice, Some(&json!({"rate_limit": {}})));
    assert_eq!((foreign.status, foreign.code()), (404, "rule_not_found"), "{}", foreign.text);
    let missing = api.call("PATCH", "/v1/rules/987654321", &op, Some(&json!({"rate_limit": {}})));
    assert_eq!((missing.status, missing.code()), (404, "rule_not_found"), "{}", missing.text);
    let bad_id = api.call("PATCH", "/v1/rules/seven", &op, Some(&json!({"rate_limit": {}})));
    assert_eq!((bad_id.status, bad_id.code()), (400, "invalid_request"), "{}", bad_id.text);

    // A change needs the client on line: none is stored while it is away.
    assert_eq!(client.proc().terminate(), 0);
    crate::harness::wait_until("the server to see the client gone", || {
        (api.call("GET", "/v1/clients/edge-01", &op, None).body["connected"] == false).then_some(())
    });
    let offline = api.call("PATCH", &path, &op, Some(&json!({"rate_limit": {"concurrent_connections": 4}})));
    assert_eq!((offline.status, offline.code()), (409, "client_not_connected"), "{}", offline.text);
    cli_fails(
        &server,
        &["set-rule-caps", &id, "--concurrent-connections", "4"],
        &[],
        "client_not_connected",
        4,
    );
    assert!(api.call("GET", &path, &op, None).body["spec"].get("rate_limit").is_none());

    let rows = server.audit_rows();
    let changes = rows.iter().filter(|r| r["action"] == "rule.set_caps" && r["target"] == id.as_str());
    let outcomes: Vec<&str> = changes.filter_map(|r| r["outcome"].as_str()).collect();
    assert!(outcomes.iter().filter(|o| **o == "success").count() >= 4, "{outcomes:?}");
    assert!(outcomes.contains(&"failed"), "the offline change is audited: {outcomes:?}");
}
