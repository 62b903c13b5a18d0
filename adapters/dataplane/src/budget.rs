//! A traffic quota's budget as the relays see it: the bytes a (user, client) pair may still
//! forward, shared by every connection of the pair's rules and debited as bytes land, so a
//! pair that runs out stops within one delivered chunk per live connection.
//!
//! The control loop owns the budget (one per pair) and sets it from each `TrafficQuotaUpdate`;
//! a new connection of a rule whose budget is spent is closed at once.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Bytes a pair may still forward.
#[derive(Debug, Default)]
pub struct QuotaBudget {
    remaining: AtomicU64,
}

impl QuotaBudget {
    /// A budget of `remaining` bytes.
    pub fn new(remaining: u64) -> Self {
        QuotaBudget { remaining: AtomicU64::new(remaining) }
    }

    /// Replaces what is left (a new cap, a credit, a new period, or 0 when exhausted).
    pub fn set(&self, remaining: u64) {
        self.remaining.store(remaining, Relaxed);
    }

    /// What is left.
    pub fn remaining(&self) -> u64 {
        self.remaining.load(Relaxed)
    }

    /// Debits `n` delivered bytes; false once nothing is left (the connection must stop).
    pub fn debit(&self, n: u64) -> bool {
        let before = self.remaining.fetch_update(Relaxed, Relaxed, |left| Some(left.saturating_sub(n)));
        before.unwrap_or(0) > n
    }
}

#[cfg(test)]
mod tests {
    use super::QuotaBudget;

    #[test]
    fn a_budget_stops_the_chunk_that_spends_it_and_every_later_one() {
        let budget = QuotaBudget::new(100);
        assert!(budget.debit(60));
        assert!(!budget.debit(60), "the chunk that spends it stops the connection");
        assert_eq!(budget.remaining(), 0);
        assert!(!budget.debit(1));
        budget.set(10);
        assert!(budget.debit(9));
        assert!(!budget.debit(1));
    }
}
