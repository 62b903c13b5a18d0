//! The `forward` example, compiled into this binary so that it cannot rot: the example's own
//! code binds a rule, forwards real bytes on loopback, and reports them when told to stop.

#[path = "../../examples/forward.rs"]
#[allow(dead_code)] // `main` is the example's entry point; the test calls `forward`.
mod forward_example;

use tokio::net::TcpStream;

use crate::support::*;

/// Connects once the example's listener is up (it binds inside its own task).
async fn connect_when_bound(port: u16) -> TcpStream {
    let deadline = tokio::time::Instant::now() + GUARD;
    loop {
        match TcpStream::connect((LOCALHOST, port)).await {
            Ok(stream) => return stream,
            Err(err) => assert!(tokio::time::Instant::now() < deadline, "never bound: {err}"),
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn the_forward_example_forwards_and_reports_its_counters() {
    let backend = echo_backend().await;
    let port = free_ports(1);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(async move {
        let stop = async {
            let _ = stopped.await;
        };
        forward_example::forward(&port.to_string(), &backend.to_string(), stop).await
    });

    let data = pseudo_random(200_000, 11);
    assert_eq!(within(exchange(connect_when_bound(port).await, &data)).await, data);
    // The echo's end of stream reached the client, so every byte of both legs is counted.
    stop.send(()).expect("the example is still running");
    let report = within(running).await.expect("the example's task").expect("the example forwarded");

    let n = data.len() as u64;
    assert_eq!((report.totals.bytes_in, report.totals.bytes_out, report.totals.connections_total), (n, n, 1));
    assert_eq!(report.per_target[0].counters.bytes_in, n);
    assert!(TcpStream::connect((LOCALHOST, port)).await.is_err(), "the port is closed after the stop");
}

#[tokio::test]
async fn the_forward_example_refuses_a_bad_target_with_its_code() {
    let port = free_ports(1);
    let failure = forward_example::forward(&port.to_string(), "no-port-here", async {}).await.unwrap_err();
    assert_eq!(failure.code, portunus_core::ErrorCode::InvalidTarget, "{failure}");
}
