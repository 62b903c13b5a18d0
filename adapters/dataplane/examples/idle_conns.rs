//! Measures what an idle forwarded TCP connection costs the data plane: descriptors and RSS
//! per connection while `N` connections sit idle through one rule, and RSS after they close.
//!
//! ```text
//! cargo run --release -p portunus-dataplane --example idle_conns -- 10000 splice 21120
//! cargo run --release -p portunus-dataplane --example idle_conns -- 10000 userspace 21120
//! ```
//!
//! Arguments: the number of connections (default 1000, at most 50,000), the copy path
//! (`splice`, the default, or `userspace`, as `PORTUNUS_DISABLE_SPLICE=1` selects it), the
//! open-file limit the forwarder runs under (default 65,536, the shipped unit's
//! `LimitNOFILE=`; raising a limit above the hard one needs root), how many bursts of
//! connections to open and close (default 1, at most 20) and the forwarder's `GLIBC_TUNABLES`
//! (default the shipped unit's; `''` runs glibc's defaults).
//!
//! The tool runs three processes on loopback so that only the forwarder is measured: itself
//! (the clients), an echo backend and the forwarder (a [`DataPlane`] with one rule on a
//! multi-threaded runtime, as the client runs it), both children being this same executable.
//! Each connection sends 64 bytes and reads them back, so both directions have moved bytes
//! once, and then stays open and idle. The forwarder's descriptors (`/proc/<pid>/fd`) and RSS
//! (`VmRSS`) are read before, while the connections are open, and after they all closed.
#![allow(clippy::print_stdout)]

use std::error::Error;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::resource::{Resource, getrlimit, setrlimit};
use portunus_core::ids::RuleId;
use portunus_core::rule::{ListenSpec, RuleLimits, RuleSpec};
use portunus_dataplane::{DataPlane, DataPlaneOptions, RuleRuntime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

type Res<T> = Result<T, Box<dyn Error>>;

/// Most connections the tool opens.
const MAX_CONNS: usize = 50_000;
/// `GLIBC_TUNABLES` of the shipped `portunus-client.service`.
const SHIPPED_TUNABLES: &str = "glibc.malloc.tcache_count=0:glibc.malloc.top_pad=0";
/// Most bursts of connections one run opens and closes.
const MAX_BURSTS: usize = 20;
/// Connections set up at once.
const WAVE: usize = 200;
/// Bytes each connection echoes once before it goes idle.
const PING: usize = 64;
/// Upper bound of every wait; reaching it ends the run with an error.
const GUARD: Duration = Duration::from_secs(120);
/// Descriptors the tool itself needs beside its connections.
const SPARE_FDS: u64 = 256;

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("__backend") => backend(&args[1..]),
        Some("__forwarder") => forwarder(&args[1..]),
        _ => drive(&args),
    }
}

