//! Unit tests of the candidate order and the listen-to-target port mapping.

use portunus_core::rule::Protocol;

use super::*;

fn target(host: &str, start: u16, end: u16, priority: u16) -> Target {
    Target {
        host: Host::Ip(host.parse().unwrap()),
        ports: PortRange::new(start, end).unwrap(),
        priority,
        proxy: None,
    }
}

fn plan(listen: PortRange, targets: Vec<Target>) -> TargetPlan {
    TargetPlan::new(&RuleDef {
        name: None,
        protocol: Protocol::Tcp,
        listen,
        listen_addr: None,
        targets,
        prefer_ipv6: false,
        health_check_interval_secs: None,
    })
}

fn check(plan: &TargetPlan, listen_port: u16, expected: &[&str]) {
    let got: Vec<String> = plan.candidates(listen_port).map(|c| c.label()).collect();
    assert_eq!(got, expected);
}

#[test]
fn candidates_follow_priority_then_given_order() {
    let plan = plan(
        PortRange::single(80).unwrap(),
        vec![target("10.0.0.1", 1, 1, 2), target("10.0.0.2", 2, 2, 1), target("10.0.0.3", 3, 3, 1)],
    );
    check(&plan, 80, &["10.0.0.2:2", "10.0.0.3:3", "10.0.0.1:1"]);
}

#[test]
fn range_targets_map_by_offset_and_single_targets_take_every_port() {
    let plan = plan(
        PortRange::new(2000, 2002).unwrap(),
        vec![target("::1", 3000, 3002, 0), target("127.0.0.1", 9000, 9000, 1)],
    );
    check(&plan, 2000, &["[::1]:3000", "127.0.0.1:9000"]);
    check(&plan, 2002, &["[::1]:3002", "127.0.0.1:9000"]);
}
