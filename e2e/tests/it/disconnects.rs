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
