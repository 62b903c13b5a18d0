//! How exactly the data plane holds rate limits, and what a cap costs a connection:
//! `cargo bench -p portunus-client --bench rate_limits` (about 65 s; a plain main, since a
//! rate has to be watched for seconds, not sampled in microseconds).
//!
//! - `bandwidth`: one TCP connection through a rule capped at 10 MB/s inbound (10,000,000
//!   bytes/s, the smallest burst the cap allows: 1 MB) for 21 s, the client writing as fast
//!   as it can. The rate is what the backend received in the last 20 s (after the burst), and
//!   over the whole run.
//! - `new_connections`: a rule capped at 100 new connections/s (burst 10), a client trying
//!   300 connects/s for 10 s; admitted connections per second, as the plane counts them.
//! - `cost`: one TCP stream for 3 s through an uncapped rule (splice), an uncapped rule on
//!   the userspace copy, and a rule capped at 1 TB/s (userspace, every chunk asks the
//!   bucket), in three interleaved rounds (the host's speed drifts); throughput medians and
//!   the per-round ratios.
//!
//! Without `--bench` (as `cargo test --benches` runs it) every phase lasts a second, as a
//! smoke test. Everything is on loopback.
#![allow(clippy::print_stdout)] // The figures are the output.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use portunus_core::ids::RuleId;
use portunus_core::ratelimit::{LimitPath, RateLimits, SharedScope};
use portunus_core::rule::{ListenSpec, RuleLimits, RuleSpec};
use portunus_dataplane::{DataPlane, DataPlaneOptions, RuleRuntime, limits};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Durations of one run: the full bench, or the smoke test.
struct Plan {
    bandwidth_warmup: Duration,
    bandwidth_window: Duration,
    connect_secs: u32,
    cost_warmup: Duration,
    cost_window: Duration,
    cost_rounds: usize,
}

impl Plan {
    fn new(full: bool) -> Self {
        if full {
            Plan {
                bandwidth_warmup: Duration::from_secs(1),
                bandwidth_window: Duration::from_secs(20),
                connect_secs: 10,
                cost_warmup: Duration::from_millis(500),
                cost_window: Duration::from_secs(3),
                cost_rounds: 3,
            }
        } else {
            Plan {
                bandwidth_warmup: Duration::from_millis(200),
                bandwidth_window: Duration::from_secs(1),
                connect_secs: 1,
                cost_warmup: Duration::from_millis(100),
                cost_window: Duration::from_millis(500),
                cost_rounds: 1,
            }
        }
    }
}

fn main() {
    let full = std::env::args().any(|arg| arg == "--bench");
    let plan = Plan::new(full);
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    rt.block_on(async {
        let sink = Sink::start().await;
        bandwidth(&plan, &sink).await;
        new_connections(&plan).await;
        cost(&plan, &sink).await;
    });
}

/// A backend that reads and discards everything, counting the bytes.
struct Sink {
    addr: SocketAddr,
    received: Arc<AtomicU64>,
}

impl Sink {
    async fn start() -> Sink {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind sink");
        let addr = listener.local_addr().expect("sink addr");
        let received = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&received);
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let counted = Arc::clone(&counted);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 256 * 1024];
                    while let Ok(n) = stream.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        counted.fetch_add(n as u64, Ordering::Relaxed);
                    }
                });
            }
        });
        Sink { addr, received }
    }

    fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }
}

/// A backend that answers nothing and closes when the client does.
async fn idle_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind backend");
    let addr = listener.local_addr().expect("backend addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 64];
                while let Ok(n) = stream.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                }
            });
        }
    });
    addr
}

