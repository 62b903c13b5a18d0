//! Monthly traffic quotas through the operator API on the real binaries: a superadmin sets a
//! quota for a granted (user, client) pair, the user reads only their own, the bytes the
//! user's rule forwards are metered from the client's reports, crossing 80 % and 100 % raises
//! one event each, and a credit or a removal lifts it.

use serde_json::{Value, json};

use crate::harness::{
    Api, Auth, Backend, ClientOpts, Scenario, connect, free_port, http_get, roundtrip, server_with_edge,
    wait_until,
};

#[test]
fn a_quota_meters_a_users_traffic_and_only_they_and_superadmins_read_it() {
    let scn = Scenario::new("quotas_api");
    let (server, _client) = server_with_edge(&scn, &ClientOpts::default());
    let api = server.api();
    let operator = server.operator_token();
    let op = Auth::Bearer(&operator);
    let tokens = api.users_with_tokens(&op, &["alice", "bob"]);
    let (alice_token, bob_token) = (&tokens[0], &tokens[1]);
    let (alice, bob) = (Auth::Bearer(alice_token), Auth::Bearer(bob_token));
    let quota = "/v1/users/alice/quotas/edge-01";
    let status = "/v1/users/alice/quotas/edge-01/status";

    // No grant yet: refused with a code, nothing stored.
    let early = api.call("PUT", quota, &op, Some(&json!({"monthly_bytes": 10_000})));
    assert_eq!((early.status, early.code()), (403, "client_not_granted"), "{}", early.text);
    let port = free_port();
    api.grant_port(&op, "alice", port);
    let zero = api.call("PUT", quota, &op, Some(&json!({"monthly_bytes": 0})));
    assert_eq!((zero.status, zero.code()), (400, "validation.quota_bytes_invalid"));
    let by_alice = api.call("PUT", quota, &alice, Some(&json!({"monthly_bytes": 10_000})));
    assert_eq!(by_alice.status, 403, "a user never sets a quota: {}", by_alice.text);

    let set = api.call("PUT", quota, &op, Some(&json!({"monthly_bytes": 10_000})));
    assert_eq!(set.status, 200, "{}", set.text);
    assert_eq!(set.body["monthly_bytes"], 10_000);
    assert_eq!(set.body["current_period_bytes_used"], 0);
    assert_eq!(set.body["exhausted"], false);
    let own = api.call("GET", status, &alice, None);
    assert_eq!((own.status, own.body["monthly_bytes"].as_u64()), (200, Some(10_000)), "{}", own.text);
    // Bob hears exactly what a missing quota answers.
    let theirs = api.call("GET", status, &bob, None);
    let missing = api.call("GET", "/v1/users/bob/quotas/edge-01/status", &bob, None);
    assert_eq!((theirs.status, theirs.code()), (404, "quota_not_found"));
    assert_eq!((missing.status, missing.code()), (404, "quota_not_found"));
    assert_eq!(api.call("GET", "/v1/quotas", &bob, None).body, json!([]));
    assert_eq!(api.call("GET", "/v1/quotas", &alice, None).body.as_array().map(Vec::len), Some(1));

    // Alice's rule forwards 9,000 bytes: past 80 % of the cap, not yet out.
    let backend = Backend::echo();
    let body = json!({"client": "edge-01", "rule": {"listen_port": port, "target": backend.target()}});
    let pushed = api.call("POST", "/v1/rules", &alice, Some(&body));
    assert_eq!(pushed.status, 201, "{}", pushed.text);
    let mut conn = connect(port);
    roundtrip(&mut conn, &[7u8; 4_500]);
    let used = |resp: &Value| resp["current_period_bytes_used"].as_u64().unwrap_or(0);
    wait_until("the client's report to be metered", || {
        (used(&api.call("GET", status, &alice, None).body) >= 9_000).then_some(())
    });
    let events = server.proc();
    events.wait_event("traffic_quota.threshold_crossed", &[("user", "alice"), ("percent", "80")]);
    assert!(events.events_matching("traffic_quota.exhausted", &[]).is_empty());

    // The next 2,000 bytes spend the budget: the edge cuts the connection on the delivery
    // that does (so the echo may or may not come back).
    {
        use std::io::{Read, Write};
        let _ = conn.write_all(&[7u8; 1_000]);
        let _ = conn.read_exact(&mut [0u8; 1_000]);
    }
    events.wait_event("traffic_quota.exhausted", &[("user", "alice")]);
    events.wait_event("traffic_quota.threshold_crossed", &[("user", "alice"), ("percent", "100")]);
    let out = api.call("GET", status, &alice, None).body;
    assert_eq!(out["exhausted"], true, "{out}");
    assert!(out["exhausted_at"].is_string() && out["last_report_at"].is_string(), "{out}");
    assert_eq!(events.events_matching("traffic_quota.threshold_crossed", &[("percent", "80")]).len(), 1);
    let scraped = http_get(server.addrs().metrics, "/metrics").1;
    let series = |name: &str| {
        crate::metrics::sample(&scraped, &format!("{name}{{client=\"edge-01\",user=\"alice\"}}"))
    };
    assert_eq!(series("portunus_traffic_quota_exhausted"), Some(1.0), "{scraped}");
    assert_eq!(series("portunus_traffic_quota_bytes_limit"), Some(10_000.0));
    assert_eq!(series("portunus_traffic_quota_exhaustions_total"), Some(1.0));
    assert!(series("portunus_traffic_quota_bytes_used").is_some_and(|used| used >= 10_000.0));
    // The CLI reads the same: the operator sees every quota, alice her own.
    let listed: Value =
        serde_json::from_str(&server.cli_ok(&["quota", "list", "--format", "json"])).expect("JSON");
    assert_eq!(listed[0]["exhausted"], true, "{listed}");
    let as_alice = [("PORTUNUS_OPERATOR_TOKEN", alice_token.as_str())];
    let mine = server.cli_with_env(&["quota", "status", "alice", "edge-01", "--format", "json"], &as_alice);
    assert_eq!(mine.code, 0, "{mine:?}");
    let same = server.cli_with_env(&["quota", "get", "alice", "edge-01", "--format", "json"], &as_alice);
    assert_eq!(same.code, 0, "`quota get` reads the same: {same:?}");
    let (mine_json, same_json): (Value, Value) = (
        serde_json::from_str(&mine.stdout).expect("JSON"),
        serde_json::from_str(&same.stdout).expect("JSON"),
    );
    assert_eq!(mine_json["monthly_bytes"], same_json["monthly_bytes"]);
    let denied = server.cli_with_env(&["quota", "credit", "alice", "edge-01"], &as_alice);
    assert_ne!(denied.code, 0, "a user never credits: {denied:?}");

    // A one-shot credit clears the period's usage and keeps its boundaries.
    let credited = api.call("PATCH", quota, &op, Some(&json!({"clear_period_usage": true})));
    assert_eq!(credited.status, 200, "{}", credited.text);
    assert_eq!((credited.body["exhausted"].clone(), used(&credited.body)), (json!(false), 0));
    assert_eq!(credited.body["period_end"], out["period_end"]);
    events.wait_event("traffic_quota.resumed", &[("user", "alice")]);
    let empty = api.call("PATCH", quota, &op, Some(&json!({})));
    assert_eq!((empty.status, empty.code()), (400, "validation.empty_quota_patch"));

    // The CLI raises the cap with a unit and removes the quota.
    server.cli_ok(&["quota", "cap", "alice", "edge-01", "1G"]);
    let raised = api.call("GET", status, &op, None).body;
    assert_eq!(raised["monthly_bytes"], 1u64 << 30, "{raised}");
    server.cli_ok(&["quota", "delete", "alice", "edge-01"]);
    let gone = api.call("DELETE", quota, &op, None);
    assert_eq!((gone.status, gone.code()), (404, "quota_not_found"));
    let gone = api.call("GET", status, &op, None);
    assert_eq!((gone.status, gone.code()), (404, "quota_not_found"));
    let audit = api.call("GET", "/v1/audit?limit=500", &op, None).body;
    let actions: Vec<&str> =
        audit["records"].as_array().expect("records").iter().filter_map(|r| r["action"].as_str()).collect();
    for action in ["quota.set", "quota.patch", "quota.delete"] {
        assert!(actions.contains(&action), "{action} is audited: {actions:?}");
    }
}

