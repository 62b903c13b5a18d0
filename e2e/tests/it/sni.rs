//! TLS SNI routing through the real server and client: several TLS backends (`openssl
//! s_server`, certificates made by `openssl req`) behind one listen port, reached with
//! `openssl s_client -servername …` and `curl --resolve …`; the conflicts and the capability
//! gate with their codes and exit statuses; the route counters and the peek histogram on the
//! server's `/metrics`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::harness::*;

/// A TLS backend: `openssl s_server -WWW` serving `id.txt` (its name) from its directory,
/// with a certificate for `san`.
struct TlsBackend {
    _proc: Proc,
    port: u16,
    cert: PathBuf,
}

fn run_ok(what: &str, command: &mut Command) {
    let out = command.output().unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    assert!(out.status.success(), "{what} failed: {}", String::from_utf8_lossy(&out.stderr));
}

fn tls_backend(scn: &std::sync::Arc<Scenario>, name: &str, san: &str) -> TlsBackend {
    let dir = scn.path(&format!("tls-{name}"));
    std::fs::create_dir_all(&dir).expect("backend dir");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    run_ok(
        "openssl req",
        Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"])
            .args([
                "-days",
                "1",
                "-subj",
                &format!("/CN={name}"),
                "-addext",
                &format!("subjectAltName={san}"),
            ])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stdin(Stdio::null()),
    );
    std::fs::write(dir.join("id.txt"), format!("backend-{name}\n")).expect("id.txt");
    let port = free_port();
    let mut command = Command::new("openssl");
    command
        .args(["s_server", "-accept", &format!("127.0.0.1:{port}"), "-WWW", "-quiet"])
        .arg("-cert")
        .arg(&cert)
        .arg("-key")
        .arg(&key)
        .current_dir(&dir)
        .stdin(Stdio::null());
    let proc = Proc::spawn(
        &format!("s_server-{name}"),
        command,
        &scn.path(&format!("logs/s_server-{name}.log")),
        None,
    );
    wait_until("s_server listens", || (!port_is_free(port)).then_some(()));
    TlsBackend { _proc: proc, port, cert }
}

