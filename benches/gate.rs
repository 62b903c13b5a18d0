//! Fixed workloads for the regression gate (`cargo xtask bench --gate`), which runs each
//! under `valgrind --tool=callgrind` and compares instruction counts with
//! `benches/baseline.json`. Instruction counts do not drift with the host's speed, so a 25 %
//! threshold catches real regressions on a noisy machine.
//!
//! `gate <workload>` (without one, it lists them); workloads run on a current-thread runtime so that scheduling, and with
//! it the instruction count, is the same every run.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use portunus_core::ids::RuleId;
use portunus_core::rule::{ListenSpec, Protocol, RuleLimits, RuleSpec};
use portunus_dataplane::RuleRuntime;
use portunus_dataplane::{CopyPath, DataPlane, DataPlaneOptions, TrafficCounters};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

#[path = "support.rs"]
mod support;

/// Every workload, by name.
const WORKLOADS: &[&str] = &[
    "relay_userspace_16mib",
    "relay_splice_16mib",
    "connections_200",
    "connections_200_dns",
    "connections_200_proxy_v2",
    "validate_rules_10k",
    "udp_pingpong_2000",
    "udp_bursts_100x32",
    "udp_flows_500",
];

fn spec(listen: i64, target: String) -> RuleSpec {
    RuleSpec {
        name: None,
        protocol: Default::default(),
        listen_port: ListenSpec::Port(listen),
        listen_addr: Some("127.0.0.1".parse().expect("literal")),
        target: Some(target),
        targets: vec![],
        prefer_ipv6: false,
        health_check_interval_secs: None,
        sni_pattern: None,
        sni_fallback: false,
        rate_limit: None,
    }
}

async fn relay(path: CopyPath) {
    let sink = support::sink().await;
    let counters = Arc::new(TrafficCounters::default());
    let (mut client, task) = support::relay_pair(sink, path, counters.clone()).await;
    support::push(&mut client, 16 << 20).await;
    drop(client);
    task.await.expect("relay task");
    assert_eq!(counters.bytes_in(), 16 << 20);
}

/// How the connection workload's rule names its target.
#[derive(Clone, Copy)]
enum TargetKind {
    Ip,
    /// A DNS name answered by a loopback DNS server (cached after the first connection).
    Dns,
    /// An IP target that gets a PROXY v2 header.
    ProxyV2,
}

async fn connections(n: usize, kind: TargetKind) {
    let backend = support::responder().await;
    let dns = portunus_resolver::test_server::DnsTestServer::start().await.expect("dns server");
    dns.set("backend.gate.test", vec!["127.0.0.1".parse().expect("literal")], 300);
    let resolver = portunus_resolver::HickoryResolver::with_server(dns.addr()).expect("resolver");
    let plane = DataPlane::with_resolver(DataPlaneOptions::default(), resolver);
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("probe").local_addr().expect("addr").port();
    let target = match kind {
        TargetKind::Ip => backend.to_string(),
        TargetKind::Dns => format!("backend.gate.test:{}", backend.port()),
        TargetKind::ProxyV2 => format!("{backend},proxy=v2"),
    };
    let def = spec(i64::from(port), target).validate(RuleLimits::default()).expect("valid");
    plane.bind(RuleId::new(1), def).await.expect("bind");
    for _ in 0..n {
        let mut conn = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
        conn.write_all(&[7u8; 100]).await.expect("request");
        let mut reply = [0u8; 100];
        conn.read_exact(&mut reply).await.expect("reply");
    }
    plane.shutdown(std::time::Duration::from_secs(5)).await;
}

/// A UDP echo backend on 127.0.0.1.
async fn udp_echo() -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind udp echo");
    let addr = socket.local_addr().expect("udp echo addr");
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        while let Ok((len, from)) = socket.recv_from(&mut buf).await {
            let _ = socket.send_to(&buf[..len], from).await;
        }
    });
    addr
}

