//! Unbind, shutdown, the fast-path fallbacks and their events, and the descriptor limit.

use std::time::Duration;

use portunus_dataplane::RuleRuntime;
use portunus_dataplane::SpliceFault;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unbind_closes_only_that_rules_connections() {
    let plane = plane(Path::Splice);
    let echo = echo_backend().await;
    let (gone, kept) = (rule_id(), rule_id());
    let gone_port = bind_simple(&plane, gone, echo).await;
    let kept_port = bind_simple(&plane, kept, echo).await;
    let mut gone_client = connect(gone_port).await;
    let mut kept_client = connect(kept_port).await;
    for client in [&mut gone_client, &mut kept_client] {
        within(client.write_all(b"hi")).await.expect("write");
        let mut back = [0u8; 2];
        within(client.read_exact(&mut back)).await.expect("echo");
    }

    plane.unbind(gone);

    // The port is free as soon as unbind returns.
    drop(std::net::TcpListener::bind((LOCALHOST, gone_port)).expect("port free after unbind"));
    let mut buf = [0u8; 8];
    let closed = within(gone_client.read(&mut buf)).await;
    assert!(matches!(closed, Ok(0) | Err(_)), "the unbound rule's connection is closed: {closed:?}");
    within(kept_client.write_all(b"still here")).await.expect("write");
    let mut back = [0u8; 10];
    within(kept_client.read_exact(&mut back)).await.expect("the other rule keeps working");
    assert_eq!(&back, b"still here");
    assert_eq!(plane.report().iter().map(|(id, _)| *id).collect::<Vec<_>>(), vec![kept]);
    plane.unbind(gone); // unknown rule: no-op
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_cuts_connections_left_after_the_drain() {
    let plane = plane(Path::Userspace);
    let id = rule_id();
    let port = bind_simple(&plane, id, echo_backend().await).await;
    let mut client = connect(port).await;
    within(client.write_all(b"x")).await.expect("write");
    let mut back = [0u8; 1];
    within(client.read_exact(&mut back)).await.expect("echo");

    let cut = within(plane.shutdown(Duration::from_millis(100))).await;

    assert_eq!(cut, 1);
    let mut buf = [0u8; 4];
    assert!(matches!(within(client.read(&mut buf)).await, Ok(0) | Err(_)));
    assert!(plane.report().is_empty());
    drop(std::net::TcpListener::bind((LOCALHOST, port)).expect("port free after shutdown"));
    let def = tcp_rule(portunus_core::rule::PortRange::single(port).unwrap(), vec![target(LOCALHOST, 9, 0)]);
    assert!(plane.bind(rule_id(), def).await.is_err(), "no binds after shutdown");
    assert_eq!(within(plane.shutdown(Duration::ZERO)).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_splice_falls_back_to_userspace_with_one_event() {
    capture::install();
    let plane = plane_with_fault(SpliceFault::Unsupported);
    let id = rule_id();
    let port = bind_simple(&plane, id, echo_backend().await).await;

    for seed in 0..2 {
        let data = pseudo_random(2 << 20, seed);
        let back = within(exchange(connect(port).await, &data)).await;
        assert!(back == data, "fallback copy differs");
    }

    let events = capture::events("proxy.splice_unsupported_fallback", id);
    assert_eq!(events.len(), 1, "once per rule runtime: {events:?}");
    assert_eq!(events[0].fields["errno_name"], "ENOSYS");
    assert_eq!(events[0].level, tracing::Level::WARN);
    assert!(capture::events("proxy.splice_selected", id).is_empty());
    eventually("both connections end", || totals(&plane, id).connections_active == 0).await;
    assert_eq!(totals(&plane, id).bytes_in, 4 << 20);
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusal_after_bytes_entered_the_pipe_delivers_them_and_falls_back() {
    capture::install();
    let plane = plane_with_fault(SpliceFault::UnsupportedOnDrain);
    let id = rule_id();
    let port = bind_simple(&plane, id, echo_backend().await).await;
    let data = pseudo_random(4 << 20, 5);

    let back = within(exchange(connect(port).await, &data)).await;

    assert!(back == data, "bytes rescued from the pipe must arrive intact and in order");
    let events = capture::events("proxy.splice_unsupported_fallback", id);
    assert_eq!(events.len(), 1, "once per rule runtime: {events:?}");
    assert_eq!(events[0].fields["errno_name"], "ENOSYS");
    eventually("the connection ends", || totals(&plane, id).connections_active == 0).await;
    let t = totals(&plane, id);
    assert_eq!((t.bytes_in, t.bytes_out), (4 << 20, 4 << 20));
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_pipe_size_is_reported_once_and_the_fast_path_still_runs() {
    capture::install();
    let plane = plane_with_fault(SpliceFault::PipeSizeRefused);
    let id = rule_id();
    let port = bind_simple(&plane, id, echo_backend().await).await;

    for seed in 0..2 {
        let data = pseudo_random(1 << 20, seed);
        let back = within(exchange(connect(port).await, &data)).await;
        assert!(back == data, "copy at the default pipe size differs");
    }

    let events = capture::events("proxy.splice_pipe_size_failed", id);
    assert_eq!(events.len(), 1, "once per rule runtime: {events:?}");
    let fields = &events[0].fields;
    assert_eq!(fields["requested_bytes"], "1048576");
    assert_eq!(fields["errno_name"], "EPERM");
    assert!(fields["actual_default_bytes"].parse::<u64>().expect("a number") > 0);
    assert_eq!(capture::events("proxy.splice_selected", id).len(), 1);
}

#[test]
fn raise_nofile_limit_never_lowers_the_limit() {
    let (before, after) = portunus_dataplane::raise_nofile_limit().expect("getrlimit works");
    assert!(after >= before);
    let (again_before, again_after) = portunus_dataplane::raise_nofile_limit().expect("again");
    assert_eq!(again_before, again_after, "a second call has nothing left to raise");
}
