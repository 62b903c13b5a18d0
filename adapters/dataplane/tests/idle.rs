//! Idle connections cost two descriptors and no pipe or buffer, on both copy paths, and the
//! pipe pool shrinks back after a burst.
//!
//! A test binary of its own: it counts this process's descriptors (`/proc/self/fd`) and the
//! relay's pools, which the concurrent tests of the `it` binary would disturb. Its two tests
//! take turns on one lock. Everything runs on loopback.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use portunus_core::ids::RuleId;
use portunus_core::rule::{ListenSpec, RuleLimits, RuleSpec};
use portunus_dataplane::relay::{PIPES_KEPT_QUIET, PIPES_MAX, PoolStats, pool_stats};
use portunus_dataplane::{DataPlane, DataPlaneOptions, RuleRuntime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Idle connections opened through the rule.
const N: usize = 500;
/// Connections set up or exercised at once.
const WAVE: usize = 100;
/// Descriptors the process may open beside the connections' sockets (runtime threads, a
/// few pooled pipes, the listener).
const SLACK: usize = 24;
/// Upper bound of any wait; reaching it fails the test.
const GUARD: Duration = Duration::from_secs(60);

static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn splice_path_idle_connections_hold_only_their_sockets() {
    idle_connections_hold_only_their_sockets(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn userspace_path_idle_connections_hold_only_their_sockets() {
    idle_connections_hold_only_their_sockets(false).await;
}

async fn idle_connections_hold_only_their_sockets(splice: bool) {
    let _turn = TURN.lock().await;
    portunus_dataplane::raise_nofile_limit().expect("raise the descriptor limit");
    let backend = echo_backend().await;
    let plane = DataPlane::new(DataPlaneOptions { splice, ..DataPlaneOptions::default() });
    let id = RuleId::new(1);
    let listen = bind(&plane, id, backend).await;
    // One connection first: the runtime, the pools and the listener reach their idle state.
    drop(open(listen, 64).await);
    eventually("the warm-up connection ends", || active(&plane, id) == 0).await;
    let before = fds();

    let mut conns = Vec::with_capacity(N);
    while conns.len() < N {
        let wave: Vec<_> = (0..WAVE).map(|_| tokio::spawn(open(listen, 64))).collect();
        for task in wave {
            conns.push(task.await.expect("open task"));
        }
    }
    eventually("every connection is relayed", || active(&plane, id) == N as u64).await;
    eventually("no leg holds a pipe or buffer", || lent(pool_stats()) == 0).await;

    // The test holds both ends of every connection (client and backend sockets) beside the
    // plane's two, so four sockets per connection; the plane may add no pipe per connection.
    let open_now = fds();
    assert!(
        open_now.sockets <= before.sockets + 4 * N + SLACK,
        "sockets grew from {} to {} for {N} connections",
        before.sockets,
        open_now.sockets
    );
    assert!(
        open_now.pipes <= before.pipes + 2 * PIPES_KEPT_QUIET,
        "pipes grew from {} to {} for {N} idle connections",
        before.pipes,
        open_now.pipes
    );

    // A burst: every connection moves 256 KiB at once, then all go idle again.
    let mut burst = Vec::with_capacity(N);
    for conn in conns.drain(..) {
        burst.push(tokio::spawn(echo(conn, 256 << 10)));
    }
    for task in burst {
        conns.push(task.await.expect("burst task"));
    }
    eventually("the pools are quiet again", || {
        let stats = pool_stats();
        lent(stats) == 0 && stats.pipes_idle <= PIPES_KEPT_QUIET && stats.buffers_idle <= 2
    })
    .await;
    let quiet = fds();
    assert!(
        quiet.pipes <= before.pipes + 2 * PIPES_KEPT_QUIET,
        "after the burst {} pipe ends stay open (bound {PIPES_MAX} pipes)",
        quiet.pipes
    );

    drop(conns);
    eventually("every connection ends", || active(&plane, id) == 0).await;
    eventually("the sockets are closed", || fds().sockets <= before.sockets + SLACK).await;
    plane.shutdown(Duration::from_secs(1)).await;
}

fn lent(stats: PoolStats) -> usize {
    stats.pipes_lent + stats.buffers_lent
}

/// Open descriptors of this process, by kind.
#[derive(Debug, Clone, Copy)]
struct Fds {
    sockets: usize,
    pipes: usize,
}

fn fds() -> Fds {
    let mut count = Fds { sockets: 0, pipes: 0 };
    for entry in std::fs::read_dir("/proc/self/fd").expect("/proc/self/fd") {
        // An entry may close between the listing and the read.
        let Ok(link) = std::fs::read_link(entry.expect("fd entry").path()) else { continue };
        let link = link.to_string_lossy();
        if link.starts_with("socket:") {
            count.sockets += 1;
        } else if link.starts_with("pipe:") {
            count.pipes += 1;
        }
    }
    count
}

fn active(plane: &DataPlane, id: RuleId) -> u64 {
    plane
        .report()
        .into_iter()
        .find(|(rule, _)| *rule == id)
        .map_or(0, |(_, report)| report.totals.connections_active)
}

async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + GUARD;
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn echo_backend() -> SocketAddr {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.expect("bind backend");
    let addr = listener.local_addr().expect("backend address");
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut rd, mut wr) = conn.split();
                let _ = tokio::io::copy(&mut rd, &mut wr).await;
            });
        }
    });
    addr
}

async fn bind(plane: &DataPlane, id: RuleId, backend: SocketAddr) -> SocketAddr {
    let listen = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .expect("probe a free port")
        .local_addr()
        .expect("probe address");
    let def = RuleSpec {
        name: None,
        protocol: Default::default(),
        listen_port: ListenSpec::Port(i64::from(listen.port())),
        listen_addr: Some(listen.ip()),
        target: Some(backend.to_string()),
        targets: vec![],
        prefer_ipv6: false,
        health_check_interval_secs: None,
        sni_pattern: None,
        sni_fallback: false,
        rate_limit: None,
    }
    .validate(RuleLimits::default())
    .expect("valid rule");
    plane.bind(id, def).await.expect("bind the rule");
    listen
}

/// Opens a connection through the rule and echoes `len` bytes over it.
async fn open(listen: SocketAddr, len: usize) -> TcpStream {
    let conn = tokio::time::timeout(GUARD, TcpStream::connect(listen))
        .await
        .expect("connect in time")
        .expect("connect");
    echo(conn, len).await
}

/// Sends `len` bytes and reads them back, then hands the connection back.
async fn echo(mut conn: TcpStream, len: usize) -> TcpStream {
    let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    let work = async {
        let (mut rd, mut wr) = conn.split();
        let send = wr.write_all(&data);
        let mut back = vec![0; len];
        let recv = rd.read_exact(&mut back);
        let (sent, received) = tokio::join!(send, recv);
        sent.expect("send");
        received.expect("receive the echo");
        assert!(back == data, "the echo differs");
    };
    tokio::time::timeout(GUARD, work).await.expect("echo in time");
    conn
}
