//! Reconnect and replay: what the server keeps across restarts, what it replays on
//! reconnect (never Failed rules), removals made while a client was away, and the data plane
//! carrying on while the control plane is down.

use serde_json::Value;

use crate::harness::{
    Backend, Client, ClientOpts, Scenario, Server, ServerOpts, connect, free_port, hold_port, port_is_free,
    roundtrip, server_with_edge, wait_until,
};

#[test]
fn a_server_restart_keeps_clients_tokens_and_rules() {
    let scn = Scenario::new("restart_keeps_state");
    let (mut server, client) = server_with_edge(&scn, &ClientOpts::default());
    let backend = Backend::echo();
    let port = free_port();
    let rule_id = server.push_rule("edge-01", port, &backend.target());
    let client_before = server.client("edge-01").expect("listed");
    let rule_before = server.rule(rule_id).expect("listed");
    assert_eq!(client.proc().terminate(), 0, "client exit status on SIGTERM");

    server.restart();
    let client_after = server.client("edge-01").expect("edge-01 survives a restart");
    assert_eq!(client_after["id"], client_before["id"]);
    assert_eq!(client_after["status"].as_str(), Some("enrolled"));
    let rule_after = server.rule(rule_id).expect("the rule survives a restart");
    for key in ["id", "client_id", "owner", "spec", "created_at"] {
        assert_eq!(rule_after[key], rule_before[key], "rule field {key} changed across the restart");
    }

    // The token survived too: the same bundle connects and gets the rule back.
    let client = Client::start_connected(&scn, client.bundle(), &ClientOpts::default());
    client.proc().wait_event("rule.bound", &[("rule", &rule_id.to_string())]);
    server.wait_rule_state(rule_id, "active");
    roundtrip(&mut connect(port), b"after the restart");
    scn.assert_logs_free_of_secrets();
}

#[test]
fn failed_rules_are_not_replayed_on_reconnect() {
    let scn = Scenario::new("failed_rules_not_replayed");
    let (mut server, client) = server_with_edge(&scn, &ClientOpts::default());
    let backend = Backend::echo();
    let (holder, held_port) = hold_port();
    let pushed = server.cli(&["push-rule", "edge-01", &held_port.to_string(), &backend.target()]);
    assert_eq!(pushed.code, 5, "{pushed:?}");
    let failed: u64 = pushed.stdout.trim().parse().expect("failed rule id");
    drop(holder);
    wait_until("the held port to be free", || port_is_free(held_port).then_some(()));

    server.restart();
    client.proc().wait_event_n(2, "control.connected", &[]);
    // The replay precedes any later push on the stream, so once this push is active the
    // client has processed the whole replay.
    let later = server.push_rule("edge-01", free_port(), &backend.target());
    client.proc().wait_event("rule.bound", &[("rule", &later.to_string())]);

    assert_eq!(client.n_bound(failed), 0, "a failed rule was bound after reconnect");
    let attempts = client.proc().events_matching("rule.bind_failed", &[("rule", &failed.to_string())]);
    assert_eq!(attempts.len(), 1, "the failed rule was only tried once, at push time");
    assert!(port_is_free(held_port), "nothing bound the failed rule's port");
    assert_eq!(server.rule_state(failed).as_deref(), Some("failed"));
}

#[test]
fn a_rule_removed_while_the_client_was_stopped_is_not_bound_when_it_starts() {
    let scn = Scenario::new("removed_while_client_stopped");
    let (server, client) = server_with_edge(&scn, &ClientOpts::default());
    let backend = Backend::echo();
    let (removed_port, kept_port) = (free_port(), free_port());
    let removed = server.push_rule("edge-01", removed_port, &backend.target());
    let kept = server.push_rule("edge-01", kept_port, &backend.target());
    assert_eq!(client.proc().terminate(), 0);

    server.cli_ok(&["remove-rule", &removed.to_string()]);
    let client = Client::start_connected(&scn, client.bundle(), &ClientOpts::default());
    client.proc().wait_event("rule.bound", &[("rule", &kept.to_string())]);
    roundtrip(&mut connect(kept_port), b"kept");
    assert_eq!(client.n_bound(removed), 0, "the removed rule came back");
    assert!(port_is_free(removed_port));
}

#[test]
fn a_rule_removed_while_the_control_stream_was_down_stops_on_reconnect() {
    let scn = Scenario::new("removed_while_stream_down");
    let (mut server, client) = server_with_edge(&scn, &ClientOpts::default());
    let backend = Backend::echo();
    let (removed_port, kept_port) = (free_port(), free_port());
    let removed = server.push_rule("edge-01", removed_port, &backend.target());
    let kept = server.push_rule("edge-01", kept_port, &backend.target());

    assert_eq!(server.stop(), 0, "server exit status on SIGTERM");
    client.proc().wait_event("control.disconnected", &[]);
    // The same data dir served on other ports: the client cannot reach it, the operator can.
    let data_dir = server.data_dir().to_path_buf();
    let mut elsewhere = Server::start_in(&scn, &data_dir, ServerOpts::default());
    elsewhere.cli_ok(&["remove-rule", &removed.to_string()]);
    assert_eq!(elsewhere.stop(), 0);
    // Meanwhile the client still forwards both rules.
    roundtrip(&mut connect(removed_port), b"still forwarding while offline");

    server.start_again();
    client.proc().wait_event_n(2, "control.connected", &[]);
    client.proc().wait_event("rule.unbound", &[("rule", &removed.to_string())]);
    wait_until("the removed rule's port to be free", || port_is_free(removed_port).then_some(()));
    roundtrip(&mut connect(kept_port), b"the other rule is untouched");
    assert_eq!(client.n_bound(kept), 1, "the unchanged rule kept its listener");
}

