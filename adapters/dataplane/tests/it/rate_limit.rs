//! Rate limits in the data plane: bandwidth caps slow TCP and drop UDP, connection caps close
//! new connections at accept and drop the first datagram of a refused flow, a hot update
//! reaches a live connection, and only a bandwidth cap costs a connection the fast path.
//!
//! Waits are failure guards, except the transfer times that a cap exists to set: those are
//! checked against wide bands around what the cap implies.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use portunus_core::config::DataPlaneSettings;
use portunus_core::ratelimit::{LimitPath, RateLimits, SharedScope};
use portunus_core::rule::{PortRange, Protocol, RuleDef, SniRoute};
use portunus_core::sni::SniPattern;
use portunus_dataplane::{DataPlane, RuleRuntime, limits};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::Instant;

use crate::support::*;

const KIB: u64 = 1024;

/// A captured ClientHello for `api.example.com` (see core's `sni/testdata/README.md`).
const HELLO: &[u8] = include_bytes!("../../../../core/src/sni/testdata/openssl_tls13.bin");

/// A rule scope enforcing `limits`, on the data plane's clock.
fn scope(limits: RateLimits) -> Arc<SharedScope> {
    Arc::new(SharedScope::new(limits.validate().expect("valid caps"), limits::now()))
}

fn rule_path(scope: &Arc<SharedScope>) -> LimitPath {
    LimitPath::new(None, Some(Arc::clone(scope)))
}

/// True once the plane closed `stream` (end of stream or reset) without sending anything.
async fn closed_at_once(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 16];
    matches!(within(stream.read(&mut buf)).await, Ok(0) | Err(_))
}

