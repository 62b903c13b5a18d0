//! Billing periods on exact dates, validation codes, the quota meter's decisions, and
//! properties over random anchors and clock sequences (rewinds and jumps of years included).

use proptest::prelude::*;

use super::*;

const DAY_MS: u64 = 86_400_000;

fn at(rfc3339: &str) -> Timestamp {
    Timestamp::parse_rfc3339(rfc3339).expect("valid RFC 3339")
}

fn anchor_at(rfc3339: &str) -> BillingAnchor {
    BillingAnchor::at(at(rfc3339))
}

fn ms(n: u64) -> Timestamp {
    Timestamp::from_millis(n)
}

/// The period of `anchor` holding `now`, as RFC 3339 `(start, end)`.
fn check_period(anchor: &str, now: &str, expected: (&str, &str)) {
    let period = period_containing(anchor_at(anchor), at(now));
    let (start, end) = (period.start.to_rfc3339(), period.end.to_rfc3339());
    assert_eq!((start.as_str(), end.as_str()), expected, "anchor {anchor}, now {now}");
}

/// Walks period after period from `anchor` and compares the starts with `starts`.
fn check_starts(anchor: &str, starts: &[&str]) {
    let anchor = anchor_at(anchor);
    let mut now = Timestamp::from_millis(anchor.unix_secs() * 1000);
    for expected in starts {
        let period = period_containing(anchor, now);
        assert_eq!(period.start.to_rfc3339(), *expected);
        now = period.end;
    }
}

fn quota(monthly_bytes: u64, anchor: &str) -> QuotaState {
    let terms = QuotaTerms {
        monthly_bytes: MonthlyBytes::new(monthly_bytes).expect("valid cap"),
        anchor: Some(anchor_at(anchor)),
    };
    QuotaState::new(terms, at(anchor))
}

fn cap(bytes: u64) -> MonthlyBytes {
    MonthlyBytes::new(bytes).expect("valid cap")
}

// ---- billing periods ----

#[test]
fn an_anchor_on_the_31st_clamps_each_month_and_comes_back_through_a_leap_february() {
    check_starts(
        "2027-01-31T12:00:00Z",
        &[
            "2027-01-31T12:00:00.000Z",
            "2027-02-28T12:00:00.000Z",
            "2027-03-31T12:00:00.000Z",
            "2027-04-30T12:00:00.000Z",
            "2027-05-31T12:00:00.000Z",
            "2027-06-30T12:00:00.000Z",
            "2027-07-31T12:00:00.000Z",
            "2027-08-31T12:00:00.000Z",
            "2027-09-30T12:00:00.000Z",
            "2027-10-31T12:00:00.000Z",
            "2027-11-30T12:00:00.000Z",
            "2027-12-31T12:00:00.000Z",
            "2028-01-31T12:00:00.000Z",
            "2028-02-29T12:00:00.000Z",
            "2028-03-31T12:00:00.000Z",
        ],
    );
}

#[test]
fn an_anchor_on_a_leap_day_keeps_the_29th_in_other_months() {
    check_starts(
        "2028-02-29T00:00:00Z",
        &["2028-02-29T00:00:00.000Z", "2028-03-29T00:00:00.000Z", "2028-04-29T00:00:00.000Z"],
    );
    check_period(
        "2028-02-29T00:00:00Z",
        "2029-02-28T10:00:00Z",
        ("2029-02-28T00:00:00.000Z", "2029-03-29T00:00:00.000Z"),
    );
    check_period(
        "2028-02-29T00:00:00Z",
        "2032-02-29T10:00:00Z",
        ("2032-02-29T00:00:00.000Z", "2032-03-29T00:00:00.000Z"),
    );
}

#[test]
fn periods_cross_the_year_boundary() {
    let anchor = "2026-12-15T00:00:00Z";
    check_period(anchor, "2027-01-01T00:00:00Z", ("2026-12-15T00:00:00.000Z", "2027-01-15T00:00:00.000Z"));
    check_period(anchor, "2027-01-14T23:59:59Z", ("2026-12-15T00:00:00.000Z", "2027-01-15T00:00:00.000Z"));
    check_period(anchor, "2027-01-15T00:00:00Z", ("2027-01-15T00:00:00.000Z", "2027-02-15T00:00:00.000Z"));
    check_period(anchor, "2027-12-31T00:00:00Z", ("2027-12-15T00:00:00.000Z", "2028-01-15T00:00:00.000Z"));
}