/// `curl` through the rule: `host` resolves to loopback, the certificate is checked against
/// `ca` (so the backend that answered is the one whose certificate covers `host`).
fn curl(host: &str, port: u16, ca: &Path) -> String {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "--resolve", &format!("{host}:{port}:127.0.0.1")])
        .arg("--cacert")
        .arg(ca)
        .arg(format!("https://{host}:{port}/id.txt"))
        .output()
        .expect("run curl");
    assert!(out.status.success(), "curl {host}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// `openssl s_client` through the rule, with `-servername name` (or `-noservername`),
/// asking for `id.txt`; returns everything it printed.
fn s_client(port: u16, servername: Option<&str>) -> String {
    let mut command = Command::new("openssl");
    command.args(["s_client", "-connect", &format!("127.0.0.1:{port}"), "-ign_eof"]);
    match servername {
        Some(name) => command.args(["-servername", name]),
        None => command.arg("-noservername"),
    };
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("s_client");
    child.stdin.take().expect("stdin").write_all(b"GET /id.txt HTTP/1.0\r\n\r\n").expect("request");
    let out = child.wait_with_output().expect("s_client output");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn one_port_routes_tls_clients_to_their_backend_by_server_name() {
    let scn = Scenario::new("sni_routing");
    let (server, _client) = server_with_edge(&scn, &ClientOpts::default());
    let api = tls_backend(&scn, "api", "DNS:api.example.com");
    let wildcard = tls_backend(&scn, "wildcard", "DNS:*.example.com");
    let fallback = tls_backend(&scn, "fallback", "DNS:fallback.invalid,IP:127.0.0.1");
    let port = free_port();
    let listen = port.to_string();
    for (target, flag) in [
        (api.port, vec!["--sni", "api.example.com"]),
        (wildcard.port, vec!["--sni", "*.example.com"]),
        (fallback.port, vec!["--sni-fallback"]),
    ] {
        let target = format!("127.0.0.1:{target}");
        let mut args = vec!["push-rule", "edge-01", &listen, &target];
        args.extend(flag);
        let out = server.cli(&args);
        assert_eq!(out.code, 0, "{args:?}: {out:?}");
    }
    let table = server.cli_ok(&["list-rules"]);
    assert!(table.lines().next().is_some_and(|h| h.ends_with("SNI")), "{table}");
    for shown in ["api.example.com", "*.example.com", "fallback"] {
        assert!(table.lines().any(|l| l.ends_with(shown)), "{shown} in {table}");
    }

    // curl, with the name resolved to loopback and the certificate verified.
    assert_eq!(curl("api.example.com", port, &api.cert), "backend-api");
    assert_eq!(curl("www.example.com", port, &wildcard.cert), "backend-wildcard");
    assert_eq!(curl("API.Example.COM", port, &api.cert), "backend-api", "names compare lowercased");
    // openssl s_client: a name, a name nothing matches, and no name at all.
    let answered = s_client(port, Some("api.example.com"));
    assert!(answered.contains("backend-api") && answered.contains("CN = api"), "{answered}");
    assert!(s_client(port, Some("a.b.example.com")).contains("backend-fallback"), "one label only");
    assert!(s_client(port, None).contains("backend-fallback"));
    let by_ip = Command::new("curl")
        .args(["-sS", "--max-time", "10", "--cacert"])
        .arg(&fallback.cert)
        .arg(format!("https://127.0.0.1:{port}/id.txt"))
        .output()
        .expect("curl by IP");
    assert_eq!(String::from_utf8_lossy(&by_ip.stdout).trim(), "backend-fallback", "{by_ip:?}");

    // The client reports its listener; the server exposes it with the fleet metrics.
    let metrics = server.addrs().metrics;
    let expected = [
        format!("portunus_sni_routed_total{{client=\"edge-01\",listen=\"{port}\",match=\"exact\"}} 3"),
        format!("portunus_sni_routed_total{{client=\"edge-01\",listen=\"{port}\",match=\"wildcard\"}} 1"),
        format!("portunus_sni_routed_total{{client=\"edge-01\",listen=\"{port}\",match=\"fallback\"}} 3"),
        format!(
            "portunus_tls_client_hello_peek_duration_seconds_count{{client=\"edge-01\",listen=\"{port}\"}} 7"
        ),
        format!(
            "portunus_tls_client_hello_peek_duration_seconds_bucket{{client=\"edge-01\",listen=\"{port}\",le=\"3\"}} 7"
        ),
    ];
    // Reports come every couple of seconds: wait until one carries every connection above.
    let mut last = String::new();
    let complete = crate::harness::wait_until_or(|| {
        let (status, body) = http_get(metrics, "/metrics");
        assert_eq!(status, 200);
        let done = expected.iter().all(|line| body.lines().any(|l| l == line));
        last = body;
        done.then_some(())
    });
    assert!(complete.is_some(), "missing some of {expected:#?} in\n{last}");
}

#[test]
fn sni_conflicts_and_bad_patterns_exit_with_their_codes_and_store_nothing() {
    let scn = Scenario::new("sni_conflicts");
    let (server, _client) = server_with_edge(&scn, &ClientOpts::default());
    let (sni_port, plain_port) = (free_port().to_string(), free_port().to_string());
    let push = |args: &[&str]| {
        let mut full = vec!["push-rule", "edge-01"];
        full.extend_from_slice(args);
        server.cli(&full)
    };
    assert_eq!(push(&[&sni_port, "127.0.0.1:9", "--sni", "api.example.com"]).code, 0);
    assert_eq!(push(&[&plain_port, "127.0.0.1:9"]).code, 0);
    let cases: [(Vec<&str>, i32, &str); 8] = [
        (vec![&sni_port, "127.0.0.1:9"], 5, "conflict.legacy_to_sni_unsupported"),
        (
            vec![&plain_port, "127.0.0.1:9", "--sni", "www.example.com"],
            5,
            "conflict.legacy_to_sni_unsupported",
        ),
        (vec![&plain_port, "127.0.0.1:9", "--sni-fallback"], 5, "conflict.legacy_to_sni_unsupported"),
        (vec![&sni_port, "127.0.0.1:10", "--sni", "API.example.com"], 5, "conflict.sni_pattern_taken"),
        (vec![&sni_port, "127.0.0.1:9", "--sni", "*"], 2, "validation.invalid_sni_pattern"),
        (vec![&sni_port, "127.0.0.1:9", "--sni", "*.com"], 2, "validation.invalid_sni_pattern"),
        (
            vec![&sni_port, "127.0.0.1:9", "--sni", "api.example.com", "--protocol", "udp"],
            2,
            "validation.protocol_mismatch",
        ),
        (vec![&sni_port, "127.0.0.1:9", "--sni", "x.example.com", "--sni-fallback"], 2, ""),
    ];
    for (args, exit, code) in cases {
        let out = push(&args);
        assert_eq!(out.code, exit, "{args:?}: {out:?}");
        assert!(out.stderr.contains(code), "{args:?}: {out:?}");
        assert_eq!(out.stdout, "", "{args:?}: nothing stored, no id printed");
    }
    assert_eq!(push(&[&sni_port, "127.0.0.1:9", "--sni-fallback"]).code, 0, "the first fallback");
    let second = push(&[&sni_port, "127.0.0.1:10", "--sni-fallback"]);
    assert_eq!(second.code, 5, "{second:?}");
    assert!(second.stderr.contains("conflict.sni_fallback_taken"), "{second:?}");
    assert_eq!(server.rules().len(), 3, "only the accepted pushes are stored");

    // The API answers the same codes with their HTTP statuses.
    let token = server.operator_token();
    let body = serde_json::json!({
        "client": "edge-01",
        "rule": {"listen_port": sni_port.parse::<u16>().unwrap(), "target": "127.0.0.1:11", "sni_pattern": "api.example.com"},
    });
    let resp = server.api().call("POST", "/v1/rules", &Auth::Bearer(&token), Some(&body));
    assert_eq!((resp.status, resp.code()), (409, "conflict.sni_pattern_taken"), "{resp:?}");
}

#[test]
fn an_sni_rule_for_a_client_without_the_capability_is_sni_unsupported_by_client() {
    let scn = Scenario::new("sni_capability");
    let opts = ClientOpts::default().env("PORTUNUS_CLIENT_CAPABILITIES", "tcp,udp,port_range,multi_target");
    let (server, _client) = server_with_edge(&scn, &opts);
    let port = free_port().to_string();
    for flag in [vec!["--sni", "api.example.com"], vec!["--sni-fallback"]] {
        let mut args = vec!["push-rule", "edge-01", &port, "127.0.0.1:9"];
        args.extend(flag);
        let out = server.cli(&args);
        assert_eq!(out.code, 3, "{args:?}: {out:?}");
        assert!(out.stderr.contains("sni_unsupported_by_client"), "{out:?}");
    }
    let token = server.operator_token();
    let body = serde_json::json!({
        "client": "edge-01",
        "rule": {"listen_port": port.parse::<u16>().unwrap(), "target": "127.0.0.1:9", "sni_pattern": "api.example.com"},
    });
    let resp = server.api().call("POST", "/v1/rules", &Auth::Bearer(&token), Some(&body));
    assert_eq!((resp.status, resp.code()), (422, "sni_unsupported_by_client"), "{resp:?}");
    assert!(server.rules().is_empty(), "nothing was stored");
    // The same client still takes a plain rule on that port.
    assert_eq!(server.cli(&["push-rule", "edge-01", &port, "127.0.0.1:9"]).code, 0);
}

#[test]
fn the_standalone_routes_by_sni_from_its_toml_file() {
    let scn = Scenario::new("sni_standalone");
    let api = tls_backend(&scn, "api", "DNS:api.example.com");
    let wildcard = tls_backend(&scn, "wildcard", "DNS:*.example.com");
    let fallback = tls_backend(&scn, "fallback", "DNS:fallback.invalid,IP:127.0.0.1");
    let port = free_port();
    let rule = |name: &str, target: u16, route: &str| {
        format!(
            "[[rule]]\nname = \"{name}\"\nlisten_port = {port}\ntarget = \"127.0.0.1:{target}\"\n{route}\n\n"
        )
    };
    let config = [
        rule("api", api.port, "sni_pattern = \"api.example.com\""),
        rule("any", wildcard.port, "sni_pattern = \"*.example.com\""),
        rule("rest", fallback.port, "sni_fallback = true"),
    ]
    .concat();
    let path = scn.path("portunus.toml");
    std::fs::write(&path, &config).expect("write the config");
    let mut command = Command::new(bin("portunus-standalone"));
    command.arg("--config").arg(&path);
    let (log, stdout) = scn.next_files("standalone");
    let _standalone = Proc::spawn("portunus-standalone", command, &log, Some(&stdout));
    wait_until("the standalone listens", || (!port_is_free(port)).then_some(()));
    assert_eq!(curl("api.example.com", port, &api.cert), "backend-api");
    assert_eq!(curl("www.example.com", port, &wildcard.cert), "backend-wildcard");
    assert!(s_client(port, None).contains("backend-fallback"));

    // A plain rule on the same port is refused before anything binds.
    let mixed =
        [config, format!("[[rule]]\nname = \"plain\"\nlisten_port = {port}\ntarget = \"127.0.0.1:9\"\n")]
            .concat();
    std::fs::write(&path, mixed).expect("write the config");
    let mut check = Command::new(bin("portunus-standalone"));
    check.arg("--config").arg(&path).arg("--check");
    let (log, stdout) = scn.next_files("standalone-check");
    let refused = Proc::spawn("portunus-standalone", check, &log, Some(&stdout));
    assert_ne!(refused.wait_exit(), 0);
    assert!(refused.log_text().contains("conflict.legacy_to_sni_unsupported"), "{}", refused.log_text());
}
