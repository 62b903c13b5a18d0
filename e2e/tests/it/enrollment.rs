//! Enrollment: the advertised endpoint in the URI and the bundle, the certificate's names,
//! and codes that are single-use, expire, survive a failed redeem and are parsed strictly.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::harness::{Client, Scenario, Server, ServerOpts, free_port};

/// The subjectAltName entries of a PEM certificate, as `openssl x509 -text` prints them.
fn certificate_sans(cert: &std::path::Path) -> Vec<String> {
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(cert)
        .output()
        .expect("openssl must be installed to read the certificate");
    assert!(out.status.success(), "openssl failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut lines = text.lines();
    lines
        .find(|l| l.contains("X509v3 Subject Alternative Name"))
        .and_then(|_| lines.next())
        .unwrap_or_else(|| panic!("no SAN extension in:\n{text}"))
        .split(',')
        .map(|entry| entry.trim().to_owned())
        .collect()
}

#[test]
fn advertised_endpoint_goes_into_the_uri_and_the_certificate_covers_every_name() {
    let scn = Scenario::new("advertised_endpoint_and_sans");
    let opts = ServerOpts::default().args(&[
        "--advertised-endpoint",
        "myhost.example:7443",
        "--cert-san",
        "extra-name.example",
    ]);
    let server = Server::start(&scn, opts);
    let uri = server.enroll("edge-01");
    assert!(uri.starts_with("portunus://myhost.example:7443/enroll?pin=sha256:"), "uri: {uri}");

    let sans = certificate_sans(&server.data_dir().join("server.crt"));
    let host = nix::unistd::gethostname().expect("host name").to_string_lossy().into_owned();
    for want in [
        format!("DNS:{host}"),
        "DNS:localhost".into(),
        "IP Address:127.0.0.1".into(),
        "DNS:myhost.example".into(),
        "DNS:extra-name.example".into(),
    ] {
        assert!(sans.contains(&want), "SAN {want} missing from {sans:?}");
    }
}

#[test]
fn advertised_endpoint_from_the_environment_is_what_the_bundle_connects_to() {
    let scn = Scenario::new("advertised_endpoint_env");
    let port = free_port();
    let opts = ServerOpts { control_listen: format!("[::]:{port}"), ..ServerOpts::default() }
        .env("PORTUNUS_ADVERTISED_ENDPOINT", &format!("localhost:{port}"));
    let server = Server::start(&scn, opts);
    let uri = server.enroll("edge-01");
    assert!(uri.starts_with(&format!("portunus://localhost:{port}/enroll?")), "uri: {uri}");
    let bundle = scn.path("edge-01.bundle.json");
    Client::enroll_ok(&scn, &uri, &bundle);
    let fields: Value =
        serde_json::from_str(&std::fs::read_to_string(&bundle).expect("bundle")).expect("JSON");
    assert_eq!(fields["server_endpoint"].as_str(), Some(format!("localhost:{port}").as_str()));
    Client::start_connected(&scn, &bundle, &Default::default());
    scn.assert_logs_free_of_secrets();
}

#[test]
fn an_enrollment_code_redeems_once() {
    let scn = Scenario::new("code_single_use");
    let server = Server::start(&scn, ServerOpts::default());
    let uri = server.enroll("edge-01");
    Client::enroll_ok(&scn, &uri, &scn.path("first.bundle.json"));
    let second = scn.path("second.bundle.json");
    let again = Client::enroll(&scn, &uri, &second);
    assert_eq!(again.code, 4, "second redeem: {again:?}");
    assert!(again.stderr.contains("enrollment_consumed"), "{again:?}");
    assert!(!second.exists(), "a refused redeem writes no bundle");
    server.proc().wait_event("enroll.redeem_failed", &[("code", "enrollment_consumed")]);
    scn.assert_logs_free_of_secrets();
}

#[test]
fn an_enrollment_code_expires() {
    let scn = Scenario::new("code_expires");
    let server = Server::start(&scn, ServerOpts::default());
    let issued = server.enroll_output("edge-01", &["--expires-in", "1"]);
    assert_eq!(issued.code, 0, "{issued:?}");
    let uri = crate::harness::uri_of_command(&issued.stdout);
    // The code lives one second; letting it pass is the point of the test.
    std::thread::sleep(Duration::from_millis(1500));
    let late = Client::enroll(&scn, &uri, &scn.path("late.bundle.json"));
    assert_eq!(late.code, 4, "redeem after expiry: {late:?}");
    assert!(late.stderr.contains("enrollment_expired"), "{late:?}");

    let too_long = server.enroll_output("edge-01", &["--expires-in", "86401"]);
    assert_eq!(too_long.code, 2, "a lifetime above 24 h: {too_long:?}");
    scn.assert_logs_free_of_secrets();
}

#[test]
fn a_failed_redeem_leaves_the_code_usable() {
    let scn = Scenario::new("failed_redeem_keeps_code");
    let server = Server::start(&scn, ServerOpts::default());
    let uri = server.enroll("edge-01");
    let (head, tail) = uri.split_once("pin=sha256:").expect("uri has a pin");
    let flipped = if tail.starts_with('0') { '1' } else { '0' };
    let wrong_pin = format!("{head}pin=sha256:{flipped}{}", &tail[1..]);
    let refused = Client::enroll(&scn, &wrong_pin, &scn.path("refused.bundle.json"));
    assert_eq!(refused.code, 4, "redeem against the wrong pin: {refused:?}");
    assert!(refused.stderr.contains("control.tls_pinned_mismatch"), "{refused:?}");
    Client::enroll_ok(&scn, &uri, &scn.path("edge-01.bundle.json"));
    scn.assert_logs_free_of_secrets();
}

#[test]
fn malformed_enrollment_uris_exit_2() {
    let scn = Scenario::new("malformed_uris");
    let pin = "ab".repeat(32);
    let code = "0123456789abcdef0123";
    let cases = [
        format!("https://127.0.0.1:7443/enroll?pin=sha256:{pin}&code={code}"),
        format!("portunus://127.0.0.1/enroll?pin=sha256:{pin}&code={code}"),
        format!("portunus://127.0.0.1:7443/enroll?pin=sha256:{}&code={code}", &pin[2..]),
        format!("portunus://127.0.0.1:7443/enroll?pin=md5:{pin}&code={code}"),
        format!("portunus://127.0.0.1:7443/enroll?pin=sha256:{pin}"),
        format!("portunus://127.0.0.1:7443/enroll?pin=sha256:{pin}&code=short"),
        format!("portunus://127.0.0.1:7443/enroll?pin=sha256:{pin}&code={code}&extra=1"),
        format!("portunus://127.0.0.1:7443/?pin=sha256:{pin}&code={code}"),
        String::new(),
    ];
    for uri in cases {
        let bundle = scn.path("never.bundle.json");
        let out = Client::enroll(&scn, &uri, &bundle);
        assert_eq!(out.code, 2, "uri {uri:?}: {out:?}");
        assert!(out.stderr.contains("enroll_uri_invalid"), "uri {uri:?}: {out:?}");
        assert!(!bundle.exists());
    }
}

#[test]
fn an_enrollment_keeps_the_endpoint_it_was_issued_with() {
    let scn = Scenario::new("endpoint_frozen_in_enrollment");
    let port = free_port();
    let dir = scn.path("srv");
    let on_port = |advertised: &str| {
        ServerOpts { control_listen: format!("[::]:{port}"), ..ServerOpts::default() }
            .args(&["--advertised-endpoint", advertised])
    };
    let mut first = Server::start_in(&scn, &dir, on_port(&format!("localhost:{port}")));
    let uri = first.enroll("edge-01");
    assert_eq!(first.stop(), 0);

    // Restarted with another advertised endpoint: the earlier code still carries its own.
    let second = Server::start_in(&scn, &dir, on_port(&format!("127.0.0.1:{port}")));
    assert!(second.enroll("edge-02").starts_with(&format!("portunus://127.0.0.1:{port}/")));
    let bundle = scn.path("edge-01.bundle.json");
    Client::enroll_ok(&scn, &uri, &bundle);
    let fields: Value =
        serde_json::from_str(&std::fs::read_to_string(&bundle).expect("bundle")).expect("JSON");
    assert_eq!(fields["server_endpoint"].as_str(), Some(format!("localhost:{port}").as_str()));
}

#[test]
fn an_advertised_host_the_certificate_does_not_cover_is_refused_by_enroll_client() {
    let scn = Scenario::new("advertised_host_not_in_cert");
    let dir = scn.path("srv");
    // The first start generates the certificate without the later name.
    let mut first = Server::start_in(&scn, &dir, ServerOpts::default());
    assert_eq!(first.stop(), 0);
    let opts = ServerOpts::default().args(&["--advertised-endpoint", "not-in-the-cert.example:7443"]);
    let server = Server::start_in(&scn, &dir, opts);
    let out = server.enroll_output("edge-01", &[]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("endpoint_not_in_cert_san"), "{out:?}");
    assert_eq!(out.stdout, "", "no command is handed out");
}

#[test]
fn a_malformed_advertised_endpoint_is_refused_at_start() {
    let scn = Scenario::new("advertised_endpoint_malformed");
    let opts = ServerOpts::default().args(&["--advertised-endpoint", "https://proxy.example:7443/x"]);
    let serve = Server::spawn_serve(&scn, &scn.path("srv"), &opts);
    assert_eq!(serve.wait_exit(), 2, "{}", serve.log_text());
    assert!(serve.log_text().contains("endpoint_invalid"), "{}", serve.log_text());
}
