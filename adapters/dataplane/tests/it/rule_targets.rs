//! Rule targets: passive health and failover, active probes, DNS-name targets through a real
//! DNS server on loopback, and PROXY protocol headers.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use portunus_core::proxy_protocol::{self, Addresses};
use portunus_core::rule::{Host, PortRange, ProxyVersion};
use portunus_core::stats::TargetHealth;
use portunus_dataplane::RuleRuntime;
use portunus_dataplane::{DataPlane, DataPlaneOptions};
use portunus_resolver::HickoryResolver;
use portunus_resolver::test_server::DnsTestServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::*;

/// A backend that answers every connection with `tag` and closes.
async fn tagged_backend(ip: IpAddr, port: u16, tag: &'static [u8]) -> SocketAddr {
    let listener = TcpListener::bind(SocketAddr::new(ip, port)).await.expect("bind tagged backend");
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = stream.write_all(tag).await;
            });
        }
    });
    addr
}

async fn reply_of(port: u16) -> Vec<u8> {
    let mut stream = connect(port).await;
    within(read_to_end_lenient(&mut stream)).await
}

fn per_target(
    plane: &DataPlane,
    id: portunus_core::ids::RuleId,
) -> Vec<portunus_core::stats::TargetCounters> {
    plane.report().into_iter().find(|(r, _)| *r == id).map(|(_, r)| r.per_target).unwrap_or_default()
}

#[tokio::test]
async fn three_refused_connects_fail_a_target_and_later_connections_skip_it() {
    capture::install();
    let plane = plane(Path::Userspace);
    let id = rule_id();
    let port = free_ports(1);
    let backup = tagged_backend(LOCALHOST, 0, b"backup").await;
    let def = tcp_rule(
        PortRange::single(port).unwrap(),
        vec![target(LOCALHOST, dead_port(), 0), target(LOCALHOST, backup.port(), 1)],
    );
    plane.bind(id, def).await.expect("bind");

    for _ in 0..4 {
        assert_eq!(reply_of(port).await, b"backup");
    }
    let targets = per_target(&plane, id);
    assert_eq!(targets[0].health, TargetHealth::Failed);
    assert_eq!(targets[0].counters.connect_failures, 3, "the fourth connection no longer tries it first");
    assert_eq!(targets[1].counters.connections_total, 4);
    eventually("failovers are counted", || totals(&plane, id).target_failovers == 4).await;
    let changes = capture::events("rule.target_health_changed", id);
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!(changes[0].fields["health"], "failed");
}

#[tokio::test]
async fn an_active_probe_brings_a_recovered_target_back() {
    let plane = plane(Path::Userspace);
    let id = rule_id();
    let port = free_ports(1);
    let primary_port = free_ports(1);
    let backup = tagged_backend(LOCALHOST, 0, b"backup").await;
    let mut def = tcp_rule(
        PortRange::single(port).unwrap(),
        vec![target(LOCALHOST, primary_port, 0), target(LOCALHOST, backup.port(), 1)],
    );
    def.health_check_interval_secs = Some(1);
    plane.bind(id, def).await.expect("bind");
    for _ in 0..3 {
        assert_eq!(reply_of(port).await, b"backup");
    }
    assert_eq!(per_target(&plane, id)[0].health, TargetHealth::Failed);

    tagged_backend(LOCALHOST, primary_port, b"primary").await;
    eventually("two probes mark the primary healthy", || {
        per_target(&plane, id)[0].health == TargetHealth::Healthy
    })
    .await;
    assert_eq!(reply_of(port).await, b"primary");
}

struct ManualClock(AtomicU64);

fn resolver_plane(server: &DnsTestServer) -> (Arc<DataPlane>, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock(AtomicU64::new(0)));
    let reader = Arc::clone(&clock);
    let resolver = HickoryResolver::with_server_and_clock(
        server.addr(),
        Arc::new(move || Duration::from_millis(reader.0.load(Ordering::SeqCst))),
    )
    .expect("resolver");
    (DataPlane::with_resolver(DataPlaneOptions::default(), resolver), clock)
}

fn name_target(name: &str, port: u16) -> portunus_core::rule::Target {
    let mut t = target(LOCALHOST, port, 0);
    t.host = Host::Name(name.to_owned());
    t
}

