//! Unit tests of the UDP counters and reports.

use super::*;

fn port(number: u16) -> PortIo {
    let std_socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    std_socket.set_nonblocking(true).unwrap();
    PortIo::new(number, PortSocket::new(crate::sys::batch::watch_reads(std_socket).unwrap()), 2)
}

#[tokio::test]
async fn a_report_sums_ports_including_the_live_flow_gauge() {
    let (a, b) = (port(5000), port(5001));
    a.targets[0].delivered_in(3, 300);
    a.targets[0].delivered_out(2, 20);
    b.targets[1].delivered_in(1, 7);
    a.counters.flows_total.fetch_add(2, Relaxed);
    a.counters.flows_active.fetch_add(2, Relaxed);
    b.counters.flows_active.fetch_add(1, Relaxed);
    b.counters.flows_dropped_overflow.fetch_add(4, Relaxed);

    let (report, per_target) = rule_report(9, [&a, &b], 2);

    assert_eq!(report.instance, 9);
    let t = report.totals;
    assert_eq!((t.datagrams_in, t.bytes_in, t.datagrams_out, t.bytes_out), (4, 307, 2, 20));
    assert_eq!((t.connections_total, t.connections_active, t.flows_dropped_overflow), (2, 3, 4));
    assert_eq!(report.per_port.keys().copied().collect::<Vec<_>>(), vec![5000, 5001]);
    assert_eq!(report.per_port[&5001].connections_active, 1);
    assert_eq!((per_target[0].datagrams_in, per_target[0].bytes_in, per_target[0].bytes_out), (3, 300, 20));
    assert_eq!((per_target[1].datagrams_in, per_target[1].bytes_in), (1, 7));
}

#[test]
fn nothing_delivered_touches_no_counter() {
    let c = UdpCounters::default();
    c.dropped(0);
    assert_eq!(c.snapshot(), Counters::default());
}

#[tokio::test]
async fn a_closed_port_socket_is_gone_for_every_user() {
    let p = port(5002);
    let addr = p.socket.with(|s| s.get_ref().local_addr().unwrap()).unwrap();
    p.socket.close();
    assert!(p.socket.with(|_| ()).is_none());
    std::net::UdpSocket::bind(addr).expect("the port is free right after close");
}

#[tokio::test]
async fn rate_limit_drops_are_reported_per_port() {
    let (a, b) = (port(5003), port(5004));
    a.counters.rate_limit_rejected.fetch_add(2, Relaxed);
    b.counters.rate_limit_dropped.fetch_add(9, Relaxed);
    let (report, _) = rule_report(1, [&a, &b], 2);
    let t = report.totals;
    assert_eq!((t.rate_limit_rejected, t.rate_limit_dropped, t.rate_limit_throttled), (2, 9, 0));
    assert_eq!(report.per_port[&5004].rate_limit_dropped, 9);
}
