//! Unit tests of the bounded pool: its bound, what it keeps, and leases lost on error paths.

use std::convert::Infallible;

use super::*;

fn ok(n: u32) -> impl FnOnce() -> Result<u32, Infallible> {
    move || Ok(n)
}

#[test]
fn lends_at_most_the_bound_and_reuses_what_was_given_back() {
    static POOL: Pool<u32> = Pool::new(Limits { max: 2, keep: 2, keep_quiet: 1 });
    let a = POOL.lend(ok(1)).unwrap().expect("first");
    let b = POOL.lend(ok(2)).unwrap().expect("second");
    assert!(POOL.lend(ok(3)).unwrap().is_none(), "a third would pass the bound");
    a.give_back();
    let again = POOL.lend(ok(4)).unwrap().expect("the returned item");
    assert_eq!(*again, 1, "an idle item is reused before a new one is made");
    drop((again, b));
    assert_eq!((POOL.lent(), POOL.idle()), (0, 0), "dropped leases close their items");
}

#[test]
fn once_nothing_is_lent_only_the_quiet_reserve_stays() {
    static POOL: Pool<u32> = Pool::new(Limits { max: 100, keep: 10, keep_quiet: 2 });
    let burst: Vec<_> = (0..50).map(|n| POOL.lend(ok(n)).unwrap().expect("under the bound")).collect();
    let mut peak_idle = 0;
    for lease in burst {
        lease.give_back();
        peak_idle = peak_idle.max(POOL.idle());
    }
    assert!(peak_idle <= 10, "never more than `keep` idle, saw {peak_idle}");
    assert_eq!((POOL.lent(), POOL.idle()), (0, 2), "a quiet pool keeps `keep_quiet`");
}

#[test]
fn a_failed_make_leaves_no_slot_reserved() {
    static POOL: Pool<u32> = Pool::new(Limits { max: 1, keep: 1, keep_quiet: 1 });
    assert_eq!(POOL.lend(|| Err::<u32, _>("no descriptor")).unwrap_err(), "no descriptor");
    assert_eq!(POOL.lent(), 0);
    assert!(POOL.lend(ok(1)).unwrap().is_some(), "the slot is free again");
}

#[test]
fn lend_new_makes_a_fresh_item_and_lend_always_ignores_the_bound() {
    static POOL: Pool<u32> = Pool::new(Limits { max: 1, keep: 1, keep_quiet: 1 });
    POOL.lend(ok(1)).unwrap().expect("first").give_back();
    assert!(POOL.lend_new(ok(2)).unwrap().is_none(), "the idle item counts against the bound");
    let a = POOL.lend_always(|| 3);
    let b = POOL.lend_always(|| 4);
    assert_eq!((*a, *b), (1, 4));
    drop((a, b));
    assert_eq!(POOL.lent(), 0);
}