/// A plane with one UDP rule towards a UDP echo backend; returns it and the listen port.
async fn udp_plane() -> (Arc<DataPlane>, u16) {
    let echo = udp_echo().await;
    let plane = DataPlane::new(DataPlaneOptions::default());
    let port = std::net::UdpSocket::bind("127.0.0.1:0").expect("probe").local_addr().expect("addr").port();
    let mut rule = spec(i64::from(port), echo.to_string());
    rule.protocol = Protocol::Udp;
    plane.bind(RuleId::new(1), rule.validate(RuleLimits::default()).expect("valid")).await.expect("bind");
    (plane, port)
}

/// `rounds` times: `burst` datagrams of `size` bytes out through one flow, then all echoes
/// back. Bursts fit every socket buffer on the way, so nothing is dropped; a lost datagram
/// fails the workload instead of hanging it.
async fn udp_round_trips(rounds: usize, burst: usize, size: usize) {
    let (plane, port) = udp_plane().await;
    let client = UdpSocket::bind("127.0.0.1:0").await.expect("client");
    client.connect(("127.0.0.1", port)).await.expect("connect");
    let payload = vec![0x5au8; size];
    let mut buf = vec![0u8; 65_536];
    for _ in 0..rounds {
        for _ in 0..burst {
            client.send(&payload).await.expect("send");
        }
        for _ in 0..burst {
            let len = tokio::time::timeout(Duration::from_secs(10), client.recv(&mut buf))
                .await
                .expect("a datagram was lost")
                .expect("recv");
            assert_eq!(len, size);
        }
    }
    plane.shutdown(Duration::ZERO).await;
}

/// `n` sources, one round trip each: the cost of opening a flow.
async fn udp_flows(n: usize) {
    let (plane, port) = udp_plane().await;
    let mut clients = Vec::with_capacity(n);
    let mut buf = [0u8; 64];
    for _ in 0..n {
        let client = UdpSocket::bind("127.0.0.1:0").await.expect("client");
        client.connect(("127.0.0.1", port)).await.expect("connect");
        client.send(b"open").await.expect("send");
        tokio::time::timeout(Duration::from_secs(10), client.recv(&mut buf))
            .await
            .expect("a datagram was lost")
            .expect("recv");
        clients.push(client);
    }
    plane.shutdown(Duration::ZERO).await;
}

fn validate_rules(n: usize) {
    let mut ok = 0;
    for i in 0..n {
        let port = 1 + (i % 60_000) as i64;
        let target = format!("backend-{}.example.com:{}@{}", i % 97, 1 + i % 65_000, i % 8);
        ok += usize::from(spec(port, target).validate(RuleLimits::default()).is_ok());
    }
    assert_eq!(ok, n);
}

#[allow(clippy::print_stdout)] // The listing is the output.
fn main() {
    let Some(name) = std::env::args().nth(1) else {
        println!("{}", WORKLOADS.join("\n"));
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    match name.as_str() {
        "relay_userspace_16mib" => rt.block_on(relay(CopyPath::Userspace)),
        "relay_splice_16mib" => rt.block_on(relay(CopyPath::Splice)),
        "connections_200" => rt.block_on(connections(200, TargetKind::Ip)),
        "connections_200_dns" => rt.block_on(connections(200, TargetKind::Dns)),
        "connections_200_proxy_v2" => rt.block_on(connections(200, TargetKind::ProxyV2)),
        "validate_rules_10k" => validate_rules(10_000),
        "udp_pingpong_2000" => rt.block_on(udp_round_trips(2000, 1, 512)),
        "udp_bursts_100x32" => rt.block_on(udp_round_trips(100, 32, 1400)),
        "udp_flows_500" => rt.block_on(udp_flows(500)),
        "--bench" => {}
        other => {
            eprintln!("unknown workload {other:?}; known: {}", WORKLOADS.join(", "));
            std::process::exit(2);
        }
    }
}
