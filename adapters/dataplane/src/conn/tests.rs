//! Unit tests of the per-leg socket options.

use super::*;

async fn loopback_pair() -> (TcpStream, TcpStream) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
    let (server, _) = listener.accept().await.unwrap();
    (client, server)
}

#[tokio::test]
async fn legs_get_nodelay_and_keepalive_with_the_configured_idle() {
    let (client, server) = loopback_pair().await;
    tune(&client, Some(Duration::from_secs(42)));
    tune(&server, None);

    let sock = SockRef::from(&client);
    assert!(sock.tcp_nodelay().unwrap());
    assert!(sock.keepalive().unwrap());
    assert_eq!(sock.tcp_keepalive_time().unwrap(), Duration::from_secs(42));
    let sock = SockRef::from(&server);
    assert!(sock.tcp_nodelay().unwrap() && sock.keepalive().unwrap());
}
