//! Secrets: generation from caller-supplied entropy, hashing for storage, and comparison in
//! constant time.
//!
//! Invariant: only [`SecretHash`] is ever stored or logged-adjacent; a plaintext secret
//! exists only between its generation and the one place it is printed or returned.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    out
}

/// Parses lowercase or uppercase hex; `None` on odd length or a non-hex digit.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    s.as_bytes().chunks(2).map(|pair| Some(nibble(pair[0])? << 4 | nibble(pair[1])?)).collect()
}

/// SHA-256 of `bytes` as lowercase hex (certificate pins, token hashes).
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(Sha256::digest(bytes).as_slice())
}

/// Compares two byte strings in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b) {
        diff |= x ^ y;
    }
    // black_box keeps the optimiser from turning the fold into an early exit.
    std::hint::black_box(diff) == 0
}

/// The SHA-256 of a high-entropy secret (token, enrollment code). Such secrets are random,
/// so a fast hash is enough; passwords use a slow KDF instead.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretHash(String);

impl SecretHash {
    /// Hashes a plaintext secret.
    pub fn of(secret: &str) -> Self {
        SecretHash(sha256_hex(secret.as_bytes()))
    }
    /// True when `secret` hashes to this value; compared in constant time.
    pub fn matches(&self, secret: &str) -> bool {
        constant_time_eq(self.0.as_bytes(), sha256_hex(secret.as_bytes()).as_bytes())
    }
    /// The hex digest, for use as a store key.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretHash({}…)", &self.0[..8.min(self.0.len())])
    }
}

/// A plaintext secret on its way to the one place it may be shown. `Debug` hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// A secret of `bytes.len() * 2` hex characters.
    pub fn from_entropy(bytes: &[u8]) -> Self {
        Secret(hex(bytes))
    }
    /// Wraps a secret read from a file or an environment variable.
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    /// The plaintext. Call sites are the documented places a secret is shown or sent.
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// Its hash for storage.
    pub fn hash(&self) -> SecretHash {
        SecretHash::of(&self.0)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(…)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn sha256_of_abc_is_the_published_vector() {
        assert_eq!(sha256_hex(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    #[test]
    fn secret_debug_never_shows_plaintext() {
        let s = Secret::new("hunter2hunter2");
        assert!(!format!("{s:?}").contains("hunter2"));
        assert!(!format!("{:?}", s.hash()).contains(s.hash().as_str()));
    }

    proptest! {
        #[test]
        fn hex_round_trips(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            prop_assert_eq!(unhex(&hex(&bytes)), Some(bytes));
        }

        #[test]
        fn hash_matches_only_its_secret(a in "[a-f0-9]{8,40}", b in "[a-f0-9]{8,40}") {
            prop_assert!(SecretHash::of(&a).matches(&a));
            prop_assert_eq!(SecretHash::of(&a).matches(&b), a == b);
        }

        #[test]
        fn constant_time_eq_agrees_with_eq(a in any::<Vec<u8>>(), b in any::<Vec<u8>>()) {
            prop_assert_eq!(constant_time_eq(&a, &b), a == b);
        }
    }
}
