//! `SO_REUSEADDR` on rule listeners: a client restarted while the listen port has TIME_WAIT
//! sockets binds it again instead of failing with a spurious `port_in_use`.

use std::io::Read;

use crate::harness::{
    Backend, Client, ClientOpts, Scenario, connect, free_port, server_with_edge, wait_until,
};

const GREETING: &[u8] = b"hello, then goodbye\n";

/// Opens a connection through the rule and reads the backend's greeting to EOF. The backend
/// hangs up first, so the client's accepted socket (local port = listen port) closes first
/// and ends in TIME_WAIT.
fn greet_through(port: u16) {
    let mut stream = connect(port);
    let mut got = Vec::new();
    stream.read_to_end(&mut got).expect("read the greeting to EOF");
    assert_eq!(got, GREETING);
}

#[test]
fn a_quick_client_restart_rebinds_the_port_despite_time_wait_sockets() {
    let scn = Scenario::new("reuseaddr_quick_restart");
    let (server, client) = server_with_edge(&scn, &ClientOpts::default());
    let backend = Backend::greeter(GREETING);
    let port = free_port();
    let rule_id = server.push_rule("edge-01", port, &backend.target());
    greet_through(port);
    wait_until(&format!("a TIME_WAIT socket on port {port}"), || {
        (crate::harness::time_wait_sockets_on(port) > 0).then_some(())
    });

    assert_eq!(client.proc().terminate(), 0, "client exit status on SIGTERM");
    let restarted = Client::start_connected(&scn, client.bundle(), &ClientOpts::default());
    restarted.proc().wait_event("rule.bound", &[("rule", &rule_id.to_string())]);
    assert!(
        crate::harness::time_wait_sockets_on(port) > 0,
        "the TIME_WAIT socket was still there when the port was bound again"
    );
    assert!(restarted.proc().events_matching("rule.bind_failed", &[]).is_empty());
    assert_eq!(server.rule_state(rule_id).as_deref(), Some("active"));
    greet_through(port);
}
