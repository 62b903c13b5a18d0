use std::time::Duration;

use proptest::prelude::*;

use super::*;

fn key(user: &str, rule: u64) -> TrafficKey {
    TrafficKey { user: UserId::new(user), client: ClientId::from_random([1; 10]), rule: RuleId::new(rule) }
}

fn at(secs: u64) -> Timestamp {
    Timestamp::from_millis(secs * 1_000)
}

const DAY: u64 = 86_400;

#[test]
fn minutes_are_handed_out_once_they_have_ended_and_only_those_with_traffic() {
    let mut book = MinuteBook::default();
    book.add(at(60 + 5), key("alice", 1), 100, 10);
    book.add(at(60 + 59), key("alice", 1), 1, 1);
    book.add(at(60 + 30), key("bob", 2), 0, 0);
    book.add(at(120 + 1), key("alice", 1), 7, 0);
    assert!(book.take_ended(at(60 + 59)).is_empty(), "the minute is still open");
    let ended = book.take_ended(at(120));
    assert_eq!(ended.len(), 1);
    assert_eq!((ended[0].start, ended[0].bytes_in, ended[0].bytes_out), (at(60), 101, 11));
    assert!(book.take_ended(at(121)).is_empty(), "handed out once");
    assert_eq!(book.take_ended(at(180))[0].bytes_in, 7);
    assert!(book.is_empty());
}

#[test]
fn an_hour_rolls_up_its_minutes_per_rule_and_rolling_it_again_gives_the_same() {
    let hour = at(3_600);
    let minute = |offset: u64, k: TrafficKey, b: u64| TrafficSample {
        bucket: Bucket::Minute,
        start: at(3_600 + offset),
        key: k,
        bytes_in: b,
        bytes_out: 2 * b,
    };
    let samples = vec![
        minute(0, key("alice", 1), 1),
        minute(60, key("alice", 1), 2),
        minute(3_540, key("bob", 2), 5),
        minute(3_600, key("alice", 1), 1_000), // the next hour
        TrafficSample { start: at(0), ..minute(0, key("alice", 1), 9_000) }, // the hour before
    ];
    let rolled = rollup(hour, &samples);
    assert_eq!(rolled.len(), 2);
    assert_eq!((rolled[0].key.user.as_str(), rolled[0].bytes_in, rolled[0].bytes_out), ("alice", 3, 6));
    assert_eq!((rolled[1].key.user.as_str(), rolled[1].bytes_in), ("bob", 5));
    assert!(rolled.iter().all(|s| s.bucket == Bucket::Hour && s.start == hour));
    assert_eq!(rollup(hour, &samples), rolled);
}

#[test]
fn queries_are_checked_against_each_buckets_retention_and_size() {
    let now = at(200 * DAY);
    let code = |from: u64, to: u64, bucket: Option<Bucket>| {
        TrafficQuery::new(from as i64, to as i64, bucket, now).map(|q| q.bucket).map_err(|f| f.code)
    };
    let day_ago = 199 * DAY;
    assert_eq!(code(day_ago, 200 * DAY, None), Ok(Bucket::Minute));
    assert_eq!(code(day_ago, 200 * DAY, Some(Bucket::Hour)), Ok(Bucket::Hour));
    assert_eq!(code(190 * DAY, 191 * DAY, None), Ok(Bucket::Hour), "older than a week: hours");
    assert_eq!(code(190 * DAY, 191 * DAY, Some(Bucket::Minute)), Err(ErrorCode::BucketOutOfRetention));
    assert_eq!(code(100 * DAY, 101 * DAY, None), Err(ErrorCode::BucketOutOfRetention));
    assert_eq!(code(200 * DAY, day_ago, None), Err(ErrorCode::InvalidTimeRange));
    assert_eq!(TrafficQuery::new(-1, 5, None, now).unwrap_err().code, ErrorCode::InvalidTimeRange);
    // 7 days of minutes is the most one answer holds; a day more of hours is fine.
    assert_eq!(
        code(193 * DAY + 1, 200 * DAY + 61, Some(Bucket::Minute)),
        Err(ErrorCode::TrafficWindowTooLarge)
    );
    assert_eq!(code(193 * DAY + 1, 200 * DAY, Some(Bucket::Minute)), Ok(Bucket::Minute));
    assert_eq!(Bucket::parse("5m").unwrap_err().code, ErrorCode::InvalidBucket);
}

#[test]
fn an_answer_sums_its_samples_in_time_order() {
    let sample = |start: u64, rule: u64, b: u64| TrafficSample {
        bucket: Bucket::Minute,
        start: at(start),
        key: key("alice", rule),
        bytes_in: b,
        bytes_out: b + 1,
    };
    let answer =
        TrafficAnswer::of(Bucket::Minute, vec![sample(120, 1, 5), sample(60, 2, 3), sample(60, 1, 1)]);
    let order: Vec<(i64, u64)> = answer.samples.iter().map(|p| (p.start, p.rule)).collect();
    assert_eq!(order, [(60, 1), (60, 2), (120, 1)]);
    assert_eq!((answer.total_bytes_in, answer.total_bytes_out), (9, 12));
}

proptest! {
    #[test]
    fn every_byte_added_reaches_exactly_one_ended_minute_and_hours_keep_the_sums(
        adds in proptest::collection::vec((0u64..7_200, 0u64..3, 0u64..10_000, 0u64..10_000), 0..60),
    ) {
        let mut sorted = adds.clone();
        sorted.sort_by_key(|a| a.0);
        let mut book = MinuteBook::default();
        let mut minutes = Vec::new();
        for (secs, rule, bin, bout) in &sorted {
            minutes.extend(book.take_ended(at(*secs)));
            book.add(at(*secs), key("alice", *rule), *bin, *bout);
        }
        minutes.extend(book.take_ended(at(7_200)));
        prop_assert!(book.is_empty());
        let added: u64 = sorted.iter().map(|a| a.2 + a.3).sum();
        let handed: u64 = minutes.iter().map(|s| s.bytes_in + s.bytes_out).sum();
        prop_assert_eq!(added, handed);
        prop_assert!(minutes.iter().all(|s| s.start.as_millis() % 60_000 == 0));
        let hours: u64 = [at(0), at(3_600)].iter()
            .flat_map(|h| rollup(*h, &minutes))
            .map(|s| s.bytes_in + s.bytes_out)
            .sum();
        prop_assert_eq!(hours, added);
    }
}

#[test]
fn retention_cut_offs_are_aligned_and_a_week_or_ninety_days_back() {
    let now = at(100 * DAY + 125);
    assert_eq!(Bucket::Minute.oldest_kept(now), at(93 * DAY + 120));
    assert_eq!(Bucket::Hour.oldest_kept(now), at(10 * DAY));
    assert_eq!(Bucket::Hour.width(), Duration::from_secs(3_600));
}
