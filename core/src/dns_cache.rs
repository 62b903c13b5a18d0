//! The DNS cache policy for DNS-name targets: answers live for their TTL clamped to
//! [5 s, 5 min]; after a failed refresh an expired answer is served for up to 30 s more; the
//! cache is bounded and, when full, evicts the entries closest to expiry.
//!
//! Invariants: `len() <= capacity` after every call; an answer older than its expiry plus the
//! stale grace is never served; time is passed in, never read. Sharing one query between
//! concurrent lookups of a name is the adapter's job (it owns the futures). `now` is any
//! monotonic time as a `Duration` since an origin the caller fixes (e.g. its start).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

/// Shortest time an answer is kept, whatever its TTL.
pub const MIN_TTL: Duration = Duration::from_secs(5);
/// Longest time an answer is kept, whatever its TTL.
pub const MAX_TTL: Duration = Duration::from_secs(300);
/// How long an expired answer may still be served when its refresh failed.
pub const STALE_GRACE: Duration = Duration::from_secs(30);
/// Default bound on cached names.
pub const DEFAULT_CAPACITY: usize = 4096;

/// Which address family a lookup asks for first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Preference {
    /// A records first.
    Ipv4First,
    /// AAAA records first.
    Ipv6First,
}

#[derive(Debug, Clone)]
struct Entry {
    addrs: Vec<IpAddr>,
    expires_at: Duration,
}

/// What the cache says about a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// A fresh answer.
    Fresh(Vec<IpAddr>),
    /// Resolve now. `stale` is an expired answer still inside the grace period, to use if the
    /// resolution fails.
    Resolve {
        /// The fallback answer, if any.
        stale: Option<Vec<IpAddr>>,
    },
}

/// The cache.
#[derive(Debug)]
pub struct DnsCache {
    capacity: usize,
    entries: HashMap<(String, Preference), Entry>,
}

impl Default for DnsCache {
    fn default() -> Self {
        DnsCache::with_capacity(DEFAULT_CAPACITY)
    }
}

impl DnsCache {
    /// A cache holding at most `capacity` (at least 1) names.
    pub fn with_capacity(capacity: usize) -> Self {
        DnsCache { capacity: capacity.max(1), entries: HashMap::new() }
    }

    /// Looks `name` up at `now`.
    pub fn lookup(&mut self, name: &str, pref: Preference, now: Duration) -> Lookup {
        let key = (name.to_owned(), pref);
        match self.entries.get(&key) {
            Some(entry) if now < entry.expires_at => Lookup::Fresh(entry.addrs.clone()),
            Some(entry) if now < entry.expires_at + STALE_GRACE => {
                Lookup::Resolve { stale: Some(entry.addrs.clone()) }
            }
            Some(_) => {
                self.entries.remove(&key);
                Lookup::Resolve { stale: None }
            }
            None => Lookup::Resolve { stale: None },
        }
    }

    /// Stores a successful answer with its `ttl` (clamped). An empty answer is not cached.
    pub fn handle_answer(
        &mut self,
        name: &str,
        pref: Preference,
        addrs: Vec<IpAddr>,
        ttl: Duration,
        now: Duration,
    ) {
        if addrs.is_empty() {
            return;
        }
        let key = (name.to_owned(), pref);
        let expires_at = now + ttl.clamp(MIN_TTL, MAX_TTL);
        if !self.entries.contains_key(&key) && self.entries.len() >= self.capacity {
            self.make_room(now);
        }
        self.entries.insert(key, Entry { addrs, expires_at });
    }

    /// Drops entries past their stale grace; if none were, the one closest to expiry.
    fn make_room(&mut self, now: Duration) {
        let before = self.entries.len();
        self.entries.retain(|_, e| now < e.expires_at + STALE_GRACE);
        if self.entries.len() < before {
            return;
        }
        if let Some(key) = self.entries.iter().min_by_key(|(_, e)| e.expires_at).map(|(k, _)| k.clone()) {
            self.entries.remove(&key);
        }
    }