#[test]
fn an_anchor_at_the_last_second_of_a_day_keeps_its_time_of_day() {
    let anchor = "2027-12-31T23:59:59Z";
    check_starts(
        anchor,
        &[
            "2027-12-31T23:59:59.000Z",
            "2028-01-31T23:59:59.000Z",
            "2028-02-29T23:59:59.000Z",
            "2028-03-31T23:59:59.000Z",
        ],
    );
    let end = at("2028-01-31T23:59:59Z");
    let before_end = period_containing(anchor_at(anchor), ms(end.as_millis() - 1));
    assert_eq!(before_end.start, at(anchor));
    assert_eq!(period_containing(anchor_at(anchor), end).start, end);
    // Dec 31 23:59:59 and the next second are in different calendar years but one period.
    check_period(anchor, "2028-01-01T00:00:00Z", ("2027-12-31T23:59:59.000Z", "2028-01-31T23:59:59.000Z"));
}

#[test]
fn a_clock_jump_of_centuries_lands_in_the_right_period_at_once() {
    let anchor = "2027-01-31T12:00:00Z";
    // 2100 is not a leap year, 2400 is.
    check_period(anchor, "2100-03-01T00:00:00Z", ("2100-02-28T12:00:00.000Z", "2100-03-31T12:00:00.000Z"));
    check_period(anchor, "2400-02-29T13:00:00Z", ("2400-02-29T12:00:00.000Z", "2400-03-31T12:00:00.000Z"));
    check_period(anchor, "9999-12-31T12:00:00Z", ("9999-12-31T12:00:00.000Z", "10000-01-31T12:00:00.000Z"));
}

#[test]
fn before_the_anchor_the_first_period_is_returned() {
    let anchor = "2027-03-31T08:00:00Z";
    for now in ["1970-01-01T00:00:00Z", "2027-03-01T00:00:00Z", "2027-03-31T07:59:59Z"] {
        check_period(anchor, now, ("2027-03-31T08:00:00.000Z", "2027-04-30T08:00:00.000Z"));
    }
}

#[test]
fn extreme_instants_never_panic_and_saturate() {
    let latest = BillingAnchor::from_unix_secs(MAX_ANCHOR_SECS as i64).expect("in range");
    for anchor in [BillingAnchor::at(ms(0)), latest] {
        for now in [ms(0), ms(u64::MAX / 2), ms(u64::MAX - 1), ms(u64::MAX)] {
            let period = period_containing(anchor, now);
            assert!(period.start <= period.end, "{anchor:?} {now:?} {period:?}");
        }
    }
    let period = period_containing(BillingAnchor::at(ms(0)), ms(u64::MAX));
    assert!(period.start > ms(u64::MAX - 32 * DAY_MS));
}

// ---- validation ----

/// Parses `json` as a [`QuotaSpec`] and validates it.
fn check_spec(json: &str, expected: Result<(), ErrorCode>) {
    let spec: QuotaSpec = serde_json::from_str(json).expect("parses");
    assert_eq!(spec.validate().map(drop).map_err(|f| f.code), expected, "{json}");
}

/// Parses `json` as a [`QuotaPatch`] and validates it.
fn check_patch(json: &str, expected: Result<(), ErrorCode>) {
    let patch: QuotaPatch = serde_json::from_str(json).expect("parses");
    assert_eq!(patch.validate().map(drop).map_err(|f| f.code), expected, "{json}");
}

