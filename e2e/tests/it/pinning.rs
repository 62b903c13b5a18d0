//! Certificate pinning and bundle validation: a client that does not trust the server's leaf
//! stops before it sends its token; a bundle it cannot read is a usage error.

use serde_json::{Value, json};

use crate::harness::{Client, ClientOpts, Scenario, Server, ServerOpts};

/// The same 64 hex digits with the first one changed.
fn altered_pin(pin: &str) -> String {
    let first = if pin.starts_with('0') { '1' } else { '0' };
    format!("{first}{}", &pin[1..])
}

#[test]
fn client_with_a_wrong_pin_logs_the_mismatch_and_exits_4_without_reaching_the_server() {
    let scn = Scenario::new("wrong_pin");
    let server = Server::start(&scn, ServerOpts::default());
    let bundle = scn.path("edge-01.bundle.json");
    Client::enroll_ok(&scn, &server.enroll("edge-01"), &bundle);
    let mut fields: Value =
        serde_json::from_str(&std::fs::read_to_string(&bundle).expect("bundle")).expect("bundle JSON");
    let real_pin = fields["server_cert_sha256"].as_str().expect("pin").to_owned();
    let wrong_pin = altered_pin(&real_pin);
    fields["server_cert_sha256"] = Value::String(wrong_pin.clone());
    let wrong = scn.path("wrong-pin.bundle.json");
    std::fs::write(&wrong, fields.to_string()).expect("write the altered bundle");

    let client = Client::start(&scn, &wrong, &ClientOpts::default());
    assert_eq!(client.proc().wait_exit(), 4, "exit status on a pin mismatch");
    client.proc().wait_event("control.tls_pinned_mismatch", &[("expected", &wrong_pin), ("got", &real_pin)]);
    assert!(client.proc().events_matching("control.connected", &[]).is_empty());

    // The handshake never completed, so the server saw no token and logged nothing for it.
    assert!(server.proc().events_matching("auth.failure", &[]).is_empty(), "{}", server.proc().log_text());
    assert!(server.proc().events_matching("client.connected", &[]).is_empty());

    // The server is unaffected: the genuine bundle still connects.
    Client::start_connected(&scn, &bundle, &ClientOpts::default());
    scn.assert_logs_free_of_secrets();
}

#[test]
fn malformed_bundles_exit_2() {
    let scn = Scenario::new("malformed_bundle");
    let valid = json!({
        "server_endpoint": "127.0.0.1:9",
        "server_cert_sha256": "ab".repeat(32),
        "client_id": "cl_0123456789abcdef0123",
        "client_name": "edge-01",
        "token": format!("cl_0123456789abcdef0123.{}", "cd".repeat(32)),
    });
    let without = |key: &str| {
        let mut value = valid.clone();
        value.as_object_mut().expect("object").remove(key);
        value.to_string()
    };
    let mut short_pin = valid.clone();
    short_pin["server_cert_sha256"] = Value::String("ab".repeat(31));
    let cases = [
        ("not-json", "{ this is not json".to_owned()),
        ("no-token", without("token")),
        ("no-pin", without("server_cert_sha256")),
        ("no-endpoint", without("server_endpoint")),
        ("short-pin", short_pin.to_string()),
    ];
    for (name, text) in cases {
        let path = scn.path(&format!("{name}.bundle.json"));
        std::fs::write(&path, text).expect("write bundle");
        let client = Client::start(&scn, &path, &ClientOpts::default());
        assert_eq!(client.proc().wait_exit(), 2, "bundle {name}: {}", client.proc().log_text());
        assert!(
            client.proc().log_text().contains("invalid_bundle"),
            "bundle {name}: {}",
            client.proc().log_text()
        );
    }
    let missing = Client::start(&scn, &scn.path("absent.bundle.json"), &ClientOpts::default());
    assert_eq!(missing.proc().wait_exit(), 2, "a missing bundle file");
    assert!(missing.proc().log_text().contains("invalid_bundle"));
}