#[test]
fn forwarded_bytes_reach_the_traffic_history_and_survive_a_restart_mid_minute() {
    let scn = Scenario::new("traffic_history");
    let (mut server, _client) = server_with_edge(&scn, &ClientOpts::default());
    let api = server.api();
    let operator = server.operator_token();
    let op = Auth::Bearer(&operator);
    let backend = Backend::echo();
    let port = free_port();
    let rule = server.push_rule("edge-01", port, &backend.target());
    let mut conn = connect(port);
    roundtrip(&mut conn, &[1u8; 3_000]);
    // Wait until the report carrying the bytes arrived (the rule's totals show them).
    wait_until("the bytes to be reported", || {
        let stats = api.call("GET", &format!("/v1/rules/{rule}/stats"), &op, None).body;
        (stats["totals"]["bytes_in"].as_u64() == Some(3_000)).then_some(())
    });

    // A stop in the middle of the minute writes the open minute.
    server.restart();
    let api = server.api();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
    let window = format!("from={}&to={}", now - 600, now + 60);
    let answer = api.call("GET", &format!("/v1/traffic?{window}"), &op, None);
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(answer.body["bucket"], "1m");
    assert_eq!(answer.body["total_bytes_in"], 3_000, "{}", answer.text);
    assert_eq!(answer.body["total_bytes_out"], 3_000, "{}", answer.text);
    let points = answer.body["samples"].as_array().expect("samples");
    assert!(
        points.iter().all(|p| p["rule"].as_u64() == Some(rule) && p["user"] == "_operator"),
        "{points:?}"
    );
    let per_client = api.call("GET", &format!("/v1/clients/edge-01/traffic?{window}&bucket=1h"), &op, None);
    assert_eq!(
        (per_client.status, per_client.body["bucket"].as_str()),
        (200, Some("1h")),
        "{}",
        per_client.text
    );

    // Bad windows have codes.
    let code = |query: &str| api.call("GET", &format!("/v1/traffic?{query}"), &op, None);
    let inverted = code(&format!("from={}&to={}", now, now - 10));
    assert_eq!((inverted.status, inverted.code()), (422, "validation.invalid_time_range"));
    let old = code(&format!("from={}&to={}&bucket=1m", now - 8 * 86_400, now - 7 * 86_400 - 3_600));
    assert_eq!((old.status, old.code()), (422, "quota_bucket_out_of_retention"));
    let bucket = code(&format!("from={}&to={}&bucket=5m", now - 60, now));
    assert_eq!((bucket.status, bucket.code()), (400, "validation.invalid_bucket"));
    let wide = code(&format!("from={}&to={}&bucket=1m", now - 86_400, now + 7 * 86_400));
    assert_eq!((wide.status, wide.code()), (422, "validation.traffic_window_too_large"));
}

