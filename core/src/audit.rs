//! The audit trail: one record per mutation and per denial — who, what, on what, with which
//! outcome, when and from where — and the query over it.
//!
//! Invariants: a record never holds a secret (targets are ids and names, never credentials
//! or request bodies); records are append-only and numbered by the store in commit order, so
//! a cursor (the last sequence number seen) pages without gaps or repeats.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::error::{ErrorCode, Failure};
use crate::ids::Timestamp;

/// How an audited request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// It did what it asked.
    Success,
    /// Authentication, authorisation, CSRF, rate limit or bootstrap refused it.
    Denied,
    /// It was allowed but failed (validation, conflict, not found, …).
    Failed,
}

impl Outcome {
    /// `"success"`, `"denied"` or `"failed"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Denied => "denied",
            Outcome::Failed => "failed",
        }
    }

    /// Parses the string form.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "success" => Some(Outcome::Success),
            "denied" => Some(Outcome::Denied),
            "failed" => Some(Outcome::Failed),
            _ => None,
        }
    }

    /// The outcome of a request that ended with `code` (`None` for success).
    pub fn of(code: Option<ErrorCode>) -> Self {
        match code {
            None => Outcome::Success,
            Some(code) if is_denial(code) => Outcome::Denied,
            Some(_) => Outcome::Failed,
        }
    }
}

/// True for the codes that refuse a caller rather than report a failed operation.
pub fn is_denial(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::Unauthenticated
            | ErrorCode::NotOwner
            | ErrorCode::ClientNotGranted
            | ErrorCode::PortOutsideGrant
            | ErrorCode::ProtocolNotGranted
            | ErrorCode::PasswordChangeRequired
            | ErrorCode::CsrfFailed
            | ErrorCode::RateLimited
            | ErrorCode::BootstrapRequired
    )
}

/// One audited request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Position in the trail, assigned by the store at commit (the value given is ignored).
    pub seq: u64,
    /// When.
    pub at: Timestamp,
    /// The principal, or the subject an anonymous attempt named (`anonymous` when none).
    pub actor: String,
    /// What, as a dotted name (`rule.push`, `auth.login`, …).
    pub action: String,
    /// On what: an id or a name, never a secret.
    pub target: Option<String>,
    /// How it ended.
    pub outcome: Outcome,
    /// The error code when it did not succeed.
    pub code: Option<String>,
    /// Remote address of the request; `None` for local commands.
    pub remote: Option<String>,
}

impl AuditRecord {
    /// The record of `action` by `actor` on `target` that ended with `code` (`None` for
    /// success) at `now`.
    pub fn new(
        actor: &str,
        action: &str,
        target: Option<&str>,
        code: Option<ErrorCode>,
        remote: Option<IpAddr>,
        now: Timestamp,
    ) -> Self {
        AuditRecord {
            seq: 0,
            at: now,
            actor: actor.to_owned(),
            action: action.to_owned(),
            target: target.map(str::to_owned),
            outcome: Outcome::of(code),
            code: code.map(|c| c.as_str().to_owned()),
            remote: remote.map(|ip| ip.to_string()),
        }
    }
}

/// Largest page a query may ask for.
pub const MAX_PAGE: usize = 500;
/// Page size when none is asked for.
pub const DEFAULT_PAGE: usize = 100;

/// A validated audit query: records after a cursor, in a time range, with an outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditQuery {
    /// Only records with a larger sequence number.
    pub after: Option<u64>,
    /// Only records at or after this time.
    pub from: Option<Timestamp>,
    /// Only records before this time.
    pub to: Option<Timestamp>,
    /// Only records with this outcome.
    pub outcome: Option<Outcome>,
    /// At most this many records (1..=[`MAX_PAGE`]).
    pub limit: usize,
}

impl AuditQuery {
    /// Validates the raw parameters: an unknown cursor is `validation.invalid_cursor`, a
    /// range that ends before it starts is `validation.invalid_time_range`, a limit outside
    /// 1..=500 is `validation.out_of_range`, an unknown outcome is `invalid_request`.
    pub fn new(
        cursor: Option<&str>,
        from: Option<Timestamp>,
        to: Option<Timestamp>,
        outcome: Option<&str>,
        limit: Option<u64>,
    ) -> Result<Self, Failure> {
        let after = cursor.map(parse_cursor).transpose()?;
        if let (Some(from), Some(to)) = (from, to)
            && to < from
        {
            return Err(Failure::new(ErrorCode::InvalidTimeRange, "`to` is before `from`"));
        }
        let outcome = outcome
            .map(|o| {
                Outcome::parse(o).ok_or_else(|| {
                    Failure::new(ErrorCode::InvalidRequest, "outcome must be success, denied or failed")
                })
            })
            .transpose()?;
        let limit = match limit {
            None => DEFAULT_PAGE,
            Some(n) if (1..=MAX_PAGE as u64).contains(&n) => n as usize,
            Some(_) => {
                return Err(Failure::new(ErrorCode::OutOfRange, format!("limit must be 1..={MAX_PAGE}")));
            }
        };
        Ok(AuditQuery { after, from, to, outcome, limit })
    }

