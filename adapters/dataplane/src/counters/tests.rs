//! Unit tests of the counter arithmetic and the active-connection guards.

use super::*;

fn view<'a>(port: u16, own: &TrafficCounters, targets: &'a [TargetTraffic]) -> PortView<'a> {
    PortView { port, own: own.snapshot(), targets }
}

#[test]
fn totals_sum_every_port_including_the_active_gauge() {
    let (a, b) = (TrafficCounters::default(), TrafficCounters::default());
    let (a_cells, b_cells) = (TargetTraffic::per_target(1), TargetTraffic::per_target(1));
    a_cells[0].bytes_in.fetch_add(10, Relaxed);
    b_cells[0].bytes_in.fetch_add(5, Relaxed);
    let _g1 = a.open_connection();
    let _g2 = b.open_connection();
    let (report, _) = rule_report(7, [view(1000, &a, &a_cells), view(1001, &b, &b_cells)], 1);
    assert_eq!(report.instance, 7);
    assert_eq!(report.totals.bytes_in, 15);
    assert_eq!(report.totals.connections_active, 2);
    assert_eq!(report.per_port.len(), 2);
    assert_eq!(report.per_port[&1001].bytes_in, 5);
}

#[test]
fn each_cell_counts_once_for_its_port_and_once_for_its_target() {
    let (a, b) = (TrafficCounters::default(), TrafficCounters::default());
    let (a_cells, b_cells) = (TargetTraffic::per_target(2), TargetTraffic::per_target(2));
    // Port a: one connection on target 0, one failed over to target 1; port b: target 1.
    let _a0 = (a.open_connection(), a_cells[0].open_connection(false));
    let _a1 = (a.open_connection(), a_cells[1].open_connection(true));
    drop((b.open_connection(), b_cells[1].open_connection(false)));
    a_cells[0].bytes_in.fetch_add(100, Relaxed);
    a_cells[1].bytes_out.fetch_add(20, Relaxed);
    b_cells[1].delivered_in(2, 7);
    b_cells[1].delivered_out(1, 3);

    let (report, targets) = rule_report(1, [view(80, &a, &a_cells), view(81, &b, &b_cells)], 2);

    let t = report.totals;
    assert_eq!((t.bytes_in, t.bytes_out, t.datagrams_in, t.datagrams_out), (107, 23, 2, 1));
    assert_eq!((t.connections_total, t.connections_active), (3, 2), "connections come from the ports");
    assert_eq!((report.per_port[&80].bytes_in, report.per_port[&80].bytes_out), (100, 20));
    assert_eq!(report.per_port[&81].connections_total, 1);
    assert_eq!(
        (targets[0].bytes_in, targets[0].connections_total, targets[0].connections_active),
        (100, 1, 1)
    );
    let one = targets[1];
    assert_eq!((one.bytes_in, one.bytes_out, one.datagrams_in, one.datagrams_out), (7, 23, 2, 1));
    assert_eq!((one.connections_total, one.connections_active, one.target_failovers), (2, 1, 1));
    let summed = add(targets[0], targets[1]);
    assert_eq!((summed.bytes_in, summed.bytes_out), (t.bytes_in, t.bytes_out));
}

#[test]
fn dropping_the_guard_ends_the_connection_but_keeps_the_total() {
    let c = TrafficCounters::default();
    drop(c.open_connection());
    let snap = c.snapshot();
    assert_eq!(snap.connections_total, 1);
    assert_eq!(snap.connections_active, 0);
    let cell = TargetTraffic::default();
    drop(cell.open_connection(false));
    assert_eq!((cell.snapshot().connections_total, cell.snapshot().connections_active), (1, 0));
}

#[test]
fn nothing_delivered_touches_no_cell_counter() {
    let cell = TargetTraffic::default();
    cell.delivered_in(0, 0);
    cell.delivered_out(0, 0);
    assert_eq!(cell.snapshot(), Counters::default());
}

#[test]
fn rate_limit_counters_sum_over_ports() {
    let (a, b) = (TrafficCounters::default(), TrafficCounters::default());
    a.rate_limit_rejected.fetch_add(2, Relaxed);
    a.rate_limit_throttled.fetch_add(5, Relaxed);
    b.rate_limit_rejected.fetch_add(1, Relaxed);
    let (report, _) = rule_report(1, [view(80, &a, &[]), view(81, &b, &[])], 0);
    let t = report.totals;
    assert_eq!((t.rate_limit_rejected, t.rate_limit_throttled, t.rate_limit_dropped), (3, 5, 0));
    assert_eq!(report.per_port[&81].rate_limit_rejected, 1);
    let dropped = add(
        Counters { rate_limit_dropped: 4, ..Counters::default() },
        Counters { rate_limit_dropped: 3, ..Counters::default() },
    );
    assert_eq!(dropped.rate_limit_dropped, 7);
}
