//! `portunus-resolver`: resolves DNS-name targets with hickory-resolver behind core's
//! `Resolver` port, applying core's cache policy (TTL clamp, stale grace, bounded eviction)
//! and sharing one query between concurrent lookups of the same name.
//!
//! Invariants: hickory's own cache is off, so `portunus_core::dns_cache` alone decides what is
//! served and for how long; the system resolver configuration (`/etc/resolv.conf`) is used
//! unless the caller names one server (the apps' undocumented test switch
//! `PORTUNUS_DNS_SERVER=ip:port`).
#![forbid(unsafe_code)]

#[cfg(feature = "test-server")]
pub mod test_server;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::{BoxFuture as SharedInner, Shared};
use hickory_resolver::config::{LookupIpStrategy, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::{Resolver as Hickory, TokioResolver};
use portunus_core::dns_cache::{DnsCache, Lookup, Preference};

/// A boxed, sendable future.
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// Why a DNS-name target did not resolve.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct ResolveFailure {
    /// A short stable-ish reason (`nxdomain`, `no_records`, `timeout`, `io: …`) for events.
    pub reason: String,
}

/// Resolves DNS-name targets on the client, per new connection or flow.
///
/// Implementations cache answers per [`portunus_core::dns_cache`] and share one query among
/// concurrent lookups of a name. An empty answer is a failure, never `Ok(vec![])`.
pub trait Resolver: Send + Sync {
    /// Addresses of `name`, AAAA first when `prefer_ipv6`.
    fn resolve<'a>(
        &'a self,
        name: &'a str,
        prefer_ipv6: bool,
    ) -> BoxFuture<'a, Result<Vec<std::net::IpAddr>, ResolveFailure>>;
}

/// How long one query may take before it counts as failed.
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);

type Answer = Result<(Vec<IpAddr>, Duration), ResolveFailure>;
type InFlight = Shared<SharedInner<'static, Answer>>;

/// The target resolver of one client process.
pub struct HickoryResolver {
    v4_first: TokioResolver,
    v6_first: TokioResolver,
    cache: Mutex<DnsCache>,
    in_flight: Mutex<HashMap<(String, Preference), InFlight>>,
    clock: Clock,
}

/// Monotonic time since a fixed origin; injectable so tests can move time without waiting.
pub type Clock = Arc<dyn Fn() -> Duration + Send + Sync>;

fn monotonic() -> Clock {
    let origin = Instant::now();
    Arc::new(move || origin.elapsed())
}

impl std::fmt::Debug for HickoryResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HickoryResolver").finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl HickoryResolver {
    /// A resolver asking `server` when given, else using the system configuration.
    /// Must be called inside a tokio runtime.
    pub fn configured(server: Option<SocketAddr>) -> Result<Arc<Self>, ResolveFailure> {
        match server {
            Some(addr) => Self::with_server(addr),
            None => Self::system(),
        }
    }

    /// A resolver that asks only `server`.
    pub fn with_server(server: SocketAddr) -> Result<Arc<Self>, ResolveFailure> {
        Self::with_server_and_clock(server, monotonic())
    }

    /// A resolver that asks only `server`, reading time from `clock` (for tests).
    pub fn with_server_and_clock(server: SocketAddr, clock: Clock) -> Result<Arc<Self>, ResolveFailure> {
        let mut ns = NameServerConfig::udp_and_tcp(server.ip());
        for connection in &mut ns.connections {
            connection.port = server.port();
        }
        let config = ResolverConfig::from_name_servers(vec![ns]);
        Self::build(clock, |strategy| {
            Hickory::builder_with_config(config.clone(), TokioRuntimeProvider::default())
                .with_options(options(strategy))
                .build()
        })
    }

    /// A resolver configured from `/etc/resolv.conf`.
    pub fn system() -> Result<Arc<Self>, ResolveFailure> {
        Self::build(monotonic(), |strategy| {
            let mut builder = Hickory::builder_tokio()?;
            *builder.options_mut() = options(strategy);
            builder.build()
        })
    }

    fn build(
        clock: Clock,
        make: impl Fn(LookupIpStrategy) -> Result<TokioResolver, hickory_resolver::net::NetError>,
    ) -> Result<Arc<Self>, ResolveFailure> {
        let fail = |err: hickory_resolver::net::NetError| ResolveFailure {
            reason: format!("resolver setup: {err}"),
        };
        Ok(Arc::new(HickoryResolver {
            v4_first: make(LookupIpStrategy::Ipv4thenIpv6).map_err(fail)?,
            v6_first: make(LookupIpStrategy::Ipv6thenIpv4).map_err(fail)?,
            cache: Mutex::new(DnsCache::default()),
            in_flight: Mutex::new(HashMap::new()),
            clock,
        }))
    }

    fn now(&self) -> Duration {
        (self.clock)()
    }

    /// Starts a query for `key`, or joins the one already running.
    fn query(&self, key: (String, Preference)) -> InFlight {
        let mut in_flight = lock(&self.in_flight);
        if let Some(running) = in_flight.get(&key) {
            return running.clone();
        }
        let resolver = match key.1 {
            Preference::Ipv4First => self.v4_first.clone(),
            Preference::Ipv6First => self.v6_first.clone(),
        };
        let name = key.0.clone();
        let fut: SharedInner<'static, Answer> = Box::pin(async move {
            match tokio::time::timeout(QUERY_TIMEOUT, resolver.lookup_ip(name.as_str())).await {
                Err(_) => Err(ResolveFailure { reason: "timeout".into() }),
                Ok(Err(err)) => Err(ResolveFailure { reason: reason_of(&err) }),
                Ok(Ok(answer)) => {
                    let ttl = answer.valid_until().saturating_duration_since(Instant::now());
                    let addrs: Vec<IpAddr> = answer.iter().collect();
                    if addrs.is_empty() {
                        Err(ResolveFailure { reason: "no_records".into() })
                    } else {
                        Ok((addrs, ttl))
                    }
                }
            }
        });
        let shared = fut.shared();
        in_flight.insert(key, shared.clone());
        shared
    }

    async fn resolve_now(&self, name: &str, pref: Preference) -> Result<Vec<IpAddr>, ResolveFailure> {
        let stale = match lock(&self.cache).lookup(name, pref, self.now()) {
            Lookup::Fresh(addrs) => return Ok(addrs),
            Lookup::Resolve { stale } => stale,
        };
        let key = (name.to_owned(), pref);
        let answer = self.query(key.clone()).await;
        {
            // The first finisher clears the entry; joiners find it gone, which is fine.
            let mut in_flight = lock(&self.in_flight);
            if in_flight.get(&key).is_some_and(|f| f.peek().is_some()) {
                in_flight.remove(&key);
            }
        }
        match answer {
            Ok((addrs, ttl)) => {
                lock(&self.cache).handle_answer(name, pref, addrs.clone(), ttl, self.now());
                Ok(addrs)
            }
            Err(failure) => match stale {
                Some(addrs) => {
                    tracing::debug!(event = "dns.stale_served", host = %name, reason = %failure.reason);
                    Ok(addrs)
                }
                None => Err(failure),
            },
        }
    }

    /// Names cached now (for tests of the bound).
    pub fn cached_names(&self) -> usize {
        lock(&self.cache).len()
    }
}

