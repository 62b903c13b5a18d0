use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;

const IDLE: Duration = Duration::from_secs(60);

fn key(port: u16, source_port: u16) -> FlowKey {
    FlowKey { listen_port: port, source: SocketAddr::from(([127, 0, 0, 1], source_port)) }
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn table(max_flows: u32) -> FlowTable<&'static str> {
    FlowTable::new(FlowLimits { idle: IDLE, max_flows })
}

/// Opens the flow for `k` at `now` through the public protocol (inbound, then open).
fn admit(t: &mut FlowTable<&'static str>, k: FlowKey, name: &'static str, now: Duration) -> FlowId {
    assert_eq!(t.handle_inbound(k, now), Inbound::Open);
    t.open(k, name, now).expect("room for the flow").0
}

#[test]
fn the_first_datagram_opens_and_the_next_forwards_through_the_same_flow() {
    let mut t = table(4);
    let id = admit(&mut t, key(53, 1000), "a", secs(1));
    assert_eq!(t.handle_inbound(key(53, 1000), secs(2)), Inbound::Forward { id, flow: &"a" });
    assert_eq!(t.len(), 1);
}

#[test]
fn the_same_source_on_another_port_is_another_flow() {
    let mut t = table(4);
    let a = admit(&mut t, key(53, 1000), "a", secs(1));
    let b = admit(&mut t, key(54, 1000), "b", secs(1));
    assert_ne!(a, b);
    assert_eq!(t.len(), 2);
}

#[test]
fn the_cap_counts_every_port_and_never_evicts_for_room() {
    let mut t = table(2);
    admit(&mut t, key(53, 1), "a", secs(1));
    admit(&mut t, key(54, 2), "b", secs(1));
    assert_eq!(t.handle_inbound(key(55, 3), secs(2)), Inbound::Overflow);
    assert!(matches!(t.open(key(55, 3), "c", secs(2)), Err("c")), "open refuses past the cap too");
    assert_eq!(t.len(), 2);
    assert!(t.get(&key(53, 1)).is_some() && t.get(&key(54, 2)).is_some());
}

#[test]
fn a_lowered_cap_keeps_the_flows_and_refuses_new_ones_until_enough_have_gone() {
    let mut t = table(3);
    let a = admit(&mut t, key(53, 1), "a", secs(1));
    admit(&mut t, key(53, 2), "b", secs(1));
    t.set_limits(FlowLimits { idle: IDLE, max_flows: 1 });
    assert_eq!(t.len(), 2);
    assert_eq!(t.handle_inbound(key(53, 3), secs(2)), Inbound::Overflow);
    assert_eq!(t.remove(&key(53, 1), a), Some("a"));
    assert_eq!(t.handle_inbound(key(53, 3), secs(2)), Inbound::Overflow, "still at the new cap of 1");
}

#[test]
fn a_zero_cap_admits_nothing() {
    let mut t = table(0);
    assert_eq!(t.handle_inbound(key(53, 1), secs(1)), Inbound::Overflow);
}

#[test]
fn a_flow_is_reaped_only_after_silence_in_both_directions() {
    let mut t = table(4);
    let quiet = admit(&mut t, key(53, 1), "quiet", secs(0));
    let answered = admit(&mut t, key(53, 2), "answered", secs(0));
    // Only the upstream of `answered` keeps talking.
    for s in (10..=110).step_by(10) {
        assert!(t.handle_reply(&key(53, 2), answered, secs(s)));
    }
    assert!(t.handle_timeout(secs(59)).is_empty(), "59 s of silence is not 60");
    let gone = t.handle_timeout(secs(60));
    assert_eq!(gone, vec![Gone { key: key(53, 1), id: quiet, flow: "quiet" }]);
    assert!(t.handle_timeout(secs(169)).is_empty(), "the reply at 110 s keeps it until 170 s");
    assert_eq!(t.handle_timeout(secs(170)).len(), 1);
    assert!(t.is_empty());
}

#[test]
fn inbound_traffic_alone_also_keeps_a_flow() {
    let mut t = table(4);
    admit(&mut t, key(53, 1), "a", secs(0));
    assert!(matches!(t.handle_inbound(key(53, 1), secs(50)), Inbound::Forward { .. }));
    assert!(t.handle_timeout(secs(100)).is_empty());
    assert_eq!(t.handle_timeout(secs(110)).len(), 1);
}

#[test]
fn icmp_class_errors_evict_and_the_next_datagram_opens_a_new_flow() {
    for error in
        [UpstreamError::PortUnreachable, UpstreamError::HostUnreachable, UpstreamError::NetworkUnreachable]
    {
        let mut t = table(4);
        let first = admit(&mut t, key(53, 1), "first", secs(1));
        assert_eq!(t.handle_upstream_error(&key(53, 1), first, error), Some("first"), "{error:?}");
        let second = admit(&mut t, key(53, 1), "second", secs(2));
        assert_ne!(first, second, "ids are never reused");
    }
}

