//! Target choice: preference order, failover, and what happens when nothing answers.

use portunus_core::rule::{Host, PortRange};
use portunus_dataplane::RuleRuntime;

use crate::support::*;

#[tokio::test]
async fn second_target_takes_over_when_the_first_refuses() {
    let plane = plane(Path::Userspace);
    let id = rule_id();
    let port = free_ports(1);
    let echo = echo_backend().await;
    // Given in reverse order: priority, not position, decides.
    let def = tcp_rule(
        PortRange::single(port).unwrap(),
        vec![target(LOCALHOST, echo.port(), 5), target(LOCALHOST, dead_port(), 1)],
    );
    plane.bind(id, def).await.expect("bind");

    let back = within(exchange(connect(port).await, b"failover")).await;

    assert_eq!(back, b"failover");
    eventually("the connection ends", || totals(&plane, id).connections_active == 0).await;
    let t = totals(&plane, id);
    assert_eq!((t.target_failovers, t.connect_failures), (1, 0));
}

#[tokio::test]
async fn without_a_resolver_a_name_target_fails_over_to_the_next() {
    let plane = plane(Path::Userspace);
    let id = rule_id();
    let port = free_ports(1);
    let echo = echo_backend().await;
    let mut by_name = target(LOCALHOST, echo.port(), 0);
    by_name.host = Host::Name("localhost".to_owned());
    let def = tcp_rule(PortRange::single(port).unwrap(), vec![by_name, target(LOCALHOST, echo.port(), 1)]);
    plane.bind(id, def).await.expect("bind");

    let back = within(exchange(connect(port).await, b"by ip")).await;

    assert_eq!(back, b"by ip");
}

#[tokio::test]
async fn no_reachable_target_counts_connect_failures_and_logs_once() {
    capture::install();
    let plane = plane(Path::Userspace);
    let id = rule_id();
    let port = free_ports(1);
    let def = tcp_rule(
        PortRange::single(port).unwrap(),
        vec![target(LOCALHOST, dead_port(), 0), target(LOCALHOST, dead_port(), 1)],
    );
    plane.bind(id, def).await.expect("bind");

    for attempt in 1..=2u64 {
        let mut stream = connect(port).await;
        let got = within(read_to_end_lenient(&mut stream)).await;
        assert!(got.is_empty(), "nothing can come back");
        eventually("the failure is counted", || totals(&plane, id).connect_failures == attempt).await;
    }

    let t = totals(&plane, id);
    assert_eq!((t.connections_total, t.connections_active), (2, 0));
    let events = capture::events("rule.connect_failed", id);
    assert_eq!(events.len(), 1, "rate-limited to one per 10 s: {events:?}");
    assert_eq!(events[0].fields["errno_name"], "ECONNREFUSED");
    assert_eq!(events[0].fields["reason"], "connection_refused");
    assert_eq!(events[0].level, tracing::Level::WARN);
}