fn options(strategy: LookupIpStrategy) -> ResolverOpts {
    let mut opts = ResolverOpts::default();
    opts.ip_strategy = strategy;
    // Our own cache decides TTLs and stale-serving; hickory's would hide expiries from it.
    opts.cache_size = 0;
    opts.timeout = Duration::from_millis(1500);
    opts.attempts = 1;
    opts
}

fn reason_of(err: &hickory_resolver::net::NetError) -> String {
    let text = err.to_string();
    let lower = text.to_ascii_lowercase();
    if lower.contains("nxdomain") || lower.contains("no record") || lower.contains("no records") {
        "no_records".into()
    } else if lower.contains("timed out") || lower.contains("timeout") {
        "timeout".into()
    } else {
        text.chars().take(120).collect()
    }
}

/// A resolver built on first use: processes whose rules name no host never pay for one
/// (about 0.7 MiB of RSS).
pub struct LazyResolver {
    server: Option<SocketAddr>,
    cell: std::sync::OnceLock<Result<Arc<HickoryResolver>, ResolveFailure>>,
}

impl LazyResolver {
    /// A resolver that will be built by [`HickoryResolver::configured`] when first asked.
    pub fn new(server: Option<SocketAddr>) -> Arc<Self> {
        Arc::new(LazyResolver { server, cell: std::sync::OnceLock::new() })
    }

    fn get(&self) -> Result<&Arc<HickoryResolver>, ResolveFailure> {
        self.cell
            .get_or_init(|| {
                let built = HickoryResolver::configured(self.server);
                if let Err(failure) = &built {
                    tracing::warn!(event = "dns.resolver_unavailable", reason = %failure.reason);
                }
                built
            })
            .as_ref()
            .map_err(Clone::clone)
    }
}

impl Resolver for LazyResolver {
    fn resolve<'a>(
        &'a self,
        name: &'a str,
        prefer_ipv6: bool,
    ) -> BoxFuture<'a, Result<Vec<IpAddr>, ResolveFailure>> {
        match self.get() {
            Ok(resolver) => resolver.resolve(name, prefer_ipv6),
            Err(failure) => Box::pin(std::future::ready(Err(failure))),
        }
    }
}

impl Resolver for HickoryResolver {
    fn resolve<'a>(
        &'a self,
        name: &'a str,
        prefer_ipv6: bool,
    ) -> BoxFuture<'a, Result<Vec<IpAddr>, ResolveFailure>> {
        let pref = if prefer_ipv6 { Preference::Ipv6First } else { Preference::Ipv4First };
        Box::pin(self.resolve_now(name, pref))
    }
}