    /// True when `record` belongs to the result (the cursor aside).
    pub fn matches(&self, record: &AuditRecord) -> bool {
        self.from.is_none_or(|from| record.at >= from)
            && self.to.is_none_or(|to| record.at < to)
            && self.outcome.is_none_or(|o| record.outcome == o)
    }
}

/// The opaque cursor after `seq`: 16 hex digits.
pub fn cursor_after(seq: u64) -> String {
    format!("{seq:016x}")
}

/// Size of the audit trail, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AuditStats {
    /// Records kept.
    pub rows: u64,
    /// Bytes the records take in the store (keys and values, without index overhead).
    pub bytes: u64,
}

/// What one prune removes: the oldest records, through `through_seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrunePlan {
    /// The last record removed; every record before it goes too.
    pub through_seq: u64,
    /// How many records that is.
    pub rows: u64,
    /// More records older than the cut-off remain (the batch limit stopped it).
    pub more: bool,
}

/// Most records one prune transaction removes, so the writer is never held for long.
pub const PRUNE_BATCH: u64 = 10_000;

/// The prune of the records in `oldest_first` (sequence number, time) written before `before`,
/// at most `limit` of them. The newest record always stays, so numbering continues from it.
/// Pure: the stores feed it their oldest records, in order, and stop when it has decided.
pub fn plan_prune(
    oldest_first: impl IntoIterator<Item = (u64, Timestamp)>,
    newest_seq: u64,
    before: Timestamp,
    limit: u64,
) -> Option<PrunePlan> {
    let mut plan: Option<PrunePlan> = None;
    for (seq, at) in oldest_first {
        if seq >= newest_seq || at >= before {
            break;
        }
        if plan.is_some_and(|p| p.rows >= limit) {
            return plan.map(|p| PrunePlan { more: true, ..p });
        }
        let rows = plan.map_or(0, |p| p.rows) + 1;
        plan = Some(PrunePlan { through_seq: seq, rows, more: false });
    }
    plan
}

/// Per-source budget for the audit records of unauthenticated requests (no credential, or
/// one that names nobody), so that a flood of bad tokens can neither grow the trail without
/// bound nor force a store write per request. Each source (an IPv4 address, or an IPv6 /64)
/// may leave `burst` records at once and `per_minute` more each minute; what exceeds it is
/// counted, not recorded. Sources beyond `max_sources` share one budget.
///
/// Sans-io: time comes in as `now`.
#[derive(Debug)]
pub struct AnonymousBudget {
    burst: u32,
    per_minute: u32,
    max_sources: usize,
    sources: std::collections::HashMap<Option<IpAddr>, Bucket>,
    dropped: u64,
}

/// One source's remaining records, in thousandths, as of `at`.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    milli: u64,
    at: Timestamp,
}

impl AnonymousBudget {
    /// A budget of `burst` records at once and `per_minute` after, per source.
    pub fn new(burst: u32, per_minute: u32, max_sources: usize) -> Self {
        AnonymousBudget {
            burst: burst.max(1),
            per_minute,
            max_sources: max_sources.max(1),
            sources: std::collections::HashMap::new(),
            dropped: 0,
        }
    }

    /// Whether an unauthenticated request from `remote` at `now` may leave an audit record.
    /// A refusal is counted in [`AnonymousBudget::dropped`].
    pub fn admit(&mut self, remote: Option<IpAddr>, now: Timestamp) -> bool {
        let full = u64::from(self.burst) * 1000;
        let refill = |bucket: Bucket, per_minute: u32| -> u64 {
            let earned = u128::from(per_minute) * bucket_age_ms(bucket.at, now) / 60;
            (u128::from(bucket.milli) + earned).min(u128::from(full)) as u64
        };
        let mut key = remote.map(source_of);
        if !self.sources.contains_key(&key) && self.sources.len() >= self.max_sources {
            // Forget the sources whose budget is whole again; if none is, share one budget.
            let per_minute = self.per_minute;
            self.sources.retain(|k, b| k.is_none() || refill(*b, per_minute) < full);
            if self.sources.len() >= self.max_sources {
                key = None;
            }
        }
        let bucket = self.sources.entry(key).or_insert(Bucket { milli: full, at: now });
        let milli = refill(*bucket, self.per_minute);
        *bucket = Bucket { milli, at: now.max(bucket.at) };
        if milli >= 1000 {
            bucket.milli = milli - 1000;
            true
        } else {
            self.dropped = self.dropped.saturating_add(1);
            false
        }
    }

    /// Records refused so far.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

/// Milliseconds from `then` to `now` (0 if the clock went back).
fn bucket_age_ms(then: Timestamp, now: Timestamp) -> u128 {
    now.since(then).as_millis()
}

/// The budget key of an address: IPv4 as is, IPv6 by its /64 (one host's usual share).
fn source_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            let mut octets = v6.octets();
            octets[8..].fill(0);
            IpAddr::V6(std::net::Ipv6Addr::from(octets))
        }
    }
}

