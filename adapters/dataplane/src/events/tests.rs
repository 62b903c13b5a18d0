//! Unit tests of the event rate limit and once-flag.

use super::*;

#[test]
fn rate_limit_allows_the_first_event_then_holds_for_the_period() {
    let limit = RateLimit::new(Duration::from_secs(3600));
    assert!(limit.allow());
    assert!(!limit.allow());
}

#[test]
fn once_is_true_exactly_once() {
    let once = Once::default();
    assert!(once.first());
    assert!(!once.first());
}
