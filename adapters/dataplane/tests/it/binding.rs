//! Binding: errors with stable codes, all-or-nothing ranges, addresses, SO_REUSEADDR.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use portunus_core::ErrorCode;
use portunus_core::rule::PortRange;
use portunus_dataplane::RuleRuntime;
use socket2::{Domain, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

/// Binds `port` on 127.0.0.1 without SO_REUSEADDR (the strictest check of "port is free").
fn bind_strict(port: u16) -> std::io::Result<Socket> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    socket.bind(&SocketAddr::new(LOCALHOST, port).into())?;
    socket.listen(16)?;
    Ok(socket)
}

#[tokio::test]
async fn port_in_use_names_the_port_held_by_another_listener() {
    let plane = plane(Path::Userspace);
    let port = free_ports(1);
    let _holder = std::net::TcpListener::bind((LOCALHOST, port)).expect("holder");
    let def = tcp_rule(PortRange::single(port).unwrap(), vec![target(LOCALHOST, dead_port(), 0)]);

    let failure = plane.bind(rule_id(), def).await.expect_err("must fail");

    assert_eq!(failure.code, ErrorCode::PortInUse);
    assert_eq!(failure.message, format!("port {port} already in use"));
    assert!(plane.report().is_empty());
}

#[tokio::test]
async fn a_second_live_listener_on_the_same_port_is_port_in_use() {
    let plane = plane(Path::Userspace);
    let backend = echo_backend().await;
    let first = rule_id();
    let port = bind_simple(&plane, first, backend).await;
    let def = tcp_rule(PortRange::single(port).unwrap(), vec![target(LOCALHOST, backend.port(), 0)]);

    let failure =
        plane.bind(rule_id(), def).await.expect_err("SO_REUSEADDR must not let two listeners share");

    assert_eq!(failure.code, ErrorCode::PortInUse);
    let back = within(exchange(connect(port).await, b"still served")).await;
    assert_eq!(back, b"still served");
}

#[tokio::test]
async fn range_bind_is_all_or_nothing() {
    let plane = plane(Path::Userspace);
    let start = free_ports(5);
    let _holder = std::net::TcpListener::bind((LOCALHOST, start + 2)).expect("holder of the third port");
    let def = tcp_rule(PortRange::new(start, start + 4).unwrap(), vec![target(LOCALHOST, dead_port(), 0)]);

    let failure = plane.bind(rule_id(), def).await.expect_err("must fail");

    assert_eq!(failure.code, ErrorCode::PortInUse);
    assert!(
        failure.message.contains(&(start + 2).to_string()),
        "message names the port: {}",
        failure.message
    );
    bind_strict(start).expect("first port released");
    bind_strict(start + 1).expect("second port released");
    assert!(plane.report().is_empty());
}

#[tokio::test]
async fn default_bind_is_dual_stack() {
    let plane = plane(Path::Userspace);
    let port = free_ports(1);
    let backend = echo_backend().await;
    let mut def = tcp_rule(PortRange::single(port).unwrap(), vec![target(LOCALHOST, backend.port(), 0)]);
    def.listen_addr = None;
    plane.bind(rule_id(), def).await.expect("bind");

    let v4 = within(exchange(connect(port).await, b"over v4")).await;
    assert_eq!(v4, b"over v4");
    // Only meaningful where the host has IPv6 loopback at all.
    if std::net::TcpListener::bind((Ipv6Addr::LOCALHOST, 0)).is_ok() {
        let stream = within(tokio::net::TcpStream::connect((IpAddr::V6(Ipv6Addr::LOCALHOST), port)))
            .await
            .expect("connect over v6");
        let v6 = within(exchange(stream, b"over v6")).await;
        assert_eq!(v6, b"over v6");
    }
}

#[tokio::test]
async fn rebinding_right_after_unbind_is_not_blocked_by_time_wait() {
    let plane = plane(Path::Userspace);
    // The backend closes first, so the proxy forwards that end of stream first and the
    // proxy's accepted socket is the one that ends in TIME_WAIT on the listen port.
    let backend = backend(|mut stream| async move {
        let _ = stream.write_all(b"bye").await;
        let _ = stream.shutdown().await;
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest).await;
    })
    .await;
    let id = rule_id();
    let port = bind_simple(&plane, id, backend).await;
    let mut client = connect(port).await;
    let mut got = Vec::new();
    within(client.read_to_end(&mut got)).await.expect("read until the forwarded EOF");
    assert_eq!(got, b"bye");
    drop(client);
    eventually("the connection ends", || totals(&plane, id).connections_active == 0).await;
    if cfg!(target_os = "linux") {
        eventually("the accepted socket lingers in TIME_WAIT", || has_time_wait(port)).await;
    }
    plane.unbind(id);
    // Without SO_REUSEADDR the TIME_WAIT socket would hold the port.
    assert!(bind_strict(port).is_err(), "the test needs a TIME_WAIT leftover on the port");

    let def = tcp_rule(PortRange::single(port).unwrap(), vec![target(LOCALHOST, backend.port(), 0)]);
    plane.bind(rule_id(), def).await.expect("rebind despite TIME_WAIT");
}

#[tokio::test]
async fn binding_a_bound_rule_id_replaces_it() {
    let plane = plane(Path::Userspace);
    let id = rule_id();
    let port = bind_simple(&plane, id, echo_backend().await).await;
    let first_instance = plane.report()[0].1.instance;
    let tagger = backend(|mut stream| async move {
        let _ = stream.write_all(b"second target").await;
    })
    .await;
    let def = tcp_rule(PortRange::single(port).unwrap(), vec![target(LOCALHOST, tagger.port(), 0)]);

    plane.bind(id, def).await.expect("rebind of the same id and port");

    let reports = plane.report();
    assert_eq!(reports.len(), 1);
    assert_ne!(reports[0].1.instance, first_instance, "a new runtime instance");
    let mut stream = connect(port).await;
    let mut got = Vec::new();
    within(stream.read_to_end(&mut got)).await.expect("read");
    assert_eq!(got, b"second target");
}

#[tokio::test]
async fn range_rule_maps_ports_by_offset_and_counts_per_port() {
    let plane = plane(Path::Userspace);
    let backend_start = free_ports(3);
    for offset in 0..3u16 {
        let listener =
            tokio::net::TcpListener::bind((LOCALHOST, backend_start + offset)).await.expect("backend");
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let _ = stream.write_all(format!("backend {offset}").as_bytes()).await;
            }
        });
    }
    let start = free_ports(3);
    let mut def =
        tcp_rule(PortRange::new(start, start + 2).unwrap(), vec![target(LOCALHOST, backend_start, 0)]);
    def.targets[0].ports = PortRange::new(backend_start, backend_start + 2).unwrap();
    let id = rule_id();
    plane.bind(id, def).await.expect("bind");

    let mut stream = connect(start + 1).await;
    let mut got = Vec::new();
    within(stream.read_to_end(&mut got)).await.expect("read");

    assert_eq!(got, b"backend 1");
    drop(stream);
    eventually("the connection ends", || totals(&plane, id).connections_active == 0).await;
    let report = plane.report().into_iter().find(|(rid, _)| *rid == id).unwrap().1;
    assert_eq!(report.per_port.keys().copied().collect::<Vec<_>>(), vec![start, start + 1, start + 2]);
    assert_eq!(report.per_port[&(start + 1)].connections_total, 1);
    assert_eq!(report.per_port[&start].connections_total, 0);
    assert_eq!(report.per_port[&(start + 1)].bytes_out, 9);
    assert_eq!(report.totals.bytes_out, 9);
}