/// The clients: starts both children, opens the connections and prints the figures.
fn drive(args: &[String]) -> Res<()> {
    let conns: usize = args.first().map(|a| a.parse()).transpose()?.unwrap_or(1000);
    if conns == 0 || conns > MAX_CONNS {
        return Err(format!("connections must be 1..={MAX_CONNS}").into());
    }
    let path = args.get(1).map_or("splice", String::as_str);
    let splice = match path {
        "splice" => true,
        "userspace" => false,
        other => return Err(format!("unknown path {other:?} (splice or userspace)").into()),
    };
    let nofile: u64 = args.get(2).map(|a| a.parse()).transpose()?.unwrap_or(65_536);
    let bursts: usize = args.get(3).map(|a| a.parse()).transpose()?.unwrap_or(1).clamp(1, MAX_BURSTS);
    let tunables = args.get(4).map_or(SHIPPED_TUNABLES, String::as_str);
    set_nofile(conns as u64 + SPARE_FDS, false)?;

    let exe = std::env::current_exe()?;
    let peer_fds = (conns as u64 + SPARE_FDS).to_string();
    let (mut backend, backend_addr) = spawn(Command::new(&exe).args(["__backend", &peer_fds]))?;
    let splice_flag = if splice { "1" } else { "0" };
    let mut forwarder = Command::new(&exe);
    forwarder.args(["__forwarder", &backend_addr, splice_flag, &nofile.to_string()]);
    // The allocator as the shipped unit sets it, unless the caller chose another (an empty
    // value runs glibc's defaults).
    forwarder.env("GLIBC_TUNABLES", tunables);
    let (mut fwd, listen) = spawn(&mut forwarder)?;
    let pid = fwd.child.id();
    let listen: SocketAddr = listen.parse()?;

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let outcome = runtime.block_on(async {
        // One connection first, so one-time set-up (pools, thread state) is in the idle level.
        drop(open(listen).await?);
        let idle = settle(pid, None).await?;
        let (loaded, closed, setup) = burst(listen, pid, conns, &idle).await?;
        // More bursts: RSS after each closes shows whether every burst leaves more behind,
        // or what the first one left is set-up paid once (a worker's first stack pages and
        // malloc arena).
        let mut after = Vec::new();
        for _ in 1..bursts {
            after.push(burst(listen, pid, conns, &idle).await?.1);
        }
        Ok::<_, Box<dyn Error>>((idle, loaded, closed, after, setup))
    });
    fwd.finish();
    backend.finish();
    let (idle, loaded, closed, after, setup) = outcome?;

    let n = conns as f64;
    println!(
        "path {path}, {conns} idle connections, forwarder LimitNOFILE {nofile}, GLIBC_TUNABLES={tunables:?}"
    );
    println!("set-up: {:.1} s", setup.as_secs_f64());
    println!("{:<22} {:>8} {:>8} {:>10}", "forwarder", "fds", "pipes", "RSS KiB");
    for (name, s) in [("idle", &idle), ("connections open", &loaded), ("after close", &closed)] {
        println!("{name:<22} {:>8} {:>8} {:>10}", s.fds, s.pipes, s.rss_kib);
    }
    for (i, s) in after.iter().enumerate() {
        println!("{:<22} {:>8} {:>8} {:>10}", format!("after burst {}", i + 2), s.fds, s.pipes, s.rss_kib);
    }
    println!(
        "per idle connection:   {:.2} descriptors, {:.2} KiB",
        (loaded.fds as f64 - idle.fds as f64) / n,
        (loaded.rss_kib as f64 - idle.rss_kib as f64) / n,
    );
    println!(
        "RSS after close:       {:+.1} % of idle",
        (closed.rss_kib as f64 / idle.rss_kib as f64 - 1.0) * 100.0
    );
    if let Some(last) = after.last() {
        println!(
            "after {bursts} bursts:        {:+.1} % of idle, {:+.1} % of the first close",
            (last.rss_kib as f64 / idle.rss_kib as f64 - 1.0) * 100.0,
            (last.rss_kib as f64 / closed.rss_kib as f64 - 1.0) * 100.0,
        );
    }
    Ok(())
}

/// Opens `conns` connections through the forwarder in waves, reads the forwarder once they
/// are all open and idle, closes them and reads it again once it settled; with the time
/// the connections took to open.
async fn burst(listen: SocketAddr, pid: u32, conns: usize, idle: &Sample) -> Res<(Sample, Sample, Duration)> {
    let started = Instant::now();
    let mut open_conns = Vec::with_capacity(conns);
    while open_conns.len() < conns {
        let wave = WAVE.min(conns - open_conns.len());
        let opened = futures_join((0..wave).map(|_| open(listen))).await;
        for conn in opened {
            open_conns.push(conn?);
        }
    }
    let setup = started.elapsed();
    let loaded = settle(pid, None).await?;
    drop(open_conns);
    let closed = settle(pid, Some(idle.fds - idle.pipes)).await?;
    Ok((loaded, closed, setup))
}

/// Runs `futs` concurrently and returns their outputs in order.
async fn futures_join<F>(futs: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let tasks: Vec<_> = futs.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(tasks.len());
    for task in tasks {
        match task.await {
            Ok(v) => out.push(v),
            Err(err) => std::panic::resume_unwind(err.into_panic()),
        }
    }
    out
}

/// Opens one connection through the forwarder and echoes [`PING`] bytes over it.
async fn open(listen: SocketAddr) -> std::io::Result<TcpStream> {
    let work = async {
        let mut conn = TcpStream::connect(listen).await?;
        conn.write_all(&[7; PING]).await?;
        let mut back = [0; PING];
        conn.read_exact(&mut back).await?;
        Ok::<_, std::io::Error>(conn)
    };
    match tokio::time::timeout(GUARD, work).await {
        Ok(conn) => conn,
        Err(_) => Err(std::io::Error::other("a connection through the forwarder did not echo in time")),
    }
}

/// One reading of the forwarder process.
#[derive(Debug, Clone, Copy)]
struct Sample {
    fds: u64,
    pipes: u64,
    rss_kib: u64,
}

