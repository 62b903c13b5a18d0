//! TCP forwarding: half-close and delivered-byte counters on both relay paths (splice and
//! userspace copy), and rules that do not disturb each other.

use std::io::{Read, Write};
use std::net::Shutdown;

use crate::harness::{
    Backend, ClientOpts, Scenario, connect, digest, free_port, port_is_free, roundtrip, server_with_edge,
    wait_until,
};

const FOUR_MIB: usize = 4 * 1024 * 1024;

/// Sends 4 MiB, shuts down the write side, and expects the whole 4 MiB back followed by
/// its digest (the backend answers only after it saw EOF); then checks the counters.
fn half_close_and_counters(name: &str, opts: &ClientOpts) -> crate::harness::Client {
    let scn = Scenario::new(name);
    let (server, client) = server_with_edge(&scn, opts);
    let backend = Backend::echo_after_eof();
    let port = free_port();
    let rule_id = server.push_rule("edge-01", port, &backend.target());

    let payload: Vec<u8> = (0..FOUR_MIB).map(|i| u8::try_from(i % 251).expect("below 251")).collect();
    let mut stream = connect(port);
    stream.write_all(&payload).expect("send 4 MiB");
    stream.shutdown(Shutdown::Write).expect("half-close the write side");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).expect("read the full response after half-closing");
    drop(stream);
    let trailer = digest(&payload);
    assert_eq!(response.len(), FOUR_MIB + trailer.len(), "response length");
    assert!(response[..FOUR_MIB] == payload[..], "the 4 MiB came back changed");
    assert_eq!(&response[FOUR_MIB..], trailer.as_bytes(), "the backend saw exactly what was sent");

    let bytes_in = u64::try_from(FOUR_MIB).expect("fits");
    let bytes_out = u64::try_from(response.len()).expect("fits");
    server.wait_rule_bytes(rule_id, bytes_in, bytes_out);
    let stats = wait_until("the connection to be counted as closed", || {
        let stats = server.rule_stats(rule_id);
        (stats["totals"]["connections_active"].as_u64() == Some(0)).then_some(stats)
    });
    assert_eq!(stats["totals"]["connections_total"].as_u64(), Some(1), "{stats}");
    assert_eq!(stats["totals"]["bytes_in"].as_u64(), Some(bytes_in), "{stats}");
    assert_eq!(stats["totals"]["bytes_out"].as_u64(), Some(bytes_out), "{stats}");
    client
}

#[test]
fn half_close_gets_the_full_response_and_counters_count_delivered_bytes_on_the_splice_path() {
    let client = half_close_and_counters("half_close_splice", &ClientOpts::default());
    let selected = client.proc().events_matching("proxy.splice_selected", &[]);
    let fallback = client.proc().events_matching("proxy.splice_unsupported_fallback", &[]);
    assert!(!selected.is_empty() || !fallback.is_empty(), "the default relay is the splice path");
}

#[test]
fn half_close_gets_the_full_response_and_counters_count_delivered_bytes_on_the_userspace_path() {
    let opts = ClientOpts::default().env("PORTUNUS_DISABLE_SPLICE", "1");
    let client = half_close_and_counters("half_close_userspace", &opts);
    let selected = client.proc().events_matching("proxy.splice_selected", &[]);
    assert!(selected.is_empty(), "PORTUNUS_DISABLE_SPLICE=1 still spliced: {selected:?}");
}

#[test]
fn removing_one_rule_leaves_another_rules_open_connection_working() {
    let scn = Scenario::new("remove_one_rule_keeps_other");
    let (server, client) = server_with_edge(&scn, &ClientOpts::default());
    let backend = Backend::echo();
    let (port_a, port_b) = (free_port(), free_port());
    let rule_a = server.push_rule("edge-01", port_a, &backend.target());
    let rule_b = server.push_rule("edge-01", port_b, &backend.target());
    let mut through_b = connect(port_b);
    roundtrip(&mut through_b, b"before the other rule goes");

    server.cli_ok(&["remove-rule", &rule_a.to_string()]);
    client.proc().wait_event("rule.unbound", &[("rule", &rule_a.to_string())]);
    wait_until("the removed rule's port to be free", || port_is_free(port_a).then_some(()));

    roundtrip(&mut through_b, b"after the other rule went");
    roundtrip(&mut connect(port_b), b"and new connections too");
    assert_eq!(server.rule_state(rule_b).as_deref(), Some("active"));
}

