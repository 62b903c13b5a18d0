//! SNI listeners: routing by the ClientHello's name, the replay of the peeked bytes, the
//! closes and their counters, the peek bound, and siblings coming and going.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use portunus_core::ErrorCode;
use portunus_core::ids::RuleId;
use portunus_core::rule::{PortRange, RuleDef, SniRoute};
use portunus_core::sni::{MAX_CONCURRENT_PEEKS, SniListenerReport, SniPattern};
use portunus_dataplane::{DataPlane, RuleRuntime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{
    GUARD, LOCALHOST, Path, SinkLog, connect, echo_backend, eventually, free_ports, plane, rule_id,
    sink_backend, target, tcp_rule, within,
};

/// Captured ClientHellos (see core's `sni/testdata/README.md`).
const API_TLS13: &[u8] = include_bytes!("../../../../core/src/sni/testdata/openssl_tls13.bin");
const API_UPPER: &[u8] = include_bytes!("../../../../core/src/sni/testdata/openssl_upper.bin");
const LEGACY_TLS10: &[u8] = include_bytes!("../../../../core/src/sni/testdata/openssl_tls10.bin");
const IDN: &[u8] = include_bytes!("../../../../core/src/sni/testdata/curl_idn.bin");
const NO_SNI: &[u8] = include_bytes!("../../../../core/src/sni/testdata/openssl_no_sni.bin");

fn route(pattern: &str) -> SniRoute {
    SniRoute::Pattern(SniPattern::parse(pattern).expect("pattern"))
}

fn sni_rule(port: u16, route: SniRoute, backend: SocketAddr) -> RuleDef {
    RuleDef {
        sni: Some(route),
        ..tcp_rule(PortRange::single(port).unwrap(), vec![target(backend.ip(), backend.port(), 0)])
    }
}

fn listener(plane: &DataPlane, port: u16) -> SniListenerReport {
    plane.sni_report().into_iter().find(|r| r.port == port).unwrap_or_default()
}

/// Sends `hello` in small pieces (so the peek sees many segments), then `payload`, then
/// half-closes.
async fn send_trickled(stream: &mut TcpStream, hello: &[u8], payload: &[u8]) {
    for piece in hello.chunks(97) {
        stream.write_all(piece).await.expect("write hello piece");
        stream.flush().await.expect("flush");
        tokio::task::yield_now().await;
    }
    stream.write_all(payload).await.expect("write payload");
    stream.shutdown().await.expect("shutdown(write)");
}

/// True once the listener closed the connection (end of stream or reset).
async fn closed_by_listener(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 64];
    matches!(within(stream.read(&mut buf)).await, Ok(0) | Err(_))
}

