//! UDP rules through the real server and client: replies reach exactly their sender, TCP and
//! UDP share a port number, a held UDP port fails the push with exit 5, the flow cap from
//! `server.toml` reaches the client and its overflow is exported, removal frees the port, and
//! 1,000 live flows stay within 2 MiB of the client's memory. Also `portunus-standalone` with
//! a TCP and a UDP rule on one port, the benchmark's configuration.
//!
//! Idle expiry is proven in core (injected clock) and in the data plane (a short idle time);
//! here the shortest legal idle time, 30 s, would only make the tests slow.

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::sys::socket::{
    AddressFamily, SockFlag, SockType, SockaddrIn, bind, getsockname, setsockopt, socket, sockopt,
};

use crate::harness::{
    Backend, Client, ClientOpts, DEADLINE, Proc, Scenario, Server, ServerOpts, bin, connect, free_port,
    http_get, roundtrip, server_with_edge, wait_until,
};

/// How long a client waits for an answer before it sends again (UDP may drop).
const RETRY: Duration = Duration::from_millis(200);

/// A UDP echo server on 127.0.0.1, served from a thread until it drops.
struct UdpEcho {
    addr: SocketAddr,
    stopping: Arc<AtomicBool>,
}

impl UdpEcho {
    fn start() -> UdpEcho {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("echo binds loopback");
        let _ = setsockopt(&socket, sockopt::RcvBuf, &(4 << 20));
        socket.set_read_timeout(Some(Duration::from_millis(100))).expect("read timeout");
        let addr = socket.local_addr().expect("echo addr");
        let stopping = Arc::new(AtomicBool::new(false));
        let stop = Arc::clone(&stopping);
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 65_536];
            while !stop.load(Ordering::SeqCst) {
                if let Ok((len, from)) = socket.recv_from(&mut buf) {
                    let _ = socket.send_to(&buf[..len], from);
                }
            }
        });
        UdpEcho { addr, stopping }
    }

    fn target(&self) -> String {
        self.addr.to_string()
    }
}

impl Drop for UdpEcho {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
    }
}

/// A UDP socket on 127.0.0.1 connected to the rule's port.
fn udp_client(port: u16) -> UdpSocket {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("client binds loopback");
    socket.connect(("127.0.0.1", port)).expect("connect");
    socket.set_read_timeout(Some(RETRY)).expect("read timeout");
    socket
}

/// Sends `payload` until an answer arrives (retrying every [`RETRY`]) and returns it.
fn udp_roundtrip(socket: &UdpSocket, payload: &[u8]) -> Vec<u8> {
    let started = Instant::now();
    let mut buf = vec![0u8; 65_536];
    loop {
        assert!(started.elapsed() < DEADLINE, "no answer to {payload:?} within {DEADLINE:?}");
        socket.send(payload).expect("send");
        if let Ok(len) = socket.recv(&mut buf) {
            return buf[..len].to_vec();
        }
    }
}

/// Every socket sends its own payload and must get exactly it back, 100 sockets at a time.
fn each_gets_its_own_answer(sockets: &[UdpSocket], tag: &str) {
    for (chunk_idx, chunk) in sockets.chunks(100).enumerate() {
        let started = Instant::now();
        let mut pending: Vec<usize> = (0..chunk.len()).collect();
        let payload = |i: usize| format!("{tag} {}", chunk_idx * 100 + i).into_bytes();
        let mut buf = [0u8; 128];
        while !pending.is_empty() {
            assert!(started.elapsed() < DEADLINE, "{} sources never got an answer", pending.len());
            for &i in &pending {
                chunk[i].send(&payload(i)).expect("send");
            }
            pending.retain(|&i| match chunk[i].recv(&mut buf) {
                Ok(len) => {
                    assert_eq!(buf[..len], payload(i)[..], "source {i} got another flow's answer");
                    false
                }
                Err(_) => true,
            });
        }
    }
}

fn push_udp(server: &Server, port: u16, target: &str) -> u64 {
    let stdout = server.cli_ok(&["push-rule", "edge-01", &port.to_string(), target, "--protocol", "udp"]);
    stdout.trim().parse().unwrap_or_else(|_| panic!("push-rule printed {stdout:?}, not a rule id"))
}

/// Binds a UDP port on 127.0.0.1 that the kernel picks, with SO_REUSEADDR set, as a careless
/// other program would; returns the socket and the port.
fn hold_udp_port_with_reuseaddr() -> (OwnedFd, u16) {
    let fd = socket(AddressFamily::Inet, SockType::Datagram, SockFlag::SOCK_CLOEXEC, None).expect("socket");
    setsockopt(&fd, sockopt::ReuseAddr, &true).expect("SO_REUSEADDR");
    bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &SockaddrIn::new(127, 0, 0, 1, 0)).expect("the holder binds");
    let bound: SockaddrIn = getsockname(std::os::fd::AsRawFd::as_raw_fd(&fd)).expect("getsockname");
    (fd, bound.port())
}

