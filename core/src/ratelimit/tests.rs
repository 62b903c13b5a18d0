use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;

use super::*;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn rate(per_sec: u64, burst: u64) -> Rate {
    Rate::new(per_sec, burst).expect("non-zero rate and burst")
}

fn caps(json: &str) -> Caps {
    serde_json::from_str::<RateLimits>(json).expect("parses").validate().expect("valid")
}

fn scope(json: &str) -> Arc<SharedScope> {
    Arc::new(SharedScope::new(caps(json), Duration::ZERO))
}

// ---- validation ----

/// Parses `json` as a rule's `RateLimits` and an `OwnerEnvelope` and validates both.
fn check(json: &str, rule: Result<(), ErrorCode>, envelope: Result<(), ErrorCode>) {
    let limits: RateLimits = serde_json::from_str(json).expect("parses");
    assert_eq!(limits.validate().map(drop).map_err(|f| f.code), rule, "rule caps {json}");
    let owner: OwnerEnvelope = serde_json::from_str(json).expect("parses");
    assert_eq!(owner.validate().map(drop).map_err(|f| f.code), envelope, "envelope {json}");
}

/// Both forms agree (everything but the empty case).
fn check_both(json: &str, expected: Result<(), ErrorCode>) {
    check(json, expected, expected);
}

#[test]
fn an_empty_value_clears_a_rule_but_is_refused_as_an_envelope() {
    check("{}", Ok(()), Err(ErrorCode::EmptyEnvelope));
    assert!(caps("{}").is_unlimited());
}