#[test]
fn other_errors_keep_the_flow() {
    let mut t = table(4);
    let id = admit(&mut t, key(53, 1), "a", secs(1));
    assert_eq!(t.handle_upstream_error(&key(53, 1), id, UpstreamError::Other), None);
    assert_eq!(t.len(), 1);
    assert!(!UpstreamError::Other.evicts());
}

#[test]
fn late_events_of_a_replaced_flow_never_touch_its_successor() {
    let mut t = table(4);
    let old = admit(&mut t, key(53, 1), "old", secs(0));
    assert_eq!(t.remove(&key(53, 1), old), Some("old"));
    let new = admit(&mut t, key(53, 1), "new", secs(1));
    assert!(!t.handle_reply(&key(53, 1), old, secs(2)), "a reply of the old flow is refused");
    assert_eq!(t.handle_upstream_error(&key(53, 1), old, UpstreamError::PortUnreachable), None);
    assert_eq!(t.remove(&key(53, 1), old), None);
    assert_eq!(t.get(&key(53, 1)), Some((new, &"new")));
}

#[test]
fn poll_timeout_names_the_earliest_expiry_and_spaces_sweeps() {
    let mut t = table(4);
    assert_eq!(t.poll_timeout(), None);
    admit(&mut t, key(53, 1), "a", secs(5));
    admit(&mut t, key(53, 2), "b", secs(3));
    assert_eq!(t.poll_timeout(), Some(secs(63)));
    // Right after a sweep, the next one waits a sweep interval (60 s / 16 = 3.75 s).
    assert!(t.handle_timeout(secs(62)).is_empty());
    assert_eq!(t.poll_timeout(), Some(secs(63).max(secs(62) + Duration::from_millis(3750))));
    assert_eq!(t.handle_timeout(t.poll_timeout().unwrap()).len(), 2);
    assert_eq!(t.poll_timeout(), None);
}

#[test]
fn drain_hands_back_every_flow() {
    let mut t = table(4);
    admit(&mut t, key(53, 1), "a", secs(0));
    admit(&mut t, key(54, 1), "b", secs(0));
    let mut names: Vec<&str> = t.drain().map(|g| g.flow).collect();
    names.sort_unstable();
    assert_eq!(names, ["a", "b"]);
    assert!(t.is_empty());
}

#[test]
fn from_settings_takes_both_udp_settings() {
    let settings =
        DataPlaneSettings { udp_flow_idle: secs(31), udp_max_flows_per_rule: 7, ..Default::default() };
    assert_eq!(FlowLimits::from_settings(&settings), FlowLimits { idle: secs(31), max_flows: 7 });
}

/// One step of a random history.
#[derive(Debug, Clone)]
enum Op {
    /// `advance` ms pass, then a datagram from `source` arrives on `port`; opened if allowed.
    Inbound { advance: u64, port: u16, source: u16 },
    /// `advance` ms pass, then the upstream of the `nth` live flow answers.
    Reply { advance: u64, nth: usize },
    /// The upstream of the `nth` live flow reports `error`.
    Error { nth: usize, error: UpstreamError },
    /// `advance` ms pass, then a sweep runs.
    Sweep { advance: u64 },
    /// The cap changes.
    Cap { max_flows: u32 },
}

fn op() -> impl Strategy<Value = Op> {
    let error = prop_oneof![
        Just(UpstreamError::PortUnreachable),
        Just(UpstreamError::HostUnreachable),
        Just(UpstreamError::NetworkUnreachable),
        Just(UpstreamError::Other),
    ];
    prop_oneof![
        6 => (0u64..400, 1u16..4, 0u16..12).prop_map(|(advance, port, source)| Op::Inbound { advance, port, source }),
        3 => (0u64..400, 0usize..16).prop_map(|(advance, nth)| Op::Reply { advance, nth }),
        1 => (0usize..16, error).prop_map(|(nth, error)| Op::Error { nth, error }),
        2 => (0u64..1500).prop_map(|advance| Op::Sweep { advance }),
        1 => (0u32..8).prop_map(|max_flows| Op::Cap { max_flows }),
    ]
}

type Snapshot = BTreeMap<FlowKey, FlowId>;

fn snapshot(t: &FlowTable<u32>, keys: impl IntoIterator<Item = FlowKey>) -> Snapshot {
    keys.into_iter().filter_map(|k| t.get(&k).map(|(id, _)| (k, id))).collect()
}

fn all_keys() -> Vec<FlowKey> {
    (1u16..4).flat_map(|p| (0u16..12).map(move |s| key(p, s))).collect()
}