/// Whether a UDP listener could bind `port` on the wildcard address right now.
fn udp_port_is_free(port: u16) -> bool {
    match UdpSocket::bind(("::", port)) {
        Ok(_) => true,
        Err(err) if err.kind() == std::io::ErrorKind::AddrInUse => false,
        Err(_) => UdpSocket::bind(("0.0.0.0", port)).is_ok(),
    }
}

/// A port free for TCP and for UDP a moment ago. Every UDP socket the tests bind to port 0
/// takes an ephemeral port, from the range `free_port` also draws from, hence the UDP check.
fn free_udp_port() -> u16 {
    loop {
        let port = free_port();
        if udp_port_is_free(port) {
            return port;
        }
    }
}

#[test]
fn a_udp_rule_pushed_through_the_server_forwards_and_each_source_gets_its_own_replies() {
    let scn = Scenario::new("udp_forwarding");
    let (server, _client) = server_with_edge(&scn, &ClientOpts::default());
    let echo = UdpEcho::start();
    let port = free_udp_port();
    let rule_id = push_udp(&server, port, &echo.target());
    assert_eq!(server.rule_state(rule_id).as_deref(), Some("active"));
    assert_eq!(server.rule(rule_id).expect("listed")["spec"]["protocol"].as_str(), Some("udp"));

    let sockets: Vec<UdpSocket> = (0..50).map(|_| udp_client(port)).collect();
    each_gets_its_own_answer(&sockets, "hello from");

    let stats = wait_until("50 flows counted", || {
        let stats = server.rule_stats(rule_id);
        (stats["totals"]["connections_total"].as_u64() == Some(50)).then_some(stats)
    });
    let totals = &stats["totals"];
    assert_eq!(totals["connections_active"].as_u64(), Some(50), "{stats}");
    assert!(totals["datagrams_in"].as_u64() >= Some(50), "{stats}");
    assert!(totals["datagrams_out"].as_u64() >= Some(50), "{stats}");
    assert!(totals["bytes_in"].as_u64() > Some(0), "{stats}");
}

#[test]
fn tcp_and_udp_rules_share_a_port_number() {
    let scn = Scenario::new("udp_tcp_same_port");
    let (server, _client) = server_with_edge(&scn, &ClientOpts::default());
    let tcp_echo = Backend::echo();
    let udp_echo = UdpEcho::start();
    let port = free_udp_port();
    let tcp_rule = server.push_rule("edge-01", port, &tcp_echo.target());
    let udp_rule = push_udp(&server, port, &udp_echo.target());

    roundtrip(&mut connect(port), b"over tcp");
    assert_eq!(udp_roundtrip(&udp_client(port), b"over udp"), b"over udp");
    assert_eq!(server.rule_state(tcp_rule).as_deref(), Some("active"));
    assert_eq!(server.rule_state(udp_rule).as_deref(), Some("active"));
}

#[test]
fn a_udp_port_held_by_another_process_fails_the_push_with_exit_5() {
    let scn = Scenario::new("udp_port_in_use");
    let (server, _client) = server_with_edge(&scn, &ClientOpts::default());
    let echo = UdpEcho::start();
    let (holder, port) = hold_udp_port_with_reuseaddr();

    let pushed =
        server.cli(&["push-rule", "edge-01", &port.to_string(), &echo.target(), "--protocol", "udp"]);

    assert_eq!(pushed.code, 5, "push onto a held UDP port: {pushed:?}");
    assert!(pushed.stderr.contains(&format!("port_in_use: port {port} already in use")), "{pushed:?}");
    let failed: u64 = pushed.stdout.trim().parse().expect("the failed rule's id is printed");
    let rule = server.rule(failed).expect("the failed rule is stored");
    assert_eq!(rule["failure"]["code"].as_str(), Some("port_in_use"));
    drop(holder);
}

#[test]
fn the_flow_cap_from_server_toml_reaches_the_client_and_overflow_is_exported() {
    let scn = Scenario::new("udp_flow_cap_metrics");
    let dir = scn.path("srv");
    std::fs::create_dir_all(&dir).expect("create data dir");
    std::fs::write(dir.join("server.toml"), "udp_max_flows_per_rule = 2\nudp_flow_idle_secs = 30\n")
        .expect("write server.toml");
    let server = Server::start_in(&scn, &dir, ServerOpts::default());
    let bundle = scn.path("edge-01.bundle.json");
    Client::enroll_ok(&scn, &server.enroll("edge-01"), &bundle);
    let _client = Client::start_connected(&scn, &bundle, &ClientOpts::default());
    let echo = UdpEcho::start();
    let port = free_udp_port();
    let rule_id = push_udp(&server, port, &echo.target());

    let admitted = [udp_client(port), udp_client(port)];
    each_gets_its_own_answer(&admitted, "admitted");
    let refused = udp_client(port);
    refused.send(b"over the cap").expect("send");

    let labels = format!("{{client=\"edge-01\",owner=\"_operator\",rule=\"{rule_id}\"}}");
    let overflow = format!("portunus_rule_flows_dropped_overflow_total{labels}");
    let body = wait_until("the overflow in /metrics", || {
        let (status, body) = http_get(server.addrs().metrics, "/metrics");
        assert_eq!(status, 200);
        sample(&body, &overflow).is_some_and(|v| v >= 1.0).then_some(body)
    });
    assert!(sample(&body, &format!("portunus_rule_datagrams_in_total{labels}")).is_some_and(|v| v >= 2.0));
    assert!(sample(&body, &format!("portunus_rule_datagrams_out_total{labels}")).is_some_and(|v| v >= 2.0));
    assert_eq!(sample(&body, &format!("portunus_rule_connections_active{labels}")), Some(2.0), "{body}");
    // One series per rule, whatever the number of flows.
    let n_series =
        body.lines().filter(|l| l.starts_with("portunus_rule_flows_dropped_overflow_total{")).count();
    assert_eq!(n_series, 1, "{body}");
    // The admitted flows were not disturbed by the refusal.
    each_gets_its_own_answer(&admitted, "still admitted");
}

