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
