//! Identifier newtypes. Ids never cross a port as bare integers or strings.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A rule's id: an integer taken from the store's sequence, never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RuleId(u64);

impl RuleId {
    /// Wraps a raw id (from the store sequence or the wire).
    pub const fn new(raw: u64) -> Self {
        RuleId(raw)
    }
    /// The raw integer, for keys and wire messages.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for RuleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A client's stable opaque id: `cl_` followed by 20 lowercase hex digits.
///
/// Unlike the client's name, the id never changes, so references survive renames.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ClientId(String);

/// The prefix of every client id; client names may not start with it.
pub const CLIENT_ID_PREFIX: &str = "cl_";

impl ClientId {
    /// Builds an id from 10 random bytes.
    pub fn from_random(bytes: [u8; 10]) -> Self {
        ClientId(format!("{CLIENT_ID_PREFIX}{}", crate::secret::hex(&bytes)))
    }
    /// Parses an id; `None` unless it has the id shape.
    pub fn parse(s: &str) -> Option<Self> {
        let rest = s.strip_prefix(CLIENT_ID_PREFIX)?;
        (rest.len() == 20 && rest.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
            .then(|| ClientId(s.to_owned()))
    }
    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ClientId {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        ClientId::parse(&s).ok_or_else(|| format!("not a client id: {s:?}"))
    }
}

impl From<ClientId> for String {
    fn from(id: ClientId) -> String {
        id.0
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A principal's id: a user, or a built-in principal such as `_operator`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UserId(String);

impl UserId {
    /// The built-in principal behind the server host's operator token.
    pub const OPERATOR: &'static str = "_operator";

    /// The `_operator` principal.
    pub fn operator() -> Self {
        UserId(Self::OPERATOR.to_owned())
    }
    /// Wraps a user id that was already validated (or read back from the store).
    pub fn new(raw: impl Into<String>) -> Self {
        UserId(raw.into())
    }
    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A client name: 1..=63 of `[a-z0-9._-]`, starting with a letter or digit, never shaped
/// like a client id, so an API path segment is unambiguously one or the other.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ClientName(String);

impl ClientName {
    /// Validates a name.
    pub fn parse(s: &str) -> Result<Self, crate::Failure> {
        let bad = |why: &str| {
            Err(crate::Failure::new(crate::ErrorCode::InvalidName, format!("client name {s:?} {why}")))
        };
        if s.is_empty() || s.len() > 63 {
            return bad("must be 1 to 63 characters long");
        }
        if !s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b)) {
            return bad("may contain only a-z, 0-9, '.', '_' and '-'");
        }
        if !s.as_bytes()[0].is_ascii_alphanumeric() {
            return bad("must start with a letter or a digit");
        }
        if s.starts_with(CLIENT_ID_PREFIX) {
            return bad("must not start with \"cl_\" (reserved for client ids)");
        }
        Ok(ClientName(s.to_owned()))
    }
    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ClientName {
    type Error = crate::Failure;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        ClientName::parse(&s)
    }
}

impl From<ClientName> for String {
    fn from(n: ClientName) -> String {
        n.0
    }
}

impl fmt::Display for ClientName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Wall-clock time as milliseconds since the Unix epoch. Core never reads the clock:
/// callers pass `now` in (see [`crate::ports::Clock`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(u64);

impl Timestamp {
    /// From milliseconds since the epoch.
    pub const fn from_millis(ms: u64) -> Self {
        Timestamp(ms)
    }
    /// Milliseconds since the epoch.
    pub const fn as_millis(self) -> u64 {
        self.0
    }
    /// `self + d`, saturating.
    pub fn plus(self, d: std::time::Duration) -> Self {
        Timestamp(self.0.saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)))
    }
    /// Time from `earlier` to `self`, zero if `earlier` is later.
    pub fn since(self, earlier: Timestamp) -> std::time::Duration {
        std::time::Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}