/// The value of the sample whose name and labels are exactly `series`.
fn sample(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

#[test]
fn removing_a_udp_rule_frees_its_port() {
    let scn = Scenario::new("udp_remove_frees_port");
    let (server, client) = server_with_edge(&scn, &ClientOpts::default());
    let echo = UdpEcho::start();
    let port = free_udp_port();
    let rule_id = push_udp(&server, port, &echo.target());
    assert_eq!(udp_roundtrip(&udp_client(port), b"before"), b"before");
    assert!(!udp_port_is_free(port), "the rule holds the UDP port");

    server.cli_ok(&["remove-rule", &rule_id.to_string()]);
    client.proc().wait_event("rule.unbound", &[("rule", &rule_id.to_string())]);

    wait_until("the UDP port to be free", || udp_port_is_free(port).then_some(()));
}

/// VmRSS of `pid` in KiB, from `/proc/<pid>/status`.
fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/<pid>/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("a VmRSS line")
}

/// The test process needs 1,000 sockets of its own (beside the harness's).
fn raise_own_nofile_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < 4096
    {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard.min(65_536), hard);
    }
}

#[test]
fn a_thousand_live_flows_add_at_most_two_mib_to_the_clients_memory() {
    raise_own_nofile_limit();
    let scn = Scenario::new("udp_flow_memory");
    let (server, client) = server_with_edge(&scn, &ClientOpts::default());
    let echo = UdpEcho::start();
    let port = free_udp_port();
    let rule_id = push_udp(&server, port, &echo.target());
    // Warm up: a few flows, so per-thread batch buffers and the runtime's first allocations
    // are in the baseline; what is measured is what flows add.
    let warm: Vec<UdpSocket> = (0..20).map(|_| udp_client(port)).collect();
    each_gets_its_own_answer(&warm, "warm");
    let pid = client.proc().pid().as_raw();
    let before = rss_kib(pid);

    let sockets: Vec<UdpSocket> = (0..1000).map(|_| udp_client(port)).collect();
    each_gets_its_own_answer(&sockets, "flow");
    let stats = wait_until("1,020 live flows counted", || {
        let stats = server.rule_stats(rule_id);
        (stats["totals"]["connections_active"].as_u64() == Some(1020)).then_some(stats)
    });
    let after = rss_kib(pid);

    let added = after.saturating_sub(before);
    eprintln!("client VmRSS: {before} KiB before, {after} KiB with 1,000 more flows (+{added} KiB)");
    assert!(added <= 2048, "1,000 flows added {added} KiB of RSS (bound: 2048 KiB); {stats}");
    drop(sockets);
}

#[test]
fn standalone_forwards_a_tcp_and_a_udp_rule_on_the_same_port() {
    let scn = Scenario::new("udp_standalone");
    let tcp_echo = Backend::echo();
    let udp_echo = UdpEcho::start();
    let port = free_udp_port();
    let config = scn.path("portunus.toml");
    let rule = |name: &str, protocol: &str, target: &str| {
        format!(
            "[[rule]]\nname = \"{name}\"\nprotocol = \"{protocol}\"\nlisten_port = {port}\ntarget = \"{target}\"\n"
        )
    };
    let text = rule("bench-tcp", "tcp", &tcp_echo.target()) + &rule("bench-udp", "udp", &udp_echo.target());
    std::fs::write(&config, text).expect("write the standalone config");
    let mut command = std::process::Command::new(bin("portunus-standalone"));
    command.arg("--config").arg(&config).env_remove("PORTUNUS_CONFIG");
    let (log, stdout) = scn.next_files("standalone");
    let standalone = Proc::spawn("portunus-standalone", command, &log, Some(&stdout));
    standalone.wait_event("standalone.started", &[]);

    roundtrip(&mut connect(port), b"over tcp");
    let sockets: Vec<UdpSocket> = (0..10).map(|_| udp_client(port)).collect();
    each_gets_its_own_answer(&sockets, "over udp");
    assert_eq!(standalone.terminate(), 0, "standalone exit status on SIGTERM");
}