async fn routes_by_name_and_replays_the_hello_unchanged(path: Path) {
    let plane = plane(path);
    let (exact, wildcard, fallback) =
        (Arc::new(SinkLog::default()), Arc::new(SinkLog::default()), Arc::new(SinkLog::default()));
    let port = free_ports(1);
    let ids = [rule_id(), rule_id(), rule_id()];
    plane
        .bind(ids[0], sni_rule(port, route("api.example.com"), sink_backend(exact.clone()).await))
        .await
        .unwrap();
    plane
        .bind(ids[1], sni_rule(port, route("*.example.com"), sink_backend(wildcard.clone()).await))
        .await
        .unwrap();
    plane
        .bind(ids[2], sni_rule(port, SniRoute::Fallback, sink_backend(fallback.clone()).await))
        .await
        .unwrap();

    for (hello, payload) in
        [(API_TLS13, &b"one"[..]), (API_UPPER, b"two"), (LEGACY_TLS10, b"three"), (IDN, b"four")]
    {
        let mut conn = connect(port).await;
        send_trickled(&mut conn, hello, payload).await;
        let _ = crate::support::read_to_end_lenient(&mut conn).await;
    }
    eventually("four connections delivered", || {
        exact.finished.lock().unwrap().len() == 2
            && wildcard.finished.lock().unwrap().len() == 1
            && fallback.finished.lock().unwrap().len() == 1
    })
    .await;
    // Every peeked byte reached the target unchanged, followed by the rest of the stream.
    let with = |hello: &[u8], payload: &[u8]| [hello, payload].concat();
    let mut got_exact = exact.finished.lock().unwrap().clone();
    got_exact.sort();
    let mut want_exact = vec![with(API_TLS13, b"one"), with(API_UPPER, b"two")];
    want_exact.sort();
    assert_eq!(got_exact, want_exact);
    assert_eq!(wildcard.finished.lock().unwrap()[0], with(LEGACY_TLS10, b"three"));
    assert_eq!(fallback.finished.lock().unwrap()[0], with(IDN, b"four"));

    let report = listener(&plane, port);
    assert_eq!((report.routed_exact, report.routed_wildcard, report.routed_fallback), (2, 1, 1));
    assert_eq!(report.peek_count(), 4, "every peek is in the histogram");
    // The chosen rule counts the connection and its bytes, the replayed hello included.
    let totals = crate::support::totals(&plane, ids[1]);
    assert_eq!((totals.connections_total, totals.bytes_in), (1, (LEGACY_TLS10.len() + 5) as u64));
}

async fn refused_peeks_close_at_once_and_are_counted(path: Path) {
    let plane = plane(path);
    let port = free_ports(1);
    let log = Arc::new(SinkLog::default());
    plane
        .bind(rule_id(), sni_rule(port, route("api.example.com"), sink_backend(log.clone()).await))
        .await
        .unwrap();

    // Plain HTTP: not TLS, closed without waiting for the deadline.
    let mut http = connect(port).await;
    http.write_all(b"GET / HTTP/1.1\r\nHost: api.example.com\r\n\r\n").await.unwrap();
    let started = std::time::Instant::now();
    assert!(closed_by_listener(&mut http).await);
    assert!(started.elapsed() < Duration::from_secs(2), "closed at once, not at the deadline");
    // A hello without a name, and one with a name no route takes: no fallback, closed.
    for hello in [NO_SNI, LEGACY_TLS10] {
        let mut conn = connect(port).await;
        conn.write_all(hello).await.unwrap();
        assert!(closed_by_listener(&mut conn).await);
    }
    // A malformed record: a handshake header with a length that cannot be a hello.
    let mut broken = connect(port).await;
    broken.write_all(&[0x16, 0x03, 0x01, 0x00, 0x05, 0x02, 0, 0, 1, 0]).await.unwrap();
    assert!(closed_by_listener(&mut broken).await);

    eventually("refusals counted", || {
        let r = listener(&plane, port);
        r.parse_failures == 2 && r.miss == 2
    })
    .await;
    assert_eq!(log.received.load(Ordering::SeqCst), 0, "nothing reached the target");
}

async fn a_silent_peer_is_closed_at_the_deadline(path: Path) {
    let plane = plane(path);
    let port = free_ports(1);
    plane.bind(rule_id(), sni_rule(port, SniRoute::Fallback, echo_backend().await)).await.unwrap();
    let mut conn = connect(port).await;
    // The start of a record, then nothing.
    conn.write_all(&API_TLS13[..3]).await.unwrap();
    let started = std::time::Instant::now();
    assert!(closed_by_listener(&mut conn).await);
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(2_500) && waited < Duration::from_secs(6), "{waited:?}");
    let report = listener(&plane, port);
    assert_eq!((report.peek_timeouts, report.routed_fallback), (1, 0));
    // The histogram's last finite bucket (3 s) holds the timed-out peek.
    let n = report.peek_buckets.len();
    assert_eq!(report.peek_buckets[n - 2] + report.peek_buckets[n - 1], 1);
}