/// Binds rule `id` on a free loopback port towards `target`, with `limits` (if any) in a
/// rule scope on the data plane's clock. Returns the listen port.
async fn bind(plane: &DataPlane, id: u64, target: SocketAddr, limits: Option<RateLimits>) -> u16 {
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("probe").local_addr().expect("addr").port();
    let spec = RuleSpec {
        name: None,
        protocol: Default::default(),
        listen_port: ListenSpec::Port(i64::from(port)),
        listen_addr: Some("127.0.0.1".parse().expect("literal")),
        target: Some(target.to_string()),
        targets: vec![],
        prefer_ipv6: false,
        health_check_interval_secs: None,
        sni_pattern: None,
        sni_fallback: false,
        rate_limit: None,
    };
    let def = spec.validate(RuleLimits::default()).expect("valid rule");
    plane.bind(RuleId::new(id), def).await.expect("bind bench rule");
    if let Some(caps) = limits {
        let scope = SharedScope::new(caps.validate().expect("valid caps"), limits::now());
        plane.set_limits(RuleId::new(id), LimitPath::new(None, Some(Arc::new(scope))));
    }
    port
}

/// Writes to `port` as fast as it can until `stop` is set, then closes.
fn spawn_writer(port: u16, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut conn = TcpStream::connect(("127.0.0.1", port)).await.expect("connect rule");
        let chunk = vec![0x5au8; 256 * 1024];
        while !stop.load(Ordering::Relaxed) {
            if conn.write_all(&chunk).await.is_err() {
                break;
            }
        }
    })
}

/// Bytes per second the sink received over `window`, after `warmup`, from one writer
/// through `port`; also the rate over warmup and window together.
async fn measure(sink: &Sink, port: u16, warmup: Duration, window: Duration) -> (f64, f64) {
    let stop = Arc::new(AtomicBool::new(false));
    let start_bytes = sink.received();
    let started = Instant::now();
    let writer = spawn_writer(port, Arc::clone(&stop));
    tokio::time::sleep(warmup).await;
    let (from, at) = (sink.received(), Instant::now());
    tokio::time::sleep(window).await;
    let (to, end) = (sink.received(), Instant::now());
    stop.store(true, Ordering::Relaxed);
    // A capped writer may be blocked in a write; the abort ends it either way.
    writer.abort();
    let _ = writer.await;
    let steady = (to - from) as f64 / (end - at).as_secs_f64();
    let overall = (to - start_bytes) as f64 / (end - started).as_secs_f64();
    (steady, overall)
}

async fn bandwidth(plan: &Plan, sink: &Sink) {
    const RATE: u64 = 10_000_000;
    let plane = DataPlane::new(DataPlaneOptions::default());
    let caps = RateLimits {
        bandwidth_in_bps: Some(RATE),
        bandwidth_in_burst_bytes: Some(RATE / 10),
        ..RateLimits::default()
    };
    let port = bind(&plane, 1, sink.addr, Some(caps)).await;
    let (steady, overall) = measure(sink, port, plan.bandwidth_warmup, plan.bandwidth_window).await;
    let error = |rate: f64| (rate - RATE as f64) / RATE as f64 * 100.0;
    println!("bandwidth: cap 10,000,000 B/s, burst 1,000,000 B, one connection");
    println!(
        "  last {:.0} s: {:>12.0} B/s  error {:+.2} %",
        plan.bandwidth_window.as_secs_f64(),
        steady,
        error(steady)
    );
    println!(
        "  whole run ({:.0} s, burst included): {:>12.0} B/s  error {:+.2} %",
        (plan.bandwidth_warmup + plan.bandwidth_window).as_secs_f64(),
        overall,
        error(overall)
    );
    let throttled = plane.report().first().map(|(_, r)| r.totals.rate_limit_throttled).unwrap_or(0);
    println!("  waits for a refill: {throttled}");
    plane.shutdown(Duration::ZERO).await;
}

