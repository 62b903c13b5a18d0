//! Rate limits on forwarded traffic, on the real binaries: a rule's bandwidth cap slows a TCP
//! transfer (never closes it) and a hot update lifts it on the live connection; a rule's
//! concurrency cap closes the extra connection at accept; an owner envelope caps the owner's
//! rules together and binds before their own caps; UDP datagrams over a bandwidth cap are
//! dropped and counted; standalone `[rule.rate_limit]` enforces the same caps. Every figure
//! here is a generous band: the precise rates are measured by `benches/rate_limits.rs`.

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{
    Api, Auth, Backend, ClientOpts, Proc, Scenario, Server, bin, connect, free_port, http_get, roundtrip,
    server_with_edge, wait_until,
};

/// Sends `len` bytes on an echo connection from a second thread and reads them back here;
/// returns how long the whole round trip took.
fn echo_transfer(stream: &TcpStream, len: usize) -> Duration {
    let started = Instant::now();
    let mut writer = stream.try_clone().expect("clone the stream");
    let sender =
        std::thread::spawn(move || writer.write_all(&vec![0x5a; len]).expect("write through the rule"));
    let mut back = vec![0u8; len];
    (&*stream).read_exact(&mut back).expect("the echo comes back whole");
    sender.join().expect("writer");
    assert!(back.iter().all(|b| *b == 0x5a), "the echo came back changed");
    started.elapsed()
}

/// True when the peer closed (or reset) the connection without sending anything.
fn closed_at_once(mut stream: TcpStream) -> bool {
    stream.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let _ = stream.write_all(b"anyone?");
    let mut buf = [0u8; 16];
    matches!(stream.read(&mut buf), Ok(0) | Err(_))
}

fn push(server: &Server, args: &[&str]) -> String {
    let out = server.cli(args);
    assert_eq!(out.code, 0, "{out:?}");
    out.stdout.trim().to_owned()
}

/// The rule's totals as the server has them once `ready` holds for them.
fn totals_when(api: &Api, op: &Auth<'_>, id: &str, what: &str, ready: impl Fn(&Value) -> bool) -> Value {
    wait_until(what, || {
        let stats = api.call("GET", &format!("/v1/rules/{id}/stats"), op, None);
        let totals = stats.body["totals"].clone();
        ready(&totals).then_some(totals)
    })
}

#[test]
fn a_bandwidth_cap_slows_tcp_and_a_hot_update_lifts_it_on_the_live_connection() {
    let scn = Scenario::new("rate_limit_bandwidth");
    let (server, client) = server_with_edge(&scn, &ClientOpts::default());
    let (api, operator) = (server.api(), server.operator_token());
    let op = Auth::Bearer(&operator);
    let backend = Backend::echo();
    let port = free_port();
    // 256 KiB/s towards the target (bytes, not bits), one second's burst.
    let id = push(
        &server,
        &["push-rule", "edge-01", &port.to_string(), &backend.target(), "--bandwidth-in-bps", "262144"],
    );
    let shown = api.call("GET", &format!("/v1/rules/{id}"), &op, None);
    assert_eq!(shown.body["spec"]["rate_limit"]["bandwidth_in_bps"], 262_144, "{}", shown.text);
    assert_eq!(shown.body["spec"]["rate_limit"]["bandwidth_in_burst_bytes"], 262_144);

    let conn = connect(port);
    // 1 MiB: the burst passes at once, the other 768 KiB at the cap (~3 s).
    let slow = echo_transfer(&conn, 1 << 20);
    assert!(
        (Duration::from_millis(2_000)..Duration::from_secs(15)).contains(&slow),
        "1 MiB under a 256 KiB/s cap took {slow:?}"
    );
    let totals = totals_when(&api, &op, &id, "throttling to be reported", |t| {
        t["rate_limit_throttled"].as_u64().is_some_and(|n| n > 0)
    });
    assert_eq!(totals["rate_limit_rejected"], 0, "{totals}");
    let labels = format!("{{client=\"edge-01\",owner=\"_operator\",rule=\"{id}\"}}");
    let scraped = http_get(server.addrs().metrics, "/metrics").1;
    let throttled =
        crate::metrics::sample(&scraped, &format!("portunus_rule_rate_limit_throttled_total{labels}"));
    assert!(throttled.is_some_and(|n| n > 0.0), "{scraped}");

    // Raise the cap in place: the same connection goes fast at once, nothing is bound again.
    let raised = api.call(
        "PATCH",
        &format!("/v1/rules/{id}"),
        &op,
        Some(&json!({"rate_limit": {"bandwidth_in_bps": 1_000_000_000u64}})),
    );
    assert_eq!(raised.status, 200, "{}", raised.text);
    client.proc().wait_event("rate_limit.rule_applied", &[("rule", &id)]);
    let fast = echo_transfer(&conn, 1 << 20);
    assert!(fast < Duration::from_millis(1_500), "1 MiB after the cap was raised took {fast:?}");
    assert_eq!(
        client.proc().events_matching("rule.bound", &[("rule", &id)]).len(),
        1,
        "a hot update never rebinds"
    );
    // And lifting every cap keeps the connection too.
    let lifted = api.call("PATCH", &format!("/v1/rules/{id}"), &op, Some(&json!({"rate_limit": {}})));
    assert_eq!(lifted.status, 200, "{}", lifted.text);
    assert!(lifted.body["spec"].get("rate_limit").is_none_or(Value::is_null), "{}", lifted.text);
    let mut conn = conn;
    roundtrip(&mut conn, b"still here");
}

