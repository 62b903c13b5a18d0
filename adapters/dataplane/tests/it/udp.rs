//! UDP forwarding over real loopback sockets: flows and reply routing, idle expiry, the
//! per-rule cap, head-of-line independence, ICMP eviction, sizes and bursts, binding.
//!
//! Every wait is a failure guard (`within`, `eventually`); no assertion is about how long
//! something took.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use portunus_core::ErrorCode;
use portunus_core::config::DataPlaneSettings;
use portunus_core::ids::RuleId;
use portunus_core::rule::{PortRange, Protocol, RuleDef, Target};
use portunus_core::stats::Counters;
use portunus_dataplane::DataPlane;
use portunus_dataplane::RuleRuntime;
use socket2::{Domain, Socket, Type};
use tokio::net::UdpSocket;
use tokio::time::Instant;

use crate::support::*;

/// Largest UDP payload over IPv4.
const MAX_V4_PAYLOAD: usize = 65_507;

/// A UDP rule on `127.0.0.1:listen` (or a range starting there).
fn udp_rule(listen: PortRange, targets: Vec<Target>) -> RuleDef {
    RuleDef { protocol: Protocol::Udp, ..tcp_rule(listen, targets) }
}

/// Binds a one-target UDP rule on a fresh port; returns the port.
async fn bind_udp(plane: &DataPlane, id: RuleId, backend: SocketAddr) -> u16 {
    let port = free_ports(1);
    let def = udp_rule(PortRange::single(port).unwrap(), vec![target(backend.ip(), backend.port(), 0)]);
    plane.bind(id, def).await.expect("bind the UDP rule");
    port
}

fn plane_with(settings: DataPlaneSettings) -> Arc<DataPlane> {
    let plane = plane(Path::Userspace);
    plane.apply_settings(settings);
    plane
}

/// A UDP socket on 127.0.0.1 with a large receive buffer (the kernel caps it).
fn big_socket(addr: SocketAddr) -> UdpSocket {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, None).expect("socket");
    let _ = socket.set_recv_buffer_size(4 << 20);
    socket.set_nonblocking(true).expect("nonblocking");
    socket.bind(&addr.into()).expect("bind");
    UdpSocket::from_std(socket.into()).expect("tokio socket")
}

/// A backend that answers each datagram with `reply(payload)`, if it returns one.
fn udp_backend(reply: impl Fn(&[u8]) -> Option<Vec<u8>> + Send + 'static) -> SocketAddr {
    let socket = big_socket(SocketAddr::new(LOCALHOST, 0));
    let addr = socket.local_addr().expect("backend addr");
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        while let Ok((len, from)) = socket.recv_from(&mut buf).await {
            if let Some(answer) = reply(&buf[..len]) {
                let _ = socket.send_to(&answer, from).await;
            }
        }
    });
    addr
}

fn udp_echo() -> SocketAddr {
    udp_backend(|payload| Some(payload.to_vec()))
}

/// A client socket on 127.0.0.1, connected to the rule's port.
async fn client(port: u16) -> UdpSocket {
    let socket = big_socket(SocketAddr::new(LOCALHOST, 0));
    socket.connect((LOCALHOST, port)).await.expect("connect the client");
    socket
}

/// Sends `payload` and returns the next datagram that comes back.
async fn roundtrip(socket: &UdpSocket, payload: &[u8]) -> Vec<u8> {
    socket.send(payload).await.expect("send");
    recv(socket).await
}

async fn recv(socket: &UdpSocket) -> Vec<u8> {
    let mut buf = vec![0u8; 65_536];
    let len = within(socket.recv(&mut buf)).await.expect("recv");
    buf.truncate(len);
    buf
}

/// Sends `payload` every 200 ms until a datagram for which `accept` holds comes back (UDP may
/// drop a datagram; a retry from the same socket stays in the same flow).
async fn roundtrip_retrying(socket: &UdpSocket, payload: &[u8], accept: impl Fn(&[u8]) -> bool) -> Vec<u8> {
    let deadline = Instant::now() + GUARD;
    let mut buf = vec![0u8; 65_536];
    loop {
        assert!(Instant::now() < deadline, "no answer to {payload:?} (failure guard)");
        socket.send(payload).await.expect("send");
        let wait = tokio::time::sleep(Duration::from_millis(200));
        tokio::pin!(wait);
        loop {
            tokio::select! {
                got = socket.recv(&mut buf) => {
                    let len = got.expect("recv");
                    if accept(&buf[..len]) {
                        return buf[..len].to_vec();
                    }
                }
                () = &mut wait => break,
            }
        }
    }
}