async fn new_connections(plan: &Plan) {
    const OFFERED_PER_SEC: u32 = 300;
    let plane = DataPlane::new(DataPlaneOptions::default());
    let caps = RateLimits {
        new_connections_per_sec: Some(100),
        new_connections_burst: Some(10),
        ..RateLimits::default()
    };
    let port = bind(&plane, 2, idle_backend().await, Some(caps)).await;
    let totals =
        || plane.report().first().map(|(_, r)| (r.totals.connections_total, r.totals.rate_limit_rejected));
    let attempts = plan.connect_secs * OFFERED_PER_SEC;
    let started = tokio::time::Instant::now();
    let mut per_sec = Vec::new();
    let mut last = totals().unwrap_or_default();
    let mut next_tick = started + Duration::from_secs(1);
    for i in 0..attempts {
        let due = started + Duration::from_secs(1) * i / OFFERED_PER_SEC;
        if due >= next_tick {
            tokio::time::sleep_until(next_tick).await;
            let now = totals().unwrap_or_default();
            per_sec.push((now.0 - last.0, now.1 - last.1));
            last = now;
            next_tick += Duration::from_secs(1);
        }
        tokio::time::sleep_until(due).await;
        tokio::spawn(async move {
            // Admitted or not, the client leaves at once; the plane decided at accept.
            if let Ok(conn) = TcpStream::connect(("127.0.0.1", port)).await {
                drop(conn);
            }
        });
    }
    tokio::time::sleep_until(next_tick).await;
    let now = totals().unwrap_or_default();
    per_sec.push((now.0 - last.0, now.1 - last.1));
    println!(
        "new_connections: cap 100/s (burst 10), {OFFERED_PER_SEC} connects/s offered for {} s",
        plan.connect_secs
    );
    let admitted: Vec<u64> = per_sec.iter().map(|(a, _)| *a).collect();
    println!("  admitted per second: {admitted:?}");
    println!("  refused per second:  {:?}", per_sec.iter().map(|(_, r)| *r).collect::<Vec<_>>());
    // The first second also spends the burst.
    let steady = admitted.get(1..).filter(|rest| !rest.is_empty()).unwrap_or(&admitted);
    let mean = steady.iter().sum::<u64>() as f64 / steady.len().max(1) as f64;
    let (min, max) = (steady.iter().min().copied().unwrap_or(0), steady.iter().max().copied().unwrap_or(0));
    println!("  after the first second: mean {mean:.1}/s, min {min}, max {max}");
    plane.shutdown(Duration::ZERO).await;
}

async fn cost(plan: &Plan, sink: &Sink) {
    let splice = DataPlane::new(DataPlaneOptions::default());
    let userspace = DataPlane::new(DataPlaneOptions::with_switches(true, false));
    let huge = RateLimits { bandwidth_in_bps: Some(1_000_000_000_000), ..RateLimits::default() };
    let rules = [
        ("uncapped, splice", bind(&splice, 3, sink.addr, None).await),
        ("uncapped, userspace", bind(&userspace, 4, sink.addr, None).await),
        ("capped at 1 TB/s", bind(&splice, 5, sink.addr, Some(huge)).await),
    ];
    println!(
        "cost: one stream, {:.1} s per rule and round, {} rounds",
        plan.cost_window.as_secs_f64(),
        plan.cost_rounds
    );
    // rounds[r][i]: bytes per second of rule i in round r.
    let mut rounds = Vec::new();
    for _ in 0..plan.cost_rounds {
        let mut round = Vec::new();
        for (_, port) in rules {
            round.push(measure(sink, port, plan.cost_warmup, plan.cost_window).await.0);
        }
        rounds.push(round);
    }
    let mbit = |rate: f64| rate * 8.0 / 1e6;
    for (i, (name, _)) in rules.iter().enumerate() {
        let each: Vec<f64> = rounds.iter().map(|round| round[i]).collect();
        let shown: Vec<String> = each.iter().map(|rate| format!("{:.0}", mbit(*rate))).collect();
        println!("  {name:<20} median {:>6.0} Mbit/s  rounds {}", mbit(median(each)), shown.join(" / "));
    }
    let ratios = |num: usize, den: usize| -> (f64, Vec<String>) {
        let each: Vec<f64> = rounds.iter().map(|round| round[num] / round[den]).collect();
        let shown = each.iter().map(|ratio| format!("{ratio:.2}")).collect();
        (median(each), shown)
    };
    let (vs_splice, splice_rounds) = ratios(2, 0);
    let (vs_user, user_rounds) = ratios(2, 1);
    println!("  capped / uncapped splice:    median {vs_splice:.2}x  rounds {}", splice_rounds.join(" / "));
    println!("  capped / uncapped userspace: median {vs_user:.2}x  rounds {}", user_rounds.join(" / "));
    splice.shutdown(Duration::ZERO).await;
    userspace.shutdown(Duration::ZERO).await;
}

/// The middle value (the upper one of an even count); 0 for none.
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}