#[test]
fn a_concurrency_cap_closes_the_extra_connection_at_accept_and_counts_it() {
    let scn = Scenario::new("rate_limit_concurrency");
    let (server, client) = server_with_edge(&scn, &ClientOpts::default());
    let (api, operator) = (server.api(), server.operator_token());
    let op = Auth::Bearer(&operator);
    let backend = Backend::echo();
    let port = free_port();
    let id = push(
        &server,
        &["push-rule", "edge-01", &port.to_string(), &backend.target(), "--concurrent-connections", "1"],
    );
    let mut first = connect(port);
    roundtrip(&mut first, b"first");
    assert!(closed_at_once(connect(port)), "the second connection is closed at accept");
    client.proc().wait_event("rule.rate_limited", &[("rule", &id)]);
    roundtrip(&mut first, b"the first is untouched");
    drop(first);
    // Its slot is free again once it closed.
    let mut again = wait_until("the slot to be released", || {
        let mut conn = connect(port);
        conn.set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");
        let ok = conn.write_all(b"ping").is_ok() && {
            let mut buf = [0u8; 4];
            conn.read_exact(&mut buf).is_ok()
        };
        ok.then_some(conn)
    });
    roundtrip(&mut again, b"after");
    let totals = totals_when(&api, &op, &id, "the refusal to be reported", |t| {
        t["rate_limit_rejected"].as_u64().is_some_and(|n| n >= 1)
    });
    assert!(totals["connections_total"].as_u64().unwrap_or(0) >= 2, "{totals}");
}

#[test]
fn an_owner_envelope_caps_the_owners_rules_together_and_lifting_it_frees_them() {
    let scn = Scenario::new("rate_limit_owner");
    let (server, client) = server_with_edge(&scn, &ClientOpts::default());
    let (api, operator) = (server.api(), server.operator_token());
    let op = Auth::Bearer(&operator);
    let alice_token = api.users_with_tokens(&op, &["alice"]).remove(0);
    let alice = Auth::Bearer(&alice_token);
    let (a, b) = (free_port(), free_port());
    for port in [a, b] {
        api.grant_port(&op, "alice", port);
    }
    // One connection at a time over all of alice's rules on edge-01.
    let envelope = "/v1/users/alice/owner-caps/edge-01";
    let set = api.call("PUT", envelope, &op, Some(&json!({"concurrent_connections": 1})));
    assert_eq!(set.status, 200, "{}", set.text);
    let backend = Backend::echo();
    for port in [a, b] {
        let body = json!({"client": "edge-01", "rule": {"listen_port": port, "target": backend.target()}});
        let pushed = api.call("POST", "/v1/rules", &alice, Some(&body));
        assert_eq!(pushed.status, 201, "{}", pushed.text);
    }
    client.proc().wait_event("rate_limit.owner_applied", &[("user", "alice")]);
    let mut on_a = connect(a);
    roundtrip(&mut on_a, b"alice on a");
    assert!(closed_at_once(connect(b)), "the envelope's one slot is taken by the connection on a");
    client.proc().wait_event("rule.rate_limited", &[("scope", "owner")]);

    // Lifting the envelope frees b at once, with a still open.
    assert_eq!(api.call("DELETE", envelope, &op, None).status, 204);
    client.proc().wait_event("rate_limit.owner_removed", &[("user", "alice")]);
    let mut on_b = connect(b);
    roundtrip(&mut on_b, b"alice on b");
    roundtrip(&mut on_a, b"a kept going");
}

