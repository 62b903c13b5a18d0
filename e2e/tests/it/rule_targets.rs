//! Rule targets through the real server and client: port ranges (offset mapping, all or
//! nothing, validation codes, per-port stats), multi-target failover, DNS-name targets
//! against a DNS server on loopback, and PROXY protocol headers read by a real HAProxy.

use std::io::{Read, Write};
use std::net::{IpAddr, TcpListener, TcpStream};
use std::time::Duration;

use portunus_resolver::test_server::DnsTestServer;

use crate::harness::*;

/// Accepts on `listener` in a thread and answers each connection with `tag`, then closes.
fn tag_server(listener: TcpListener, tag: String) {
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let _ = stream.write_all(tag.as_bytes());
        }
    });
}

fn reply(addr: (&str, u16)) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect through the rule");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let mut text = String::new();
    let _ = stream.read_to_string(&mut text);
    text
}

/// `n` consecutive free ports, found by probing.
fn free_range(n: u16) -> u16 {
    loop {
        let start = free_port();
        if start > 60_000 {
            continue;
        }
        if (start..start + n).all(port_is_free) {
            return start;
        }
    }
}

#[test]
fn a_port_range_maps_each_port_to_the_target_port_at_the_same_offset() {
    let scn = Scenario::new("range_rule");
    let (server, _client) = server_with_edge(&scn, &ClientOpts::default());
    let listen = free_range(5);
    let target = loop {
        let t = free_range(5);
        if t.abs_diff(listen) >= 5 {
            break t;
        }
    };
    for offset in 0..5 {
        let listener = TcpListener::bind(("127.0.0.1", target + offset)).expect("bind target port");
        tag_server(listener, format!("port-{offset}"));
    }
    let out = server.cli(&[
        "push-rule",
        "edge-01",
        &format!("{listen}-{}", listen + 4),
        &format!("127.0.0.1:{target}-{}", target + 4),
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    let id: u64 = out.stdout.trim().parse().expect("rule id");
    for offset in [0u16, 3, 4] {
        assert_eq!(reply(("127.0.0.1", listen + offset)), format!("port-{offset}"));
    }
    assert_eq!(server.rules().len(), 1, "one rule row for the whole range");
    let per_port = wait_until("per-port counters", || {
        let stdout = server.cli_ok(&["rule-stats", &id.to_string(), "--per-port", "--format", "json"]);
        let stats: serde_json::Value = serde_json::from_str(&stdout).expect("json");
        let ports = stats["per_port"].as_array().cloned().unwrap_or_default();
        let busy = ports.iter().filter(|p| p["counters"]["connections_total"].as_u64() == Some(1)).count();
        (busy == 3).then_some(ports)
    });
    assert_eq!(per_port.len(), 5, "every port of the range is listed");
    assert_eq!(per_port[1]["port"].as_u64(), Some(u64::from(listen + 1)));
    assert_eq!(per_port[1]["counters"]["connections_total"].as_u64(), Some(0));
}

#[test]
fn range_activation_is_all_or_nothing_and_names_the_port_in_use() {
    let scn = Scenario::new("range_all_or_nothing");
    let (server, _client) = server_with_edge(&scn, &ClientOpts::default());
    let listen = free_range(4);
    let _holder = TcpListener::bind(("0.0.0.0", listen + 2)).expect("hold the third port");
    let out = server.cli(&["push-rule", "edge-01", &format!("{listen}-{}", listen + 3), "127.0.0.1:9"]);
    assert_eq!(out.code, 5, "{out:?}");
    assert!(out.stderr.contains(&format!("port {} already in use", listen + 2)), "{out:?}");
    assert!(
        port_is_free(listen) && port_is_free(listen + 1) && port_is_free(listen + 3),
        "nothing stays bound"
    );
}

#[test]
fn range_validation_refuses_mismatched_inverted_and_oversized_ranges() {
    let scn = Scenario::new("range_validation");
    let dir = scn.path("srv");
    std::fs::create_dir_all(&dir).expect("data dir");
    std::fs::write(dir.join("server.toml"), "range_rule_max_ports = 4\n").expect("server.toml");
    let server = Server::start_in(&scn, &dir, ServerOpts::default());
    let bundle = scn.path("edge-01.bundle.json");
    Client::enroll_ok(&scn, &server.enroll("edge-01"), &bundle);
    let _client = Client::start_connected(&scn, &bundle, &ClientOpts::default());
    for (listen, target, code) in [
        ("20000-20002", "127.0.0.1:30000-30001", "range_mismatch"),
        ("20002-20000", "127.0.0.1:30000", "validation.inverted_range"),
        ("20000-20004", "127.0.0.1:30000", "exceeds_cap"),
    ] {
        let out = server.cli(&["push-rule", "edge-01", listen, target]);
        assert_eq!(out.code, 2, "{listen} {target}: {out:?}");
        assert!(out.stderr.contains(code), "{listen} {target}: {out:?}");
    }
    assert!(server.rules().is_empty());
}

#[test]
fn connections_fail_over_to_the_next_target_and_per_target_health_shows_it() {
    let scn = Scenario::new("failover");
    let (server, _client) = server_with_edge(&scn, &ClientOpts::default());
    let backup = TcpListener::bind("127.0.0.1:0").expect("backup");
    let backup_port = backup.local_addr().expect("addr").port();
    tag_server(backup, "backup".into());
    let dead = free_port();
    let listen = free_port();
    let out = server.cli(&[
        "push-rule",
        "edge-01",
        &listen.to_string(),
        "--target",
        &format!("127.0.0.1:{dead}@1"),
        "--target",
        &format!("127.0.0.1:{backup_port}@2"),
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    let id = out.stdout.trim().to_owned();
    for _ in 0..4 {
        assert_eq!(reply(("127.0.0.1", listen)), "backup");
    }
    let stats = wait_until("per-target health", || {
        let stdout = server.cli_ok(&["rule-stats", &id, "--per-target", "--format", "json"]);
        let stats: serde_json::Value = serde_json::from_str(&stdout).expect("json");
        (stats["per_target"][0]["health"] == "failed"
            && stats["totals"]["target_failovers"].as_u64() == Some(4))
        .then_some(stats)
    });
    assert_eq!(stats["per_target"][0]["counters"]["connect_failures"].as_u64(), Some(3));
    assert_eq!(stats["per_target"][1]["health"], "healthy");
}

/// A tokio runtime for the loopback DNS server, kept alive for the test.
fn dns_server() -> (tokio::runtime::Runtime, DnsTestServer) {
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    let server = rt.block_on(DnsTestServer::start()).expect("dns server");
    (rt, server)
}

#[test]
fn dns_name_targets_resolve_on_the_client_and_failures_drop_only_the_connection() {
    let scn = Scenario::new("dns_targets");
    let (_rt, dns) = dns_server();
    let opts = ClientOpts::default().env("PORTUNUS_DNS_SERVER", &dns.addr().to_string());
    let (server, client) = server_with_edge(&scn, &opts);
    let backend = TcpListener::bind("127.0.0.1:0").expect("backend");
    let backend_port = backend.local_addr().expect("addr").port();
    tag_server(backend, "resolved".into());
    dns.set("svc.portunus.test", vec!["127.0.0.1".parse::<IpAddr>().expect("ip")], 5);
    let listen = free_port();
    let id = server.push_rule("edge-01", listen, &format!("svc.portunus.test:{backend_port}"));
    assert_eq!(reply(("127.0.0.1", listen)), "resolved");

    let missing = free_port();
    let missing_id = server.push_rule("edge-01", missing, &format!("gone.portunus.test:{backend_port}"));
    assert_eq!(reply(("127.0.0.1", missing)), "", "the connection is dropped");
    client.proc().wait_event(
        "rule.dns_failed",
        &[("rule", &missing_id.to_string()), ("host", "gone.portunus.test"), ("reason", "no_records")],
    );
    assert_eq!(server.rule_state(missing_id).as_deref(), Some("active"), "the rule never fails");
    let metrics_text = || http_get(server.addrs().metrics, "/metrics").1;
    let series = format!(
        "portunus_rule_dns_failures_total{{client=\"edge-01\",owner=\"_operator\",rule=\"{missing_id}\"}}"
    );
    wait_until("the DNS failure in the metrics", || {
        let text = metrics_text();
        text.lines().any(|l| l.starts_with(&series) && !l.ends_with(" 0")).then_some(())
    });
    assert_eq!(server.rule_state(id).as_deref(), Some("active"));
}

/// HAProxy in the foreground with `accept-proxy` listeners on 127.0.0.1 and ::1; each answers
/// an HTTP request with the client address it learnt from the PROXY header.
struct Haproxy {
    _proc: Proc,
    port: u16,
}

fn haproxy(scn: &std::sync::Arc<Scenario>) -> Haproxy {
    let port = free_port();
    let cfg = format!(
        "global\n  maxconn 100\ndefaults\n  mode http\n  timeout connect 5s\n  timeout client 10s\n  timeout server 10s\n\
         frontend fe\n  bind 127.0.0.1:{port} accept-proxy\n  bind [::1]:{port} accept-proxy\n\
         \x20 http-request return status 200 content-type text/plain lf-string \"%ci\"\n"
    );
    let path = scn.path("haproxy.cfg");
    std::fs::write(&path, cfg).expect("haproxy.cfg");
    let mut command = std::process::Command::new("haproxy");
    command.arg("-db").arg("-f").arg(&path);
    let proc = Proc::spawn("haproxy", command, &scn.path("logs/haproxy.log"), None);
    wait_until("haproxy listens", || (!port_is_free(port)).then_some(()));
    Haproxy { _proc: proc, port }
}

fn client_ip_seen(addr: (&str, u16)) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect through the PROXY rule");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    stream.write_all(b"GET / HTTP/1.0\r\nHost: t\r\n\r\n").expect("request");
    let mut text = String::new();
    let _ = stream.read_to_string(&mut text);
    assert!(
        text.starts_with("HTTP/1.0 200") || text.starts_with("HTTP/1.1 200"),
        "haproxy answered {text:?}"
    );
    text.split("\r\n\r\n").nth(1).unwrap_or_default().trim().to_owned()
}

#[test]
fn haproxy_sees_the_original_client_address_for_v1_and_v2_over_ipv4_and_ipv6() {
    let scn = Scenario::new("proxy_protocol_haproxy");
    let (server, _client) = server_with_edge(&scn, &ClientOpts::default());
    let hp = haproxy(&scn);
    for version in ["v1", "v2"] {
        for (target_host, client_host, expected) in
            [("127.0.0.1", "127.0.0.1", "127.0.0.1"), ("[::1]", "::1", "::1")]
        {
            let listen = free_port();
            let out = server.cli(&[
                "push-rule",
                "edge-01",
                &listen.to_string(),
                &format!("{target_host}:{},proxy={version}", hp.port),
            ]);
            assert_eq!(out.code, 0, "{out:?}");
            assert_eq!(client_ip_seen((client_host, listen)), expected, "{version} via {client_host}");
        }
    }
}

#[test]
fn per_target_stats_over_the_api_show_the_bytes_of_the_target_that_carried_them() {
    let scn = Scenario::new("per_target_bytes");
    // The harness's server asks clients for a report every second.
    let (server, _client) = server_with_edge(&scn, &ClientOpts::default());
    let (primary, backup) = (Backend::echo(), Backend::echo());
    let listen = free_port();
    let out = server.cli(&[
        "push-rule",
        "edge-01",
        &listen.to_string(),
        "--target",
        &format!("{}@1", primary.target()),
        "--target",
        &format!("{}@2", backup.target()),
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    let id = out.stdout.trim().to_owned();

    // Three echoed round trips on one connection: the bytes are known exactly.
    let n = 3 * 40_000u64;
    let mut stream = connect(listen);
    for round in 0..3u8 {
        roundtrip(&mut stream, &[round; 40_000]);
    }
    drop(stream);

    let api = server.api();
    let token = server.operator_token();
    let path = format!("/v1/rules/{id}/stats?per_target=true");
    let mut last = serde_json::Value::Null;
    let stats = wait_until_or(|| {
        let resp = api.call("GET", &path, &Auth::Bearer(&token), None);
        assert_eq!(resp.status, 200, "{}", resp.text);
        last = resp.body.clone();
        let first = &resp.body["per_target"][0]["counters"];
        (first["bytes_in"].as_u64() == Some(n) && first["bytes_out"].as_u64() == Some(n)).then_some(resp.body)
    })
    .unwrap_or_else(|| panic!("the primary never showed {n} bytes each way; last: {last}"));

    let targets = stats["per_target"].as_array().expect("per_target listed");
    assert_eq!(targets.len(), 2, "{stats}");
    assert_eq!(targets[0]["target"], format!("{}@1", primary.target()).as_str());
    assert_eq!(targets[0]["counters"]["connections_total"].as_u64(), Some(1), "{stats}");
    assert_eq!(targets[1]["counters"]["bytes_in"].as_u64(), Some(0), "the backup carried nothing: {stats}");
    assert_eq!(targets[1]["counters"]["connections_total"].as_u64(), Some(0), "{stats}");
    assert_eq!(stats["totals"]["bytes_in"].as_u64(), Some(n), "{stats}");
    assert_eq!(stats["totals"]["bytes_out"].as_u64(), Some(n), "{stats}");
}