/// One byte there and back through an echo backend.
async fn echoes(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 1];
    stream.write_all(b"x").await.is_ok() && matches!(within(stream.read(&mut buf)).await, Ok(1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bandwidth_cap_throttles_a_transfer_and_delivers_it_intact() {
    capture::install();
    // The fast path is on: a capped connection must leave it.
    let plane = plane(Path::Splice);
    let id = rule_id();
    let port = bind_simple(&plane, id, echo_backend().await).await;
    let caps = RateLimits {
        bandwidth_in_bps: Some(256 * KIB),
        bandwidth_in_burst_bytes: Some(64 * KIB),
        ..RateLimits::default()
    };
    plane.set_limits(id, rule_path(&scope(caps)));
    let data = pseudo_random(768 * KIB as usize, 11);

    let started = Instant::now();
    let back = within(exchange(connect(port).await, &data)).await;
    let took = started.elapsed();

    assert!(back == data, "echo differs: sent {} bytes, got {} back", data.len(), back.len());
    // 64 KiB of burst, then 704 KiB at 256 KiB/s: 2.75 s.
    assert!(
        (Duration::from_secs(2)..Duration::from_secs(6)).contains(&took),
        "768 KiB at 256 KiB/s took {took:?}"
    );
    let t = totals(&plane, id);
    assert_eq!((t.bytes_in, t.bytes_out, t.connections_total), (768 * KIB, 768 * KIB, 1));
    assert!(t.rate_limit_throttled > 0, "the inbound direction waited for refills");
    assert_eq!(t.rate_limit_rejected, 0);
    assert!(
        capture::events("proxy.splice_selected", id).is_empty(),
        "a capped connection copies in userspace"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concurrency_cap_closes_the_second_connection_at_once_while_the_first_works() {
    capture::install();
    let plane = plane(Path::Splice);
    let id = rule_id();
    let port = bind_simple(&plane, id, echo_backend().await).await;
    let rule = scope(RateLimits { concurrent_connections: Some(1), ..RateLimits::default() });
    plane.set_limits(id, rule_path(&rule));

    let mut first = connect(port).await;
    assert!(echoes(&mut first).await);
    let mut second = connect(port).await;
    assert!(closed_at_once(&mut second).await, "the second connection is closed at accept");
    assert!(echoes(&mut first).await, "the first connection is untouched");

    let t = totals(&plane, id);
    assert_eq!((t.rate_limit_rejected, t.connections_total), (1, 1), "a refusal is not a connection");
    let events = capture::events("rule.rate_limited", id);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].fields["scope"], "rule");
    assert_eq!(events[0].fields["cap"], "concurrent_connections");

    // The slot comes back when the first connection ends.
    drop(first);
    eventually("the first connection's slot is released", || rule.open_connections() == 0).await;
    let mut third = connect(port).await;
    assert!(echoes(&mut third).await);
    assert_eq!(rule.open_connections(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_path_given_before_the_bind_holds_from_the_first_connection_through_a_rebind() {
    let plane = plane(Path::Splice);
    let id = rule_id();
    let backend = echo_backend().await;
    let rule = scope(RateLimits { concurrent_connections: Some(1), ..RateLimits::default() });
    // The control loop and the standalone runner give a rule its path before they bind it.
    plane.set_limits(id, rule_path(&rule));
    let port = free_ports(1);
    let def = tcp_rule(PortRange::single(port).unwrap(), vec![target(backend.ip(), backend.port(), 0)]);
    plane.bind(id, def.clone()).await.expect("bind");

    let mut first = connect(port).await;
    assert!(echoes(&mut first).await);
    assert!(closed_at_once(&mut connect(port).await).await, "the cap holds from the first connection");

    // A rebind cuts the old connections (their slots come back) and keeps the path.
    plane.bind(id, def).await.expect("rebind");
    eventually("the cut connection's slot is released", || rule.open_connections() == 0).await;
    let mut again = connect(port).await;
    assert!(echoes(&mut again).await);
    assert!(closed_at_once(&mut connect(port).await).await, "the rebound rule keeps its cap");
    assert_eq!(totals(&plane, id).rate_limit_rejected, 1, "a rebind starts the rule's counters anew");

    // The default path clears the caps for connections from now on.
    plane.set_limits(id, LimitPath::default());
    let mut free = connect(port).await;
    assert!(echoes(&mut free).await);
    assert!(echoes(&mut again).await);
    assert_eq!(rule.open_connections(), 1, "only the connection admitted under the cap holds a slot");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_connection_rate_admits_its_burst_then_refuses_with_one_event_per_second() {
    capture::install();
    let plane = plane(Path::Splice);
    let id = rule_id();
    let port = bind_simple(&plane, id, echo_backend().await).await;
    let caps = RateLimits {
        new_connections_per_sec: Some(2),
        new_connections_burst: Some(2),
        ..RateLimits::default()
    };
    plane.set_limits(id, rule_path(&scope(caps)));

    // Five connections within a few milliseconds: the burst of two gets through.
    let mut admitted = 0;
    let mut open = Vec::new();
    for _ in 0..5 {
        let mut conn = connect(port).await;
        if echoes(&mut conn).await {
            admitted += 1;
        }
        open.push(conn);
    }
    assert_eq!(admitted, 2);
    let t = totals(&plane, id);
    assert_eq!((t.rate_limit_rejected, t.connections_total), (3, 2));
    let events = capture::events("rule.rate_limited", id);
    assert_eq!(events.len(), 1, "three refusals within a second log once: {events:?}");
    assert_eq!(events[0].fields["cap"], "new_connections_per_sec");

    // Half a second earns the next token.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let mut later = connect(port).await;
    assert!(echoes(&mut later).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hot_update_raises_the_cap_of_a_live_connection_without_closing_it() {
    let plane = plane(Path::Splice);
    let id = rule_id();
    const TOTAL: usize = 1 << 20;
    let payload = Arc::new(pseudo_random(TOTAL, 23));
    // A download: the backend sends 1 MiB, then closes.
    let served = Arc::clone(&payload);
    let addr = backend(move |mut stream| {
        let served = Arc::clone(&served);
        async move {
            let _ = stream.write_all(&served).await;
            let _ = stream.shutdown().await;
        }
    })
    .await;
    let port = bind_simple(&plane, id, addr).await;
    let slow = RateLimits {
        bandwidth_out_bps: Some(64 * KIB),
        bandwidth_out_burst_bytes: Some(64 * KIB),
        ..RateLimits::default()
    };
    let rule = scope(slow);
    plane.set_limits(id, rule_path(&rule));

    let mut conn = connect(port).await;
    let mut got = Vec::with_capacity(TOTAL);
    let mut buf = vec![0u8; 64 * 1024];
    let slow_phase = Instant::now() + Duration::from_millis(500);
    while Instant::now() < slow_phase {
        if let Ok(Ok(n)) = tokio::time::timeout_at(slow_phase, conn.read(&mut buf)).await {
            assert!(n > 0, "the connection ended during the slow phase");
            got.extend_from_slice(&buf[..n]);
        }
    }
    // The 64 KiB burst and half a second at 64 KiB/s: about 96 KiB, far from 1 MiB.
    assert!(got.len() < 256 * KIB as usize, "the cap held: {} bytes in 0.5 s", got.len());

    let fast = RateLimits { bandwidth_out_bps: Some(64 << 20), ..RateLimits::default() };
    rule.update(fast.validate().expect("valid caps"), limits::now());
    let started = Instant::now();
    within(conn.read_to_end(&mut got)).await.expect("the same connection goes on to its end");
    // At 64 KiB/s the rest would take about 14 s.
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?} after the update", started.elapsed());
    assert!(got == *payload, "download differs: got {} of {TOTAL} bytes", got.len());
    let t = totals(&plane, id);
    assert_eq!((t.connections_total, t.bytes_out), (1, TOTAL as u64));
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_bandwidth_cap_costs_a_connection_the_fast_path() {
    capture::install();
    let plane = plane(Path::Splice);
    let data = pseudo_random(256 * KIB as usize, 5);
    let (unlimited, concurrency_only, capped) = (rule_id(), rule_id(), rule_id());
    let caps = [
        (unlimited, None),
        (concurrency_only, Some(RateLimits { concurrent_connections: Some(10), ..RateLimits::default() })),
        (capped, Some(RateLimits { bandwidth_out_bps: Some(1 << 30), ..RateLimits::default() })),
    ];
    for (id, limits) in caps {
        let port = bind_simple(&plane, id, echo_backend().await).await;
        if let Some(limits) = limits {
            plane.set_limits(id, rule_path(&scope(limits)));
        }
        let back = within(exchange(connect(port).await, &data)).await;
        assert!(back == data, "rule {id}: echo differs");
    }
    let selected = |id| capture::events("proxy.splice_selected", id).len();
    assert_eq!(selected(unlimited), 1);
    assert_eq!(selected(concurrency_only), 1, "a cap without bandwidth keeps splice");
    assert_eq!(selected(capped), 0, "a bandwidth cap, however high, copies in userspace");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sni_rule_closes_connections_over_its_cap_after_routing() {
    let plane = plane(Path::Splice);
    let id = rule_id();
    let log = Arc::new(SinkLog::default());
    let port = free_ports(1);
    let backend = sink_backend(Arc::clone(&log)).await;
    let pattern = SniPattern::parse("api.example.com").expect("pattern");
    let def = RuleDef {
        sni: Some(SniRoute::Pattern(pattern)),
        ..tcp_rule(PortRange::single(port).unwrap(), vec![target(backend.ip(), backend.port(), 0)])
    };
    plane.bind(id, def).await.expect("bind the SNI rule");
    let rule = scope(RateLimits { concurrent_connections: Some(1), ..RateLimits::default() });
    plane.set_limits(id, rule_path(&rule));

    let mut first = connect(port).await;
    first.write_all(HELLO).await.expect("first hello");
    eventually("the first hello reaches the backend", || {
        log.received.load(Ordering::SeqCst) == HELLO.len() as u64
    })
    .await;
    let mut second = connect(port).await;
    second.write_all(HELLO).await.expect("second hello");
    assert!(closed_at_once(&mut second).await, "over the cap: closed once routed");
    let t = totals(&plane, id);
    assert_eq!((t.rate_limit_rejected, t.connections_total), (1, 1));
    assert_eq!(log.received.load(Ordering::SeqCst), HELLO.len() as u64, "nothing of the second replayed");
    drop(first);
}

/// Binds a one-target UDP rule on a fresh port with `path` (given first, as the control
/// loop does); returns the port.
async fn bind_udp(
    plane: &DataPlane,
    id: portunus_core::ids::RuleId,
    backend: SocketAddr,
    path: LimitPath,
) -> u16 {
    let port = free_ports(1);
    let def = RuleDef {
        protocol: Protocol::Udp,
        ..tcp_rule(PortRange::single(port).unwrap(), vec![target(backend.ip(), backend.port(), 0)])
    };
    plane.set_limits(id, path);
    plane.bind(id, def).await.expect("bind the UDP rule");
    port
}

/// A UDP backend that counts what it receives and answers each datagram with `reply_len`
/// bytes (none when 0).
async fn udp_backend(received: Arc<AtomicU64>, reply_len: usize) -> SocketAddr {
    let socket = UdpSocket::bind((LOCALHOST, 0)).await.expect("backend bind");
    let addr = socket.local_addr().expect("backend addr");
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        let reply = vec![7u8; reply_len];
        while let Ok((_, from)) = socket.recv_from(&mut buf).await {
            received.fetch_add(1, Ordering::SeqCst);
            if reply_len > 0 {
                let _ = socket.send_to(&reply, from).await;
            }
        }
    });
    addr
}

async fn udp_client(port: u16) -> UdpSocket {
    let socket = UdpSocket::bind((LOCALHOST, 0)).await.expect("client bind");
    socket.connect((LOCALHOST, port)).await.expect("client connect");
    socket
}

/// Datagrams `socket` receives until nothing comes for 300 ms.
async fn drain(socket: &UdpSocket) -> u64 {
    let mut buf = vec![0u8; 65_536];
    let mut n = 0;
    while let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(300), socket.recv(&mut buf)).await {
        n += 1;
    }
    n
}

/// 64 KiB/s with its smallest burst: 16 datagrams of 4,000 bytes fit the full bucket.
fn udp_caps_in() -> RateLimits {
    RateLimits {
        bandwidth_in_bps: Some(64 * KIB),
        bandwidth_in_burst_bytes: Some(64 * KIB),
        ..RateLimits::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_datagrams_over_an_inbound_bandwidth_cap_are_dropped_and_counted() {
    let plane = plane(Path::Userspace);
    let id = rule_id();
    let received = Arc::new(AtomicU64::new(0));
    let backend = udp_backend(Arc::clone(&received), 0).await;
    let port = bind_udp(&plane, id, backend, rule_path(&scope(udp_caps_in()))).await;

    let client = udp_client(port).await;
    let payload = vec![1u8; 4_000];
    for _ in 0..40 {
        client.send(&payload).await.expect("send");
    }
    eventually("every datagram is accounted for", || {
        let t = totals(&plane, id);
        t.datagrams_in + t.rate_limit_dropped == 40
    })
    .await;
    let t = totals(&plane, id);
    // 16 fit the bucket; the sends take milliseconds, which refill a few hundred bytes.
    assert!((16..=18).contains(&t.datagrams_in), "delivered {} of 40", t.datagrams_in);
    assert_eq!(t.bytes_in, t.datagrams_in * 4_000);
    eventually("the backend got what was delivered", || received.load(Ordering::SeqCst) == t.datagrams_in)
        .await;
    assert_eq!(t.rate_limit_rejected, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_replies_over_an_outbound_bandwidth_cap_are_dropped_and_counted() {
    let plane = plane(Path::Userspace);
    let id = rule_id();
    let received = Arc::new(AtomicU64::new(0));
    let backend = udp_backend(Arc::clone(&received), 2_000).await;
    let caps = RateLimits {
        bandwidth_out_bps: Some(64 * KIB),
        bandwidth_out_burst_bytes: Some(64 * KIB),
        ..RateLimits::default()
    };
    let port = bind_udp(&plane, id, backend, rule_path(&scope(caps))).await;

    let client = udp_client(port).await;
    for _ in 0..48 {
        client.send(b"ping").await.expect("send");
    }
    eventually("the backend answered all 48", || received.load(Ordering::SeqCst) == 48).await;
    eventually("every reply is accounted for", || {
        let t = totals(&plane, id);
        t.datagrams_out + t.rate_limit_dropped == 48
    })
    .await;
    let got = drain(&client).await;
    let t = totals(&plane, id);
    assert_eq!(t.datagrams_in, 48, "the inbound direction is not capped");
    // 32 replies of 2,000 bytes fit the full bucket.
    assert!((32..=36).contains(&t.datagrams_out), "delivered {} replies of 48", t.datagrams_out);
    assert_eq!(got, t.datagrams_out);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_udp_flow_drops_its_first_datagram_until_a_slot_frees() {
    let plane = plane(Path::Userspace);
    plane.apply_settings(DataPlaneSettings {
        udp_flow_idle: Duration::from_secs(1),
        ..DataPlaneSettings::default()
    });
    let id = rule_id();
    let received = Arc::new(AtomicU64::new(0));
    let backend = udp_backend(Arc::clone(&received), 16).await;
    let rule = scope(RateLimits { concurrent_connections: Some(1), ..RateLimits::default() });
    let port = bind_udp(&plane, id, backend, rule_path(&rule)).await;

    let (a, b) = (udp_client(port).await, udp_client(port).await);
    a.send(b"first").await.expect("send a");
    assert_eq!(drain(&a).await, 1, "the first flow is admitted");
    b.send(b"second").await.expect("send b");
    assert_eq!(drain(&b).await, 0, "the second source's datagram is dropped");

    let t = totals(&plane, id);
    assert_eq!((t.rate_limit_rejected, t.connections_total, t.datagrams_in), (1, 1, 1));
    assert_eq!((plane.udp_flows(id), rule.open_connections()), (1, 1));

    // The flow's permit goes with the flow: once it expires, the other source gets in.
    eventually("the idle flow expires and frees its slot", || {
        plane.udp_flows(id) == 0 && rule.open_connections() == 0
    })
    .await;
    b.send(b"again").await.expect("send b again");
    assert_eq!(drain(&b).await, 1);
    assert_eq!(totals(&plane, id).rate_limit_rejected, 1);
}
