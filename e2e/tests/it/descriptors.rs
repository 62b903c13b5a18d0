//! A client that runs out of file descriptors: the shortage is its own, so the real
//! `portunus-client` counts it (`fd_exhausted`) and logs `rule.fd_exhausted`, but never marks
//! a target failed nor fails over, and it serves again once descriptors are free.

use std::collections::HashSet;
use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::harness::*;

/// Counts the connections accepted on `listener` (and closes each at once).
fn counting_server(listener: TcpListener) -> Arc<AtomicUsize> {
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            drop(stream);
            count.fetch_add(1, Ordering::SeqCst);
        }
    });
    accepted
}

/// The `RLIMIT_NOFILE` that leaves process `pid` exactly `n_free` descriptor numbers to open
/// (the limit bounds the numbers, not the count, and the kernel hands out the lowest free one).
fn limit_leaving_free(pid: i32, n_free: usize) -> usize {
    let open: HashSet<usize> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("read the client's fd table")
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
        .collect();
    let (mut limit, mut free) = (0, 0);
    while free < n_free {
        if !open.contains(&limit) {
            free += 1;
        }
        limit += 1;
    }
    limit
}

/// Sets both the soft and the hard `RLIMIT_NOFILE` of process `pid` (util-linux `prlimit`).
fn set_nofile(pid: i32, limit: usize) {
    let out = Command::new("prlimit")
        .arg(format!("--pid={pid}"))
        .arg(format!("--nofile={limit}:{limit}"))
        .output()
        .expect("run prlimit");
    assert!(out.status.success(), "prlimit failed: {}", String::from_utf8_lossy(&out.stderr));
}

fn per_target_stats(server: &Server, id: &str) -> serde_json::Value {
    let stdout = server.cli_ok(&["rule-stats", id, "--per-target", "--format", "json"]);
    serde_json::from_str(&stdout).expect("rule-stats json")
}

#[test]
fn running_out_of_descriptors_fails_no_target_and_the_client_serves_again_afterwards() {
    let scn = Scenario::new("fd_exhausted");
    // The userspace path: two descriptors per connection, none for pipes.
    let opts = ClientOpts::default().env("PORTUNUS_DISABLE_SPLICE", "1");
    let (server, client) = server_with_edge(&scn, &opts);
    let primary = Backend::echo();
    let backup = TcpListener::bind("127.0.0.1:0").expect("backup binds");
    let backup_port = backup.local_addr().expect("backup addr").port();
    let backup_accepted = counting_server(backup);
    let listen = free_port();
    let out = server.cli(&[
        "push-rule",
        "edge-01",
        &listen.to_string(),
        "--target",
        &format!("{}@1", primary.target()),
        "--target",
        &format!("127.0.0.1:{backup_port}@2"),
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    let id = out.stdout.trim().to_owned();
    wait_until("the rule to forward", || {
        let mut probe = TcpStream::connect(("127.0.0.1", listen)).ok()?;
        roundtrip(&mut probe, b"ready?");
        Some(())
    });
    wait_until("the probe connection to end", || {
        let stats = per_target_stats(&server, &id);
        (stats["totals"]["connections_active"].as_u64() == Some(0)).then_some(())
    });

    // Room for three connections (two descriptors each) and the accept of a fourth, whose
    // connect to the target then finds no descriptor.
    let pid = client.proc().pid().as_raw();
    set_nofile(pid, limit_leaving_free(pid, 7));
    let mut served: Vec<TcpStream> = (0..3)
        .map(|_| {
            let mut stream = connect(listen);
            roundtrip(&mut stream, b"served");
            stream
        })
        .collect();
    // Each further connection is accepted, finds no descriptor for its target and is closed
    // without a byte (one stuck in the backlog instead would time the read out).
    for _ in 0..4 {
        let mut stream = connect(listen);
        let mut rest = Vec::new();
        let read = stream.read_to_end(&mut rest);
        assert!(matches!(read, Ok(0)), "closed by the proxy, got {read:?} after {} bytes", rest.len());
    }

    let event = client.proc().wait_event("rule.fd_exhausted", &[("rule", &id)]);
    assert_eq!(event["errno_name"], "EMFILE", "{event}");
    let stats = wait_until("the shortage counted", || {
        let stats = per_target_stats(&server, &id);
        stats["totals"]["fd_exhausted"].as_u64().is_some_and(|n| n >= 4).then_some(stats)
    });
    assert_eq!(stats["totals"]["connect_failures"].as_u64(), Some(0), "{stats}");
    assert_eq!(stats["totals"]["target_failovers"].as_u64(), Some(0), "{stats}");
    for target in [0, 1] {
        assert_eq!(stats["per_target"][target]["health"], "healthy", "{stats}");
        assert_eq!(stats["per_target"][target]["counters"]["connect_failures"].as_u64(), Some(0), "{stats}");
    }
    assert_eq!(backup_accepted.load(Ordering::SeqCst), 0, "nothing failed over to the backup");
    assert!(client.proc().events_matching("rule.target_health_changed", &[("rule", &id)]).is_empty());

    // Descriptors come back as connections close; the limit stays where it is.
    for stream in &mut served {
        roundtrip(stream, b"still served");
    }
    drop(served);
    wait_until("the connections to end", || {
        let stats = per_target_stats(&server, &id);
        (stats["totals"]["connections_active"].as_u64() == Some(0)).then_some(())
    });
    let mut again = connect(listen);
    roundtrip(&mut again, b"served again");
    let stats = per_target_stats(&server, &id);
    assert_eq!(stats["per_target"][0]["health"], "healthy", "{stats}");
    assert_eq!(backup_accepted.load(Ordering::SeqCst), 0);
}
