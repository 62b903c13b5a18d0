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
        sni: None,
        rate_limit: Default::default(),
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

fn os_error(errno: nix::errno::Errno) -> io::Error {
    io::Error::from(errno)
}

#[test]
fn only_descriptor_exhaustion_is_blamed_on_this_process() {
    use nix::errno::Errno;
    for (errno, blame) in [
        (Errno::EMFILE, Blame::Local),
        (Errno::ENFILE, Blame::Local),
        (Errno::ECONNREFUSED, Blame::Target),
        (Errno::ETIMEDOUT, Blame::Target),
        (Errno::EHOSTUNREACH, Blame::Target),
        (Errno::EADDRNOTAVAIL, Blame::Target),
    ] {
        assert_eq!(Blame::of(&os_error(errno)), blame, "{errno:?}");
    }
}

/// Runs `n` connections through `connect_first_with`, every dial failing with `errno`;
/// returns each result and the addresses dialled, in order.
fn dial_failing(
    plan: &TargetPlan,
    errno: nix::errno::Errno,
    n: usize,
) -> (Vec<NotConnected>, Vec<SocketAddr>) {
    let dialled = std::sync::Mutex::new(Vec::new());
    let dial = |addr: SocketAddr| {
        dialled.lock().unwrap().push(addr);
        std::future::ready(Err::<TcpStream, _>(DialError::of(&os_error(errno))))
    };
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let results = (0..n)
        .map(|_| match rt.block_on(connect_first_with(plan, 80, &dial)) {
            Ok(_) => panic!("a failing dial connected"),
            Err(err) => err,
        })
        .collect();
    (results, dialled.into_inner().unwrap())
}

#[test]
fn out_of_descriptors_neither_fails_the_target_nor_fails_over() {
    let plan =
        plan(PortRange::single(80).unwrap(), vec![target("10.0.0.1", 1, 1, 1), target("10.0.0.2", 2, 2, 2)]);
    let (results, dialled) = dial_failing(&plan, nix::errno::Errno::EMFILE, 5);

    for res in &results {
        assert!(
            matches!(res, NotConnected::OutOfDescriptors { errno_name, dns_failures: 0 } if errno_name == "EMFILE"),
            "{res:?}"
        );
    }
    let preferred: SocketAddr = "10.0.0.1:1".parse().unwrap();
    assert_eq!(dialled, vec![preferred; 5], "only the preferred target is dialled, once per connection");
    for t in plan.report(&[]) {
        assert_eq!(t.health, TargetHealth::Healthy, "target {}", t.index);
        assert_eq!(t.counters.connect_failures, 0, "target {}", t.index);
    }
}

#[test]
fn a_refusing_target_still_fails_and_fails_over() {
    let plan =
        plan(PortRange::single(80).unwrap(), vec![target("10.0.0.1", 1, 1, 1), target("10.0.0.2", 2, 2, 2)]);
    let (results, dialled) = dial_failing(&plan, nix::errno::Errno::ECONNREFUSED, 3);

    assert!(
        results.iter().all(|r| matches!(r, NotConnected::Unreachable(f) if f.n_tried == 2)),
        "{results:?}"
    );
    assert_eq!(dialled.len(), 6, "both targets are tried for each connection");
    let report = plan.report(&[]);
    assert_eq!(report[0].health, TargetHealth::Failed);
    assert_eq!(report[0].counters.connect_failures, 3);
}