fn sample(pid: u32) -> Res<Sample> {
    let (mut fds, mut pipes) = (0, 0);
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd"))? {
        fds += 1;
        // An entry may vanish between the listing and the read.
        if let Ok(link) = std::fs::read_link(entry?.path())
            && link.to_string_lossy().starts_with("pipe:")
        {
            pipes += 1;
        }
    }
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss_kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or("no VmRSS in /proc/<pid>/status")?;
    Ok(Sample { fds, pipes, rss_kib })
}

/// Waits until the forwarder's descriptors and RSS stop changing for two seconds, with its
/// sockets (descriptors other than pipes) at or below `sockets_at_most` when given, and
/// returns that reading.
async fn settle(pid: u32, sockets_at_most: Option<u64>) -> Res<Sample> {
    let deadline = Instant::now() + GUARD;
    let mut last = sample(pid)?;
    let mut steady_since = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = sample(pid)?;
        let fds_done = sockets_at_most.is_none_or(|max| now.fds - now.pipes <= max);
        if now.fds != last.fds || now.rss_kib != last.rss_kib || !fds_done {
            steady_since = Instant::now();
        } else if steady_since.elapsed() >= Duration::from_secs(2) {
            return Ok(now);
        }
        if Instant::now() > deadline {
            return Err(format!("the forwarder did not settle: {now:?}").into());
        }
        last = now;
    }
}

/// A child process that printed one line (its address) and stops when its stdin closes.
struct Worker {
    child: Child,
    _stdout: BufReader<ChildStdout>,
}

impl Worker {
    fn finish(&mut self) {
        drop(self.child.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(cmd: &mut Command) -> Res<(Worker, String)> {
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn()?;
    let mut stdout = BufReader::new(child.stdout.take().ok_or("child without stdout")?);
    let mut line = String::new();
    stdout.read_line(&mut line)?;
    if line.trim().is_empty() {
        let _ = child.kill();
        let _ = child.wait();
        return Err("a child process failed to start".into());
    }
    Ok((Worker { child, _stdout: stdout }, line.trim().to_owned()))
}

/// Sets this process's soft descriptor limit to `limit`, and the hard one too when `exact`
/// (as systemd's `LimitNOFILE=` does). A limit above the current hard one needs privilege.
fn set_nofile(limit: u64, exact: bool) -> Res<()> {
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    let new_hard = if exact { limit } else { hard.max(limit) };
    setrlimit(Resource::RLIMIT_NOFILE, limit, new_hard)
        .map_err(|err| format!("cannot set the open-file limit to {limit} (hard {hard}): {err}"))?;
    Ok(())
}

/// Blocks until the parent closes our stdin.
fn wait_for_parent() {
    let mut sink = [0u8; 64];
    let mut stdin = std::io::stdin();
    while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
}

/// Child: an echo server on loopback that keeps every connection until its client closes.
fn backend(args: &[String]) -> Res<()> {
    set_nofile(args.first().map(|a| a.parse()).transpose()?.unwrap_or(65_536), false)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    let listener = runtime.block_on(TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))?;
    let addr = listener.local_addr()?;
    println!("{addr}");
    std::io::stdout().flush()?;
    runtime.spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                while let Ok(n) = conn.read(&mut buf).await {
                    if n == 0 || conn.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    wait_for_parent();
    Ok(())
}

/// Child: the measured forwarder, one rule from a free loopback port to the backend.
fn forwarder(args: &[String]) -> Res<()> {
    let (Some(target), Some(splice), Some(nofile)) = (args.first(), args.get(1), args.get(2)) else {
        return Err("usage: __forwarder <target> <splice 0|1> <nofile>".into());
    };
    set_nofile(nofile.parse()?, true)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let listen = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?;
    let spec = RuleSpec {
        name: None,
        protocol: Default::default(),
        listen_port: ListenSpec::Port(i64::from(listen.port())),
        listen_addr: Some(listen.ip()),
        target: Some(target.clone()),
        targets: vec![],
        prefer_ipv6: false,
        health_check_interval_secs: None,
        sni_pattern: None,
        sni_fallback: false,
        rate_limit: None,
    };
    let def = spec.validate(RuleLimits::default())?;
    let _entered = runtime.enter();
    let plane = DataPlane::new(DataPlaneOptions::with_switches(splice != "1", false));
    runtime.block_on(plane.bind(RuleId::new(1), def))?;
    println!("{listen}");
    std::io::stdout().flush()?;
    wait_for_parent();
    runtime.block_on(plane.shutdown(Duration::from_secs(1)));
    Ok(())
}