/// True while nothing listens on `port` (a connection is refused).
fn refused(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
}

#[test]
fn an_exhausted_pair_is_cut_on_the_edge_and_a_credit_resumes_it_without_a_reconnect() {
    let scn = Scenario::new("quotas_enforced");
    let (server, client) = server_with_edge(&scn, &ClientOpts::default());
    let api = server.api();
    let operator = server.operator_token();
    let op = Auth::Bearer(&operator);
    let alice_token = api.users_with_tokens(&op, &["alice"]).remove(0);
    let alice = Auth::Bearer(&alice_token);
    let (port, other) = (free_port(), free_port());
    api.grant_port(&op, "alice", port);
    let quota = "/v1/users/alice/quotas/edge-01";
    assert_eq!(api.call("PUT", quota, &op, Some(&json!({"monthly_bytes": 20_000}))).status, 200);
    let edge = client.proc();
    edge.wait_event("traffic_quota.applied_set", &[("user", "alice")]);

    let backend = Backend::echo();
    let body = json!({"client": "edge-01", "rule": {"listen_port": port, "target": backend.target()}});
    assert_eq!(api.call("POST", "/v1/rules", &alice, Some(&body)).status, 201);
    // The operator's own rule on the same client is not alice's: it keeps forwarding.
    server.push_rule("edge-01", other, &backend.target());

    // 12,000 bytes (6,000 each way) fit; the next 12,000 spend the budget.
    let mut conn = connect(port);
    roundtrip(&mut conn, &[3u8; 6_000]);
    let mut cut = false;
    let chunk = [4u8; 6_000];
    use std::io::{Read, Write};
    for _ in 0..20 {
        let mut back = vec![0u8; chunk.len()];
        if conn.write_all(&chunk).is_err() || conn.read_exact(&mut back).is_err() {
            cut = true;
            break;
        }
        if edge.events_matching("traffic_quota.suspended", &[("user", "alice")]).len() == 1 {
            continue;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    edge.wait_event("traffic_quota.suspended", &[("user", "alice")]);
    assert!(cut || conn.read(&mut [0u8; 1]).map_or(true, |n| n == 0), "the live connection is cut");
    wait_until("alice's port to refuse connections", || refused(port).then_some(()));
    roundtrip(&mut connect(other), b"another owner's rule forwards on");
    let status = "/v1/users/alice/quotas/edge-01/status";
    wait_until("the server to count the pair exhausted", || {
        (api.call("GET", status, &alice, None).body["exhausted"] == true).then_some(())
    });
    // The relay debits every delivery: the pair passed its cap by at most the one delivery
    // (6,000 bytes here) that spent it on its one live connection.
    let used =
        api.call("GET", status, &alice, None).body["current_period_bytes_used"].as_u64().expect("used");
    assert!((20_000..=26_000).contains(&used), "used {used} bytes of a 20,000-byte cap");

    // A credit resumes it on the same stream: no reconnect.
    let connected = edge.events_matching("control.connected", &[]).len();
    assert_eq!(api.call("PATCH", quota, &op, Some(&json!({"clear_period_usage": true}))).status, 200);
    edge.wait_event("traffic_quota.resumed", &[("user", "alice")]);
    wait_until("alice's port to accept again", || (!refused(port)).then_some(()));
    roundtrip(&mut connect(port), b"forwarding again");
    assert_eq!(edge.events_matching("control.connected", &[]).len(), connected, "no reconnect");
}

/// Alice (a user with an API token), granted one port on edge-01 with a quota of 1,000,000
/// bytes there, and her rule from that port to an echo backend: returns the port, the rule's
/// id and the backend (which lives as long as the caller keeps it).
fn alices_metered_echo_rule(api: &Api, op: &Auth<'_>) -> (u16, String, Backend) {
    let alice_token = api.users_with_tokens(op, &["alice"]).remove(0);
    let port = free_port();
    api.grant_port(op, "alice", port);
    let quota = json!({"monthly_bytes": 1_000_000});
    let set = api.call("PUT", "/v1/users/alice/quotas/edge-01", op, Some(&quota));
    assert_eq!(set.status, 200, "{}", set.text);
    let backend = Backend::echo();
    let body = json!({"client": "edge-01", "rule": {"listen_port": port, "target": backend.target()}});
    let pushed = api.call("POST", "/v1/rules", &Auth::Bearer(&alice_token), Some(&body));
    assert_eq!(pushed.status, 201, "{}", pushed.text);
    let rule = pushed.body["id"].as_u64().expect("rule id").to_string();
    (port, rule, backend)
}

#[test]
fn a_client_offline_while_its_pair_runs_out_gets_the_quota_before_its_rules_on_reconnect() {
    let scn = Scenario::new("quotas_offline");
    let (server, client) = server_with_edge(&scn, &ClientOpts::default());
    let api = server.api();
    let operator = server.operator_token();
    let op = Auth::Bearer(&operator);
    let (port, rule, _backend) = alices_metered_echo_rule(&api, &op);
    let quota = "/v1/users/alice/quotas/edge-01";
    roundtrip(&mut connect(port), &[5u8; 2_000]);
    // A clean stop reports what was forwarded since the last report.
    assert_eq!(client.proc().terminate(), 0);
    let used = api.call("GET", "/v1/users/alice/quotas/edge-01/status", &op, None).body;
    assert_eq!(used["current_period_bytes_used"], 4_000, "{used}");

    // While the client is away, the cap drops below what the pair used: it is exhausted.
    let lowered = api.call("PATCH", quota, &op, Some(&json!({"monthly_bytes": 1_000})));
    assert_eq!((lowered.status, lowered.body["exhausted"].clone()), (200, json!(true)), "{}", lowered.text);

    let again = crate::harness::Client::start_connected(&scn, client.bundle(), &ClientOpts::default());
    let edge = again.proc();
    edge.wait_event("rule.bound", &[("rule", &rule), ("paused", "traffic_quota")]);
    let events = edge.events();
    let at = |name: &str| events.iter().position(|e| e["event"] == name).unwrap_or(usize::MAX);
    assert!(at("traffic_quota.applied_set") < at("rule.bound"), "the quota comes before the rules");
    assert!(refused(port), "an exhausted pair's rule does not listen");

    assert_eq!(api.call("PATCH", quota, &op, Some(&json!({"monthly_bytes": 1_000_000}))).status, 200);
    edge.wait_event("traffic_quota.resumed", &[("user", "alice")]);
    wait_until("the rule to listen again", || (!refused(port)).then_some(()));
    roundtrip(&mut connect(port), b"back");
}

#[test]
fn bytes_a_killed_client_forwarded_but_never_reported_reach_the_quota_after_its_restart() {
    let scn = Scenario::new("quotas_kill9");
    // Reports every 60 s: the transfer below is never in a regular report before the kill.
    let opts = crate::harness::ServerOpts {
        args: vec!["--stats-interval-secs".into(), "60".into()],
        ..crate::harness::ServerOpts::default()
    };
    let server = crate::harness::Server::start(&scn, opts);
    let bundle = scn.path("edge-01.bundle.json");
    crate::harness::Client::enroll_ok(&scn, &server.enroll("edge-01"), &bundle);
    // The journal goes to a state directory of its own (the shipped unit's bundle directory
    // is read-only).
    let state = scn.path("client-state");
    std::fs::create_dir_all(&state).expect("state dir");
    let state_arg = state.to_str().expect("UTF-8 path").to_owned();
    let opts = ClientOpts::default().args(&["--state-dir", &state_arg]);
    let client = crate::harness::Client::start_connected(&scn, &bundle, &opts);
    let api = server.api();
    let operator = server.operator_token();
    let op = Auth::Bearer(&operator);
    let (port, _rule, _backend) = alices_metered_echo_rule(&api, &op);
    roundtrip(&mut connect(port), &[5u8; 3_000]);
    let status = "/v1/users/alice/quotas/edge-01/status";
    let used = |api: &Api| api.call("GET", status, &op, None).body["current_period_bytes_used"].as_u64();
    assert_eq!(used(&api), Some(0), "nothing reported yet");
    // The journal is brought up to date four times a second; then the process dies hard.
    std::thread::sleep(std::time::Duration::from_millis(800));
    assert!(state.join("edge-01.bundle.json.unreported").exists(), "the journal is in --state-dir");
    client.proc().signal(nix::sys::signal::Signal::SIGKILL);
    client.proc().wait_exit();
    let again = crate::harness::Client::start_connected(&scn, &bundle, &opts);
    again.proc().wait_event("client.counters_journal_replayed", &[]);
    wait_until("the journaled bytes to be metered", || (used(&api) == Some(6_000)).then_some(()));
}
