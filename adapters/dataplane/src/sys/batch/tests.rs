//! Unit tests of the batched datagram calls over loopback sockets.

use std::net::Ipv6Addr;
use std::time::Duration;

use super::*;

/// A non-blocking receiver and a sender connected to it, both on 127.0.0.1.
fn pair() -> (UdpSocket, UdpSocket) {
    let a = UdpSocket::bind("127.0.0.1:0").unwrap();
    let b = UdpSocket::bind("127.0.0.1:0").unwrap();
    a.connect(b.local_addr().unwrap()).unwrap();
    b.set_nonblocking(true).unwrap();
    (a, b)
}

/// A blocking socket with a read timeout (a hang guard only).
fn blocking(addr: &str) -> UdpSocket {
    let socket = UdpSocket::bind(addr).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    socket
}

/// Receives the datagrams already queued on `sock` (loopback delivers a send before it
/// returns, so everything sent so far is queued) and checks there are `want` of them.
fn recv_queued(batch: &mut Batch, sock: &UdpSocket, want: usize) -> usize {
    let n = batch.recv(sock).expect("datagrams are queued");
    assert_eq!(n, want, "one call takes every queued datagram (up to a batch)");
    n
}

#[test]
fn one_call_receives_a_batch_with_sources_and_sizes_including_empty_and_maximal() {
    let (a, b) = pair();
    let sizes = [0usize, 1, 1400, 65_507];
    for (i, size) in sizes.iter().enumerate() {
        a.send(&vec![i as u8; *size]).unwrap();
    }
    let mut batch = Batch::new();
    let n = recv_queued(&mut batch, &b, sizes.len());
    for (i, size) in sizes.iter().enumerate() {
        assert_eq!(batch.payload(i).len(), *size);
        assert!(batch.payload(i).iter().all(|&byte| byte == i as u8));
        assert_eq!(batch.source(i), Some(a.local_addr().unwrap()));
        assert!(!batch.truncated(i));
    }
    assert_eq!(batch.bytes(0..n), sizes.iter().map(|s| *s as u64).sum::<u64>());
}

#[test]
fn an_empty_queue_is_would_block() {
    let (_a, b) = pair();
    let mut batch = Batch::new();
    let err = batch.recv(&b).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
    assert_eq!(batch.len(), 0);
}

#[test]
fn a_run_is_sent_in_order_to_a_destination_or_the_connected_peer() {
    let (a, b) = pair();
    let c = blocking("127.0.0.1:0");
    a.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    for i in 0..5u8 {
        a.send(&[i; 10]).unwrap();
    }
    let mut batch = Batch::new();
    recv_queued(&mut batch, &b, 5);
    // Datagrams 1..4 to `c` by address, then all five to `a` as b's connected peer.
    assert_eq!(batch.send(&b, 1..4, Some(c.local_addr().unwrap())).unwrap(), 3);
    let mut buf = [0u8; 16];
    for i in 1..4u8 {
        let (len, from) = c.recv_from(&mut buf).unwrap();
        assert_eq!((&buf[..len], from), (&[i; 10][..], b.local_addr().unwrap()));
    }
    b.connect(a.local_addr().unwrap()).unwrap();
    assert_eq!(batch.send(&b, 0..5, None).unwrap(), 5);
    for i in 0..5u8 {
        let len = a.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], &[i; 10]);
    }
    assert_eq!(batch.send(&b, 5..9, None).unwrap(), 0, "nothing past the batch");
}

#[test]
fn equal_sized_runs_arrive_as_separate_datagrams_whatever_the_grouping() {
    let (a, b) = pair();
    let c = blocking("127.0.0.1:0");
    // Equal sizes with a shorter last one, a zero-length one, then sizes that grow.
    let sizes = [1400usize, 1400, 1400, 700, 0, 1400, 1400, 9000, 20, 20];
    for (i, size) in sizes.iter().enumerate() {
        a.send(&vec![i as u8; *size]).unwrap();
    }
    let mut batch = Batch::new();
    recv_queued(&mut batch, &b, sizes.len());
    let mut sent = 0;
    while sent < sizes.len() {
        sent += batch.send(&b, sent..sizes.len(), Some(c.local_addr().unwrap())).unwrap();
    }
    let mut buf = vec![0u8; 65_536];
    for (i, size) in sizes.iter().enumerate() {
        let len = c.recv(&mut buf).unwrap();
        assert_eq!(len, *size, "datagram {i}");
        assert!(buf[..len].iter().all(|&byte| byte == i as u8), "datagram {i} intact");
    }
    #[cfg(target_os = "linux")]
    assert!(
        !linux::GSO_REFUSED.load(std::sync::atomic::Ordering::Relaxed),
        "loopback takes GSO messages, so the groups above went out as such"
    );
}

#[test]
fn ipv6_sources_keep_address_port_and_scope() {
    let Ok(b) = UdpSocket::bind((Ipv6Addr::LOCALHOST, 0)) else { return };
    b.set_nonblocking(true).unwrap();
    let a = UdpSocket::bind((Ipv6Addr::LOCALHOST, 0)).unwrap();
    a.send_to(b"v6", b.local_addr().unwrap()).unwrap();
    let mut batch = Batch::new();
    recv_queued(&mut batch, &b, 1);
    assert_eq!(batch.source(0), Some(a.local_addr().unwrap()));
    assert_eq!(batch.payload(0), b"v6");
}

#[test]
fn with_batch_lends_one_batch_per_thread_and_survives_nesting() {
    let outer = with_batch(|b| std::ptr::from_ref(b) as usize);
    assert_eq!(with_batch(|b| std::ptr::from_ref(b) as usize), outer, "the same batch again");
    let nested = with_batch(|_| with_batch(|b| std::ptr::from_ref(b) as usize));
    assert_ne!(nested, outer, "a nested borrow gets its own batch instead of a panic");
}

#[tokio::test]
async fn watched_sockets_wake_for_datagrams_and_for_errors() {
    let watched = {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_nonblocking(true).unwrap();
        watch_reads(socket).unwrap()
    };
    let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
    sender.send_to(b"hi", watched.get_ref().local_addr().unwrap()).unwrap();
    let guard = tokio::time::timeout(Duration::from_secs(10), watched.readable()).await.unwrap().unwrap();
    drop(guard);

    // A connected socket whose peer port is closed gets ECONNREFUSED reflected as an error,
    // which wakes a reader even though only reads were asked for.
    let closed = UdpSocket::bind("127.0.0.1:0").unwrap();
    let closed_addr = closed.local_addr().unwrap();
    drop(closed);
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.connect(closed_addr).unwrap();
    socket.set_nonblocking(true).unwrap();
    let refused = watch_reads(socket).unwrap();
    refused.get_ref().send(b"anyone?").unwrap();
    let guard =
        tokio::time::timeout(Duration::from_secs(10), refused.ready(Interest::READABLE | Interest::ERROR))
            .await
            .unwrap()
            .unwrap();
    assert!(guard.ready().is_error(), "{:?}", guard.ready());
    let err = refused.get_ref().take_error().unwrap().expect("a pending error");
    assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
}
