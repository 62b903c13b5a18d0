//! How the server names a client's disconnect: a client stopped normally closes its side of
//! the stream first (`stream_closed`), one that vanished does not (`stream_error`).

use nix::sys::signal::Signal;

use crate::harness::{ClientOpts, Scenario, server_with_edge};

#[test]
fn a_client_stopped_normally_is_a_normal_disconnect_and_a_killed_one_is_not() {
    let scn = Scenario::new("disconnect_reasons");
    let (server, client) = server_with_edge(&scn, &ClientOpts::default());
    assert_eq!(client.proc().terminate(), 0, "client exit status on SIGTERM");
    let stopped = server.proc().wait_event("client.disconnected", &[("client", "edge-01")]);
    assert_eq!(stopped["reason"].as_str(), Some("stream_closed"), "{stopped:?}");
    assert!(
        server.proc().events_matching("client.disconnected", &[("reason", "stream_error")]).is_empty(),
        "a normal stop logged as an error"
    );

    let again = crate::harness::Client::start_connected(&scn, client.bundle(), &ClientOpts::default());
    again.proc().signal(Signal::SIGKILL);
    again.proc().wait_exit();
    let killed = server.proc().wait_event_n(2, "client.disconnected", &[("client", "edge-01")]);
    assert_eq!(killed["reason"].as_str(), Some("stream_error"), "{killed:?}");
}

/// One live session per client: a second process with the same bundle is refused and binds
/// nothing while the first is connected; when the first stops (draining a connection), the
/// second takes over and binds the ports at once, and the rule never fails on the way.
#[test]
fn a_second_process_with_the_same_bundle_waits_its_turn_and_takes_over_when_the_first_stops() {
    use crate::harness::{Backend, Client, connect, free_port, roundtrip};
    let scn = Scenario::new("one_session_per_client");
    let (server, first) = server_with_edge(&scn, &ClientOpts::default());
    let backend = Backend::echo();
    let port = free_port();
    let rule = server.push_rule("edge-01", port, &backend.target()).to_string();

    let second = Client::start(&scn, first.bundle(), &ClientOpts::default());
    let refused = server.proc().wait_event("client.refused", &[("client", "edge-01")]);
    assert_eq!(refused["reason"].as_str(), Some("client_already_connected"), "{refused:?}");
    second.proc().wait_event("control.refused", &[("reason", "client_already_connected")]);
    assert!(second.proc().exit_status().is_none(), "the second process waits, it does not exit");
    roundtrip(&mut connect(port), b"still served by the first");
    assert!(second.proc().events_matching("rule.bound", &[]).is_empty(), "the second bound nothing");

    // The first stops while a connection through it is open: it drains that connection, yet
    // the ports are free at once and the second binds them.
    let mut held = connect(port);
    roundtrip(&mut held, b"before the handover");
    first.proc().signal(Signal::SIGTERM);
    second.proc().wait_event("control.connected", &[]);
    second.proc().wait_event("rule.bound", &[("rule", &rule)]);
    roundtrip(&mut connect(port), b"served by the second");
    roundtrip(&mut held, b"the first still drains its own");
    drop(held);
    assert_eq!(first.proc().wait_exit(), 0, "the first drained and stopped normally");

    assert!(second.proc().events_matching("rule.bind_failed", &[]).is_empty(), "no bind clash");
    let state = server.rule(rule.parse().expect("rule id")).expect("rule kept")["state"].clone();
    assert_eq!(state.as_str(), Some("active"), "the handover never failed the rule");
    assert!(server.proc().events_matching("rule.failed", &[]).is_empty());
}