proptest! {
    /// The rules of the policy, checked against a model of last activity over random
    /// histories: the cap holds at every admission, admissions never remove a flow, a sweep
    /// removes exactly the flows silent both ways for the idle time, and only ICMP-class
    /// errors evict.
    #[test]
    fn the_policy_holds_over_random_histories(
        max_flows in 1u32..8,
        idle_ms in 1u64..1000,
        ops in proptest::collection::vec(op(), 1..200),
    ) {
        let idle = Duration::from_millis(idle_ms);
        let mut t: FlowTable<u32> = FlowTable::new(FlowLimits { idle, max_flows });
        let mut cap = max_flows;
        let mut now = Duration::ZERO;
        // Model: last activity in either direction, per live flow.
        let mut last: BTreeMap<FlowKey, Duration> = BTreeMap::new();
        let keys = all_keys();
        for op in ops {
            let before = snapshot(&t, keys.iter().copied());
            match op {
                Op::Inbound { advance, port, source } => {
                    now += Duration::from_millis(advance);
                    let k = key(port, source);
                    match t.handle_inbound(k, now) {
                        Inbound::Forward { id, .. } => {
                            prop_assert_eq!(before.get(&k), Some(&id));
                            last.insert(k, now);
                        }
                        Inbound::Open => {
                            prop_assert!(!before.contains_key(&k));
                            prop_assert!(t.len() < cap as usize);
                            prop_assert!(t.open(k, 0, now).is_ok());
                            last.insert(k, now);
                        }
                        Inbound::Overflow => {
                            prop_assert!(!before.contains_key(&k));
                            prop_assert!(t.len() >= cap as usize);
                        }
                    }
                    // Admissions never remove a flow, and never push the table past the cap.
                    let after = snapshot(&t, keys.iter().copied());
                    for (k, id) in &before {
                        prop_assert_eq!(after.get(k), Some(id), "an admission removed a flow");
                    }
                    if after.len() > before.len() {
                        prop_assert!(after.len() <= cap as usize, "cap {} exceeded", cap);
                    }
                }
                Op::Reply { advance, nth } => {
                    now += Duration::from_millis(advance);
                    if let Some((k, id)) = before.iter().nth(nth).map(|(k, id)| (*k, *id)) {
                        prop_assert!(t.handle_reply(&k, id, now));
                        last.insert(k, now);
                    }
                }
                Op::Error { nth, error } => {
                    if let Some((k, id)) = before.iter().nth(nth).map(|(k, id)| (*k, *id)) {
                        let evicted = t.handle_upstream_error(&k, id, error).is_some();
                        prop_assert_eq!(evicted, error.evicts());
                        if evicted {
                            last.remove(&k);
                        }
                    }
                }
                Op::Sweep { advance } => {
                    now += Duration::from_millis(advance);
                    let gone = t.handle_timeout(now);
                    for g in &gone {
                        let silent = now - last[&g.key];
                        prop_assert!(silent >= idle, "reaped after {:?} of silence (idle {:?})", silent, idle);
                        last.remove(&g.key);
                    }
                    for (k, at) in &last {
                        prop_assert!(now - *at < idle, "{:?} silent for {:?} survived a sweep", k, now - *at);
                    }
                    if let Some(next) = t.poll_timeout() {
                        let earliest = last.values().map(|at| *at + idle).min().unwrap();
                        prop_assert!(next >= earliest, "a sweep is asked for before any flow can expire");
                        prop_assert!(next <= earliest.max(now + idle / SWEEPS_PER_IDLE + MIN_SWEEP_INTERVAL));
                    }
                }
                Op::Cap { max_flows } => {
                    cap = max_flows;
                    t.set_limits(FlowLimits { idle, max_flows });
                    prop_assert_eq!(snapshot(&t, keys.iter().copied()), before, "a cap change evicted");
                }
            }
            prop_assert_eq!(t.len(), last.len());
        }
    }

    /// Ids are unique over the table's life, whatever comes and goes.
    #[test]
    fn flow_ids_are_never_reused(sources in proptest::collection::vec(0u16..4, 1..100)) {
        let mut t: FlowTable<()> = FlowTable::new(FlowLimits { idle: IDLE, max_flows: 2 });
        let mut seen = std::collections::BTreeSet::new();
        for (i, source) in sources.into_iter().enumerate() {
            let k = key(1, source);
            let now = Duration::from_millis(i as u64);
            if let Inbound::Open = t.handle_inbound(k, now) {
                let id = t.open(k, (), now).unwrap().0;
                prop_assert!(seen.insert(id));
            } else if let Some((id, _)) = t.get(&k) {
                t.remove(&k, id);
            }
        }
    }
}