/// A UDP socket that counts the datagrams it receives until told to stop.
fn udp_sink() -> (std::net::SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let socket = UdpSocket::bind("127.0.0.1:0").expect("sink binds loopback");
    socket.set_read_timeout(Some(Duration::from_millis(100))).expect("timeout");
    let addr = socket.local_addr().expect("addr");
    let count = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&count);
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        let quiet_for = Instant::now();
        // Ends on its own after a while, so a failing test leaves no thread behind for long.
        while quiet_for.elapsed() < Duration::from_secs(60) {
            if socket.recv_from(&mut buf).is_ok() {
                seen.fetch_add(1, Ordering::SeqCst);
            }
        }
    });
    (addr, count)
}

#[test]
fn udp_datagrams_over_a_bandwidth_cap_are_dropped_and_counted() {
    use std::sync::atomic::Ordering;
    let scn = Scenario::new("rate_limit_udp");
    let (server, _client) = server_with_edge(&scn, &ClientOpts::default());
    let (api, operator) = (server.api(), server.operator_token());
    let op = Auth::Bearer(&operator);
    let (sink, received) = udp_sink();
    let port = free_port();
    // 64 KiB/s with a 64 KiB bucket: 300 datagrams of 1,000 bytes sent at once overflow it.
    let id = push(
        &server,
        &[
            "push-rule",
            "edge-01",
            &port.to_string(),
            &sink.to_string(),
            "--protocol",
            "udp",
            "--bandwidth-in-bps",
            "65536",
        ],
    );
    let peer = UdpSocket::bind("127.0.0.1:0").expect("peer");
    for _ in 0..300 {
        peer.send_to(&[1u8; 1_000], ("127.0.0.1", port)).expect("send");
    }
    let totals = totals_when(&api, &op, &id, "the drops to be reported", |t| {
        t["rate_limit_dropped"].as_u64().is_some_and(|n| n > 0)
    });
    let dropped = totals["rate_limit_dropped"].as_u64().unwrap_or(0);
    let forwarded = totals["datagrams_in"].as_u64().unwrap_or(0);
    assert!((50..=90).contains(&forwarded), "about 65 datagrams fit the bucket: {totals}");
    assert!(dropped + forwarded <= 300 && dropped >= 150, "{totals}");
    wait_until("the forwarded datagrams to land", || {
        (received.load(Ordering::SeqCst) as u64 == forwarded).then_some(())
    });
}

#[test]
fn standalone_rate_limit_tables_cap_connections_like_a_pushed_rule() {
    let scn = Scenario::new("rate_limit_standalone");
    let backend = Backend::echo();
    let port = free_port();
    let config = format!(
        "[[rule]]\nname = \"capped\"\nlisten_port = {port}\ntarget = \"{}\"\n\n[rule.rate_limit]\nconcurrent_connections = 1\n",
        backend.target()
    );
    let path = scn.path("portunus.toml");
    std::fs::write(&path, config).expect("write the config");
    let mut command = Command::new(bin("portunus-standalone"));
    command.arg("--config").arg(&path);
    let (log, stdout) = scn.next_files("standalone");
    let proc = Proc::spawn("portunus-standalone", command, &log, Some(&stdout));
    proc.wait_event("standalone.started", &[]);
    let mut first = connect(port);
    roundtrip(&mut first, b"one");
    assert!(closed_at_once(connect(port)), "the second connection is closed at accept");
    proc.wait_event("rule.rate_limited", &[("scope", "rule"), ("cap", "concurrent_connections")]);
    roundtrip(&mut first, b"still one");
    drop(first);
    assert_eq!(proc.terminate(), 0);
}
