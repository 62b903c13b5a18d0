//! [`HostName`]: a DNS host name in the one form SNI routing compares, lowercase ASCII.
//!
//! Invariant: a `HostName` always holds 1 to 253 bytes of labels separated by single dots,
//! each label 1 to 63 bytes of `[a-z0-9-]` that neither starts nor ends with `-`, no trailing
//! dot, and a last label that is not all digits (so an IPv4 literal is never a host name).
//! Every constructor checks it; nothing mutates a value afterwards.

use std::fmt;

/// Longest host name in bytes, without a trailing dot (RFC 1035's 255 on the wire).
pub const MAX_HOST_NAME_LEN: usize = 253;

/// Longest label in bytes.
pub const MAX_LABEL_LEN: usize = 63;

/// A valid, lowercase DNS host name (see the module invariant).
///
/// ```
/// use portunus_core::sni::HostName;
///
/// let name = HostName::parse("API.Example.com").unwrap();
/// assert_eq!(name.as_str(), "api.example.com");
/// assert!(HostName::parse("bücher.example").is_none()); // a U-label: send the xn-- form
/// assert!(HostName::parse("xn--bcher-kva.example").is_some());
/// assert!(HostName::parse("127.0.0.1").is_none());
/// assert!(HostName::parse("api.example.com.").is_none()); // only SNI drops a trailing dot
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostName(String);

impl HostName {
    /// Checks and lowercases `text`; `None` when it breaks any rule of the module invariant.
    /// A trailing dot is refused here (configuration is written without one).
    pub fn parse(text: &str) -> Option<HostName> {
        normalise(text.as_bytes())
    }

    /// The name a TLS client sent in its `server_name` extension, normalised: one trailing
    /// dot is dropped (RFC 6066 forbids it, some clients send it anyway), then the bytes must
    /// form a valid host name. Non-ASCII bytes (an IDN sent as UTF-8 instead of its `xn--`
    /// form), IP literals and empty labels give `None`.
    pub fn from_sni(bytes: &[u8]) -> Option<HostName> {
        let trimmed = bytes.strip_suffix(b".").unwrap_or(bytes);
        normalise(trimmed)
    }

    /// The name, lowercase, without a trailing dot.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Everything after the left-most label, or `None` for a single-label name: the key a
    /// `*.suffix` pattern is filed under.
    pub fn parent(&self) -> Option<&str> {
        self.0.split_once('.').map(|(_, rest)| rest)
    }
}

impl fmt::Display for HostName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for HostName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Validates `bytes` as a host name and returns its lowercase form.
fn normalise(bytes: &[u8]) -> Option<HostName> {
    if bytes.is_empty() || bytes.len() > MAX_HOST_NAME_LEN {
        return None;
    }
    let mut last_label_numeric = false;
    for label in bytes.split(|b| *b == b'.') {
        if label.is_empty() || label.len() > MAX_LABEL_LEN {
            return None;
        }
        if !label.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-') {
            return None;
        }
        if label.first() == Some(&b'-') || label.last() == Some(&b'-') {
            return None;
        }
        last_label_numeric = label.iter().all(u8::is_ascii_digit);
    }
    if last_label_numeric {
        return None;
    }
    // Every byte was checked to be ASCII above, so this conversion cannot fail.
    let text = std::str::from_utf8(bytes).ok()?;
    Some(HostName(text.to_ascii_lowercase()))
}
