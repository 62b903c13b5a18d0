//! Behaviour that both copy paths (splice and userspace) must share.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use portunus_dataplane::RuleRuntime;
use portunus_dataplane::{CopyPath, RelayEnd, TrafficCounters, relay};
use socket2::SockRef;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, oneshot};

use crate::support::*;

on_both_paths!(
    sixteen_mib_cross_both_ways_intact,
    half_close_keeps_the_response_flowing,
    counters_advance_while_the_connection_is_open,
    reset_mid_flow_delivers_an_intact_prefix_and_counts_it,
    a_connection_cut_mid_drain_leaks_no_bytes_into_the_next,
    connections_in_sequence_each_get_exactly_their_own_bytes,
    idle_connection_is_closed,
    relay_function_moves_bytes_and_counts_them,
    a_ping_pong_of_small_messages_never_stalls,
);

async fn sixteen_mib_cross_both_ways_intact(path: Path) {
    capture::install();
    let plane = plane(path);
    let id = rule_id();
    let port = bind_simple(&plane, id, echo_backend().await).await;
    let data = pseudo_random(16 << 20, id.get());

    let back = within(exchange(connect(port).await, &data)).await;

    assert!(back == data, "echo differs: sent {} bytes, got {} back", data.len(), back.len());
    eventually("the connection ends", || totals(&plane, id).connections_active == 0).await;
    let t = totals(&plane, id);
    assert_eq!((t.bytes_in, t.bytes_out, t.connections_total), (16 << 20, 16 << 20, 1));
    let selected = capture::events("proxy.splice_selected", id).len();
    assert_eq!(selected, usize::from(path == Path::Splice), "fast path use must match the option");
}

async fn half_close_keeps_the_response_flowing(path: Path) {
    let plane = plane(path);
    let id = rule_id();
    // Answers only after the client's end of stream: the reversed request.
    let addr = backend(|mut stream| async move {
        let mut request = Vec::new();
        stream.read_to_end(&mut request).await.expect("backend read");
        request.reverse();
        stream.write_all(&request).await.expect("backend write");
        stream.shutdown().await.expect("backend shutdown");
    })
    .await;
    let port = bind_simple(&plane, id, addr).await;
    let data = pseudo_random(1 << 20, 7);

    let response = within(exchange(connect(port).await, &data)).await;

    let mut expected = data.clone();
    expected.reverse();
    assert!(response == expected, "response after half-close differs ({} bytes)", response.len());
}

async fn counters_advance_while_the_connection_is_open(path: Path) {
    let plane = plane(path);
    let id = rule_id();
    let port = bind_simple(&plane, id, echo_backend().await).await;
    let mut client = connect(port).await;

    let mut sent = 0u64;
    for (round, len) in [(1u64, 1usize << 20), (2, 512 << 10)] {
        let chunk = pseudo_random(len, round);
        within(client.write_all(&chunk)).await.expect("write");
        let mut back = vec![0; len];
        within(client.read_exact(&mut back)).await.expect("read echo");
        assert!(back == chunk, "echo differs in round {round}");
        sent += len as u64;
        eventually("live totals reach what was echoed", || {
            let t = totals(&plane, id);
            t.bytes_in == sent && t.bytes_out == sent
        })
        .await;
        assert_eq!(totals(&plane, id).connections_active, 1, "the connection is still open");
    }
}

async fn reset_mid_flow_delivers_an_intact_prefix_and_counts_it(path: Path) {
    let plane = plane(path);
    let id = rule_id();
    let log = Arc::new(SinkLog::default());
    let port = bind_simple(&plane, id, sink_backend(Arc::clone(&log)).await).await;
    let block = pseudo_random(64 << 10, 3);
    let mut client = connect(port).await;

    while log.received.load(Ordering::SeqCst) < 2 << 20 {
        within(client.write_all(&block)).await.expect("write");
    }
    // More bytes in flight, then an abortive close (RST) while they move.
    for _ in 0..8 {
        within(client.write_all(&block)).await.expect("write");
    }
    SockRef::from(&client).set_linger(Some(Duration::ZERO)).expect("linger 0");
    drop(client);

    eventually("the proxy closes both legs", || {
        totals(&plane, id).connections_active == 0 && log.finished.lock().unwrap().len() == 1
    })
    .await;
    let received = log.finished.lock().unwrap()[0].clone();
    // The reset is passed on as a reset (see `resets`), which discards whatever still sat in
    // the proxy's send buffer: counted when written, never read by the backend.
    let counted = totals(&plane, id).bytes_in;
    assert!(counted >= received.len() as u64, "counted {counted} < received {}", received.len());
    assert!(received.len() >= 2 << 20);
    for (idx, chunk) in received.chunks(block.len()).enumerate() {
        assert!(chunk == &block[..chunk.len()], "chunk {idx} corrupted");
    }
}

