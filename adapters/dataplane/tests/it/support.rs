//! Shared test fixtures: free ports, loopback backends, rule builders, a tracing capture
//! and polling helpers. Every socket here is on loopback; waits are failure guards only.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use portunus_core::config::DataPlaneSettings;
use portunus_core::ids::RuleId;
use portunus_core::rule::{Host, PortRange, Protocol, RuleDef, Target};
use portunus_core::stats::Counters;
use portunus_dataplane::RuleRuntime;
use portunus_dataplane::{DataPlane, DataPlaneOptions, SpliceFault};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Upper bound for any wait in a test; reaching it is a failure, never a pass.
pub const GUARD: Duration = Duration::from_secs(30);

pub const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// Which copy path a test drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    Splice,
    Userspace,
}

pub fn options(path: Path) -> DataPlaneOptions {
    DataPlaneOptions { splice: path == Path::Splice, ..DataPlaneOptions::default() }
}

pub fn plane(path: Path) -> Arc<DataPlane> {
    DataPlane::new(options(path))
}

pub fn plane_with_fault(fault: SpliceFault) -> Arc<DataPlane> {
    DataPlane::new(DataPlaneOptions {
        splice: true,
        splice_fault: Some(fault),
        ..DataPlaneOptions::default()
    })
}

/// A rule id no other test in this binary uses, so captured events can be told apart.
pub fn rule_id() -> RuleId {
    static NEXT: AtomicU64 = AtomicU64::new(1000);
    RuleId::new(NEXT.fetch_add(1, Ordering::Relaxed))
}

/// The first of `n` consecutive ports that nothing listens on, below the ephemeral range and
/// never handed out twice in this process.
pub fn free_ports(n: u16) -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let _ = NEXT.compare_exchange(
        0,
        20_000 + (std::process::id() % 500) as u16 * 20,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    loop {
        let start = NEXT.fetch_add(n, Ordering::Relaxed);
        assert!(start < 32_000, "ran out of test ports");
        let all_free = (start..start + n).all(|port| {
            let v4_free = std::net::TcpListener::bind(("0.0.0.0", port)).is_ok();
            // A host without IPv6 cannot bind `::` at all; only "in use" counts against it.
            let v6_free = match std::net::TcpListener::bind(("::", port)) {
                Ok(_) => true,
                Err(err) => err.kind() != std::io::ErrorKind::AddrInUse,
            };
            v4_free && v6_free
        });
        if all_free {
            return start;
        }
    }
}

pub fn target(host: IpAddr, port: u16, priority: u16) -> Target {
    Target { host: Host::Ip(host), ports: PortRange::single(port).unwrap(), priority, proxy: None }
}

/// A TCP rule on `127.0.0.1:listen` (or a range starting there) with the given targets.
pub fn tcp_rule(listen: PortRange, targets: Vec<Target>) -> RuleDef {
    RuleDef {
        name: None,
        protocol: Protocol::Tcp,
        listen,
        listen_addr: Some(LOCALHOST),
        targets,
        prefer_ipv6: false,
        health_check_interval_secs: None,
        sni: None,
        rate_limit: Default::default(),
    }
}

/// Binds a one-target rule on a fresh port; returns the listen port.
pub async fn bind_simple(plane: &DataPlane, id: RuleId, backend: SocketAddr) -> u16 {
    let port = free_ports(1);
    let def = tcp_rule(PortRange::single(port).unwrap(), vec![target(backend.ip(), backend.port(), 0)]);
    plane.bind(id, def).await.expect("bind");
    port
}

pub fn settings_with_idle(idle: Duration) -> DataPlaneSettings {
    DataPlaneSettings { tcp_idle_timeout: idle, ..DataPlaneSettings::default() }
}

pub async fn connect(port: u16) -> TcpStream {
    within(TcpStream::connect((LOCALHOST, port))).await.expect("connect to the rule")
}

/// Runs `fut` under the guard timeout.
pub async fn within<F: Future>(fut: F) -> F::Output {
    tokio::time::timeout(GUARD, fut).await.expect("timed out (failure guard)")
}

/// Polls `cond` until it holds; fails the test when the guard expires.
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + GUARD;
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The current counters of `id` (zero if not bound).
pub fn totals(plane: &DataPlane, id: RuleId) -> Counters {
    plane.report().into_iter().find(|(rid, _)| *rid == id).map(|(_, r)| r.totals).unwrap_or_default()
}