    /// Cached names.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, n])
    }

    #[test]
    fn ttl_is_clamped_and_stale_answers_are_served_for_thirty_seconds() {
        let t0 = Duration::from_secs(1_000);
        let mut cache = DnsCache::default();
        cache.handle_answer("a.test", Preference::Ipv4First, vec![ip(1)], Duration::from_secs(1), t0);
        // A 1 s TTL lives 5 s.
        assert_eq!(
            cache.lookup("a.test", Preference::Ipv4First, t0 + Duration::from_secs(4)),
            Lookup::Fresh(vec![ip(1)])
        );
        let after = t0 + Duration::from_secs(5);
        assert_eq!(
            cache.lookup("a.test", Preference::Ipv4First, after),
            Lookup::Resolve { stale: Some(vec![ip(1)]) }
        );
        let late = t0 + Duration::from_secs(35);
        assert_eq!(cache.lookup("a.test", Preference::Ipv4First, late), Lookup::Resolve { stale: None });
        // A day-long TTL lives 5 minutes.
        cache.handle_answer("b.test", Preference::Ipv4First, vec![ip(2)], Duration::from_secs(86_400), t0);
        assert!(matches!(
            cache.lookup("b.test", Preference::Ipv4First, t0 + MAX_TTL),
            Lookup::Resolve { .. }
        ));
    }

    #[test]
    fn a_refresh_replaces_the_answer() {
        let t0 = Duration::from_secs(1_000);
        let mut cache = DnsCache::default();
        cache.handle_answer("a.test", Preference::Ipv4First, vec![ip(1)], MIN_TTL, t0);
        let t1 = t0 + MIN_TTL;
        cache.handle_answer("a.test", Preference::Ipv4First, vec![ip(9)], MIN_TTL, t1);
        assert_eq!(cache.lookup("a.test", Preference::Ipv4First, t1), Lookup::Fresh(vec![ip(9)]));
        assert_eq!(cache.lookup("a.test", Preference::Ipv6First, t1), Lookup::Resolve { stale: None });
    }

    #[test]
    fn a_full_cache_evicts_the_entry_closest_to_expiry() {
        let t0 = Duration::from_secs(1_000);
        let mut cache = DnsCache::with_capacity(3);
        for (n, ttl) in [(1u8, 60u64), (2, 10), (3, 120)] {
            cache.handle_answer(
                &format!("n{n}.test"),
                Preference::Ipv4First,
                vec![ip(n)],
                Duration::from_secs(ttl),
                t0,
            );
        }
        cache.handle_answer("n4.test", Preference::Ipv4First, vec![ip(4)], Duration::from_secs(60), t0);
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.lookup("n2.test", Preference::Ipv4First, t0), Lookup::Resolve { stale: None });
        assert_eq!(cache.lookup("n3.test", Preference::Ipv4First, t0), Lookup::Fresh(vec![ip(3)]));
    }

    proptest! {
        #[test]
        fn the_bound_holds_and_nothing_older_than_the_grace_is_served(
            steps in proptest::collection::vec((0u16..200, 0u64..400, 0u64..40), 1..300),
            capacity in 1usize..50,
        ) {
            let t0 = Duration::from_secs(1_000);
            let mut cache = DnsCache::with_capacity(capacity);
            let mut now = t0;
            let mut answered: HashMap<String, Duration> = HashMap::new();
            for (name, ttl, advance) in steps {
                now += Duration::from_secs(advance);
                let name = format!("h{name}.test");
                match cache.lookup(&name, Preference::Ipv4First, now) {
                    Lookup::Fresh(_) | Lookup::Resolve { stale: Some(_) } => {
                        let at = answered[&name];
                        prop_assert!(now < at + MAX_TTL + STALE_GRACE);
                    }
                    Lookup::Resolve { stale: None } => {}
                }
                cache.handle_answer(&name, Preference::Ipv4First, vec![ip(1)], Duration::from_secs(ttl), now);
                answered.insert(name, now);
                prop_assert!(cache.len() <= capacity);
            }
        }
    }
}