#[tokio::test]
async fn name_targets_resolve_per_connection_and_follow_the_answer_after_its_ttl() {
    let dns = DnsTestServer::start().await.unwrap();
    let (plane, clock) = resolver_plane(&dns);
    let backend_port = free_ports(1);
    let first: IpAddr = "127.0.0.1".parse().unwrap();
    let second: IpAddr = "127.0.0.2".parse().unwrap();
    tagged_backend(first, backend_port, b"first").await;
    tagged_backend(second, backend_port, b"second").await;
    dns.set("svc.test", vec![first], 10);
    let id = rule_id();
    let port = free_ports(1);
    plane
        .bind(id, tcp_rule(PortRange::single(port).unwrap(), vec![name_target("svc.test", backend_port)]))
        .await
        .unwrap();

    assert_eq!(reply_of(port).await, b"first");
    dns.set("svc.test", vec![second], 10);
    assert_eq!(reply_of(port).await, b"first", "cached within the TTL");
    clock.0.fetch_add(10_000, Ordering::SeqCst);
    assert_eq!(reply_of(port).await, b"second", "re-resolved after the TTL");
}

#[tokio::test]
async fn a_failed_resolution_drops_only_that_connection_and_is_counted() {
    capture::install();
    let dns = DnsTestServer::start().await.unwrap();
    let (plane, _clock) = resolver_plane(&dns);
    let backend = tagged_backend(LOCALHOST, 0, b"up").await;
    let id = rule_id();
    let port = free_ports(1);
    plane
        .bind(id, tcp_rule(PortRange::single(port).unwrap(), vec![name_target("late.test", backend.port())]))
        .await
        .unwrap();

    assert!(reply_of(port).await.is_empty(), "no answer: the connection is dropped");
    eventually("the DNS failure is counted", || totals(&plane, id).dns_failures == 1).await;
    let events = capture::events("rule.dns_failed", id);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].fields["host"], "late.test");
    assert_eq!(events[0].fields["reason"], "no_records");

    dns.set("late.test", vec![LOCALHOST], 60);
    assert_eq!(reply_of(port).await, b"up", "the rule itself never failed");
}

/// A backend that decodes the PROXY header it receives and reports the addresses.
async fn proxy_receiver()
-> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<(ProxyVersion, Addresses, Vec<u8>)>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut all = Vec::new();
                let _ = stream.read_to_end(&mut all).await;
                if let Ok(decoded) = proxy_protocol::decode(&all) {
                    let _ = tx.send((decoded.version, decoded.addresses, all[decoded.len..].to_vec()));
                }
            });
        }
    });
    (addr, rx)
}

#[tokio::test]
async fn proxy_headers_carry_the_client_address_before_its_bytes() {
    for (version, dual_stack) in [
        (ProxyVersion::V1, false),
        (ProxyVersion::V2, false),
        (ProxyVersion::V1, true),
        (ProxyVersion::V2, true),
    ] {
        let plane = plane(Path::Splice);
        let (backend, mut headers) = proxy_receiver().await;
        let id = rule_id();
        let port = free_ports(1);
        let mut t = target(LOCALHOST, backend.port(), 0);
        t.proxy = Some(version);
        let mut def = tcp_rule(PortRange::single(port).unwrap(), vec![t]);
        if dual_stack {
            // An IPv4 client on a dual-stack listener arrives as ::ffff:127.0.0.1.
            def.listen_addr = None;
        }
        plane.bind(id, def).await.unwrap();

        let mut client = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let client_addr = client.local_addr().unwrap();
        client.write_all(b"payload").await.unwrap();
        client.shutdown().await.unwrap();
        let (got_version, addresses, rest) = within(headers.recv()).await.expect("a header arrived");

        assert_eq!(got_version, version);
        match addresses {
            Addresses::V4 { src, dst } => {
                assert_eq!(std::net::SocketAddr::V4(src), client_addr, "{version:?} dual_stack={dual_stack}");
                assert_eq!(dst.port(), port);
            }
            other => panic!("expected TCP4 for an IPv4 client, got {other:?}"),
        }
        assert_eq!(rest, b"payload");
        eventually("the connection ends", || totals(&plane, id).connections_active == 0).await;
        assert_eq!(totals(&plane, id).bytes_in, 7, "the header is not counted as traffic");
    }
}