/// Deterministic pseudo-random bytes (xorshift64*), different per `seed`.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Reads until end of stream; a reset also ends the read (what arrived before it is kept).
pub async fn read_to_end_lenient(stream: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// Sends `data` and half-closes while reading everything back; returns what came back.
pub async fn exchange(stream: TcpStream, data: &[u8]) -> Vec<u8> {
    let (mut rd, mut wr) = stream.into_split();
    let data = data.to_vec();
    let writer = tokio::spawn(async move {
        wr.write_all(&data).await.expect("client write");
        wr.shutdown().await.expect("client shutdown(write)");
        wr
    });
    let mut out = Vec::new();
    rd.read_to_end(&mut out).await.expect("client read");
    let _wr = writer.await.expect("writer task");
    out
}

/// A loopback backend; each accepted connection runs `handler`.
pub async fn backend<F, Fut>(handler: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind((LOCALHOST, 0)).await.expect("backend bind");
    let addr = listener.local_addr().expect("backend addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(handler(stream));
        }
    });
    addr
}

/// Echoes every byte and half-closes when the peer does.
pub async fn echo_backend() -> SocketAddr {
    backend(|mut stream| async move {
        let (mut rd, mut wr) = stream.split();
        if tokio::io::copy(&mut rd, &mut wr).await.is_ok() {
            let _ = wr.shutdown().await;
        }
    })
    .await
}

/// Counts what each connection received until it ended (by EOF or reset).
#[derive(Debug, Default)]
pub struct SinkLog {
    pub received: AtomicU64,
    pub finished: Mutex<Vec<Vec<u8>>>,
}

/// Reads everything and records it, never answering.
pub async fn sink_backend(log: Arc<SinkLog>) -> SocketAddr {
    backend(move |mut stream| {
        let log = Arc::clone(&log);
        async move {
            let mut all = Vec::new();
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        all.extend_from_slice(&buf[..n]);
                        log.received.fetch_add(n as u64, Ordering::SeqCst);
                    }
                }
            }
            log.finished.lock().unwrap().push(all);
        }
    })
    .await
}

/// A loopback port with nothing listening on it (connections are refused).
pub fn dead_port() -> u16 {
    free_ports(1)
}

/// True when a TCP socket with local port `port` is in TIME_WAIT (Linux `/proc/net/tcp`).
pub fn has_time_wait(port: u16) -> bool {
    let Ok(table) = std::fs::read_to_string("/proc/net/tcp") else { return false };
    table.lines().skip(1).any(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        let local_port =
            cols.get(1).and_then(|a| a.rsplit(':').next()).and_then(|p| u16::from_str_radix(p, 16).ok());
        local_port == Some(port) && cols.get(3) == Some(&"06")
    })
}

pub mod capture {
    //! A global `tracing` subscriber that keeps every event's fields, for assertions on the
    //! event contract. Tests filter by their own rule id.

    use super::*;
    use tracing::field::{Field, Visit};
    use tracing::span::{Attributes, Id, Record};
    use tracing::{Event, Metadata, Subscriber};

    #[derive(Debug, Clone)]
    pub struct Captured {
        pub level: tracing::Level,
        pub fields: BTreeMap<String, String>,
    }

    static EVENTS: Mutex<Vec<Captured>> = Mutex::new(Vec::new());

    struct Capture;

    struct Fields<'a>(&'a mut BTreeMap<String, String>);

    impl Visit for Fields<'_> {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            self.0.insert(field.name().to_owned(), format!("{value:?}"));
        }
        fn record_str(&mut self, field: &Field, value: &str) {
            self.0.insert(field.name().to_owned(), value.to_owned());
        }
    }

    impl Subscriber for Capture {
        fn enabled(&self, _: &Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, _: &Attributes<'_>) -> Id {
            Id::from_u64(1)
        }
        fn record(&self, _: &Id, _: &Record<'_>) {}
        fn record_follows_from(&self, _: &Id, _: &Id) {}
        fn event(&self, event: &Event<'_>) {
            let mut fields = BTreeMap::new();
            event.record(&mut Fields(&mut fields));
            EVENTS.lock().unwrap().push(Captured { level: *event.metadata().level(), fields });
        }
        fn enter(&self, _: &Id) {}
        fn exit(&self, _: &Id) {}
    }

    /// Installs the capture as the global subscriber (idempotent).
    pub fn install() {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            tracing::subscriber::set_global_default(Capture).expect("no other global subscriber")
        });
    }

    /// Events named `name` (the `event` field) that carry `rule = id`.
    pub fn events(name: &str, id: RuleId) -> Vec<Captured> {
        let rule = id.to_string();
        EVENTS
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.fields.get("event").map(String::as_str) == Some(name))
            .filter(|e| e.fields.get("rule") == Some(&rule))
            .cloned()
            .collect()
    }
}
