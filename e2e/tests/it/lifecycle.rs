//! The rule lifecycle as the CLI shows it: `client_not_connected` stores nothing, a clash
//! the server sees is refused with `port_in_use` and stores nothing, a bind the client fails
//! keeps the port reserved until removal, and an unanswered push stays pending and activates
//! when the client answers.

use nix::sys::signal::Signal;
use serde_json::Value;

use crate::harness::{
    Backend, ClientOpts, Scenario, connect, free_port, hold_port, port_is_free, roundtrip, server_with_edge,
    wait_until,
};

#[test]
fn push_to_a_disconnected_client_exits_4_and_stores_nothing() {
    let scn = Scenario::new("push_to_disconnected_client");
    let (server, client) = server_with_edge(&scn, &ClientOpts::default());
    let backend = Backend::echo();
    let kept = server.push_rule("edge-01", free_port(), &backend.target());
    assert_eq!(client.proc().terminate(), 0, "client exit status on SIGTERM");
    wait_until("edge-01 to be listed as disconnected", || {
        server.client("edge-01").filter(|c| c["connected"] == Value::Bool(false))
    });

    let pushed = server.cli(&["push-rule", "edge-01", &free_port().to_string(), &backend.target()]);
    assert_eq!(pushed.code, 4, "push to a disconnected client: {pushed:?}");
    assert!(pushed.stderr.contains("client_not_connected"), "{pushed:?}");
    assert_eq!(pushed.stdout, "", "no rule id: nothing was stored");
    let ids: Vec<u64> = server.rules().iter().filter_map(|r| r["id"].as_u64()).collect();
    assert_eq!(ids, [kept], "list-rules shows only the rule pushed before");
}

#[test]
fn a_port_held_by_another_process_fails_the_rule_which_keeps_the_port_until_removed() {
    let scn = Scenario::new("port_held_by_another_process");
    let (server, client) = server_with_edge(&scn, &ClientOpts::default());
    let backend = Backend::echo();
    let (holder, port) = hold_port();

    let pushed = server.cli(&["push-rule", "edge-01", &port.to_string(), &backend.target()]);
    assert_eq!(pushed.code, 5, "push onto a held port: {pushed:?}");
    let failed: u64 = pushed.stdout.trim().parse().expect("the failed rule's id is printed");
    assert!(
        pushed.stderr.contains(&format!("port_in_use: port {port} already in use")),
        "stderr: {}",
        pushed.stderr
    );
    let rule = server.rule(failed).expect("the failed rule is stored");
    assert_eq!(rule["state"].as_str(), Some("failed"));
    assert_eq!(rule["failure"]["code"].as_str(), Some("port_in_use"));

    // The holder goes away, but the failed rule keeps the port reserved: no retry.
    drop(holder);
    wait_until("the holder's port to be free", || port_is_free(port).then_some(()));
    let again = server.cli(&["push-rule", "edge-01", &port.to_string(), &backend.target()]);
    assert_eq!(again.code, 5, "push onto a port reserved by a failed rule: {again:?}");
    assert!(
        again.stderr.contains(&format!("port_in_use: port {port} already in use by rule {failed}")),
        "{again:?}"
    );
    assert_eq!(again.stdout, "", "the server saw the clash: nothing was stored");
    assert_eq!(server.rule_state(failed).as_deref(), Some("failed"), "still failed: no automatic retry");
    assert!(port_is_free(port), "nothing bound the port meanwhile");

    // Removing the failed rule releases the reservation.
    server.cli_ok(&["remove-rule", &failed.to_string()]);
    let rule_id = server.push_rule("edge-01", port, &backend.target());
    client.proc().wait_event("rule.bound", &[("rule", &rule_id.to_string())]);
    roundtrip(&mut connect(port), b"the port is ours now");
    assert_eq!(client.n_bound(failed), 0, "the failed rule was never bound");
}

#[test]
fn a_second_rule_on_an_active_rules_port_is_refused_with_port_in_use_and_not_stored() {
    let scn = Scenario::new("two_rules_one_port");
    let (server, client) = server_with_edge(&scn, &ClientOpts::default());
    let backend = Backend::echo();
    let port = free_port();
    let first = server.push_rule("edge-01", port, &backend.target());
    let pushed = server.cli(&["push-rule", "edge-01", &port.to_string(), &backend.target()]);
    assert_eq!(pushed.code, 5, "port_in_use exits 5: {pushed:?}");
    assert!(
        pushed.stderr.contains(&format!("port_in_use: port {port} already in use by rule {first}")),
        "{pushed:?}"
    );
    assert_eq!(pushed.stdout, "", "nothing was stored, so no id is printed");
    let ids: Vec<u64> = server.rules().iter().filter_map(|r| r["id"].as_u64()).collect();
    assert_eq!(ids, [first], "list-rules shows the first rule only");
    assert_eq!(server.rule_state(first).as_deref(), Some("active"), "the first rule is untouched");
    roundtrip(&mut connect(port), b"first rule still forwards");

    // Nothing of the refused push reserves the port once the first rule is gone.
    server.cli_ok(&["remove-rule", &first.to_string()]);
    client.proc().wait_event("rule.unbound", &[("rule", &first.to_string())]);
    let again = server.push_rule("edge-01", port, &backend.target());
    assert_eq!(server.rule_state(again).as_deref(), Some("active"));
    roundtrip(&mut connect(port), b"the port is free again");
}

