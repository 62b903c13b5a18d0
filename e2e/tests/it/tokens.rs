//! Client tokens: revocation ends the live stream at once and keeps the client out;
//! re-enrolling a name rotates its token and brings its rules back.

use serde_json::Value;

use crate::harness::{
    Backend, Client, ClientOpts, Scenario, connect, free_port, roundtrip, server_with_edge,
};

fn client_id_of(bundle: &std::path::Path) -> String {
    let text = std::fs::read_to_string(bundle).expect("bundle readable");
    let value: Value = serde_json::from_str(&text).expect("bundle JSON");
    value["client_id"].as_str().expect("client_id").to_owned()
}

#[test]
fn revoke_disconnects_the_live_client_at_once_and_it_exits_4() {
    let scn = Scenario::new("revoke");
    let (server, client) = server_with_edge(&scn, &ClientOpts::default());
    let client_id = client_id_of(client.bundle());
    let backend = Backend::echo();
    let port = free_port();
    let rule_id = server.push_rule("edge-01", port, &backend.target());

    server.cli_ok(&["revoke", "edge-01"]);
    let disconnected = server.proc().wait_event("client.disconnected", &[("reason", "token_revoked")]);
    assert_eq!(disconnected["client_id"].as_str(), Some(client_id.as_str()));
    assert_eq!(client.proc().wait_exit(), 4, "exit status of a client whose token was revoked");
    client.proc().wait_event("auth.failure", &[("reason", "token_revoked")]);

    let listed = server.client("edge-01").expect("a revoked client is still listed");
    assert_eq!(listed["status"].as_str(), Some("revoked"));
    assert_eq!(listed["connected"], Value::Bool(false));

    // Every later start with the same bundle is refused the same way.
    let again = Client::start(&scn, client.bundle(), &ClientOpts::default());
    assert_eq!(again.proc().wait_exit(), 4, "exit status of a restarted revoked client");
    again.proc().wait_event("auth.failure", &[("reason", "token_revoked")]);
    server.proc().wait_event("auth.failure", &[("reason", "token_revoked")]);

    // Rules cannot be pushed to a revoked client.
    let pushed = server.cli(&["push-rule", "edge-01", &free_port().to_string(), "127.0.0.1:9"]);
    assert_eq!(pushed.code, 5, "push to a revoked client: {pushed:?}");
    assert!(pushed.stderr.contains("conflict.client_revoked"), "{pushed:?}");

    // Its rule is kept but shown as what it is: bound nowhere while the client is revoked.
    let state = |id: u64| server.rule(id).expect("the rule is kept")["state"].as_str().map(str::to_owned);
    assert_eq!(state(rule_id).as_deref(), Some("suspended"));
    let listed = server.cli_ok(&["list-rules", "--state", "suspended", "--format", "json"]);
    let listed: Value = serde_json::from_str(&listed).expect("JSON listing");
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "one suspended rule: {listed}");
    assert_eq!(listed[0]["id"].as_u64(), Some(rule_id));

    // Re-enrolling brings the client and its rules back.
    Client::enroll_ok(&scn, &server.enroll("edge-01"), client.bundle());
    let back = Client::start_connected(&scn, client.bundle(), &ClientOpts::default());
    back.proc().wait_event("rule.bound", &[("rule", &rule_id.to_string())]);
    assert_eq!(state(rule_id).as_deref(), Some("active"), "re-enrolled, the rule is active again");
    roundtrip(&mut connect(port), b"back after re-enrollment");
    scn.assert_logs_free_of_secrets();
}

#[test]
fn reenrolling_rotates_the_token_so_the_old_bundle_is_refused_and_the_new_one_gets_its_rules() {
    let scn = Scenario::new("reenroll_rotates_token");
    let (server, client) = server_with_edge(&scn, &ClientOpts::default());
    let backend = Backend::echo();
    let port = free_port();
    let rule_id = server.push_rule("edge-01", port, &backend.target());

    let bundle = client.bundle().to_path_buf();
    let old_copy = scn.path("edge-01.old.bundle.json");
    std::fs::copy(&bundle, &old_copy).expect("keep a copy of the old bundle");
    Client::enroll_ok(&scn, &server.enroll("edge-01"), &bundle);
    assert_ne!(
        std::fs::read_to_string(&bundle).expect("new bundle"),
        std::fs::read_to_string(&old_copy).expect("old bundle"),
        "re-enrolling writes a new token"
    );
    assert_eq!(client_id_of(&bundle), client_id_of(&old_copy), "the client keeps its id");

    // The running client held the rotated-away token: its stream ends and it is refused.
    assert_eq!(client.proc().wait_exit(), 4, "exit status of the client whose token rotated");
    client.proc().wait_event("auth.failure", &[]);

    let old = Client::start(&scn, &old_copy, &ClientOpts::default());
    assert_eq!(old.proc().wait_exit(), 4, "exit status with the old bundle");
    old.proc().wait_event("auth.failure", &[("reason", "invalid_token")]);
    server.proc().wait_event("auth.failure", &[("reason", "invalid_token")]);

    let new = Client::start_connected(&scn, &bundle, &ClientOpts::default());
    new.proc().wait_event("rule.bound", &[("rule", &rule_id.to_string())]);
    server.wait_rule_state(rule_id, "active");
    roundtrip(&mut connect(port), b"the rules came back with the new token");
    scn.assert_logs_free_of_secrets();
}