fn report(plane: &DataPlane, id: RuleId) -> portunus_core::stats::RuleReport {
    plane.report().into_iter().find(|(rid, _)| *rid == id).map(|(_, r)| r).unwrap_or_default()
}

fn udp_totals(plane: &DataPlane, id: RuleId) -> Counters {
    report(plane, id).totals
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_sources_at_once_each_get_exactly_their_own_replies() {
    portunus_dataplane::raise_nofile_limit().expect("enough descriptors for 2,000 sockets");
    let plane = plane(Path::Userspace);
    let id = rule_id();
    let port = bind_udp(&plane, id, udp_echo()).await;
    let mut sockets = Vec::with_capacity(1000);
    for _ in 0..1000 {
        sockets.push(Arc::new(client(port).await));
    }

    // Every client waits for its own answer while all 1,000 flows exist at once.
    let mut tasks = tokio::task::JoinSet::new();
    for (i, socket) in sockets.iter().enumerate() {
        let socket = Arc::clone(socket);
        tasks.spawn(async move {
            let payload = format!("source {i} of 1000");
            let back = roundtrip_retrying(&socket, payload.as_bytes(), |_| true).await;
            assert_eq!(back, payload.as_bytes(), "client {i} got another flow's reply");
            i
        });
    }
    let mut answered = 0;
    while let Some(done) = tasks.join_next().await {
        done.expect("client task");
        answered += 1;
    }

    assert_eq!(answered, 1000);
    let t = udp_totals(&plane, id);
    assert_eq!((t.connections_total, t.connections_active), (1000, 1000), "{t:?}");
    assert_eq!(plane.udp_flows(id), 1000);
    assert!(t.datagrams_in >= 1000 && t.datagrams_out >= 1000, "{t:?}");
    assert_eq!(t.flows_dropped_overflow, 0);
    // Each peer saw its answers come from the rule's address, not from the backend.
    let mut buf = [0u8; 16];
    sockets[0].send(b"where from").await.expect("send");
    let (_, from) = within(sockets[0].recv_from(&mut buf)).await.expect("recv");
    assert_eq!(from, SocketAddr::new(LOCALHOST, port));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_flow_is_reaped_but_one_whose_upstream_keeps_talking_lives() {
    let idle = Duration::from_millis(1000);
    let plane = plane_with(DataPlaneSettings { udp_flow_idle: idle, ..DataPlaneSettings::default() });
    let id = rule_id();
    // "talk" makes the backend send 40 datagrams, one every 100 ms; anything else is echoed.
    let talker = big_socket(SocketAddr::new(LOCALHOST, 0));
    let backend = talker.local_addr().expect("addr");
    tokio::spawn(async move {
        let talker = Arc::new(talker);
        let mut buf = vec![0u8; 2048];
        while let Ok((len, from)) = talker.recv_from(&mut buf).await {
            if &buf[..len] == b"talk" {
                let talker = Arc::clone(&talker);
                tokio::spawn(async move {
                    for n in 0..40u32 {
                        let _ = talker.send_to(format!("upstream {n}").as_bytes(), from).await;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                });
            } else {
                let _ = talker.send_to(&buf[..len], from).await;
            }
        }
    });
    let port = bind_udp(&plane, id, backend).await;
    let quiet = client(port).await;
    let chatty = client(port).await;
    assert_eq!(roundtrip(&quiet, b"once").await, b"once");
    chatty.send(b"talk").await.expect("send");
    assert_eq!(recv(&chatty).await, b"upstream 0");

    // The quiet flow goes after a second of silence both ways, while the chatty one, whose
    // peer never speaks again, is kept alive by its upstream alone.
    eventually("the quiet flow is reaped", || udp_totals(&plane, id).connections_active == 1).await;
    let mut heard = 1;
    while heard < 40 {
        assert_eq!(recv(&chatty).await, format!("upstream {heard}").as_bytes(), "replies in order");
        heard += 1;
        if heard == 25 {
            // By now the chatty flow has outlived the idle time more than once.
            assert_eq!(plane.udp_flows(id), 1, "the flow with upstream traffic is alive");
        }
    }
    let t = udp_totals(&plane, id);
    assert_eq!((t.connections_total, t.connections_active), (2, 1), "never re-opened: {t:?}");

    // Once the upstream stops too, that flow goes as well; the quiet peer gets a new flow.
    eventually("the chatty flow is reaped", || udp_totals(&plane, id).connections_active == 0).await;
    assert_eq!(roundtrip(&quiet, b"again").await, b"again");
    assert_eq!(udp_totals(&plane, id).connections_total, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_flow_cap_spans_the_rules_ports_counts_overflow_and_keeps_existing_flows() {
    let plane = plane_with(DataPlaneSettings { udp_max_flows_per_rule: 3, ..DataPlaneSettings::default() });
    let id = rule_id();
    let echo = udp_echo();
    let start = free_ports(2);
    let def = udp_rule(PortRange::new(start, start + 1).unwrap(), vec![target(LOCALHOST, echo.port(), 0)]);
    plane.bind(id, def).await.expect("bind");
    let admitted = [client(start).await, client(start).await, client(start + 1).await];
    for (i, socket) in admitted.iter().enumerate() {
        let payload = format!("admitted {i}");
        assert_eq!(roundtrip(socket, payload.as_bytes()).await, payload.as_bytes());
    }

    // A fourth source, on the port that has only one flow: the cap is the rule's.
    let refused = client(start + 1).await;
    refused.send(b"no room").await.expect("send");
    eventually("the overflow is counted", || udp_totals(&plane, id).flows_dropped_overflow == 1).await;

    let r = report(&plane, id);
    assert_eq!(r.per_port[&(start + 1)].flows_dropped_overflow, 1);
    assert_eq!((r.totals.connections_total, r.totals.connections_active), (3, 3));
    for (i, socket) in admitted.iter().enumerate() {
        let payload = format!("still here {i}");
        assert_eq!(roundtrip(socket, payload.as_bytes()).await, payload.as_bytes(), "flow {i} kept");
    }
    let mut buf = [0u8; 16];
    assert!(refused.try_recv(&mut buf).is_err(), "the refused datagram was forwarded");
    assert_eq!(udp_totals(&plane, id).connections_total, 3);
}

/// Ping-pongs `n` numbered datagrams on `socket`, `gap` apart; each answer must be the next
/// in order. Returns the sorted round trips, for the log only.
async fn ping_pong(socket: &UdpSocket, tag: &str, n: usize, gap: Duration) -> Vec<Duration> {
    let mut rtts = Vec::with_capacity(n);
    for seq in 0..n {
        tokio::time::sleep(gap).await;
        let payload = format!("{tag} {seq}");
        let sent = Instant::now();
        let back = roundtrip(socket, payload.as_bytes()).await;
        rtts.push(sent.elapsed());
        assert_eq!(back, payload.as_bytes(), "answers arrive in order, none missing");
    }
    rtts.sort();
    rtts
}

/// Floods `socket` with 1 KiB datagrams (64 per millisecond at most, 100,000 at most) until
/// `stop` is set; returns how many were sent.
fn flood(socket: Arc<UdpSocket>, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let payload = vec![b'A'; 1024];
        let mut sent = 0u64;
        while !stop.load(Ordering::Relaxed) && sent < 100_000 {
            for _ in 0..64 {
                if socket.send(&payload).await.is_ok() {
                    sent += 1;
                }
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        sent
    })
}

async fn with_and_without_flood(b: &UdpSocket, a: Arc<UdpSocket>) -> (u64, Vec<Duration>, Vec<Duration>) {
    let gap = Duration::from_millis(2);
    let quiet = ping_pong(b, "B alone", 100, gap).await;
    let stop = Arc::new(AtomicBool::new(false));
    let flooder = flood(a, Arc::clone(&stop));
    // Let the flood get going before measuring.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let loaded = ping_pong(b, "B beside A", 100, gap).await;
    stop.store(true, Ordering::Relaxed);
    let sent = within(flooder).await.expect("flooder");
    (sent, quiet, loaded)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blackholed_flow_never_stalls_another_flow_on_the_same_port() {
    let plane = plane(Path::Userspace);
    let id = rule_id();
    // One target that answers B and swallows everything else: A's upstream never replies.
    let backend = udp_backend(|payload| payload.starts_with(b"B").then(|| payload.to_vec()));
    let port = bind_udp(&plane, id, backend).await;
    let a = Arc::new(client(port).await);
    let b = client(port).await;

    let (sent, quiet, loaded) = with_and_without_flood(&b, a).await;

    eprintln!(
        "B's round trips, p50/max: alone {:?}/{:?}, beside A ({sent} datagrams) {:?}/{:?}",
        quiet[50], quiet[99], loaded[50], loaded[99]
    );
    assert!(sent > 0);
    let t = udp_totals(&plane, id);
    assert_eq!((t.connections_total, t.connections_active), (2, 2), "{t:?}");
    assert!(t.datagrams_in > 200, "A's datagrams went through too: {t:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flow_to_a_blackhole_target_never_stalls_another_port_of_the_rule() {
    let plane = plane(Path::Userspace);
    let id = rule_id();
    // Port `start` goes to a socket that never reads (its buffer fills, then the kernel
    // drops); port `start + 1` goes to an echo backend.
    let targets = free_ports(2);
    let blackhole = std::net::UdpSocket::bind((LOCALHOST, targets)).expect("blackhole");
    let echo = big_socket(SocketAddr::new(LOCALHOST, targets + 1));
    tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        while let Ok((len, from)) = echo.recv_from(&mut buf).await {
            let _ = echo.send_to(&buf[..len], from).await;
        }
    });
    let start = free_ports(2);
    let mut def = udp_rule(PortRange::new(start, start + 1).unwrap(), vec![target(LOCALHOST, targets, 0)]);
    def.targets[0].ports = PortRange::new(targets, targets + 1).unwrap();
    plane.bind(id, def).await.expect("bind");
    let a = Arc::new(client(start).await);
    let b = client(start + 1).await;

    let (sent, quiet, loaded) = with_and_without_flood(&b, a).await;

    eprintln!(
        "B's round trips, p50/max: alone {:?}/{:?}, beside A ({sent} datagrams) {:?}/{:?}",
        quiet[50], quiet[99], loaded[50], loaded[99]
    );
    let r = report(&plane, id);
    assert!(r.per_port[&start].datagrams_in > 0, "A's datagrams reached the blackhole: {r:?}");
    assert_eq!(r.totals.connections_active, 2);
    drop(blackhole);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_icmp_port_unreachable_evicts_the_flow_and_the_next_datagram_rebuilds_it() {
    capture::install();
    let plane = plane(Path::Userspace);
    let id = rule_id();
    let closed = free_ports(1);
    let port = bind_udp(&plane, id, SocketAddr::new(LOCALHOST, closed)).await;
    let peer = client(port).await;
    let bystander = client(port).await;

    peer.send(b"into the void").await.expect("send");
    eventually("the refused flow is evicted", || {
        !capture::events("rule.udp_flow_evicted_icmp", id).is_empty() && plane.udp_flows(id) == 0
    })
    .await;
    let event = &capture::events("rule.udp_flow_evicted_icmp", id)[0];
    assert_eq!(event.fields["errno_name"], "ECONNREFUSED");
    assert_eq!(event.fields["reason"], "port_unreachable");
    assert_eq!(event.fields["port"], port.to_string());
    assert_eq!(udp_totals(&plane, id).connections_active, 0);

    // The target comes up; the listener kept running, and the next datagram builds a new flow.
    let echo = big_socket(SocketAddr::new(LOCALHOST, closed));
    tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        while let Ok((len, from)) = echo.recv_from(&mut buf).await {
            let _ = echo.send_to(&buf[..len], from).await;
        }
    });
    assert_eq!(roundtrip(&peer, b"anyone now?").await, b"anyone now?");
    assert_eq!(roundtrip(&bystander, b"me too").await, b"me too");
    let t = udp_totals(&plane, id);
    assert_eq!((t.connections_total, t.connections_active), (3, 2), "{t:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_largest_and_the_empty_datagram_pass_intact() {
    let plane = plane(Path::Userspace);
    let id = rule_id();
    let port = bind_udp(&plane, id, udp_echo()).await;
    let peer = client(port).await;
    let largest = pseudo_random(MAX_V4_PAYLOAD, 7);

    let back = roundtrip(&peer, &largest).await;
    assert!(back == largest, "65,507 bytes came back as {} different bytes", back.len());
    assert_eq!(roundtrip(&peer, b"").await, b"", "a zero-length datagram comes back as one");
    assert_eq!(roundtrip(&peer, b"after").await, b"after");

    let t = udp_totals(&plane, id);
    assert_eq!((t.datagrams_in, t.datagrams_out), (3, 3));
    assert_eq!((t.bytes_in, t.bytes_out), (MAX_V4_PAYLOAD as u64 + 5, MAX_V4_PAYLOAD as u64 + 5));
    assert_eq!(t.connections_total, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_beyond_the_socket_buffers_drops_datagrams_but_never_the_flow_or_listener() {
    let plane = plane(Path::Userspace);
    let id = rule_id();
    let received = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&received);
    let backend = udp_backend(move |payload| {
        counted.fetch_add(1, Ordering::Relaxed);
        payload.starts_with(b"ping").then(|| payload.to_vec())
    });
    let port = bind_udp(&plane, id, backend).await;
    let peer = client(port).await;
    assert_eq!(roundtrip(&peer, b"ping before").await, b"ping before");

    // 20,000 x 1,400 bytes as fast as the peer can send: far more than any buffer on the
    // way holds (the listener asks for 4 MiB, the kernel grants at most rmem_max).
    let burst = vec![b'x'; 1400];
    let sent = 20_000u64;
    for _ in 0..sent {
        let _ = peer.send(&burst).await;
    }

    let back = roundtrip_retrying(&peer, b"ping after", |got| got == b"ping after").await;
    assert_eq!(back, b"ping after");
    let late = client(port).await;
    assert_eq!(roundtrip(&late, b"ping from a new source").await, b"ping from a new source");
    let t = udp_totals(&plane, id);
    eprintln!(
        "burst: {sent} sent, {} forwarded, {} reached the backend",
        t.datagrams_in,
        received.load(Ordering::Relaxed)
    );
    assert_eq!(t.connections_total, 2, "the burst's flow survived (no re-open): {t:?}");
    assert_eq!(t.connections_active, 2);
    assert!(t.datagrams_in <= sent + 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_held_by_a_socket_with_so_reuseaddr_is_port_in_use_and_ranges_are_all_or_nothing() {
    let plane = plane(Path::Userspace);
    let start = free_ports(3);
    // The holder sets SO_REUSEADDR; the rule's listener does not, so they cannot share.
    let holder = Socket::new(Domain::IPV4, Type::DGRAM, None).expect("socket");
    holder.set_reuse_address(true).expect("SO_REUSEADDR");
    holder.bind(&SocketAddr::new(LOCALHOST, start + 1).into()).expect("holder binds");

    for listen_addr in [Some(LOCALHOST), None] {
        let mut def =
            udp_rule(PortRange::single(start + 1).unwrap(), vec![target(LOCALHOST, dead_port(), 0)]);
        def.listen_addr = listen_addr;
        let failure = plane.bind(rule_id(), def).await.expect_err("must fail");
        assert_eq!(failure.code, ErrorCode::PortInUse, "{listen_addr:?}");
        assert_eq!(failure.message, format!("port {} already in use", start + 1));
    }

    let range = udp_rule(PortRange::new(start, start + 2).unwrap(), vec![target(LOCALHOST, dead_port(), 0)]);
    let failure = plane.bind(rule_id(), range).await.expect_err("must fail");
    assert_eq!(failure.code, ErrorCode::PortInUse);
    assert!(failure.message.contains(&(start + 1).to_string()), "{}", failure.message);
    std::net::UdpSocket::bind((LOCALHOST, start)).expect("the range's first port was released");
    assert!(plane.report().is_empty());
    drop(holder);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_udp_rules_cannot_share_a_port() {
    let plane = plane(Path::Userspace);
    let echo = udp_echo();
    let port = bind_udp(&plane, rule_id(), echo).await;
    let def = udp_rule(PortRange::single(port).unwrap(), vec![target(LOCALHOST, echo.port(), 0)]);
    let failure = plane.bind(rule_id(), def).await.expect_err("a second listener on the port");
    assert_eq!(failure.code, ErrorCode::PortInUse);
    assert_eq!(roundtrip(&client(port).await, b"first rule serves").await, b"first rule serves");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unbind_frees_the_port_at_once_and_ends_the_flows() {
    let plane = plane(Path::Userspace);
    let id = rule_id();
    let kept = rule_id();
    let echo = udp_echo();
    let port = bind_udp(&plane, id, echo).await;
    let kept_port = bind_udp(&plane, kept, echo).await;
    let peer = client(port).await;
    assert_eq!(roundtrip(&peer, b"hello").await, b"hello");
    assert_eq!(plane.udp_flows(id), 1);

    plane.unbind(id);

    // No SO_REUSEADDR on this probe: the port must be really free.
    drop(std::net::UdpSocket::bind((LOCALHOST, port)).expect("port free after unbind"));
    assert_eq!(plane.udp_flows(id), 0);
    assert_eq!(plane.report().iter().map(|(rid, _)| *rid).collect::<Vec<_>>(), vec![kept]);
    assert_eq!(roundtrip(&client(kept_port).await, b"other rule").await, b"other rule");
    plane.unbind(id); // unknown rule: no-op
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_and_udp_rules_share_a_port_number_and_an_id_can_change_protocol() {
    let plane = plane(Path::Userspace);
    let (tcp_id, udp_id) = (rule_id(), rule_id());
    let port = free_ports(1);
    let tcp_echo = echo_backend().await;
    let echo = udp_echo();
    let tcp = tcp_rule(PortRange::single(port).unwrap(), vec![target(LOCALHOST, tcp_echo.port(), 0)]);
    plane.bind(tcp_id, tcp).await.expect("TCP rule");
    let udp = udp_rule(PortRange::single(port).unwrap(), vec![target(LOCALHOST, echo.port(), 0)]);
    plane.bind(udp_id, udp).await.expect("UDP rule on the same port number");

    assert_eq!(within(exchange(connect(port).await, b"over tcp")).await, b"over tcp");
    assert_eq!(roundtrip(&client(port).await, b"over udp").await, b"over udp");

    // Re-binding the UDP rule's id as TCP on another port replaces the UDP runtime.
    let other = free_ports(1);
    let as_tcp = tcp_rule(PortRange::single(other).unwrap(), vec![target(LOCALHOST, tcp_echo.port(), 0)]);
    plane.bind(udp_id, as_tcp).await.expect("same id, now TCP");
    drop(std::net::UdpSocket::bind((LOCALHOST, port)).expect("the UDP listener is gone"));
    assert_eq!(plane.report().len(), 2);
    assert_eq!(within(exchange(connect(other).await, b"now tcp")).await, b"now tcp");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_bind_is_dual_stack() {
    let plane = plane(Path::Userspace);
    let id = rule_id();
    let echo = udp_echo();
    let port = free_ports(1);
    let mut def = udp_rule(PortRange::single(port).unwrap(), vec![target(LOCALHOST, echo.port(), 0)]);
    def.listen_addr = None;
    plane.bind(id, def).await.expect("bind");

    assert_eq!(roundtrip(&client(port).await, b"over v4").await, b"over v4");
    if std::net::UdpSocket::bind((Ipv6Addr::LOCALHOST, 0)).is_ok() {
        let v6 = big_socket(SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 0));
        v6.connect((Ipv6Addr::LOCALHOST, port)).await.expect("connect");
        assert_eq!(roundtrip(&v6, b"over v6").await, b"over v6");
        assert_eq!(udp_totals(&plane, id).connections_total, 2);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_udp_rules_and_frees_their_ports() {
    let plane = plane(Path::Userspace);
    let id = rule_id();
    let port = bind_udp(&plane, id, udp_echo()).await;
    assert_eq!(roundtrip(&client(port).await, b"x").await, b"x");

    let cut = within(plane.shutdown(Duration::from_secs(5))).await;

    assert_eq!(cut, 0, "UDP flows are not connections to drain");
    assert!(plane.report().is_empty());
    drop(std::net::UdpSocket::bind((LOCALHOST, port)).expect("port free after shutdown"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_are_per_port_and_the_report_has_one_entry_per_port_not_per_flow() {
    let plane = plane(Path::Userspace);
    let id = rule_id();
    let echo = udp_echo();
    let start = free_ports(2);
    let def = udp_rule(PortRange::new(start, start + 1).unwrap(), vec![target(LOCALHOST, echo.port(), 0)]);
    plane.bind(id, def).await.expect("bind");
    let mut expected: BTreeMap<u16, u64> = BTreeMap::new();
    for (i, port) in [start, start, start, start + 1].into_iter().enumerate() {
        let payload = vec![b'p'; 10 + i];
        assert_eq!(roundtrip(&client(port).await, &payload).await, payload);
        *expected.entry(port).or_default() += payload.len() as u64;
    }

    let r = report(&plane, id);
    assert_eq!(r.per_port.len(), 2);
    for (port, bytes) in expected {
        let c = r.per_port[&port];
        assert_eq!((c.bytes_in, c.bytes_out), (bytes, bytes), "port {port}");
    }
    assert_eq!(r.per_port[&start].connections_total, 3);
    assert_eq!(r.totals.datagrams_in, 4);
    assert_eq!(r.totals.connections_active, 4);
}

fn resolver_plane(dns: &portunus_resolver::test_server::DnsTestServer) -> Arc<DataPlane> {
    let resolver = portunus_resolver::HickoryResolver::with_server(dns.addr()).expect("resolver");
    DataPlane::with_resolver(options(Path::Userspace), resolver)
}

fn name_target(name: &str, port: u16, priority: u16) -> Target {
    let mut t = target(LOCALHOST, port, priority);
    t.host = portunus_core::rule::Host::Name(name.to_owned());
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_target_resolves_for_a_new_flow_without_losing_its_first_datagram() {
    let dns = portunus_resolver::test_server::DnsTestServer::start().await.unwrap();
    let echo = udp_echo();
    dns.set("dns-udp.test", vec![LOCALHOST], 60);
    let plane = resolver_plane(&dns);
    let id = rule_id();
    let port = free_ports(1);
    let def = udp_rule(PortRange::single(port).unwrap(), vec![name_target("dns-udp.test", echo.port(), 0)]);
    plane.bind(id, def).await.unwrap();

    // No retry: the datagram that triggered the resolution is the one answered.
    let socket = client(port).await;
    assert_eq!(roundtrip(&socket, b"first").await, b"first");
    let other = client(port).await;
    assert_eq!(roundtrip(&other, b"cached").await, b"cached");
    eventually("two flows", || udp_totals(&plane, id).connections_total == 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_resolution_drops_the_first_datagram_and_the_rule_goes_on() {
    capture::install();
    let dns = portunus_resolver::test_server::DnsTestServer::start().await.unwrap();
    let echo = udp_echo();
    let plane = resolver_plane(&dns);
    let id = rule_id();
    let port = free_ports(1);
    let def = udp_rule(PortRange::single(port).unwrap(), vec![name_target("later-udp.test", echo.port(), 0)]);
    plane.bind(id, def).await.unwrap();

    let socket = client(port).await;
    socket.send(b"lost").await.unwrap();
    eventually("the DNS failure is counted", || udp_totals(&plane, id).dns_failures == 1).await;
    let events = capture::events("rule.udp_dns_failed", id);
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].fields["host"], "later-udp.test");
    assert_eq!(events[0].fields["reason"], "no_records");

    dns.set("later-udp.test", vec![LOCALHOST], 60);
    assert_eq!(roundtrip_retrying(&socket, b"again", |b| b == b"again").await, b"again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_flows_fail_over_when_the_preferred_target_is_unreachable() {
    let echo = udp_echo();
    let dead = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let plane = plane(Path::Userspace);
    let id = rule_id();
    let port = free_ports(1);
    let def = udp_rule(
        PortRange::single(port).unwrap(),
        vec![target(LOCALHOST, dead, 0), target(LOCALHOST, echo.port(), 1)],
    );
    plane.bind(id, def).await.unwrap();

    // Each new source's flow goes to the dead target; its ICMP error evicts the flow and
    // counts against the target, and three of them fail it.
    let mut sources = Vec::new();
    for n in 0..3u64 {
        let socket = client(port).await;
        socket.send(b"probe").await.unwrap();
        // The error shows on the flow's next receive or send; a second datagram makes sure.
        let _ = socket.send(b"probe").await;
        eventually("the flow is evicted", || report(&plane, id).per_target[0].counters.connect_failures > n)
            .await;
        sources.push(socket);
    }
    let targets = report(&plane, id).per_target;
    assert_eq!(targets[0].health, portunus_core::stats::TargetHealth::Failed, "{targets:?}");
    let fresh = client(port).await;
    assert_eq!(roundtrip(&fresh, b"backup").await, b"backup");
    eventually("the failover is counted", || udp_totals(&plane, id).target_failovers >= 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_target_datagrams_and_bytes_add_up_to_the_rule_totals() {
    let (primary, backup) = (udp_echo(), udp_echo());
    let plane = plane(Path::Userspace);
    let id = rule_id();
    let port = free_ports(2);
    let def = udp_rule(
        PortRange::new(port, port + 1).unwrap(),
        vec![target(LOCALHOST, primary.port(), 0), target(LOCALHOST, backup.port(), 1)],
    );
    plane.bind(id, def).await.unwrap();

    // One flow per listen port, all to the healthy primary; sizes 1..=20 bytes.
    let (a, b) = (client(port).await, client(port + 1).await);
    let mut sent = 0u64;
    for n in 1..=10u8 {
        for (socket, size) in [(&a, n), (&b, n + 10)] {
            let payload = vec![n; usize::from(size)];
            assert_eq!(roundtrip(socket, &payload).await, payload);
            sent += u64::from(size);
        }
    }
    eventually("every reply is counted", || udp_totals(&plane, id).datagrams_out == 20).await;

    let report = report(&plane, id);
    let (t0, t1) = (report.per_target[0].counters, report.per_target[1].counters);
    assert_eq!((t0.datagrams_in, t0.datagrams_out, t0.bytes_in, t0.bytes_out), (20, 20, sent, sent));
    let totals = report.totals;
    assert_eq!(
        (totals.datagrams_in, totals.datagrams_out, totals.bytes_in, totals.bytes_out),
        (
            t0.datagrams_in + t1.datagrams_in,
            t0.datagrams_out + t1.datagrams_out,
            t0.bytes_in + t1.bytes_in,
            t0.bytes_out + t1.bytes_out
        ),
    );
    assert_eq!((t0.connections_total, t0.connections_active, t0.target_failovers), (2, 2, 0));
    assert_eq!(t1, Counters::default(), "the backup saw no flow");
    assert_eq!(report.per_port[&(port + 1)].bytes_in, (11..=20).sum::<u64>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flow_stops_forwarding_once_its_pairs_quota_budget_is_spent_and_resumes_on_a_new_one() {
    let plane = plane(Path::Userspace);
    let id = rule_id();
    let port = bind_udp(&plane, id, udp_echo()).await;
    let budget = Arc::new(portunus_dataplane::budget::QuotaBudget::new(5_000));
    plane.set_budget(id, Some(Arc::clone(&budget)));
    let socket = client(port).await;
    // One at a time, each answered: 1,000 bytes in and 1,000 out per exchange, so the third
    // one's request spends the budget and nothing comes back for it or after it.
    for _ in 0..2 {
        assert_eq!(roundtrip(&socket, &[9u8; 1_000]).await.len(), 1_000);
    }
    socket.send(&[9u8; 1_000]).await.expect("send");
    eventually("the budget to be spent", || budget.remaining() == 0).await;
    for _ in 0..5 {
        socket.send(&[9u8; 1_000]).await.expect("send");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut buf = [0u8; 2_048];
    let mut late = 0;
    while let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(50), socket.recv(&mut buf)).await {
        late += 1;
    }
    assert!(late <= 1, "at most the reply to the datagram that spent it: {late}");
    let totals = udp_totals(&plane, id);
    assert!(totals.bytes_in + totals.bytes_out <= 6_000, "overrun bounded by one batch: {totals:?}");
    // A new budget (a credit) resumes the same flow.
    budget.set(100_000);
    let back = roundtrip_retrying(&socket, b"again", |got| got == b"again").await;
    assert_eq!(back, b"again");
}
