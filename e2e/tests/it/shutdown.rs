//! Shutdown on SIGTERM: the client stops accepting and drains (up to `--drain-timeout`), the
//! server closes streams and keeps its store consistent; both exit 0.

use std::io::Read;
use std::net::Shutdown;

use nix::sys::signal::Signal;
use serde_json::Value;

use crate::harness::{
    Backend, ClientOpts, Scenario, connect, free_port, port_is_free, roundtrip, server_with_edge, wait_until,
};

#[test]
fn client_sigterm_cuts_connections_left_after_the_drain_timeout_and_exits_0() {
    let scn = Scenario::new("client_drain_timeout");
    let (server, client) = server_with_edge(&scn, &ClientOpts::default().args(&["--drain-timeout", "1"]));
    let backend = Backend::echo();
    let port = free_port();
    server.push_rule("edge-01", port, &backend.target());
    let mut stream = connect(port);
    roundtrip(&mut stream, b"open while the client stops");

    assert_eq!(client.proc().terminate(), 0, "client exit status after draining");
    let stopped = client.proc().wait_event("client.stopped", &[]);
    assert_eq!(stopped["connections_cut"].as_u64(), Some(1), "{stopped}");
    let mut rest = Vec::new();
    let ended = stream.read_to_end(&mut rest);
    assert!(ended.is_err() || rest.is_empty(), "the cut connection carried unexpected bytes: {rest:?}");
}

#[test]
fn client_sigterm_stops_accepting_and_exits_0_once_open_connections_finish() {
    let scn = Scenario::new("client_drain_finishes");
    // A drain window far beyond the test's deadline: exiting in time proves the client
    // noticed the last connection end rather than waiting the window out.
    let (server, client) = server_with_edge(&scn, &ClientOpts::default().args(&["--drain-timeout", "600"]));
    let backend = Backend::echo();
    let port = free_port();
    server.push_rule("edge-01", port, &backend.target());
    let mut stream = connect(port);
    roundtrip(&mut stream, b"before SIGTERM");

    client.proc().signal(Signal::SIGTERM);
    client.proc().wait_event("client.stopping", &[]);
    wait_until("the listener to close", || port_is_free(port).then_some(()));
    roundtrip(&mut stream, b"draining connections still carry bytes");
    assert!(client.proc().exit_status().is_none(), "the client exited before its connection ended");

    stream.shutdown(Shutdown::Write).expect("finish the connection");
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).expect("the echo side closes too");
    drop(stream);
    assert_eq!(client.proc().wait_exit(), 0, "client exit status after draining");
    let stopped = client.proc().wait_event("client.stopped", &[]);
    assert_eq!(stopped["connections_cut"].as_u64(), Some(0), "{stopped}");
}

#[test]
fn server_sigterm_exits_0_and_a_restart_finds_everything() {
    let scn = Scenario::new("server_sigterm");
    let (mut server, client) = server_with_edge(&scn, &ClientOpts::default());
    let backend = Backend::echo();
    let port = free_port();
    let rule_id = server.push_rule("edge-01", port, &backend.target());
    let message = b"counted before the restart";
    let mut stream = connect(port);
    roundtrip(&mut stream, message);
    drop(stream);
    let total = u64::try_from(message.len()).expect("small");
    server.wait_rule_bytes(rule_id, total, total);
    let clients_before: Vec<Value> = server.clients().iter().map(|c| c["id"].clone()).collect();
    let rules_before: Vec<(Value, Value)> =
        server.rules().iter().map(|r| (r["id"].clone(), r["spec"].clone())).collect();

    assert_eq!(server.stop(), 0, "server exit status on SIGTERM");
    let stopped_run = server.past_runs().last().expect("the stopped run");
    stopped_run.wait_event("server.stopped", &[]);
    assert!(!server.data_dir().join("server.addr").exists(), "server.addr is removed at clean shutdown");
    client.proc().wait_event("control.disconnected", &[]);

    server.start_again();
    let clients_after: Vec<Value> = server.clients().iter().map(|c| c["id"].clone()).collect();
    let rules_after: Vec<(Value, Value)> =
        server.rules().iter().map(|r| (r["id"].clone(), r["spec"].clone())).collect();
    assert_eq!(clients_after, clients_before);
    assert_eq!(rules_after, rules_before);
    client.proc().wait_event_n(2, "control.connected", &[]);

    // Once a report from the reconnected client is in (the new rule's bytes are counted),
    // the old rule's totals are still exactly what they were: kept and not counted twice.
    let later_port = free_port();
    let later = server.push_rule("edge-01", later_port, &backend.target());
    roundtrip(&mut connect(later_port), message);
    server.wait_rule_bytes(later, total, total);
    let stats = server.rule_stats(rule_id);
    assert_eq!(stats["totals"]["bytes_in"].as_u64(), Some(total), "totals after restart: {stats}");
    assert_eq!(stats["totals"]["bytes_out"].as_u64(), Some(total), "totals after restart: {stats}");
}

#[test]
fn sigint_stops_client_and_server_like_sigterm() {
    let scn = Scenario::new("sigint");
    let (mut server, client) = server_with_edge(&scn, &ClientOpts::default());
    client.proc().signal(Signal::SIGINT);
    assert_eq!(client.proc().wait_exit(), 0, "client exit status on SIGINT");
    client.proc().wait_event("client.stopped", &[]);
    server.proc().signal(Signal::SIGINT);
    assert_eq!(server.proc().wait_exit(), 0, "server exit status on SIGINT");
    server.proc().wait_event("server.stopped", &[]);
    assert!(!server.data_dir().join("server.addr").exists());
    // The handle still thinks the process runs; start it again to prove the store is fine.
    server.forget_exited();
    server.start_again();
    assert!(server.client("edge-01").is_some());
}
