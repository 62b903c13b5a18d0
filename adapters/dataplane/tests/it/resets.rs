//! How a connection ends reaches the other side in kind, on both copy paths: a reset on one
//! side becomes a reset on the other (so an aborted transfer never looks finished), and an
//! orderly end of stream stays an orderly end of stream.

use std::io;
use std::time::Duration;

use socket2::SockRef;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

use crate::support::*;

on_both_paths!(
    a_peer_reset_reaches_the_target_as_a_reset,
    a_target_reset_reaches_the_peer_as_a_reset,
    an_orderly_close_stays_an_end_of_stream_both_ways,
);

/// How a read that waited for the end of a connection came back.
#[derive(Debug, PartialEq, Eq)]
enum Ending {
    /// `Ok(0)`: an orderly end of stream.
    Eof,
    /// The read failed with this kind.
    Failed(io::ErrorKind),
    /// Bytes arrived where none were expected.
    Data(usize),
}

async fn ending(stream: &mut TcpStream) -> Ending {
    let mut buf = [0u8; 256];
    match within(stream.read(&mut buf)).await {
        Ok(0) => Ending::Eof,
        Ok(n) => Ending::Data(n),
        Err(err) => Ending::Failed(err.kind()),
    }
}

/// Closes `stream` with a reset (`SO_LINGER` 0).
fn reset(stream: TcpStream) {
    SockRef::from(&stream).set_linger(Some(Duration::ZERO)).expect("linger 0");
    drop(stream);
}

async fn a_peer_reset_reaches_the_target_as_a_reset(path: Path) {
    let plane = plane(path);
    let id = rule_id();
    // The backend reads the greeting, reports it, then waits for how the connection ends.
    let (heard_tx, mut heard_rx) = mpsc::unbounded_channel::<Vec<u8>>();
    let (end_tx, mut end_rx) = mpsc::unbounded_channel::<Ending>();
    let addr = backend(move |mut stream| {
        let (heard_tx, end_tx) = (heard_tx.clone(), end_tx.clone());
        async move {
            let mut hello = [0u8; 5];
            stream.read_exact(&mut hello).await.expect("backend reads the greeting");
            let _ = heard_tx.send(hello.to_vec());
            let _ = end_tx.send(ending(&mut stream).await);
        }
    })
    .await;
    let port = bind_simple(&plane, id, addr).await;
    let mut client = connect(port).await;
    within(client.write_all(b"hello")).await.expect("write");
    assert_eq!(within(heard_rx.recv()).await.as_deref(), Some(&b"hello"[..]));

    reset(client);

    let end = within(end_rx.recv()).await.expect("the backend reports the end");
    assert_eq!(end, Ending::Failed(io::ErrorKind::ConnectionReset), "the target must see the reset");
    eventually("the connection is gone", || totals(&plane, id).connections_active == 0).await;
}

async fn a_target_reset_reaches_the_peer_as_a_reset(path: Path) {
    let plane = plane(path);
    let id = rule_id();
    // The backend answers the greeting, then aborts once told to.
    let (abort_tx, abort_rx) = mpsc::unbounded_channel::<()>();
    let abort_rx = std::sync::Arc::new(tokio::sync::Mutex::new(abort_rx));
    let addr = backend(move |mut stream| {
        let abort_rx = std::sync::Arc::clone(&abort_rx);
        async move {
            let mut hello = [0u8; 5];
            stream.read_exact(&mut hello).await.expect("backend reads the greeting");
            stream.write_all(b"world").await.expect("backend answers");
            let _ = abort_rx.lock().await.recv().await;
            reset(stream);
        }
    })
    .await;
    let port = bind_simple(&plane, id, addr).await;
    let mut client = connect(port).await;
    within(client.write_all(b"hello")).await.expect("write");
    let mut answer = [0u8; 5];
    within(client.read_exact(&mut answer)).await.expect("read the answer");
    assert_eq!(&answer, b"world");

    abort_tx.send(()).expect("the backend waits");

    assert_eq!(ending(&mut client).await, Ending::Failed(io::ErrorKind::ConnectionReset));
    eventually("the connection is gone", || totals(&plane, id).connections_active == 0).await;
}

async fn an_orderly_close_stays_an_end_of_stream_both_ways(path: Path) {
    let plane = plane(path);
    let id = rule_id();
    // The backend reads the request to its end, reports how it ended, answers and closes.
    let (end_tx, end_rx) = oneshot::channel::<(Vec<u8>, Ending)>();
    let end_tx = std::sync::Mutex::new(Some(end_tx));
    let end_tx = std::sync::Arc::new(end_tx);
    let addr = backend(move |mut stream| {
        let end_tx = end_tx.lock().unwrap().take();
        async move {
            let mut request = [0u8; 5];
            stream.read_exact(&mut request).await.expect("backend reads the request");
            let end = ending(&mut stream).await;
            stream.write_all(b"reply").await.expect("backend answers after the peer's end");
            stream.shutdown().await.expect("backend shutdown");
            if let Some(tx) = end_tx {
                let _ = tx.send((request.to_vec(), end));
            }
        }
    })
    .await;
    let port = bind_simple(&plane, id, addr).await;
    let mut client = connect(port).await;
    within(client.write_all(b"query")).await.expect("write");
    within(client.shutdown()).await.expect("client shutdown(write)");

    let (request, end) = within(end_rx).await.expect("the backend reports");
    assert_eq!((request.as_slice(), end), (&b"query"[..], Ending::Eof), "the target sees a clean end");
    let mut reply = [0u8; 5];
    within(client.read_exact(&mut reply)).await.expect("read the reply");
    assert_eq!(&reply, b"reply");
    assert_eq!(ending(&mut client).await, Ending::Eof, "the peer sees a clean end");
    eventually("the connection is gone", || totals(&plane, id).connections_active == 0).await;
}