/// An echo backend that serves one connection and stops listening as soon as it has
/// accepted it, so every later connect to its port is refused.
async fn one_shot_echo() -> SocketAddr {
    let listener = TcpListener::bind((LOCALHOST, 0)).await.expect("bind one-shot backend");
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        if let Ok((mut stream, _)) = listener.accept().await {
            drop(listener);
            let (mut rd, mut wr) = stream.split();
            if tokio::io::copy(&mut rd, &mut wr).await.is_ok() {
                let _ = wr.shutdown().await;
            }
        }
    });
    addr
}

#[tokio::test]
async fn per_target_bytes_add_up_to_the_rule_bytes_on_every_copy_path() {
    let planes: [(&str, Arc<DataPlane>); 4] = [
        ("splice", plane(Path::Splice)),
        ("userspace", plane(Path::Userspace)),
        ("splice refused", plane_with_fault(portunus_dataplane::SpliceFault::Unsupported)),
        ("splice refused on drain", plane_with_fault(portunus_dataplane::SpliceFault::UnsupportedOnDrain)),
    ];
    for (path, plane) in planes {
        let id = rule_id();
        let port = free_ports(2);
        let primary = one_shot_echo().await;
        let backup = echo_backend().await;
        let def = tcp_rule(
            PortRange::new(port, port + 1).unwrap(),
            vec![target(LOCALHOST, primary.port(), 0), target(LOCALHOST, backup.port(), 1)],
        );
        plane.bind(id, def).await.expect("bind");
        let (first, second) = (pseudo_random(300_000, 1), pseudo_random(123_457, 2));

        // The first connection reaches the primary, which then stops listening: the second
        // one, on the other listen port, is refused there and fails over to the backup.
        assert_eq!(within(exchange(connect(port).await, &first)).await, first, "{path}");
        assert_eq!(within(exchange(connect(port + 1).await, &second)).await, second, "{path}");
        eventually("both connections end", || totals(&plane, id).connections_active == 0).await;
        let (a, b) = (first.len() as u64, second.len() as u64);
        eventually("every delivered byte is counted", || totals(&plane, id).bytes_out == a + b).await;

        let report = plane.report().into_iter().find(|(r, _)| *r == id).map(|(_, r)| r).unwrap();
        let (t0, t1) = (report.per_target[0].counters, report.per_target[1].counters);
        assert_eq!((t0.bytes_in, t0.bytes_out, t1.bytes_in, t1.bytes_out), (a, a, b, b), "{path}");
        assert_eq!(
            (t0.bytes_in + t1.bytes_in, t0.bytes_out + t1.bytes_out),
            (report.totals.bytes_in, report.totals.bytes_out)
        );
        assert_eq!(
            (report.per_port[&port].bytes_in, report.per_port[&(port + 1)].bytes_in),
            (a, b),
            "{path}"
        );
        assert_eq!((t0.connections_total, t0.target_failovers, t0.connect_failures), (1, 0, 1), "{path}");
        assert_eq!((t1.connections_total, t1.target_failovers, t1.connect_failures), (1, 1, 0), "{path}");
        assert_eq!((t0.connections_active, t1.connections_active), (0, 0), "{path}");
        assert_eq!(report.totals.target_failovers, 1, "{path}");
    }
}

#[tokio::test]
async fn a_live_connection_counts_on_its_target_before_it_ends() {
    let plane = plane(Path::Splice);
    let id = rule_id();
    let port = free_ports(1);
    let backend = echo_backend().await;
    let def = tcp_rule(
        PortRange::single(port).unwrap(),
        vec![target(LOCALHOST, backend.port(), 0), target(LOCALHOST, dead_port(), 1)],
    );
    plane.bind(id, def).await.expect("bind");

    let mut stream = connect(port).await;
    stream.write_all(&[7u8; 5000]).await.unwrap();
    let mut back = vec![0u8; 5000];
    within(stream.read_exact(&mut back)).await.unwrap();
    eventually("the echo is counted", || totals(&plane, id).bytes_out == 5000).await;
    let targets = per_target(&plane, id);
    let live = targets[0].counters;
    assert_eq!((live.bytes_in, live.bytes_out, live.connections_active), (5000, 5000, 1));
    assert_eq!(
        targets[1].counters,
        portunus_core::stats::Counters::default(),
        "the unused target counts nothing"
    );
    drop(stream);
    eventually("the connection ends", || per_target(&plane, id)[0].counters.connections_active == 0).await;
}
