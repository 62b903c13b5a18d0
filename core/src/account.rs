//! Users and their credentials: password hashes, per-user API tokens and Web sessions, as the
//! server keeps them, and the rules a new password must meet.
//!
//! Invariants: only hashes are stored (Argon2id PHC strings for passwords, SHA-256 for tokens,
//! session secrets and CSRF tokens); a credential's text starts with its record's id, so the
//! record is found by id and its secret compared in constant time, never searched by secret.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{ErrorCode, Failure};
use crate::ids::{SessionId, Timestamp, TokenId, UserId};
use crate::policy::Role;
use crate::secret::{Secret, SecretHash};

/// Fewest characters a password may have.
pub const MIN_PASSWORD_CHARS: usize = 12;
/// Most bytes a password may have; bounds the work an attacker can make the KDF do.
pub const MAX_PASSWORD_BYTES: usize = 1024;
/// How long a Web session lives after login, whatever it does.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

/// Refuses passwords shorter than [`MIN_PASSWORD_CHARS`] characters or longer than
/// [`MAX_PASSWORD_BYTES`] bytes with `validation.weak_password`. The message never quotes the
/// password.
pub fn check_password_strength(password: &str) -> Result<(), Failure> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(Failure::new(
            ErrorCode::WeakPassword,
            format!("a password needs at least {MIN_PASSWORD_CHARS} characters"),
        ));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(Failure::new(
            ErrorCode::WeakPassword,
            format!("a password may have at most {MAX_PASSWORD_BYTES} bytes"),
        ));
    }
    Ok(())
}

/// A password hash in PHC string form (`$argon2id$v=19$…`). `Debug` hides it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PasswordHash(String);

impl PasswordHash {
    /// Wraps a PHC string produced by a [`crate::ports::PasswordHasher`].
    pub fn new(phc: impl Into<String>) -> Self {
        PasswordHash(phc.into())
    }
    /// The PHC string, for the hasher that verifies it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PasswordHash(…)")
    }
}

/// A person (or automation) with a role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// Unique id, also the login name.
    pub id: UserId,
    /// Superadmin or user.
    pub role: Role,
    /// `None` for API-token-only accounts (such as `_superadmin`).
    pub password: Option<PasswordHash>,
    /// Set by `reset-password`: the holder may only read itself and change the password.
    pub must_change_password: bool,
    /// Creation time.
    pub created_at: Timestamp,
}

/// A per-user API token. The text is `<id>.<64 hex>`, shown once when minted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiToken {
    /// Token id (`tk_…`); the token text starts with it.
    pub id: TokenId,
    /// The user it acts as.
    pub user: UserId,
    /// SHA-256 of the whole token text.
    pub hash: SecretHash,
    /// Optional label.
    pub name: Option<String>,
    /// When it was minted.
    pub created_at: Timestamp,
}

/// A server-side Web session. The cookie value is `<id>.<64 hex>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebSession {
    /// Session id (`ss_…`); the cookie value starts with it.
    pub id: SessionId,
    /// The logged-in user.
    pub user: UserId,
    /// SHA-256 of the whole cookie value.
    pub hash: SecretHash,
    /// SHA-256 of the CSRF token handed out at login.
    pub csrf: SecretHash,
    /// Login time.
    pub created_at: Timestamp,
    /// After this the cookie is refused.
    pub expires_at: Timestamp,
}

impl WebSession {
    /// True while the session may authenticate requests.
    pub fn is_valid_at(&self, now: Timestamp) -> bool {
        now < self.expires_at
    }
}

/// Splits credential text `<id>.<secret>` into its id part; `None` for any other shape.
pub fn credential_id(text: &str) -> Option<&str> {
    let (id, secret) = text.split_once('.')?;
    (!id.is_empty() && secret.len() == 64 && secret.bytes().all(|b| b.is_ascii_hexdigit())).then_some(id)
}

/// Builds the text of a new credential from its id and 32 random bytes.
pub fn credential_text(id: &str, random: &[u8; 32]) -> Secret {
    Secret::new(format!("{id}.{}", Secret::from_entropy(random).expose()))
}

/// A random password for `reset-password`: 24 characters from an alphabet without look-alike
/// characters, so it can be read aloud and typed.
pub fn temporary_password(random: &[u8; 24]) -> Secret {
    const ALPHABET: &[u8; 32] = b"abcdefghjkmnpqrstuvwxyz23456789-";
    Secret::new(random.iter().map(|b| ALPHABET[usize::from(b % 32)] as char).collect::<String>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_need_twelve_characters_counted_as_characters() {
        assert_eq!(check_password_strength("elevenchars").unwrap_err().code, ErrorCode::WeakPassword);
        assert!(check_password_strength("twelve chars").is_ok());
        assert!(check_password_strength("ääääääääääää").is_ok(), "twelve characters, 24 bytes");
        assert!(check_password_strength(&"x".repeat(MAX_PASSWORD_BYTES + 1)).is_err());
        assert!(!check_password_strength("short").unwrap_err().message.contains("short"));
    }

    #[test]
    fn credentials_carry_their_id() {
        let text = credential_text("tk_0011223344556677", &[7; 32]);
        assert_eq!(credential_id(text.expose()), Some("tk_0011223344556677"));
        assert_eq!(credential_id("tk_00.abc"), None);
        assert_eq!(credential_id("no-dot"), None);
        assert_eq!(credential_id(&format!(".{}", "a".repeat(64))), None);
    }

    #[test]
    fn temporary_passwords_are_long_enough() {
        let pw = temporary_password(&[200; 24]);
        assert!(check_password_strength(pw.expose()).is_ok());
        assert!(!format!("{pw:?}").contains(pw.expose()));
        assert!(!format!("{:?}", PasswordHash::new("$argon2id$secret")).contains("secret"));
    }
}