#[test]
fn an_unanswered_push_exits_7_stays_pending_and_activates_when_the_client_answers() {
    let scn = Scenario::new("ack_timeout");
    let (server, client) = server_with_edge(&scn, &ClientOpts::default());
    let backend = Backend::echo();
    let port = free_port();

    client.proc().signal(Signal::SIGSTOP);
    let pushed = server.cli(&["push-rule", "edge-01", &port.to_string(), &backend.target()]);
    let rule_id: Option<u64> = pushed.stdout.trim().parse().ok();
    let state = rule_id.and_then(|id| server.rule_state(id));
    client.proc().signal(Signal::SIGCONT);

    assert_eq!(pushed.code, 7, "push to a stopped client: {pushed:?}");
    assert!(pushed.stderr.contains("ack_timeout"), "{pushed:?}");
    let rule_id = rule_id.expect("the pending rule's id is printed");
    assert_eq!(state.as_deref(), Some("pending"), "state right after the timeout");

    server.wait_rule_state(rule_id, "active");
    roundtrip(&mut connect(port), b"activated late");
}

#[test]
fn malformed_pushes_and_unknown_ids_get_their_stable_codes() {
    let scn = Scenario::new("push_validation_codes");
    let (server, _client) = server_with_edge(&scn, &ClientOpts::default());
    let port = free_port().to_string();
    let cases: [(&[&str], i32, &str); 6] = [
        (&["push-rule", "edge-01", "0", "127.0.0.1:9"], 2, "validation.invalid_port"),
        (&["push-rule", "edge-01", "70000", "127.0.0.1:9"], 2, "validation.invalid_port"),
        (&["push-rule", "edge-01", &port, "127.0.0.1"], 2, "invalid_target"),
        (&["push-rule", "no-such-client", &port, "127.0.0.1:9"], 8, "client_not_found"),
        (&["remove-rule", "999"], 8, "rule_not_found"),
        (&["rule-stats", "999"], 8, "rule_not_found"),
    ];
    for (args, code, name) in cases {
        let out = server.cli(args);
        assert_eq!(out.code, code, "{args:?}: {out:?}");
        assert!(out.stderr.contains(name), "{args:?}: {out:?}");
        assert_eq!(out.stdout, "", "{args:?} stored nothing, so printed no id");
    }
    let both = server.cli(&["push-rule", "edge-01", &port, "127.0.0.1:9", "--target", "127.0.0.1:10"]);
    assert_eq!(both.code, 2, "positional target and --target exclude each other: {both:?}");
    assert!(server.rules().is_empty(), "nothing was stored");
}

#[test]
fn rules_the_client_cannot_run_exit_3_with_their_capability_code_and_store_nothing() {
    let scn = Scenario::new("capability_gates");
    // A client that announces only TCP, as an older build would.
    let opts = ClientOpts::default().env("PORTUNUS_CLIENT_CAPABILITIES", "tcp");
    let (server, _client) = server_with_edge(&scn, &opts);
    let first = free_port();
    let port = first.to_string();
    let range = format!("{first}-{}", first + 1);
    let cases: [(Vec<&str>, &str); 5] = [
        (vec![&port, "127.0.0.1:9", "--protocol", "udp"], "unsupported_protocol"),
        (
            vec![&port, "--target", "127.0.0.1:9", "--target", "127.0.0.1:10"],
            "multi_target_unsupported_by_client",
        ),
        (vec![&port, "127.0.0.1:9,proxy=v1"], "proxy_protocol_unsupported_by_client"),
        (vec![&port, "localhost:9"], "dns_target_unsupported_by_client"),
        (vec![&range, "127.0.0.1:9"], "port_range_unsupported_by_client"),
    ];
    for (rest, code) in cases {
        let mut args = vec!["push-rule", "edge-01"];
        args.extend(rest.iter().copied());
        let out = server.cli(&args);
        assert_eq!(out.code, 3, "{args:?}: {out:?}");
        assert!(out.stderr.contains(code), "{args:?}: {out:?}");
        assert_eq!(out.stdout, "", "{args:?}: nothing stored, no id printed");
    }
    assert!(server.rules().is_empty(), "nothing was stored");
}