/// Echoes through the rule behind `hello`, `rounds` times, on one live connection.
async fn echo_rounds(conn: &mut TcpStream, rounds: &[&[u8]]) {
    for round in rounds {
        conn.write_all(round).await.unwrap();
        let mut back = vec![0u8; round.len()];
        within(conn.read_exact(&mut back)).await.expect("echo");
        assert_eq!(&back, round);
    }
}

async fn siblings_come_and_go_without_touching_live_connections(path: Path) {
    let plane = plane(path);
    let port = free_ports(1);
    let (api, other) = (rule_id(), rule_id());
    let echo = echo_backend().await;
    plane.bind(api, sni_rule(port, route("api.example.com"), echo)).await.unwrap();
    plane.bind(other, sni_rule(port, SniRoute::Fallback, echo)).await.unwrap();

    // A live connection of the fallback rule (the echo returns the hello first).
    let mut live = connect(port).await;
    live.write_all(NO_SNI).await.unwrap();
    let mut hello_back = vec![0u8; NO_SNI.len()];
    within(live.read_exact(&mut hello_back)).await.unwrap();

    // A sibling leaves and comes back: the live connection does not notice.
    plane.unbind(api);
    echo_rounds(&mut live, &[b"after unbind"]).await;
    plane.bind(api, sni_rule(port, route("api.example.com"), echo)).await.unwrap();
    echo_rounds(&mut live, &[b"after rebind"]).await;
    let mut routed = connect(port).await;
    routed.write_all(API_TLS13).await.unwrap();
    let mut back = vec![0u8; API_TLS13.len()];
    within(routed.read_exact(&mut back)).await.unwrap();

    // The same pattern twice on one listener is refused with its code; nothing changes.
    let dup = plane.bind(rule_id(), sni_rule(port, route("API.example.com"), echo)).await.unwrap_err();
    assert_eq!(dup.code, ErrorCode::SniPatternTaken);
    let second = plane.bind(rule_id(), sni_rule(port, SniRoute::Fallback, echo)).await.unwrap_err();
    assert_eq!(second.code, ErrorCode::SniFallbackTaken);
    echo_rounds(&mut live, &[b"after refusals"]).await;
    // A plain rule cannot take the port the SNI rules hold.
    let plain = tcp_rule(PortRange::single(port).unwrap(), vec![target(echo.ip(), echo.port(), 0)]);
    assert_eq!(plane.bind(rule_id(), plain).await.unwrap_err().code, ErrorCode::PortInUse);

    // The member itself leaving cuts its connections only.
    plane.unbind(other);
    assert!(closed_by_listener(&mut live).await, "the removed rule's connection is cut");
    echo_rounds(&mut routed, &[b"sibling still served"]).await;
    // The last member leaving closes the listener: the port is free at once.
    plane.unbind(api);
    assert!(std::net::TcpListener::bind((LOCALHOST, port)).is_ok(), "port free after the last member");
    assert!(plane.sni_report().iter().all(|r| r.port != port));
}

