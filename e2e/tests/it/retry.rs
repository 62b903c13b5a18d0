//! Reconnection: a client whose server is down keeps retrying with capped backoff and
//! connects as soon as the server is back.

use crate::harness::{Client, ClientOpts, Scenario, Server, ServerOpts};

/// The contract's backoff cap.
const MAX_RETRY_MS: u64 = 30_000;

#[test]
fn client_retries_while_the_server_is_down_and_connects_when_it_returns() {
    let scn = Scenario::new("retry_until_server_returns");
    let mut server = Server::start(&scn, ServerOpts::default());
    let bundle = scn.path("edge-01.bundle.json");
    Client::enroll_ok(&scn, &server.enroll("edge-01"), &bundle);
    assert_eq!(server.stop(), 0, "server exit status on SIGTERM");

    let client = Client::start(&scn, &bundle, &ClientOpts::default());
    client.proc().wait_event_n(3, "control.disconnected", &[]);
    for event in client.proc().events_matching("control.disconnected", &[]) {
        let retry_in_ms = event["retry_in_ms"].as_u64().expect("control.disconnected has retry_in_ms");
        assert!(retry_in_ms <= MAX_RETRY_MS, "backoff above the cap: {event}");
        assert!(event["reason"].as_str().is_some_and(|r| !r.is_empty()), "no reason: {event}");
    }
    assert!(client.proc().exit_status().is_none(), "the client gave up: {}", client.proc().log_text());

    server.start_again();
    client.proc().wait_event("control.connected", &[]);
    let listed = server.client("edge-01").expect("edge-01 is listed");
    assert_eq!(listed["connected"], serde_json::Value::Bool(true));
    scn.assert_logs_free_of_secrets();
}

#[test]
fn client_retries_after_a_connection_attempt_times_out() {
    let scn = Scenario::new("retry_after_timeout");
    let silent = crate::harness::Backend::silent();
    let bundle = scn.path("silent.bundle.json");
    let fields = serde_json::json!({
        "server_endpoint": silent.target(),
        "server_cert_sha256": "ab".repeat(32),
        "client_id": "cl_0123456789abcdef0123",
        "client_name": "edge-01",
        "token": format!("cl_0123456789abcdef0123.{}", "cd".repeat(32)),
    });
    std::fs::write(&bundle, fields.to_string()).expect("write bundle");
    // The peer accepts TCP but never answers the TLS handshake: the attempt times out
    // (after the client's connect timeout) and is retried, never fatal.
    let client = Client::start(&scn, &bundle, &ClientOpts::default());
    let event = client.proc().wait_event("control.disconnected", &[]);
    assert!(event["retry_in_ms"].as_u64().is_some_and(|ms| ms <= MAX_RETRY_MS), "{event}");
    assert!(client.proc().exit_status().is_none(), "a timeout is not fatal: {}", client.proc().log_text());
    assert!(client.proc().events_matching("control.tls_pinned_mismatch", &[]).is_empty());
}
