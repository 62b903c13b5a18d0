//! SNI patterns and the per-listener route table that picks a target from a server name.
//!
//! Invariants: a table holds at most one route per pattern and at most one fallback; a lookup
//! costs two hash probes whatever the number of routes (exact names in one map, wildcard
//! suffixes in another), never a scan.

use std::collections::HashMap;
use std::fmt;

use super::name::{HostName, MAX_HOST_NAME_LEN};
use crate::{ErrorCode, Failure};

/// Longest pattern text quoted back in an error message.
const QUOTE_LIMIT: usize = 80;

/// Which server names a route takes: one exact host, or every host one label below a suffix.
///
/// ```
/// use portunus_core::sni::SniPattern;
///
/// let exact = SniPattern::parse("API.example.com").unwrap();
/// assert_eq!(exact.to_string(), "api.example.com");
/// let wildcard = SniPattern::parse("*.example.com").unwrap();
/// assert_eq!(wildcard.to_string(), "*.example.com");
/// for bad in ["*.com", "*", "a.*.example.com", "*example.com", "**.example.com", "api.example.com."] {
///     assert!(SniPattern::parse(bad).is_err(), "{bad}");
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum SniPattern {
    /// Exactly this host.
    Exact(HostName),
    /// `*.suffix`: any host whose left-most label is followed by exactly `suffix` (which has
    /// at least two labels). `*.example.com` takes `api.example.com`, not `example.com` nor
    /// `a.b.example.com`.
    Wildcard(HostName),
}

impl SniPattern {
    /// Parses an exact host name or `*.` followed by a suffix of at least two labels, and
    /// lowercases it. Anything else is [`RouteError::InvalidPattern`].
    pub fn parse(text: &str) -> Result<SniPattern, RouteError> {
        let invalid = |why: &'static str| RouteError::InvalidPattern { pattern: quote(text), why };
        if let Some(suffix) = text.strip_prefix("*.") {
            let suffix = HostName::parse(suffix)
                .ok_or_else(|| invalid("the part after `*.` is not a valid host name"))?;
            if suffix.parent().is_none() {
                return Err(invalid("a wildcard needs a suffix of at least two labels"));
            }
            // The names it covers (a label, a dot, the suffix) must fit a host name too.
            if suffix.as_str().len() + 2 > MAX_HOST_NAME_LEN {
                return Err(invalid("the suffix leaves no room for a label"));
            }
            return Ok(SniPattern::Wildcard(suffix));
        }
        if text.contains('*') {
            return Err(invalid("`*` may only be a whole left-most label, as in `*.example.com`"));
        }
        HostName::parse(text).map(SniPattern::Exact).ok_or_else(|| {
            invalid("not a host name (labels of a-z, 0-9 and `-`, no trailing dot, not an IP address)")
        })
    }

    /// Whether `name` is covered by this pattern.
    pub fn matches(&self, name: &HostName) -> bool {
        match self {
            SniPattern::Exact(host) => host == name,
            SniPattern::Wildcard(suffix) => name.parent() == Some(suffix.as_str()),
        }
    }
}

impl fmt::Display for SniPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SniPattern::Exact(host) => write!(f, "{host}"),
            SniPattern::Wildcard(suffix) => write!(f, "*.{suffix}"),
        }
    }
}

impl TryFrom<String> for SniPattern {
    type Error = RouteError;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        SniPattern::parse(&text)
    }
}

impl From<SniPattern> for String {
    fn from(pattern: SniPattern) -> Self {
        pattern.to_string()
    }
}

impl std::str::FromStr for SniPattern {
    type Err = RouteError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        SniPattern::parse(text)
    }
}

/// `text` cut to a length fit for an error message.
fn quote(text: &str) -> String {
    match text.char_indices().nth(QUOTE_LIMIT) {
        Some((cut, _)) => format!("{}…", text.get(..cut).unwrap_or_default()),
        None => text.to_owned(),
    }
}

/// Why a pattern or a route was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// The text is not a valid pattern.
    #[error("SNI pattern {pattern:?} is invalid: {why}")]
    InvalidPattern {
        /// The text given (cut to a readable length).
        pattern: String,
        /// Which rule it breaks.
        why: &'static str,
    },
    /// Another route on the listener has the same pattern.
    #[error("another route on this listener already has SNI pattern {pattern}")]
    PatternTaken {
        /// The pattern.
        pattern: SniPattern,
    },
    /// The listener already has a route without a pattern.
    #[error("this listener already has a fallback route (one without an SNI pattern)")]
    FallbackTaken,
}

impl RouteError {
    /// The stable code for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            RouteError::InvalidPattern { .. } => ErrorCode::InvalidSniPattern,
            RouteError::PatternTaken { .. } => ErrorCode::SniPatternTaken,
            RouteError::FallbackTaken => ErrorCode::SniFallbackTaken,
        }
    }
}

