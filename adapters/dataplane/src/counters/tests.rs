//! Unit tests of the counter arithmetic and the active-connection guard.

use super::*;

#[test]
fn totals_sum_every_port_including_the_active_gauge() {
    let a = TrafficCounters::default();
    let b = TrafficCounters::default();
    a.bytes_in.fetch_add(10, Relaxed);
    b.bytes_in.fetch_add(5, Relaxed);
    let _g1 = a.open_connection();
    let _g2 = b.open_connection();
    let report = rule_report(7, [(1000, &a), (1001, &b)]);
    assert_eq!(report.instance, 7);
    assert_eq!(report.totals.bytes_in, 15);
    assert_eq!(report.totals.connections_active, 2);
    assert_eq!(report.per_port.len(), 2);
    assert_eq!(report.per_port[&1001].bytes_in, 5);
}

#[test]
fn dropping_the_guard_ends_the_connection_but_keeps_the_total() {
    let c = TrafficCounters::default();
    drop(c.open_connection());
    let snap = c.snapshot();
    assert_eq!(snap.connections_total, 1);
    assert_eq!(snap.connections_active, 0);
}