#[test]
fn a_zero_cap_is_refused_for_every_field() {
    for field in
        ["bandwidth_in_bps", "bandwidth_out_bps", "new_connections_per_sec", "concurrent_connections"]
    {
        check_both(&format!(r#"{{"{field}": 0}}"#), Err(ErrorCode::ZeroCap));
    }
}

#[test]
fn a_burst_without_its_rate_is_refused() {
    check_both(r#"{"bandwidth_in_burst_bytes": 100000}"#, Err(ErrorCode::BurstWithoutRate));
    check_both(
        r#"{"bandwidth_in_bps": 100000, "bandwidth_out_burst_bytes": 100000}"#,
        Err(ErrorCode::BurstWithoutRate),
    );
    check_both(
        r#"{"concurrent_connections": 5, "new_connections_burst": 5}"#,
        Err(ErrorCode::BurstWithoutRate),
    );
}

#[test]
fn bursts_lie_between_a_tenth_of_a_second_and_sixty_seconds_of_rate() {
    let bandwidth =
        |burst: u64| format!(r#"{{"bandwidth_out_bps": 10000000, "bandwidth_out_burst_bytes": {burst}}}"#);
    check_both(&bandwidth(999_999), Err(ErrorCode::BurstOutOfRange));
    check_both(&bandwidth(1_000_000), Ok(()));
    check_both(&bandwidth(600_000_000), Ok(()));
    check_both(&bandwidth(600_000_001), Err(ErrorCode::BurstOutOfRange));
    let connections =
        |burst: u64| format!(r#"{{"new_connections_per_sec": 100, "new_connections_burst": {burst}}}"#);
    check_both(&connections(0), Err(ErrorCode::BurstOutOfRange));
    check_both(&connections(9), Err(ErrorCode::BurstOutOfRange));
    check_both(&connections(10), Ok(()));
    check_both(&connections(6_000), Ok(()));
    check_both(&connections(6_001), Err(ErrorCode::BurstOutOfRange));
    // One connection per second: a burst of 1 (rate / 10 rounds up) to 60.
    check_both(r#"{"new_connections_per_sec": 1, "new_connections_burst": 1}"#, Ok(()));
    check_both(
        r#"{"new_connections_per_sec": 1, "new_connections_burst": 61}"#,
        Err(ErrorCode::BurstOutOfRange),
    );
}

#[test]
fn a_bandwidth_burst_always_holds_a_largest_udp_datagram() {
    let slow = |burst: u64| format!(r#"{{"bandwidth_in_bps": 1000, "bandwidth_in_burst_bytes": {burst}}}"#);
    check_both(&slow(65_535), Err(ErrorCode::BurstOutOfRange));
    check_both(&slow(65_536), Ok(()));
    check_both(&slow(65_537), Err(ErrorCode::BurstOutOfRange));
    let default = caps(r#"{"bandwidth_in_bps": 1000}"#).bandwidth(Direction::In);
    assert_eq!(default, Some(rate(1_000, MIN_BANDWIDTH_BURST_BYTES)));
}

#[test]
fn bursts_default_to_one_second_of_rate() {
    let c =
        caps(r#"{"bandwidth_in_bps": 10000000, "bandwidth_out_bps": 70000, "new_connections_per_sec": 100}"#);
    assert_eq!(c.bandwidth(Direction::In), Some(rate(10_000_000, 10_000_000)));
    assert_eq!(c.bandwidth(Direction::Out), Some(rate(70_000, 70_000)));
    assert_eq!(c.new_connections(), Some(rate(100, 100)));
    assert_eq!(c.concurrent_connections(), None);
    assert!(c.has_bandwidth_cap() && !c.is_unlimited());
}

#[test]
fn rates_above_their_maximum_are_out_of_range() {
    check_both(r#"{"bandwidth_in_bps": 1000000000000}"#, Ok(()));
    check_both(r#"{"bandwidth_in_bps": 1000000000001}"#, Err(ErrorCode::OutOfRange));
    check_both(r#"{"new_connections_per_sec": 1000000}"#, Ok(()));
    check_both(r#"{"new_connections_per_sec": 1000001}"#, Err(ErrorCode::OutOfRange));
}

#[test]
fn the_first_problem_in_field_order_is_reported() {
    check_both(r#"{"bandwidth_in_bps": 0, "bandwidth_out_burst_bytes": 5}"#, Err(ErrorCode::ZeroCap));
    check_both(
        r#"{"bandwidth_in_burst_bytes": 5, "concurrent_connections": 0}"#,
        Err(ErrorCode::BurstWithoutRate),
    );
}

#[test]
fn the_new_codes_are_validation_failures() {
    for code in [
        ErrorCode::ZeroCap,
        ErrorCode::BurstWithoutRate,
        ErrorCode::BurstOutOfRange,
        ErrorCode::EmptyEnvelope,
    ] {
        assert_eq!((code.exit_status(), code.http_status()), (2, 400), "{code}");
        assert!(code.as_str().starts_with("validation."), "{code}");
    }
}

#[test]
fn unknown_fields_and_negative_numbers_are_refused() {
    assert!(serde_json::from_str::<RateLimits>(r#"{"bandwidth_bps": 1}"#).is_err());
    assert!(serde_json::from_str::<OwnerEnvelope>(r#"{"bandwidth_bps": 1}"#).is_err());
    assert!(serde_json::from_str::<RateLimits>(r#"{"bandwidth_in_bps": -1}"#).is_err());
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlDoc {
    rule: TomlRule,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlRule {
    rate_limit: RateLimits,
}

#[test]
fn a_rule_rate_limit_table_reads_from_toml() {
    let doc: TomlDoc = toml::from_str(
        "[rule.rate_limit]\nbandwidth_in_bps = 10_000_000\nnew_connections_per_sec = 100\nnew_connections_burst = 20\n",
    )
    .expect("parses");
    let c = doc.rule.rate_limit.validate().expect("valid");
    assert_eq!(c.bandwidth(Direction::In), Some(rate(10_000_000, 10_000_000)));
    assert_eq!(c.new_connections(), Some(rate(100, 20)));
    assert!(toml::from_str::<TomlDoc>("[rule.rate_limit]\nbandwidth_in_bit = 1\n").is_err());
    assert!(toml::from_str::<TomlDoc>("[rule.rate_limit]\nbandwidth_in_bps = -5\n").is_err());
}

#[test]
fn caps_serialise_with_explicit_bursts_and_deserialise_through_validation() {
    let c = caps(r#"{"bandwidth_in_bps": 1000, "concurrent_connections": 3}"#);
    let json = serde_json::to_string(&c).expect("serialises");
    assert_eq!(
        json,
        r#"{"bandwidth_in_bps":1000,"bandwidth_in_burst_bytes":65536,"concurrent_connections":3}"#
    );
    assert_eq!(serde_json::from_str::<Caps>(&json).expect("valid"), c);
    assert!(serde_json::from_str::<Caps>(r#"{"concurrent_connections": 0}"#).is_err());
}

// ---- the token bucket ----

/// Runs a copy loop against `bucket` from 0 until `until`: it offers `chunk` bytes, writes
/// what is granted at once and sleeps on `Wait`, with a timer that rounds sleeps up to
/// `tick`. Returns the bytes written.
fn copy_loop(bucket: &mut TokenBucket, chunk: u64, tick: Duration, until: Duration) -> u64 {
    let tick_ns = tick.as_nanos();
    let (mut now, mut sent, mut pending) = (Duration::ZERO, 0u64, 0u64);
    for _ in 0..10_000_000 {
        if now >= until {
            return sent;
        }
        if pending == 0 {
            pending = chunk;
        }
        match bucket.take(pending, now) {
            Take::Granted(n) => {
                assert!((1..=pending).contains(&n), "grant {n} for {pending}");
                sent += n;
                pending -= n;
            }
            Take::Wait(wait) => {
                assert!(wait > Duration::ZERO);
                let ticks = wait.as_nanos().div_ceil(tick_ns);
                now += Duration::from_nanos(u64::try_from(ticks * tick_ns).expect("short sleep"));
            }
        }
    }
    panic!("the copy loop did not reach {until:?}");
}

#[test]
fn ten_megabytes_per_second_over_twenty_seconds_is_within_a_thousandth_of_200_mb() {
    let cap = rate(10_000_000, 10_000_000);
    for (chunk, tick) in [(65_536, ms(1)), (16_384, Duration::from_micros(100)), (1_000_000, ms(4))] {
        let sent = copy_loop(&mut TokenBucket::empty(cap, Duration::ZERO), chunk, tick, secs(20));
        assert!(sent.abs_diff(200_000_000) <= 200_000, "chunk {chunk}, tick {tick:?}: {sent} bytes");
        assert!(sent <= 200_000_000, "never above rate × time from empty");
    }
    // A fresh full bucket adds one burst on top, and no more.
    let sent = copy_loop(&mut TokenBucket::full(cap, Duration::ZERO), 65_536, ms(1), secs(20));
    assert!(sent.abs_diff(210_000_000) <= 210_000 && sent <= 210_000_000, "{sent} bytes");
}

/// Admissions per whole simulated second, with an attempt every `every`.
fn admissions_per_second(bucket: &mut TokenBucket, every: Duration, seconds: u64) -> Vec<u64> {
    let mut per_second = vec![0u64; usize::try_from(seconds).expect("small")];
    let mut now = Duration::ZERO;
    while now < secs(seconds) {
        if bucket.try_take(1, now) {
            per_second[usize::try_from(now.as_secs()).expect("small")] += 1;
        }
        now += every;
    }
    per_second
}

#[test]
fn a_hundred_connections_per_second_admits_a_hundred_give_or_take_one_each_second() {
    let cap = rate(100, 100);
    for every in [ms(1), Duration::from_micros(333), ms(3)] {
        let counts = admissions_per_second(&mut TokenBucket::empty(cap, Duration::ZERO), every, 30);
        assert!(counts.iter().all(|n| (99..=101).contains(n)), "every {every:?}: {counts:?}");
    }
    // Starting full, the first second also admits the burst.
    let counts = admissions_per_second(&mut TokenBucket::full(cap, Duration::ZERO), ms(1), 10);
    assert!((199..=201).contains(&counts[0]), "{counts:?}");
    assert!(counts[1..].iter().all(|n| (99..=101).contains(n)), "{counts:?}");
}

#[test]
fn a_partial_grant_sends_what_fits_and_a_wait_lasts_until_a_slice_exists() {
    // 1 MB/s: a slice is 10 ms of rate, 10 kB.
    let mut bucket = TokenBucket::full(rate(1_000_000, 100_000), Duration::ZERO);
    assert_eq!(bucket.take(65_536, Duration::ZERO), Take::Granted(65_536));
    assert_eq!(bucket.take(65_536, Duration::ZERO), Take::Granted(34_464), "what is left");
    assert_eq!(bucket.take(65_536, Duration::ZERO), Take::Wait(ms(10)));
    assert_eq!(bucket.take(65_536, ms(9)), Take::Wait(ms(1)), "9 kB is less than a slice");
    assert_eq!(bucket.take(65_536, ms(10)), Take::Granted(10_000));
    assert_eq!(bucket.take(100, ms(10)), Take::Wait(Duration::from_micros(100)), "a small want needs less");
}

#[test]
fn zero_and_oversized_requests() {
    let mut bucket = TokenBucket::empty(rate(10, 20), Duration::ZERO);
    assert_eq!(bucket.take(0, Duration::ZERO), Take::Granted(0));
    assert!(bucket.try_take(0, Duration::ZERO));
    assert!(!bucket.try_take(21, secs(1_000_000)), "more than a burst never fits");
    assert!(bucket.try_take(20, secs(1_000_000)));
}

#[test]
fn a_rate_change_keeps_the_level_clamped_to_the_new_burst() {
    let mut bucket = TokenBucket::full(rate(1_000, 2_000), Duration::ZERO);
    assert_eq!(bucket.take(500, Duration::ZERO), Take::Granted(500));
    bucket.set_rate(rate(5_000, 10_000), Duration::ZERO);
    assert_eq!(bucket.level(Duration::ZERO), 1_500, "a larger burst adds no tokens");
    bucket.set_rate(rate(10, 100), Duration::ZERO);
    assert_eq!(bucket.level(Duration::ZERO), 100, "a smaller burst clamps");
    bucket.set_rate(rate(5_000, 10_000), Duration::ZERO);
    assert_eq!(bucket.level(Duration::ZERO), 100);
    assert_eq!(bucket.level(secs(1)), 5_100, "the new rate from the update on");
}

#[test]
fn tokens_earned_before_a_rate_change_count_at_the_old_rate() {
    let mut bucket = TokenBucket::empty(rate(1_000, 10_000), Duration::ZERO);
    bucket.set_rate(rate(2_000, 10_000), secs(1));
    assert_eq!(bucket.level(secs(1)), 1_000);
    assert_eq!(bucket.level(secs(2)), 3_000);
}

#[test]
fn huge_rates_and_long_idle_gaps_neither_overflow_nor_lose_the_cap() {
    let fast = rate(1_000_000_000_000, 60_000_000_000_000);
    let mut bucket = TokenBucket::empty(fast, Duration::ZERO);
    assert_eq!(bucket.level(Duration::MAX), 60_000_000_000_000);
    assert_eq!(bucket.take(u64::MAX, secs(u64::MAX / 2)), Take::Granted(60_000_000_000_000));
    assert_eq!(bucket.take(u64::MAX, Duration::MAX), Take::Granted(60_000_000_000_000));
    let extreme = rate(u64::MAX, u64::MAX);
    let mut bucket = TokenBucket::empty(extreme, Duration::ZERO);
    assert_eq!(bucket.take(u64::MAX, Duration::MAX), Take::Granted(u64::MAX));
    // One byte per second, asked for a datagram: a long but finite wait.
    let mut slow = TokenBucket::empty(rate(1, 65_536), Duration::ZERO);
    assert!(!slow.try_take(65_536, secs(65_535)));
    assert!(slow.try_take(65_536, secs(65_536)));
}

#[test]
fn a_caller_behind_the_latest_now_gets_no_refill_and_a_wait_that_covers_the_gap() {
    let mut bucket = TokenBucket::empty(rate(1_000, 1_000), Duration::ZERO);
    assert_eq!(bucket.take(10, secs(1)), Take::Granted(10));
    assert_eq!(bucket.level(ms(500)), 990, "no refill backwards, no loss either");
    assert_eq!(bucket.take(1_000, ms(500)), Take::Granted(990));
    // Empty at 1 s: a slice (10 tokens) exists at 1.010 s, which is 510 ms after 500 ms.
    assert_eq!(bucket.take(1_000, ms(500)), Take::Wait(ms(510)));
}

// ---- several buckets at once ----

#[test]
fn a_take_across_buckets_takes_from_none_when_one_refuses() {
    let mut owner = TokenBucket::full(rate(1_000_000, 1_000_000), Duration::ZERO);
    let mut rule = TokenBucket::empty(rate(100_000, 100_000), Duration::ZERO);
    assert_eq!(take_all(&mut [&mut owner, &mut rule], 50_000, Duration::ZERO), Take::Wait(ms(10)));
    assert!(!try_take_all(&mut [&mut owner, &mut rule], 1, Duration::ZERO));
    assert_eq!(owner.level(Duration::ZERO), 1_000_000, "the owner gave nothing");
    // 100 ms later the rule has 10 kB: both give exactly that.
    assert_eq!(take_all(&mut [&mut owner, &mut rule], 50_000, ms(100)), Take::Granted(10_000));
    assert_eq!((owner.level(ms(100)), rule.level(ms(100))), (1_000_000 - 10_000, 0));
    assert_eq!(take_all(&mut [], 7, Duration::ZERO), Take::Granted(7));
}

#[test]
fn the_owner_envelope_binds_before_the_rule_cap() {
    // A loose rule under a tight owner, then a tight rule under a loose owner.
    for (rule, per_sec) in
        [(r#"{"bandwidth_out_bps": 10000000}"#, 1_000_000u64), (r#"{"bandwidth_out_bps": 100000}"#, 100_000)]
    {
        let owner = scope(r#"{"bandwidth_out_bps": 1000000}"#);
        let path = LimitPath::new(Some(owner), Some(scope(rule)));
        // Drain what the full buckets hold, then ten seconds of steady copying.
        while let Take::Granted(_) = path.take(Direction::Out, u64::MAX, Duration::ZERO) {}
        let mut now = Duration::ZERO;
        let mut sent = 0u64;
        while now <= secs(10) {
            match path.take(Direction::Out, 65_536, now) {
                Take::Granted(n) => sent += n,
                Take::Wait(wait) => now += wait,
            }
        }
        let expected = per_sec * 10;
        assert!(sent.abs_diff(expected) <= expected / 1_000, "{per_sec}: {sent}");
    }
}

#[test]
fn a_refused_admission_takes_nothing_from_any_scope() {
    let owner = scope(r#"{"new_connections_per_sec": 10}"#);
    let rule = scope(r#"{"new_connections_per_sec": 1, "concurrent_connections": 5}"#);
    let path = LimitPath::new(Some(owner.clone()), Some(rule.clone()));
    let first = path.admit(Duration::ZERO).expect("room");
    let refusal = path.admit(Duration::ZERO).expect_err("the rule's one token is gone");
    assert_eq!(refusal, Refusal { scope: Scope::Rule, cap: RefusedCap::NewConnectionRate });
    assert_eq!((owner.open_connections(), rule.open_connections()), (1, 1));
    // The owner still holds its other nine tokens.
    let owner_only = LimitPath::new(Some(owner.clone()), None);
    let permits: Vec<Permit> = (0..9).map(|_| owner_only.admit(Duration::ZERO).expect("a token")).collect();
    assert_eq!(
        owner_only.admit(Duration::ZERO).map(drop),
        Err(Refusal { scope: Scope::Owner, cap: RefusedCap::NewConnectionRate })
    );
    drop((first, permits));
    assert_eq!((owner.open_connections(), rule.open_connections()), (0, 0));
}

#[test]
fn an_owner_concurrency_cap_spans_its_rules_and_permits_release_on_drop() {
    let owner = scope(r#"{"concurrent_connections": 2}"#);
    let a = LimitPath::new(Some(owner.clone()), Some(scope(r#"{"concurrent_connections": 5}"#)));
    let b = LimitPath::new(Some(owner.clone()), Some(scope(r#"{"concurrent_connections": 5}"#)));
    let first = a.admit(Duration::ZERO).expect("room");
    let _second = b.admit(Duration::ZERO).expect("room");
    let refusal = a.admit(Duration::ZERO).expect_err("the owner is full");
    assert_eq!(refusal, Refusal { scope: Scope::Owner, cap: RefusedCap::ConcurrentConnections });
    assert_eq!(refusal.to_string(), "the owner cap concurrent_connections is reached");
    assert_eq!(a.rule().map(|r| r.open_connections()), Some(1), "the refusal took no rule slot");
    drop(first);
    assert!(b.admit(Duration::ZERO).is_ok());
}

#[test]
fn a_hot_update_keeps_open_connections_and_counts_them_against_a_new_cap() {
    let rule = scope("{}");
    let path = LimitPath::new(None, Some(rule.clone()));
    let permits: Vec<Permit> = (0..3).map(|_| path.admit(Duration::ZERO).expect("uncapped")).collect();
    rule.update(caps(r#"{"concurrent_connections": 2}"#), secs(1));
    assert_eq!(rule.open_connections(), 3, "nothing closed");
    assert!(path.admit(secs(1)).is_err());
    drop(permits);
    assert!(path.admit(secs(1)).is_ok());
}

#[test]
fn a_hot_update_keeps_the_bandwidth_level_and_fills_a_new_cap() {
    let rule = scope(r#"{"bandwidth_in_bps": 1000000}"#);
    let path = LimitPath::new(None, Some(rule.clone()));
    assert_eq!(path.take(Direction::In, 400_000, Duration::ZERO), Take::Granted(400_000));
    rule.update(caps(r#"{"bandwidth_in_bps": 2000000, "bandwidth_out_bps": 100000}"#), Duration::ZERO);
    assert_eq!(rule.bandwidth_level(Direction::In, Duration::ZERO), Some(600_000), "kept");
    assert_eq!(rule.bandwidth_level(Direction::Out, Duration::ZERO), Some(100_000), "a new cap starts full");
    rule.update(caps(r#"{"bandwidth_out_bps": 100000}"#), Duration::ZERO);
    assert_eq!(rule.bandwidth_level(Direction::In, Duration::ZERO), None, "lifted");
    assert!(path.has_bandwidth_cap());
    rule.update(Caps::default(), Duration::ZERO);
    assert!(!path.has_bandwidth_cap());
}

#[test]
fn a_udp_datagram_over_budget_is_dropped_whole() {
    let path = LimitPath::new(None, Some(scope(r#"{"bandwidth_in_bps": 100000}"#)));
    assert!(path.try_take(Direction::In, 65_000, Duration::ZERO));
    assert!(!path.try_take(Direction::In, 65_000, Duration::ZERO));
    assert!(path.try_take(Direction::In, 35_000, Duration::ZERO), "the rest still fits");
    assert!(path.try_take(Direction::Out, 1_000_000, Duration::ZERO), "uncapped direction");
}

#[test]
fn one_scope_given_as_owner_and_rule_counts_once() {
    let both = scope(r#"{"concurrent_connections": 1, "bandwidth_in_bps": 100000}"#);
    let path = LimitPath::new(Some(both.clone()), Some(both.clone()));
    let permit = path.admit(Duration::ZERO).expect("room");
    assert_eq!(both.open_connections(), 1);
    assert!(path.admit(Duration::ZERO).is_err());
    assert_eq!(path.take(Direction::In, 200_000, Duration::ZERO), Take::Granted(100_000));
    drop(permit);
    assert_eq!(both.open_connections(), 0);
}

#[test]
fn the_shared_types_cross_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<SharedScope>();
    send_sync::<LimitPath>();
    send_sync::<Permit>();

    let owner = scope(r#"{"bandwidth_in_bps": 1000000}"#);
    let path = LimitPath::new(Some(owner), Some(scope(r#"{"bandwidth_in_bps": 5000000}"#)));
    let threads: Vec<_> = (0..4u64)
        .map(|idx| {
            let path = path.clone();
            std::thread::spawn(move || {
                // Each thread's clock runs on its own schedule, so `now` arrives out of order.
                (0..2_000u64)
                    .map(|step| {
                        match path.take(Direction::In, 4_096, Duration::from_micros(step * 1_000 + idx * 7)) {
                            Take::Granted(n) => n,
                            Take::Wait(_) => 0,
                        }
                    })
                    .sum::<u64>()
            })
        })
        .collect();
    let total: u64 = threads.into_iter().map(|t| t.join().expect("no panic")).sum();
    // Two seconds at most (plus a few µs), one full burst at the start.
    let bound = 1_000_000 + 1_000_000 * 2_000_021 / 1_000_000;
    assert!(total <= bound, "{total} > {bound}");
    assert!(total >= 2_000_000, "{total}: the owner's budget was used");
}

// ---- the gauge ----

#[test]
fn the_gauge_is_uncapped_by_default_and_never_goes_negative() {
    let mut gauge = ConcurrencyGauge::default();
    assert!((0..1_000).all(|_| gauge.try_acquire()));
    (0..2_000).for_each(|_| gauge.release());
    assert_eq!(gauge.open(), 0);
    let mut scope = ScopeLimiter::new(Caps::default(), Duration::ZERO);
    scope.release();
    assert_eq!(scope.gauge().open(), 0);
}

// ---- properties ----

fn any_rate() -> impl Strategy<Value = Rate> {
    let per_sec = prop_oneof![1u64..2_000, 2_000u64..=1_000_000_000_000, 1u64..=u64::MAX];
    let burst = prop_oneof![1u64..100_000, 1u64..=60_000_000_000_000, 1u64..=u64::MAX];
    (per_sec, burst).prop_map(|(per_sec, burst)| rate(per_sec, burst))
}

#[derive(Debug, Clone)]
enum Step {
    Take { gap_ns: u64, want: u64 },
    TryTake { gap_ns: u64, n: u64 },
}

fn any_steps() -> impl Strategy<Value = Vec<Step>> {
    let gap = prop_oneof![Just(0u64), 0u64..1_000_000, 0u64..5_000_000_000];
    let want = prop_oneof![0u64..100, 0u64..10_000_000, any::<u64>()];
    let step = prop_oneof![
        (gap.clone(), want.clone()).prop_map(|(gap_ns, want)| Step::Take { gap_ns, want }),
        (gap, want).prop_map(|(gap_ns, n)| Step::TryTake { gap_ns, n }),
    ];
    proptest::collection::vec(step, 1..80)
}

proptest! {
    #[test]
    fn a_bucket_never_grants_more_than_its_burst_plus_rate_times_elapsed(
        rate in any_rate(), full in any::<bool>(), steps in any_steps()
    ) {
        let mut bucket =
            if full { TokenBucket::full(rate, Duration::ZERO) } else { TokenBucket::empty(rate, Duration::ZERO) };
        let start = if full { u128::from(rate.burst()) } else { 0 };
        let (mut now, mut granted) = (Duration::ZERO, 0u128);
        for step in steps {
            match step {
                Step::Take { gap_ns, want } => {
                    now += Duration::from_nanos(gap_ns);
                    match bucket.take(want, now) {
                        Take::Granted(n) => {
                            prop_assert!(n <= want && (n >= 1 || want == 0));
                            granted += u128::from(n);
                        }
                        Take::Wait(wait) => {
                            prop_assert!(wait > Duration::ZERO);
                            // Waiting exactly as long as told is always enough.
                            let mut later = bucket.clone();
                            prop_assert!(matches!(later.take(want, now + wait), Take::Granted(n) if n >= 1));
                        }
                    }
                }
                Step::TryTake { gap_ns, n } => {
                    now += Duration::from_nanos(gap_ns);
                    let before = bucket.level(now);
                    if bucket.try_take(n, now) {
                        granted += u128::from(n);
                        prop_assert_eq!(bucket.level(now), before - n);
                    } else {
                        prop_assert!(before < n);
                        prop_assert_eq!(bucket.level(now), before);
                    }
                }
            }
            prop_assert!(bucket.level(now) <= rate.burst());
            let bound = start * 1_000_000_000 + u128::from(rate.per_sec()) * now.as_nanos();
            prop_assert!(granted * 1_000_000_000 <= bound, "granted {} by {:?}", granted, now);
        }
    }

    #[test]
    fn a_rate_change_keeps_the_level_up_to_the_new_burst(
        old in any_rate(), new in any_rate(), taken in any::<u64>(), gap_ns in 0u64..10_000_000_000
    ) {
        let mut bucket = TokenBucket::full(old, Duration::ZERO);
        let _ = bucket.take(taken, Duration::ZERO);
        let now = Duration::from_nanos(gap_ns);
        let before = bucket.level(now);
        bucket.set_rate(new, now);
        prop_assert_eq!(bucket.level(now), before.min(new.burst()));
        prop_assert_eq!(bucket.rate(), new);
    }

    #[test]
    fn a_take_across_two_buckets_takes_the_same_from_both_or_nothing(
        a in any_rate(), b in any_rate(), drain_a in any::<u64>(), drain_b in any::<u64>(),
        want in prop_oneof![0u64..1_000, any::<u64>()], gap_ns in 0u64..2_000_000_000, exact in any::<bool>()
    ) {
        let mut first = TokenBucket::full(a, Duration::ZERO);
        let mut second = TokenBucket::full(b, Duration::ZERO);
        let _ = (first.take(drain_a, Duration::ZERO), second.take(drain_b, Duration::ZERO));
        let now = Duration::from_nanos(gap_ns);
        let (level_a, level_b) = (first.level(now), second.level(now));
        let taken = if exact {
            try_take_all(&mut [&mut first, &mut second], want, now).then_some(want)
        } else {
            match take_all(&mut [&mut first, &mut second], want, now) {
                Take::Granted(n) => Some(n),
                Take::Wait(_) => None,
            }
        };
        let taken = taken.unwrap_or(0);
        prop_assert!(taken <= level_a.min(level_b));
        prop_assert_eq!((first.level(now), second.level(now)), (level_a - taken, level_b - taken));
    }

    #[test]
    fn the_gauge_stays_between_zero_and_its_cap(
        limit in proptest::option::of(0u32..20), ops in proptest::collection::vec(0u8..4, 0..200)
    ) {
        let mut gauge = ConcurrencyGauge::new(limit);
        let mut cap = limit;
        for op in ops {
            match op {
                0 | 1 => {
                    let before = gauge.open();
                    let acquired = gauge.try_acquire();
                    prop_assert_eq!(acquired, cap.is_none_or(|c| before < c));
                    prop_assert_eq!(gauge.open(), before + u32::from(acquired));
                }
                2 => {
                    let before = gauge.open();
                    gauge.release();
                    prop_assert_eq!(gauge.open(), before.saturating_sub(1));
                }
                _ => {
                    // Halve the cap, or restore it: the count is kept either way.
                    let before = gauge.open();
                    cap = if cap == limit { limit.map(|l| l / 2) } else { limit };
                    gauge.set_limit(cap);
                    prop_assert_eq!(gauge.open(), before);
                }
            }
            prop_assert!(gauge.open() <= limit.unwrap_or(u32::MAX));
        }
    }

    #[test]
    fn valid_caps_round_trip_through_their_input_form(
        bandwidth in proptest::option::of(1u64..=MAX_BANDWIDTH_BPS),
        connections in proptest::option::of(1u32..=MAX_NEW_CONNECTIONS_PER_SEC),
        concurrent in proptest::option::of(1u32..=u32::MAX),
        burst_secs in 1u64..=MAX_BURST_SECS,
    ) {
        let limits = RateLimits {
            bandwidth_in_bps: bandwidth,
            bandwidth_in_burst_bytes: bandwidth.map(|b| (b * burst_secs).max(MIN_BANDWIDTH_BURST_BYTES)),
            bandwidth_out_bps: bandwidth.map(|b| b / 2 + 1),
            bandwidth_out_burst_bytes: None,
            new_connections_per_sec: connections,
            new_connections_burst: connections.map(|c| c.saturating_mul(u32::try_from(burst_secs).unwrap_or(1))),
            concurrent_connections: concurrent,
        };
        let caps = limits.validate().expect("valid by construction");
        prop_assert_eq!(caps.to_limits().validate().expect("still valid"), caps);
        let json = serde_json::to_string(&caps).expect("serialises");
        prop_assert_eq!(serde_json::from_str::<Caps>(&json).expect("deserialises"), caps);
    }
}
