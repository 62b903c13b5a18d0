//! Criterion benches of the data plane pieces that can be measured in one process:
//! `cargo bench -p portunus-client --bench data_plane`.
//!
//! - `relay/{splice,userspace}`: 64 MiB from a client through the relay into a sink.
//! - `connection/{ip_target,dns_target_cached,proxy_v1,proxy_v2}`: accept, connect, a
//!   100-byte request and reply, close, through a bound rule: the cost a short connection
//!   pays, and what a DNS-name target (answer cached) or a PROXY header adds to it.
//! - `counters/relaxed_add`: the per-batch counter update.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use portunus_core::ids::RuleId;
use portunus_core::rule::{ListenSpec, RuleLimits, RuleSpec};
use portunus_dataplane::RuleRuntime;
use portunus_dataplane::{CopyPath, DataPlane, DataPlaneOptions, TrafficCounters};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[path = "support.rs"]
mod support;

const RELAY_BYTES: usize = 64 << 20;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

fn relay(c: &mut Criterion) {
    let rt = runtime();
    let sink = rt.block_on(support::sink());
    let mut group = c.benchmark_group("relay");
    group.throughput(Throughput::Bytes(RELAY_BYTES as u64));
    group.sample_size(20).measurement_time(Duration::from_secs(8));
    for (name, path) in [("splice", CopyPath::Splice), ("userspace", CopyPath::Userspace)] {
        group.bench_function(name, |b| {
            b.iter(|| {
                rt.block_on(async {
                    let counters = Arc::new(TrafficCounters::default());
                    let (mut client, task) = support::relay_pair(sink, path, counters.clone()).await;
                    support::push(&mut client, RELAY_BYTES).await;
                    drop(client);
                    task.await.expect("relay task");
                    assert_eq!(counters.bytes_in(), RELAY_BYTES as u64);
                })
            })
        });
    }
    group.finish();
}

fn connection(c: &mut Criterion) {
    let rt = runtime();
    let dns = rt.block_on(portunus_resolver::test_server::DnsTestServer::start()).expect("dns server");
    dns.set("backend.bench.test", vec!["127.0.0.1".parse().expect("literal")], 300);
    let resolver = portunus_resolver::HickoryResolver::with_server(dns.addr()).expect("resolver");
    let (plane, ports) = rt.block_on(async {
        let backend = support::responder().await;
        let plane = DataPlane::with_resolver(DataPlaneOptions::default(), resolver);
        let mut ports = Vec::new();
        for (idx, target) in [
            backend.to_string(),
            format!("backend.bench.test:{}", backend.port()),
            format!("{backend},proxy=v1"),
            format!("{backend},proxy=v2"),
        ]
        .into_iter()
        .enumerate()
        {
            let port =
                std::net::TcpListener::bind("127.0.0.1:0").expect("probe").local_addr().expect("addr").port();
            let spec = RuleSpec {
                name: None,
                protocol: Default::default(),
                listen_port: ListenSpec::Port(i64::from(port)),
                listen_addr: Some("127.0.0.1".parse().expect("literal")),
                target: Some(target),
                targets: vec![],
                prefer_ipv6: false,
                health_check_interval_secs: None,
                sni_pattern: None,
                sni_fallback: false,
                rate_limit: None,
            };
            let def = spec.validate(RuleLimits::default()).expect("valid rule");
            plane.bind(RuleId::new(idx as u64 + 1), def).await.expect("bind bench rule");
            ports.push(port);
        }
        (plane, ports)
    });
    let mut group = c.benchmark_group("connection");
    group.sample_size(30);
    for (name, port) in ["ip_target", "dns_target_cached", "proxy_v1", "proxy_v2"].into_iter().zip(ports) {
        group.bench_function(name, |b| {
            b.iter(|| {
                rt.block_on(async {
                    let mut conn = TcpStream::connect(("127.0.0.1", port)).await.expect("connect rule");
                    conn.write_all(&[7u8; 100]).await.expect("request");
                    let mut reply = [0u8; 100];
                    conn.read_exact(&mut reply).await.expect("reply");
                })
            })
        });
    }
    group.finish();
    drop(plane);
    drop(dns);
}

fn counters(c: &mut Criterion) {
    let counter = AtomicU64::new(0);
    c.bench_function("counters/relaxed_add", |b| {
        b.iter(|| counter.fetch_add(black_box(65_536), Ordering::Relaxed))
    });
}

criterion_group!(benches, relay, connection, counters);
criterion_main!(benches);