impl From<RouteError> for Failure {
    fn from(err: RouteError) -> Self {
        Failure::new(err.code(), err.to_string())
    }
}

/// How a lookup found its route, for the route counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MatchKind {
    /// A route for exactly this name.
    Exact,
    /// A `*.suffix` route.
    Wildcard,
    /// The route without a pattern: no name, an invalid one, or no pattern matched.
    Fallback,
}

impl MatchKind {
    /// The stable snake_case name (`exact`, `wildcard`, `fallback`).
    pub const fn as_str(self) -> &'static str {
        match self {
            MatchKind::Exact => "exact",
            MatchKind::Wildcard => "wildcard",
            MatchKind::Fallback => "fallback",
        }
    }
}

/// The routes of one listener, keyed by SNI pattern, with at most one fallback.
///
/// Lookup order: the exact name, then the wildcard for its parent (a wildcard covers one
/// label, so at most one can match and it is also the longest), then the fallback. Generic
/// over what a route leads to.
///
/// ```
/// use portunus_core::sni::{HostName, MatchKind, SniPattern, SniRoutes};
///
/// let mut routes = SniRoutes::default();
/// routes.insert(Some(SniPattern::parse("api.example.com")?), "api")?;
/// routes.insert(Some(SniPattern::parse("*.example.com")?), "any")?;
/// routes.insert(None, "fallback")?;
/// let name = |s| HostName::parse(s);
/// assert_eq!(routes.lookup(name("api.example.com").as_ref()), Some((&"api", MatchKind::Exact)));
/// assert_eq!(routes.lookup(name("www.example.com").as_ref()), Some((&"any", MatchKind::Wildcard)));
/// assert_eq!(routes.lookup(name("a.b.example.com").as_ref()), Some((&"fallback", MatchKind::Fallback)));
/// assert_eq!(routes.lookup(None), Some((&"fallback", MatchKind::Fallback)));
/// # Ok::<(), portunus_core::sni::RouteError>(())
/// ```
#[derive(Debug, Clone)]
pub struct SniRoutes<T> {
    /// Exact routes by host name.
    exact: HashMap<String, T>,
    /// Wildcard routes by suffix (the text after `*.`).
    wildcard: HashMap<String, T>,
    /// The route without a pattern.
    fallback: Option<T>,
}

impl<T> Default for SniRoutes<T> {
    fn default() -> Self {
        SniRoutes { exact: HashMap::new(), wildcard: HashMap::new(), fallback: None }
    }
}

impl<T> SniRoutes<T> {
    /// Adds a route for `pattern` (`None`: the fallback). Refuses a pattern already present
    /// ([`RouteError::PatternTaken`]) and a second fallback ([`RouteError::FallbackTaken`]),
    /// leaving the table unchanged.
    pub fn insert(&mut self, pattern: Option<SniPattern>, route: T) -> Result<(), RouteError> {
        match pattern {
            None if self.fallback.is_some() => Err(RouteError::FallbackTaken),
            None => {
                self.fallback = Some(route);
                Ok(())
            }
            Some(pattern) => {
                let (map, key) = match &pattern {
                    SniPattern::Exact(host) => (&mut self.exact, host.as_str()),
                    SniPattern::Wildcard(suffix) => (&mut self.wildcard, suffix.as_str()),
                };
                if map.contains_key(key) {
                    return Err(RouteError::PatternTaken { pattern });
                }
                map.insert(key.to_owned(), route);
                Ok(())
            }
        }
    }

    /// Removes and returns the route for `pattern` (`None`: the fallback); `None` if there
    /// was none. Other routes are untouched.
    pub fn remove(&mut self, pattern: Option<&SniPattern>) -> Option<T> {
        match pattern {
            None => self.fallback.take(),
            Some(SniPattern::Exact(host)) => self.exact.remove(host.as_str()),
            Some(SniPattern::Wildcard(suffix)) => self.wildcard.remove(suffix.as_str()),
        }
    }

    /// The route for a hello's server name (`None`: the hello had no valid name), and how it
    /// matched; `None` when nothing matches and there is no fallback (close the connection).
    pub fn lookup(&self, name: Option<&HostName>) -> Option<(&T, MatchKind)> {
        if let Some(name) = name {
            if let Some(route) = self.exact.get(name.as_str()) {
                return Some((route, MatchKind::Exact));
            }
            if let Some(route) = name.parent().and_then(|parent| self.wildcard.get(parent)) {
                return Some((route, MatchKind::Wildcard));
            }
        }
        self.fallback.as_ref().map(|route| (route, MatchKind::Fallback))
    }

    /// How many routes the table holds, the fallback included.
    pub fn len(&self) -> usize {
        self.exact.len() + self.wildcard.len() + usize::from(self.fallback.is_some())
    }

    /// Whether the table holds no route at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests;