#[test]
fn a_server_restart_does_not_drop_a_forwarded_connection() {
    let scn = Scenario::new("connection_survives_server_restart");
    let (mut server, client) = server_with_edge(&scn, &ClientOpts::default());
    let backend = Backend::echo();
    let port = free_port();
    let rule_id = server.push_rule("edge-01", port, &backend.target());
    let mut stream = connect(port);
    roundtrip(&mut stream, b"before the restart");

    assert_eq!(server.stop(), 0, "server exit status on SIGTERM");
    client.proc().wait_event("control.disconnected", &[]);
    roundtrip(&mut stream, b"while the server is down");

    server.start_again();
    client.proc().wait_event_n(2, "control.connected", &[]);
    // A push after reconnect proves the replay was handled before we look at the log.
    let later = server.push_rule("edge-01", free_port(), &backend.target());
    client.proc().wait_event("rule.bound", &[("rule", &later.to_string())]);

    roundtrip(&mut stream, b"after the restart, same connection");
    assert_eq!(client.n_bound(rule_id), 1, "the unchanged rule was bound once");
    let unbound = client.proc().events_matching("rule.unbound", &[("rule", &rule_id.to_string())]);
    assert!(unbound.is_empty(), "the unchanged rule was unbound: {unbound:?}");
    assert_eq!(server.rule_state(rule_id).as_deref(), Some("active"));
    assert_eq!(server.client("edge-01").map(|c| c["connected"].clone()), Some(Value::Bool(true)));
}

#[test]
fn a_pending_rule_is_replayed_and_activates_when_a_client_reconnects() {
    let scn = Scenario::new("pending_rule_replayed");
    let (server, client) = server_with_edge(&scn, &ClientOpts::default());
    let backend = Backend::echo();
    let port = free_port();
    client.proc().signal(nix::sys::signal::Signal::SIGSTOP);
    let pushed = server.cli(&["push-rule", "edge-01", &port.to_string(), &backend.target()]);
    assert_eq!(pushed.code, 7, "{pushed:?}");
    let rule_id: u64 = pushed.stdout.trim().parse().expect("pending rule id");
    // The stopped client never reads the push: kill it and start a fresh one.
    client.proc().signal(nix::sys::signal::Signal::SIGKILL);
    client.proc().wait_exit();
    assert_eq!(server.rule_state(rule_id).as_deref(), Some("pending"));

    let fresh = Client::start_connected(&scn, client.bundle(), &ClientOpts::default());
    fresh.proc().wait_event("rule.bound", &[("rule", &rule_id.to_string())]);
    server.wait_rule_state(rule_id, "active");
    roundtrip(&mut connect(port), b"replayed while pending");
}

/// Forty rules make a plan larger than the control stream's starting buffers on both sides.
/// Their outcomes are committed without waiting for the disk (and synced at shutdown): after
/// a clean restart every rule is still active, and the reconnecting client gets the whole
/// plan back.
#[test]
fn a_clean_restart_keeps_every_outcome_and_a_large_plan_is_replayed_whole() {
    const N_RULES: usize = 40;
    let scn = Scenario::new("large_plan_replayed");
    let (mut server, client) = server_with_edge(&scn, &ClientOpts::default());
    let backend = Backend::echo();
    let ports: Vec<u16> = (0..N_RULES).map(|_| free_port()).collect();
    let ids: Vec<u64> =
        ports.iter().map(|port| server.push_rule("edge-01", *port, &backend.target())).collect();
    assert_eq!(client.proc().terminate(), 0, "client exit status on SIGTERM");

    server.restart();
    let states: Vec<(u64, Option<String>)> = {
        let rules = server.rules();
        ids.iter()
            .map(|id| {
                let rule = rules.iter().find(|r| r["id"].as_u64() == Some(*id));
                (*id, rule.and_then(|r| r["state"].as_str().map(str::to_owned)))
            })
            .collect()
    };
    for (id, state) in &states {
        assert_eq!(state.as_deref(), Some("active"), "rule {id} after a clean restart");
    }

    let fresh = Client::start_connected(&scn, client.bundle(), &ClientOpts::default());
    for id in &ids {
        fresh.proc().wait_event("rule.bound", &[("rule", &id.to_string())]);
    }
    for port in [ports[0], ports[N_RULES - 1]] {
        roundtrip(&mut connect(port), b"replayed in a large plan");
    }
}