#[test]
fn monthly_bytes_must_be_from_one_to_the_largest_exact_json_integer() {
    check_spec(r#"{"monthly_bytes": 1}"#, Ok(()));
    check_spec(r#"{"monthly_bytes": 9007199254740991}"#, Ok(()));
    check_spec(r#"{"monthly_bytes": 0}"#, Err(ErrorCode::QuotaBytesInvalid));
    check_spec(r#"{"monthly_bytes": 9007199254740992}"#, Err(ErrorCode::QuotaBytesInvalid));
    check_spec(r#"{"monthly_bytes": 18446744073709551615}"#, Err(ErrorCode::QuotaBytesInvalid));
    check_patch(r#"{"monthly_bytes": 0}"#, Err(ErrorCode::QuotaBytesInvalid));
    check_patch(r#"{"monthly_bytes": 0, "clear_period_usage": true}"#, Err(ErrorCode::QuotaBytesInvalid));
}

#[test]
fn the_anchor_must_lie_between_1970_and_the_end_of_9999() {
    check_spec(r#"{"monthly_bytes": 1, "billing_anchor": 0}"#, Ok(()));
    check_spec(r#"{"monthly_bytes": 1, "billing_anchor": 253402300799}"#, Ok(()));
    check_spec(r#"{"monthly_bytes": 1, "billing_anchor": -1}"#, Err(ErrorCode::QuotaAnchorInvalid));
    check_spec(r#"{"monthly_bytes": 1, "billing_anchor": 253402300800}"#, Err(ErrorCode::QuotaAnchorInvalid));
    // The cap is checked first.
    check_spec(r#"{"monthly_bytes": 0, "billing_anchor": -1}"#, Err(ErrorCode::QuotaBytesInvalid));
}

#[test]
fn a_patch_that_changes_nothing_is_refused() {
    check_patch("{}", Err(ErrorCode::EmptyQuotaPatch));
    check_patch(r#"{"clear_period_usage": false}"#, Err(ErrorCode::EmptyQuotaPatch));
    check_patch(r#"{"clear_period_usage": true}"#, Ok(()));
    check_patch(r#"{"monthly_bytes": 5, "clear_period_usage": false}"#, Ok(()));
}

#[test]
fn unknown_fields_and_wrong_types_do_not_parse() {
    for json in
        [r#"{"monthly_bytes": 1, "anchor": 0}"#, r#"{"monthly_bytes": -1}"#, r#"{"billing_anchor": 0}"#]
    {
        assert!(serde_json::from_str::<QuotaSpec>(json).is_err(), "{json}");
    }
    assert!(serde_json::from_str::<QuotaPatch>(r#"{"credit": true}"#).is_err());
}

#[test]
fn new_codes_map_to_validation_and_not_found_statuses() {
    for code in [ErrorCode::QuotaBytesInvalid, ErrorCode::QuotaAnchorInvalid, ErrorCode::EmptyQuotaPatch] {
        assert_eq!((code.exit_status(), code.http_status()), (2, 400), "{code}");
    }
    assert_eq!((ErrorCode::QuotaNotFound.exit_status(), ErrorCode::QuotaNotFound.http_status()), (8, 404));
}

// ---- the meter ----

#[test]
fn each_threshold_fires_once_and_the_cap_exhausts() {
    let t0 = "2027-01-31T12:00:00Z";
    let mut meter = quota(1_000, t0);
    let now = at("2027-02-01T00:00:00Z");
    assert!(meter.handle_report(799, now).is_empty());
    assert_eq!(meter.handle_report(1, now).thresholds_crossed, [Threshold::Percent80]);
    assert!(meter.handle_report(100, now).is_empty(), "80 % does not fire twice");
    let decided = meter.handle_report(100, now);
    assert_eq!(decided.thresholds_crossed, [Threshold::Percent100]);
    assert!(decided.became_exhausted);
    assert_eq!((meter.exhausted_at(), meter.remaining_bytes()), (Some(now), 0));
    // In-flight bytes after exhaustion are counted but decide nothing new.
    assert!(meter.handle_report(50, now).is_empty());
    assert_eq!(meter.used_bytes(), 1_050);
}

#[test]
fn one_report_over_the_cap_crosses_both_thresholds_in_order() {
    let mut meter = quota(10, "2027-01-01T00:00:00Z");
    let decided = meter.handle_report(1_000, at("2027-01-02T00:00:00Z"));
    assert_eq!(decided.thresholds_crossed, [Threshold::Percent80, Threshold::Percent100]);
    assert!(decided.became_exhausted && !decided.resumed && decided.rolled_over.is_none());
}

#[test]
fn a_clock_set_back_adds_usage_to_the_current_period_and_never_rolls_back() {
    let mut meter = quota(1_000, "2027-01-31T12:00:00Z");
    let period = meter.period();
    let _ = meter.handle_report(300, at("2027-02-20T00:00:00Z"));
    // Back by a year, before the anchor itself.
    let decided = meter.handle_report(300, at("2026-02-20T00:00:00Z"));
    assert!(decided.is_empty());
    assert_eq!((meter.period(), meter.used_bytes()), (period, 600));
    assert_eq!(meter.last_report_at(), Some(at("2027-02-20T00:00:00Z")));
    // The timer firing with the rewound clock changes nothing either.
    assert!(meter.handle_timeout(at("2026-02-20T00:00:00Z")).is_empty());
    assert_eq!(meter.poll_timeout(), at("2027-02-28T12:00:00Z"));
}

#[test]
fn the_period_end_resets_usage_clears_exhaustion_and_rearms_thresholds() {
    let mut meter = quota(1_000, "2027-01-31T12:00:00Z");
    let _ = meter.handle_report(1_200, at("2027-02-10T00:00:00Z"));
    assert!(meter.is_exhausted());
    let first = meter.period();
    assert!(meter.handle_timeout(ms(meter.poll_timeout().as_millis() - 1)).is_empty());
    let decided = meter.handle_timeout(meter.poll_timeout());
    assert_eq!(decided.rolled_over, Some(ClosedPeriod { period: first, used_bytes: 1_200 }));
    assert!(decided.resumed && !meter.is_exhausted());
    assert_eq!(meter.period().start, first.end);
    assert_eq!(meter.used_bytes(), 0);
    assert_eq!(meter.handle_report(800, meter.period().start).thresholds_crossed, [Threshold::Percent80]);
}

#[test]
fn a_forward_jump_of_years_catches_up_in_one_step() {
    let mut meter = quota(1_000, "2027-01-31T12:00:00Z");
    let _ = meter.handle_report(999, at("2027-02-01T00:00:00Z"));
    let first = meter.period();
    let decided = meter.handle_report(5, at("2031-07-04T00:00:00Z"));
    assert_eq!(decided.rolled_over, Some(ClosedPeriod { period: first, used_bytes: 999 }));
    assert!(decided.thresholds_crossed.is_empty() && !decided.resumed);
    assert_eq!(meter.period().start, at("2031-06-30T12:00:00Z"));
    assert_eq!(meter.period().end, at("2031-07-31T12:00:00Z"));
    assert_eq!(meter.used_bytes(), 5);
}

#[test]
fn a_report_into_a_new_period_can_resume_and_exhaust_at_once() {
    let mut meter = quota(100, "2027-01-01T00:00:00Z");
    let _ = meter.handle_report(100, at("2027-01-02T00:00:00Z"));
    let later = at("2027-02-02T00:00:00Z");
    let decided = meter.handle_report(150, later);
    assert!(decided.rolled_over.is_some() && decided.resumed && decided.became_exhausted);
    assert_eq!(decided.thresholds_crossed, Threshold::ALL);
    assert_eq!(meter.exhausted_at(), Some(later));
}

#[test]
fn lowering_the_cap_below_usage_exhausts_and_raising_it_resumes() {
    let mut meter = quota(1_000, "2027-01-01T00:00:00Z");
    let now = at("2027-01-10T00:00:00Z");
    let _ = meter.handle_report(500, now);
    let lower = QuotaChange { monthly_bytes: Some(cap(400)), clear_period_usage: false };
    let decided = meter.handle_change(lower, now);
    assert_eq!(decided.thresholds_crossed, Threshold::ALL);
    assert!(decided.became_exhausted && meter.is_exhausted());
    // Raised so that usage is 500 / 600 = 83 %: 100 % re-arms, 80 % stays raised.
    let raise = QuotaChange { monthly_bytes: Some(cap(600)), clear_period_usage: false };
    let decided = meter.handle_change(raise, now);
    assert!(decided.resumed && decided.thresholds_crossed.is_empty() && !meter.is_exhausted());
    let decided = meter.handle_report(100, now);
    assert_eq!(decided.thresholds_crossed, [Threshold::Percent100]);
    // Raised well above usage: both re-arm, and crossing 80 % fires again.
    let _ =
        meter.handle_change(QuotaChange { monthly_bytes: Some(cap(10_000)), clear_period_usage: false }, now);
    assert_eq!(meter.handle_report(7_400, now).thresholds_crossed, [Threshold::Percent80]);
}

#[test]
fn a_credit_clears_usage_but_keeps_the_period_boundaries() {
    let mut meter = quota(1_000, "2027-01-31T12:00:00Z");
    let now = at("2027-02-20T00:00:00Z");
    let _ = meter.handle_report(1_000, now);
    let period = meter.period();
    let credit = QuotaChange { monthly_bytes: None, clear_period_usage: true };
    let decided = meter.handle_change(credit, now);
    assert!(decided.resumed && decided.rolled_over.is_none());
    assert_eq!((meter.period(), meter.used_bytes(), meter.exhausted_at()), (period, 0, None));
    assert_eq!(meter.handle_report(800, now).thresholds_crossed, [Threshold::Percent80]);
}

#[test]
fn a_change_after_the_period_end_rolls_over_first() {
    let mut meter = quota(1_000, "2027-01-01T00:00:00Z");
    let _ = meter.handle_report(900, at("2027-01-05T00:00:00Z"));
    let change = QuotaChange { monthly_bytes: Some(cap(2_000)), clear_period_usage: false };
    let decided = meter.handle_change(change, at("2027-02-05T00:00:00Z"));
    assert_eq!(decided.rolled_over.map(|closed| closed.used_bytes), Some(900));
    assert_eq!((meter.used_bytes(), meter.monthly_bytes().get()), (0, 2_000));
}

#[test]
fn replacing_keeps_usage_unless_the_anchor_moves() {
    let mut meter = quota(1_000, "2027-01-01T00:00:00Z");
    let now = at("2027-01-20T00:00:00Z");
    let _ = meter.handle_report(900, now);
    let same = QuotaTerms { monthly_bytes: cap(800), anchor: None };
    assert!(meter.handle_replace(same, now).became_exhausted);
    assert_eq!(meter.used_bytes(), 900);
    let moved = QuotaTerms { monthly_bytes: cap(800), anchor: Some(anchor_at("2027-01-15T00:00:00Z")) };
    let decided = meter.handle_replace(moved, now);
    assert!(decided.resumed);
    assert_eq!((meter.used_bytes(), meter.period().start), (0, at("2027-01-15T00:00:00Z")));
}

#[test]
fn reports_saturate_instead_of_overflowing() {
    let mut meter = quota(MAX_MONTHLY_BYTES, "2027-01-01T00:00:00Z");
    let now = at("2027-01-02T00:00:00Z");
    let _ = meter.handle_report(u64::MAX, now);
    let _ = meter.handle_report(u64::MAX, now);
    assert_eq!(meter.used_bytes(), u64::MAX);
    assert!(meter.is_exhausted());
    let _ = meter.handle_report(1, ms(u64::MAX));
    assert_eq!(meter.used_bytes(), 1);
}

#[test]
fn status_shows_a_period_that_ended_as_the_new_one() {
    let mut meter = quota(1_000, "2027-01-31T12:00:00Z");
    let _ = meter.handle_report(1_000, at("2027-02-01T00:00:00Z"));
    let status = meter.status(at("2027-02-01T00:00:01Z"));
    assert_eq!(
        status,
        QuotaStatus {
            monthly_bytes: 1_000,
            current_period_bytes_used: 1_000,
            period_start: at("2027-01-31T12:00:00Z"),
            period_end: at("2027-02-28T12:00:00Z"),
            exhausted: true,
            exhausted_at: Some(at("2027-02-01T00:00:00Z")),
            last_report_at: Some(at("2027-02-01T00:00:00Z")),
        }
    );
    let status = meter.status(at("2027-03-01T00:00:00Z"));
    assert_eq!((status.current_period_bytes_used, status.exhausted), (0, false));
    assert_eq!(status.period_start, at("2027-02-28T12:00:00Z"));
    assert!(meter.is_exhausted(), "a read changes nothing");
}

#[test]
fn a_stored_quota_round_trips_and_refuses_invalid_values() {
    let mut meter = quota(1_000, "2027-01-31T12:00:00Z");
    let _ = meter.handle_report(900, at("2027-02-01T00:00:00Z"));
    let stored = Quota {
        user: UserId::new("alice"),
        client: ClientId::from_random([7; 10]),
        created_at: at("2027-01-31T12:00:00Z"),
        state: meter,
    };
    let json = serde_json::to_string(&stored).expect("serialises");
    assert_eq!(serde_json::from_str::<Quota>(&json).expect("deserialises"), stored);
    assert!(json.contains(r#""threshold_raised":80"#), "{json}");
    let zero_cap = json.replace(r#""monthly_bytes":1000"#, r#""monthly_bytes":0"#);
    assert!(serde_json::from_str::<Quota>(&zero_cap).is_err());
}

// ---- properties ----

/// A clock step: small moves both ways, and jumps of up to 300 years forward or back.
fn clock_step() -> impl Strategy<Value = i64> {
    prop_oneof![
        4 => -3_600_000i64..86_400_000,
        2 => -40 * DAY_MS as i64..40 * DAY_MS as i64,
        1 => -(300 * 366 * DAY_MS as i64)..(300 * 366 * DAY_MS as i64),
    ]
}

/// An instant from 1970 to about year 2600.
fn instant() -> impl Strategy<Value = u64> {
    0u64..20_000_000_000_000
}

fn step(now: Timestamp, delta: i64) -> Timestamp {
    ms(now.as_millis().saturating_add_signed(delta))
}

/// One input to the meter in a random history.
#[derive(Debug, Clone)]
enum Input {
    Report(u64),
    Timeout,
    Cap(u64),
    Credit,
}

fn input(with_changes: bool) -> impl Strategy<Value = Input> {
    let changes = if with_changes { 1 } else { 0 };
    prop_oneof![
        8 => (0u64..400).prop_map(Input::Report),
        1 => any::<u64>().prop_map(Input::Report),
        2 => Just(Input::Timeout),
        changes => (1u64..2_000).prop_map(Input::Cap),
        changes => Just(Input::Credit),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn periods_are_contiguous_month_long_and_hold_now(anchor_secs in 0..=MAX_ANCHOR_SECS, now in instant()) {
        let anchor = BillingAnchor::at(ms(anchor_secs * 1000));
        let now = ms(now);
        let period = period_containing(anchor, now);
        prop_assert!(period.start < period.end);
        prop_assert!(period.start >= ms(anchor_secs * 1000));
        if now >= ms(anchor_secs * 1000) {
            prop_assert!(period.contains(now), "{:?} does not hold {:?}", period, now);
        } else {
            prop_assert_eq!(period.start, ms(anchor_secs * 1000));
        }
        // Every instant of the period maps to the period, and the next one starts at its end.
        prop_assert_eq!(period_containing(anchor, period.start), period);
        prop_assert_eq!(period_containing(anchor, ms(period.end.as_millis() - 1)), period);
        prop_assert_eq!(period_containing(anchor, period.end).start, period.end);
        let days = (period.end.as_millis() - period.start.as_millis()) / DAY_MS;
        prop_assert!((28..=31).contains(&days), "{} days", days);
    }

    #[test]
    fn boundaries_keep_the_anchors_day_clamped_and_its_time_of_day(
        anchor_secs in 0..=MAX_ANCHOR_SECS,
        now in instant(),
    ) {
        let anchor = BillingAnchor::at(ms(anchor_secs * 1000));
        let start = period_containing(anchor, ms(now)).start;
        // Compare against the independent calendar of `Timestamp::to_rfc3339`.
        let (anchor_text, start_text) = (ms(anchor_secs * 1000).to_rfc3339(), start.to_rfc3339());
        let split = |text: &str| -> (u64, u64, u64, String) {
            let (date, time) = text.split_once('T').expect("has a T");
            let mut parts = date.splitn(3, '-').map(|p| p.parse::<u64>().expect("number"));
            let (y, m, d) = (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap());
            (y, m, d, time.to_owned())
        };
        let (_, _, anchor_day, anchor_time) = split(&anchor_text);
        let (year, month, day, time) = split(&start_text);
        prop_assert_eq!(time, anchor_time);
        prop_assert_eq!(day, anchor_day.min(period::days_in_month(year, month)));
    }

    #[test]
    fn later_instants_never_give_earlier_periods(anchor_secs in 0..=MAX_ANCHOR_SECS, a in instant(), b in instant()) {
        let anchor = BillingAnchor::at(ms(anchor_secs * 1000));
        let (early, late) = (ms(a.min(b)), ms(a.max(b)));
        prop_assert!(period_containing(anchor, early).start <= period_containing(anchor, late).start);
    }

    #[test]
    fn reports_under_a_wandering_clock_keep_every_invariant(
        anchor_secs in 0u64..15_000_000_000,
        monthly_bytes in 1u64..3_000,
        start in instant(),
        history in proptest::collection::vec((clock_step(), input(false)), 1..60),
    ) {
        let anchor = BillingAnchor::at(ms(anchor_secs * 1000));
        let terms = QuotaTerms { monthly_bytes: cap(monthly_bytes), anchor: Some(anchor) };
        let mut now = ms(start);
        let mut meter = QuotaState::new(terms, now);
        let mut latest = now;
        let mut reported_in_period = 0u64;
        let mut fired_in_period: Vec<Threshold> = Vec::new();
        for (delta, input) in history {
            now = step(now, delta);
            latest = latest.max(now);
            let before = meter.clone();
            let decided = match input {
                Input::Report(bytes) => meter.handle_report(bytes, now),
                _ => meter.handle_timeout(now),
            };
            // The period is always the one holding the latest instant seen: it moves only
            // forwards, and a rewind leaves it alone.
            prop_assert_eq!(meter.period(), period_containing(anchor, latest));
            prop_assert!(meter.period().start >= before.period().start);
            prop_assert_eq!(decided.rolled_over.is_some(), meter.period() != before.period());
            if let Some(closed) = decided.rolled_over {
                prop_assert_eq!(closed, ClosedPeriod { period: before.period(), used_bytes: before.used_bytes() });
                reported_in_period = 0;
                fired_in_period.clear();
            } else {
                prop_assert!(meter.used_bytes() >= before.used_bytes(), "usage went down within a period");
            }
            if let Input::Report(bytes) = input {
                reported_in_period = reported_in_period.saturating_add(bytes);
            }
            prop_assert_eq!(meter.used_bytes(), reported_in_period);
            for threshold in &decided.thresholds_crossed {
                prop_assert!(!fired_in_period.contains(threshold), "{:?} fired twice in a period", threshold);
                fired_in_period.push(*threshold);
            }
            prop_assert_eq!(meter.is_exhausted(), meter.used_bytes() >= monthly_bytes);
            prop_assert_eq!(
                fired_in_period.contains(&Threshold::Percent100),
                meter.used_bytes() >= monthly_bytes
            );
        }
    }

    #[test]
    fn operator_changes_keep_exhaustion_and_thresholds_in_line_with_usage(
        monthly_bytes in 1u64..3_000,
        start in instant(),
        history in proptest::collection::vec((clock_step(), input(true)), 1..60),
    ) {
        let mut now = ms(start);
        let mut meter = QuotaState::new(QuotaTerms { monthly_bytes: cap(monthly_bytes), anchor: None }, now);
        for (delta, input) in history {
            now = step(now, delta);
            let before = meter.clone();
            let decided = match input {
                Input::Report(bytes) => meter.handle_report(bytes, now),
                Input::Timeout => meter.handle_timeout(now),
                Input::Cap(bytes) => meter.handle_change(QuotaChange { monthly_bytes: Some(cap(bytes)), clear_period_usage: false }, now),
                Input::Credit => meter.handle_change(QuotaChange { monthly_bytes: None, clear_period_usage: true }, now),
            };
            let cap = meter.monthly_bytes();
            prop_assert_eq!(meter.is_exhausted(), meter.used_bytes() >= cap.get());
            prop_assert!(meter.period().start >= before.period().start);
            if matches!(input, Input::Cap(_)) && decided.rolled_over.is_none() {
                prop_assert_eq!(meter.used_bytes(), before.used_bytes(), "a cap change keeps usage");
            }
            if matches!(input, Input::Credit) {
                prop_assert_eq!((meter.used_bytes(), meter.period().end >= before.period().end), (0, true));
            }
            // A threshold fires only when it is reached and was not already raised.
            for threshold in &decided.thresholds_crossed {
                prop_assert!(threshold.is_reached(meter.used_bytes(), cap));
            }
            prop_assert_eq!(meter.threshold_raised, Threshold::highest_reached(meter.used_bytes(), cap));
            prop_assert_eq!(decided.became_exhausted, meter.is_exhausted() && before.exhausted_at() != meter.exhausted_at());
        }
    }
}
