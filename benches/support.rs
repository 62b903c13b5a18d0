//! Loopback fixtures shared by the data-plane benches: a relay pair wired through
//! `portunus_dataplane::relay`, a sink backend and a request/response backend.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A backend that reads everything and discards it.
pub async fn sink() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind sink");
    let addr = listener.local_addr().expect("sink addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 256 * 1024];
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

/// Connects a client to a fresh relay towards `backend`; returns the client end and the
/// relay task (which ends when both directions have).
pub async fn relay_pair(
    backend: SocketAddr,
    path: portunus_dataplane::CopyPath,
    counters: std::sync::Arc<portunus_dataplane::TrafficCounters>,
) -> (TcpStream, tokio::task::JoinHandle<()>) {
    let front = TcpListener::bind("127.0.0.1:0").await.expect("bind front");
    let front_addr = front.local_addr().expect("front addr");
    let client = TcpStream::connect(front_addr).await.expect("connect front");
    let (peer, _) = front.accept().await.expect("accept front");
    let target = TcpStream::connect(backend).await.expect("connect backend");
    let task = tokio::spawn(async move {
        let _ = portunus_dataplane::relay(peer, target, path, &counters).await;
    });
    (client, task)
}

/// Writes `total` bytes from a fixed buffer, then closes the write side.
pub async fn push(client: &mut TcpStream, total: usize) {
    let chunk = vec![0x5au8; 256 * 1024];
    let mut left = total;
    while left > 0 {
        let n = left.min(chunk.len());
        client.write_all(&chunk[..n]).await.expect("write through relay");
        left -= n;
    }
    client.shutdown().await.expect("shutdown write");
}

/// A backend that answers the first read of each connection with 100 bytes, whatever came
/// in (so a PROXY header in front of the request changes nothing for the client).
pub async fn responder() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind responder");
    let addr = listener.local_addr().expect("responder addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 512];
                if stream.read(&mut buf).await.is_ok_and(|n| n > 0) {
                    let _ = stream.write_all(&[9u8; 100]).await;
                }
            });
        }
    });
    addr
}
