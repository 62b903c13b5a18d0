//! The resolver against a real DNS server on loopback (`test_server`), with an injected
//! clock for TTLs: expiry, stale-serving during an outage, recovery, one query for many
//! concurrent lookups, and the cache bound.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use portunus_resolver::HickoryResolver;
use portunus_resolver::Resolver;
use portunus_resolver::test_server::DnsTestServer;

struct ManualClock(AtomicU64);

impl ManualClock {
    fn advance(&self, d: Duration) {
        self.0.fetch_add(d.as_millis() as u64, Ordering::SeqCst);
    }
}

async fn setup() -> (DnsTestServer, Arc<HickoryResolver>, Arc<ManualClock>) {
    let server = DnsTestServer::start().await.unwrap();
    let clock = Arc::new(ManualClock(AtomicU64::new(0)));
    let reader = Arc::clone(&clock);
    let resolver = HickoryResolver::with_server_and_clock(
        server.addr(),
        Arc::new(move || Duration::from_millis(reader.0.load(Ordering::SeqCst))),
    )
    .unwrap();
    (server, resolver, clock)
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[tokio::test]
async fn answers_are_cached_for_their_ttl_then_refreshed() {
    let (server, resolver, clock) = setup().await;
    server.set("web.test", vec![ip("127.0.0.10")], 60);
    assert_eq!(resolver.resolve("web.test", false).await.unwrap(), vec![ip("127.0.0.10")]);
    let after_first = server.queries();
    server.set("web.test", vec![ip("127.0.0.11")], 60);
    clock.advance(Duration::from_secs(59));
    assert_eq!(resolver.resolve("web.test", false).await.unwrap(), vec![ip("127.0.0.10")], "still cached");
    assert_eq!(server.queries(), after_first);
    clock.advance(Duration::from_secs(1));
    assert_eq!(
        resolver.resolve("web.test", false).await.unwrap(),
        vec![ip("127.0.0.11")],
        "refreshed at expiry"
    );
}

#[tokio::test]
async fn a_tiny_ttl_is_clamped_to_five_seconds() {
    let (server, resolver, clock) = setup().await;
    server.set("short.test", vec![ip("127.0.0.20")], 1);
    resolver.resolve("short.test", false).await.unwrap();
    let n = server.queries();
    clock.advance(Duration::from_secs(4));
    resolver.resolve("short.test", false).await.unwrap();
    assert_eq!(server.queries(), n, "a 1 s TTL is served for 5 s without asking again");
}

#[tokio::test]
async fn an_outage_serves_stale_answers_for_thirty_seconds_then_fails_then_recovers() {
    let (server, resolver, clock) = setup().await;
    server.set("api.test", vec![ip("127.0.0.30")], 10);
    resolver.resolve("api.test", false).await.unwrap();
    server.set_silent(true);
    clock.advance(Duration::from_secs(11));
    assert_eq!(
        resolver.resolve("api.test", false).await.unwrap(),
        vec![ip("127.0.0.30")],
        "stale during outage"
    );
    clock.advance(Duration::from_secs(30));
    let err = resolver.resolve("api.test", false).await.unwrap_err();
    assert_eq!(err.reason, "timeout");
    server.set_silent(false);
    server.set("api.test", vec![ip("127.0.0.31")], 10);
    assert_eq!(resolver.resolve("api.test", false).await.unwrap(), vec![ip("127.0.0.31")], "recovered");
}

#[tokio::test]
async fn unknown_names_fail_with_a_reason() {
    let (_server, resolver, _clock) = setup().await;
    let err = resolver.resolve("nothing.test", false).await.unwrap_err();
    assert_eq!(err.reason, "no_records");
}

#[tokio::test]
async fn concurrent_lookups_of_one_name_share_one_query() {
    let (server, resolver, _clock) = setup().await;
    server.set("busy.test", vec![ip("127.0.0.40")], 60);
    server.set_delay(Duration::from_millis(200));
    let before = server.queries();
    let lookups = (0..50).map(|_| resolver.resolve("busy.test", false));
    for result in futures::future::join_all(lookups).await {
        assert_eq!(result.unwrap(), vec![ip("127.0.0.40")]);
    }
    assert_eq!(server.queries() - before, 1, "fifty lookups, one query");
}

#[tokio::test]
async fn ipv6_first_asks_for_aaaa_first() {
    let (server, resolver, _clock) = setup().await;
    server.set("dual.test", vec![ip("127.0.0.50"), ip("::1")], 60);
    assert_eq!(resolver.resolve("dual.test", true).await.unwrap()[0], ip("::1"));
    assert_eq!(resolver.resolve("dual.test", false).await.unwrap()[0], ip("127.0.0.50"));
}

#[tokio::test]
async fn the_cache_stays_bounded_under_many_names() {
    let (server, resolver, _clock) = setup().await;
    for n in 0..5000u32 {
        server.set(&format!("n{n}.many.test"), vec![ip("127.0.0.60")], 300);
    }
    for n in 0..5000u32 {
        resolver.resolve(&format!("n{n}.many.test"), false).await.unwrap();
    }
    assert!(
        resolver.cached_names() <= portunus_core::dns_cache::DEFAULT_CAPACITY,
        "{}",
        resolver.cached_names()
    );
}