async fn a_connection_cut_mid_drain_leaks_no_bytes_into_the_next(path: Path) {
    let plane = plane(path);
    let id = rule_id();
    // The first backend connection never reads (so bytes pile up in the proxy) and is
    // dropped on demand; later ones record what they got.
    let release = Arc::new(Notify::new());
    let n_accepted = Arc::new(AtomicUsize::new(0));
    let log = Arc::new(SinkLog::default());
    let addr = {
        let (release, n_accepted, log) = (Arc::clone(&release), Arc::clone(&n_accepted), Arc::clone(&log));
        backend(move |mut stream| {
            let (release, idx, log) =
                (Arc::clone(&release), n_accepted.fetch_add(1, Ordering::SeqCst), Arc::clone(&log));
            async move {
                if idx == 0 {
                    release.notified().await;
                    drop(stream);
                } else {
                    let mut all = Vec::new();
                    let _ = stream.read_to_end(&mut all).await;
                    log.finished.lock().unwrap().push(all);
                }
            }
        })
        .await
    };
    let port = bind_simple(&plane, id, addr).await;

    let first = connect(port).await;
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let writer = tokio::spawn(async move {
        let mut first = first;
        let junk = pseudo_random(32 << 20, 99);
        tokio::select! {
            _ = first.write_all(&junk) => {}
            _ = stop_rx => {}
        }
        let _ = SockRef::from(&first).set_linger(Some(Duration::ZERO));
    });
    eventually("bytes reach the stalled backend", || totals(&plane, id).bytes_in > 0).await;
    eventually("the first backend connection is up", || n_accepted.load(Ordering::SeqCst) == 1).await;
    let _ = stop_tx.send(());
    within(writer).await.expect("writer task");
    release.notify_one();
    eventually("the cut connection is gone", || totals(&plane, id).connections_active == 0).await;

    let payload = b"second connection, its own bytes only".to_vec();
    let back = within(exchange(connect(port).await, &payload)).await;
    assert!(back.is_empty());
    eventually("the second backend connection ends", || !log.finished.lock().unwrap().is_empty()).await;
    assert_eq!(log.finished.lock().unwrap()[0], payload);
}

async fn connections_in_sequence_each_get_exactly_their_own_bytes(path: Path) {
    let plane = plane(path);
    let id = rule_id();
    let port = bind_simple(&plane, id, echo_backend().await).await;
    for n in 0..40u64 {
        // Sizes straddle pipe and batch boundaries so a reused pipe holding any leftover
        // byte would show up as a corrupted echo.
        let data = pseudo_random(1 + (n as usize * 37_337) % (3 << 20), 1000 + n);
        let back = within(exchange(connect(port).await, &data)).await;
        assert!(back == data, "connection {n}: sent {} bytes, got {} back", data.len(), back.len());
    }
    if path == Path::Splice {
        eventually("pipes of finished connections go back to the pool", || {
            portunus_dataplane::pooled_pipes() > 0
        })
        .await;
    }
}

async fn idle_connection_is_closed(path: Path) {
    let plane = plane(path);
    plane.apply_settings(settings_with_idle(Duration::from_millis(300)));
    let id = rule_id();
    let port = bind_simple(&plane, id, echo_backend().await).await;
    let mut client = connect(port).await;
    within(client.write_all(b"ping")).await.expect("write");
    let mut pong = [0u8; 4];
    within(client.read_exact(&mut pong)).await.expect("echo");
    assert_eq!(&pong, b"ping");

    // Nothing moves from here on; the proxy must close the connection by itself.
    let mut rest = [0u8; 16];
    let closed = within(client.read(&mut rest)).await;
    assert!(matches!(closed, Ok(0) | Err(_)), "expected the proxy to close, got {closed:?}");
    eventually("the idle connection is no longer active", || totals(&plane, id).connections_active == 0)
        .await;
}

async fn relay_function_moves_bytes_and_counts_them(path: Path) {
    let copy_path = match path {
        Path::Splice => CopyPath::Splice,
        Path::Userspace => CopyPath::Userspace,
    };
    let front = TcpListener::bind((LOCALHOST, 0)).await.expect("bind");
    let client = TcpStream::connect(front.local_addr().unwrap()).await.expect("connect");
    let (peer, _) = front.accept().await.expect("accept");
    let target = TcpStream::connect(echo_backend().await).await.expect("connect backend");
    let counters = Arc::new(TrafficCounters::default());
    let relay_task = {
        let counters = Arc::clone(&counters);
        tokio::spawn(async move { relay(peer, target, copy_path, &counters).await })
    };
    let data = pseudo_random(4 << 20, 11);

    let back = within(exchange(client, &data)).await;

    assert!(back == data);
    let end = within(relay_task).await.expect("relay task").expect("relay result");
    assert_eq!(end, RelayEnd::Closed);
    assert_eq!((counters.bytes_in(), counters.bytes_out()), (4 << 20, 4 << 20));
}

/// Many request/response rounds of a few bytes each: every read drains its socket, so each
/// leg goes back to waiting without a read that meets `EAGAIN`. A lost wake-up would hang a
/// round (and the guard would fail the test); every byte is counted.
async fn a_ping_pong_of_small_messages_never_stalls(path: Path) {
    capture::install();
    let plane = plane(path);
    let id = rule_id();
    let port = bind_simple(&plane, id, echo_backend().await).await;
    let mut client = connect(port).await;
    let mut sent = 0u64;
    for round in 0..500u32 {
        let message = format!("request {round} {}", "x".repeat((round % 97) as usize));
        within(client.write_all(message.as_bytes())).await.expect("write");
        let mut back = vec![0u8; message.len()];
        within(client.read_exact(&mut back)).await.expect("the answer to every round arrives");
        assert_eq!(back, message.as_bytes(), "round {round}");
        sent += message.len() as u64;
    }
    // Small messages never show a bulk transfer: the fast path copies them.
    assert!(capture::events("proxy.splice_selected", id).is_empty(), "small messages were spliced");
    // One bulk write moves the leg to splice (on the splice path).
    let bulk = pseudo_random(1 << 20, 3);
    let back = within(exchange(client, &bulk)).await;
    assert!(back == bulk, "bulk echo after the ping-pong differs");
    let selected = capture::events("proxy.splice_selected", id).len();
    assert_eq!(selected, usize::from(path == Path::Splice), "bulk moves a fast-path leg to splice");
    eventually("the connection ends", || totals(&plane, id).connections_active == 0).await;
    let t = totals(&plane, id);
    assert_eq!((t.bytes_in, t.bytes_out), (sent + (1 << 20), sent + (1 << 20)));
}