#[test]
fn rule_listeners_accept_ipv4_and_ipv6_by_default_and_listen_addr_narrows_them() {
    let scn = Scenario::new("dual_stack_and_listen_addr");
    let (server, _client) = server_with_edge(&scn, &ClientOpts::default());
    let backend = Backend::echo();
    let ipv6 = std::net::TcpListener::bind("[::1]:0").is_ok();

    let port = free_port();
    server.push_rule("edge-01", port, &backend.target());
    roundtrip(&mut connect(port), b"over IPv4");
    if ipv6 {
        let mut stream = std::net::TcpStream::connect(("::1", port)).expect("the rule listens on IPv6 too");
        stream.set_read_timeout(Some(crate::harness::DEADLINE)).expect("timeout");
        roundtrip(&mut stream, b"over IPv6");
    }

    let narrow = free_port();
    let pushed = server.cli(&[
        "push-rule",
        "edge-01",
        &narrow.to_string(),
        &backend.target(),
        "--listen-addr",
        "127.0.0.1",
    ]);
    assert_eq!(pushed.code, 0, "{pushed:?}");
    roundtrip(&mut connect(narrow), b"on the named address");
    if ipv6 {
        assert!(
            std::net::TcpStream::connect(("::1", narrow)).is_err(),
            "listen_addr 127.0.0.1 answered on ::1"
        );
    }
    let table = server.cli_ok(&["list-rules"]);
    assert!(table.contains(&format!("127.0.0.1:{narrow}")), "{table}");
}

#[test]
fn a_refused_target_closes_the_connection_and_counts_a_connect_failure() {
    let scn = Scenario::new("connect_failure");
    let (server, client) = server_with_edge(&scn, &ClientOpts::default());
    let port = free_port();
    // A port nothing listens on: the connect is refused at once.
    let dead_target = format!("127.0.0.1:{}", free_port());
    let rule_id = server.push_rule("edge-01", port, &dead_target);
    let mut stream = connect(port);
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest);
    assert!(rest.is_empty(), "no bytes from a dead target");
    let stats = wait_until("a counted connect failure", || {
        let stats = server.rule_stats(rule_id);
        (stats["totals"]["connect_failures"].as_u64() == Some(1)).then_some(stats)
    });
    assert_eq!(stats["totals"]["bytes_in"].as_u64(), Some(0), "{stats}");
    client.proc().wait_event("rule.connect_failed", &[("rule", &rule_id.to_string())]);
}

#[test]
fn the_client_raises_its_open_file_limit_to_the_hard_limit() {
    let scn = Scenario::new("nofile_raised");
    let opts = ClientOpts { soft_nofile: Some(256), ..ClientOpts::default() };
    let (_server, client) = server_with_edge(&scn, &opts);
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", client.proc().pid()))
        .expect("read the client's limits");
    let line = limits.lines().find(|l| l.starts_with("Max open files")).expect("a Max open files line");
    let fields: Vec<&str> = line.split_whitespace().collect();
    let (soft, hard) = (fields[3], fields[4]);
    // The wrapper started the client with a soft limit of 256 (or it would not have run).
    assert_eq!(soft, hard, "soft limit not raised to the hard limit: {line}");
}

#[test]
fn a_target_that_half_closes_first_still_receives_what_the_peer_sends_afterwards() {
    let scn = Scenario::new("half_close_target_first");
    let (server, _client) = server_with_edge(&scn, &ClientOpts::default());
    let greeting = b"I am done talking, go ahead\n";
    let backend = Backend::speak_first(greeting);
    let port = free_port();
    server.push_rule("edge-01", port, &backend.target());

    let mut stream = connect(port);
    let mut heard = Vec::new();
    stream.read_to_end(&mut heard).expect("the target's EOF reaches the peer");
    assert_eq!(heard, greeting);
    let reply = vec![b'r'; 300_000];
    stream.write_all(&reply).expect("the peer can still send after the target's EOF");
    stream.shutdown(Shutdown::Write).expect("half-close");
    let received =
        wait_until("the target to read the peer's bytes to EOF", || backend.received().into_iter().next());
    assert!(received == reply, "the target got {} bytes, expected {}", received.len(), reply.len());
}

#[test]
fn counters_advance_while_a_connection_is_still_open() {
    let scn = Scenario::new("live_counters");
    let (server, _client) = server_with_edge(&scn, &ClientOpts::default());
    let backend = Backend::echo();
    let port = free_port();
    let rule_id = server.push_rule("edge-01", port, &backend.target());
    let mut stream = connect(port);
    let payload = vec![7u8; 1024 * 1024];
    roundtrip(&mut stream, &payload);

    // Counters move in batches of up to 64 KiB per direction while the connection lives.
    let batch = 64 * 1024;
    let floor = u64::try_from(payload.len() - batch).expect("fits");
    let stats = wait_until("live counters for the open connection", || {
        let stats = server.rule_stats(rule_id);
        let totals = &stats["totals"];
        let live = totals["connections_active"].as_u64() == Some(1)
            && totals["bytes_in"].as_u64().is_some_and(|b| b >= floor)
            && totals["bytes_out"].as_u64().is_some_and(|b| b >= floor);
        live.then_some(stats)
    });
    assert_eq!(stats["totals"]["connections_total"].as_u64(), Some(1), "{stats}");
    roundtrip(&mut stream, b"still open");
}