on_both_paths!(
    routes_by_name_and_replays_the_hello_unchanged,
    refused_peeks_close_at_once_and_are_counted,
    siblings_come_and_go_without_touching_live_connections,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_peer_is_closed_at_the_peek_deadline() {
    a_silent_peer_is_closed_at_the_deadline(Path::Userspace).await;
}

/// 1,500 peers that send one byte of a record and then nothing must not keep a prompt
/// client out: each arrival over the bound sheds the oldest peek.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickling_peers_do_not_starve_a_prompt_client() {
    const N_TRICKLERS: usize = 1_500;
    let _ = portunus_dataplane::raise_nofile_limit();
    let plane = plane(Path::Userspace);
    let port = free_ports(1);
    let echo = echo_backend().await;
    let id: RuleId = rule_id();
    plane.bind(id, sni_rule(port, route("api.example.com"), echo)).await.unwrap();

    let mut tricklers = Vec::with_capacity(N_TRICKLERS);
    for _ in 0..N_TRICKLERS {
        let mut conn = connect(port).await;
        conn.write_all(&[0x16]).await.unwrap();
        tricklers.push(conn);
    }
    // All of them were accepted and are being peeked, or were shed to make room.
    eventually("every trickler accepted", || {
        listener(&plane, port).peeks_shed as usize >= N_TRICKLERS - MAX_CONCURRENT_PEEKS
    })
    .await;

    let started = std::time::Instant::now();
    let mut prompt = connect(port).await;
    prompt.write_all(API_TLS13).await.unwrap();
    let mut back = vec![0u8; API_TLS13.len()];
    within(prompt.read_exact(&mut back)).await.expect("the prompt client is served");
    assert_eq!(back, API_TLS13);
    assert!(started.elapsed() < Duration::from_secs(2), "served in {:?}", started.elapsed());
    let report = listener(&plane, port);
    assert_eq!(report.routed_exact, 1);
    assert!(report.peeks_shed as usize >= N_TRICKLERS - MAX_CONCURRENT_PEEKS, "{report:?}");
    assert!(started.elapsed() < GUARD);
    drop(tricklers);
}

/// Connection setup through an SNI rule against a plain rule, for `docs/PERFORMANCE.md`:
/// connect, send a captured ClientHello, read a 100-byte answer the backend writes once it
/// has the whole hello; p50 and p99 of that round trip over interleaved samples, and the
/// listener's peek histogram. A measurement, not a check:
/// `cargo test -p portunus-dataplane --release --test it -- --ignored sni_setup --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "timing; run in release with --nocapture"]
#[allow(clippy::print_stdout)] // The figures are the output.
async fn sni_setup_latency_against_a_plain_rule() {
    const SAMPLES: usize = 3_000;
    let backend = crate::support::backend(|mut stream| async move {
        let mut hello = vec![0u8; API_TLS13.len()];
        if stream.read_exact(&mut hello).await.is_ok() {
            let _ = stream.write_all(&[7u8; 100]).await;
        }
    })
    .await;
    let plane = plane(Path::Splice);
    let (plain_port, sni_port) = (free_ports(1), free_ports(1));
    let plain =
        tcp_rule(PortRange::single(plain_port).unwrap(), vec![target(backend.ip(), backend.port(), 0)]);
    plane.bind(rule_id(), plain).await.unwrap();
    plane.bind(rule_id(), sni_rule(sni_port, route("api.example.com"), backend)).await.unwrap();
    let once = |port: u16| async move {
        let started = std::time::Instant::now();
        let mut conn = TcpStream::connect((LOCALHOST, port)).await.expect("connect");
        conn.write_all(API_TLS13).await.expect("hello");
        let mut answer = [0u8; 100];
        conn.read_exact(&mut answer).await.expect("answer");
        started.elapsed()
    };
    let (mut plain_times, mut sni_times) = (Vec::with_capacity(SAMPLES), Vec::with_capacity(SAMPLES));
    for _ in 0..SAMPLES {
        plain_times.push(once(plain_port).await);
        sni_times.push(once(sni_port).await);
    }
    let quantiles = |times: &mut Vec<Duration>| {
        times.sort();
        (times[times.len() / 2], times[times.len() * 99 / 100])
    };
    let (plain_p50, plain_p99) = quantiles(&mut plain_times);
    let (sni_p50, sni_p99) = quantiles(&mut sni_times);
    let report = listener(&plane, sni_port);
    println!("plain rule: p50 {plain_p50:?} p99 {plain_p99:?}");
    println!("SNI rule:   p50 {sni_p50:?} p99 {sni_p99:?}");
    println!(
        "peek histogram (le {:?} s, then +Inf): {:?}, mean {:?}",
        portunus_core::sni::PEEK_BUCKETS_SECONDS,
        report.peek_buckets,
        Duration::from_micros(report.peek_sum_us / report.peek_count().max(1)),
    );
    assert_eq!(report.routed_exact as usize, SAMPLES);
}