fn parse_cursor(text: &str) -> Result<u64, Failure> {
    let bad = || Failure::new(ErrorCode::InvalidCursor, "the cursor is not one this server handed out");
    if text.len() != 16 || !text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return Err(bad());
    }
    u64::from_str_radix(text, 16).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at_ms(ms: u64) -> Timestamp {
        Timestamp::from_millis(ms)
    }

    #[test]
    fn a_source_gets_its_burst_then_its_rate_and_others_are_unaffected() {
        let mut budget = AnonymousBudget::new(3, 60, 16);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let t0 = 1_000_000;
        let kept = (0..10).filter(|_| budget.admit(Some(a), at_ms(t0))).count();
        assert_eq!(kept, 3, "the burst, then nothing in the same instant");
        assert_eq!(budget.dropped(), 7);
        assert!(budget.admit(Some(b), at_ms(t0)), "another source has its own budget");
        // 60 per minute: one more each second.
        assert!(!budget.admit(Some(a), at_ms(t0 + 999)), "999 ms earn 0.999 of a record");
        assert!(budget.admit(Some(a), at_ms(t0 + 1_000)), "and the fraction is kept: 1 s earns one");
        assert!(!budget.admit(Some(a), at_ms(t0 + 1_000)));
        assert!(budget.admit(Some(a), at_ms(t0 + 2_000)));
        // A long quiet spell refills only up to the burst.
        let later = t0 + 3_600_000;
        assert_eq!((0..10).filter(|_| budget.admit(Some(a), at_ms(later))).count(), 3);
    }

    #[test]
    fn ipv6_sources_share_a_64_and_a_flood_of_sources_shares_one_budget() {
        let mut budget = AnonymousBudget::new(2, 0, 4);
        let one: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let same_64: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        assert!(budget.admit(Some(one), at_ms(0)));
        assert!(budget.admit(Some(same_64), at_ms(0)));
        assert!(!budget.admit(Some(one), at_ms(0)), "one /64, one budget");
        // Many distinct addresses: past the cap they all draw on one shared budget, so the
        // number of records stays bounded whatever the number of sources.
        let kept = (0..1000u32)
            .filter(|n| budget.admit(Some(IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + n))), at_ms(0)))
            .count();
        assert!(kept <= 4 * 2, "at most max_sources budgets were ever spent: {kept}");
        assert!(budget.sources.len() <= 4 + 1, "the sources kept, plus the shared budget");
    }

    #[test]
    fn a_prune_takes_the_oldest_before_the_cut_off_in_batches_and_keeps_the_newest() {
        let rows: Vec<(u64, Timestamp)> = (1..=10).map(|n| (n, at_ms(n * 1000))).collect();
        let plan = plan_prune(rows.clone(), 10, at_ms(5_500), 100).unwrap();
        assert_eq!(plan, PrunePlan { through_seq: 5, rows: 5, more: false });
        let plan = plan_prune(rows.clone(), 10, at_ms(5_500), 2).unwrap();
        assert_eq!(plan, PrunePlan { through_seq: 2, rows: 2, more: true });
        let everything = plan_prune(rows.clone(), 10, at_ms(u64::MAX / 2), 100).unwrap();
        assert_eq!(everything, PrunePlan { through_seq: 9, rows: 9, more: false }, "the newest stays");
        assert_eq!(plan_prune(rows, 10, at_ms(500), 100), None, "nothing that old");
        assert_eq!(plan_prune(Vec::new(), 0, at_ms(500), 100), None);
    }

    #[test]
    fn outcomes_follow_the_code_families() {
        assert_eq!(Outcome::of(None), Outcome::Success);
        assert_eq!(Outcome::of(Some(ErrorCode::PortOutsideGrant)), Outcome::Denied);
        assert_eq!(Outcome::of(Some(ErrorCode::RateLimited)), Outcome::Denied);
        assert_eq!(Outcome::of(Some(ErrorCode::PortInUse)), Outcome::Failed);
    }

    #[test]
    fn queries_are_validated() {
        let t = Timestamp::from_millis;
        assert_eq!(
            AuditQuery::new(Some("zz"), None, None, None, None).unwrap_err().code,
            ErrorCode::InvalidCursor
        );
        assert_eq!(
            AuditQuery::new(None, Some(t(2)), Some(t(1)), None, None).unwrap_err().code,
            ErrorCode::InvalidTimeRange
        );
        assert_eq!(
            AuditQuery::new(None, None, None, Some("x"), None).unwrap_err().code,
            ErrorCode::InvalidRequest
        );
        assert_eq!(AuditQuery::new(None, None, None, None, Some(0)).unwrap_err().code, ErrorCode::OutOfRange);
        let q = AuditQuery::new(Some(&cursor_after(41)), Some(t(1)), Some(t(3)), Some("denied"), Some(5))
            .unwrap();
        assert_eq!((q.after, q.limit), (Some(41), 5));
        let mut r = AuditRecord::new("alice", "rule.push", None, Some(ErrorCode::NotOwner), None, t(2));
        assert!(q.matches(&r));
        r.at = t(3);
        assert!(!q.matches(&r), "`to` is exclusive");
    }
}
