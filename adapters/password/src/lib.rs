//! `portunus-password`: core's [`PasswordHasher`] port on Argon2id (RustCrypto `argon2`),
//! storing PHC strings (`$argon2id$v=19$m=…,t=…,p=…$salt$hash`).
//!
//! Invariants: every hash gets a fresh random salt; verification takes the parameters from
//! the stored string, so hashes made with other parameters keep verifying; a string that does
//! not parse verifies as false, never as a panic.
#![forbid(unsafe_code)]

use argon2::Argon2;
use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
use portunus_core::account::PasswordHash;
use portunus_core::error::{ErrorCode, Failure};
use portunus_core::ports::PasswordHasher;

/// Argon2id with the crate's default parameters (19 MiB, 2 passes, 1 lane: OWASP's
/// recommended minimum).
#[derive(Debug, Default, Clone, Copy)]
pub struct Argon2Hasher;

impl PasswordHasher for Argon2Hasher {
    fn hash(&self, password: &str) -> Result<PasswordHash, Failure> {
        Argon2::default()
            .hash_password(password.as_bytes())
            .map(|phc| PasswordHash::new(phc.to_string()))
            .map_err(|err| Failure::new(ErrorCode::Internal, format!("password hashing failed: {err}")))
    }

    fn verify(&self, password: &str, hash: &PasswordHash) -> bool {
        Argon2::default().verify_password(password.as_bytes(), hash.as_str()).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_salted_argon2id_and_verify_only_their_password() {
        let a = Argon2Hasher.hash("correct horse battery").unwrap();
        let b = Argon2Hasher.hash("correct horse battery").unwrap();
        assert!(a.as_str().starts_with("$argon2id$v=19$"), "{}", a.as_str());
        assert_ne!(a, b, "each hash has its own salt");
        assert!(Argon2Hasher.verify("correct horse battery", &a));
        assert!(Argon2Hasher.verify("correct horse battery", &b));
        assert!(!Argon2Hasher.verify("correct horse batterY", &a));
        assert!(!a.as_str().contains("correct"));
    }

    #[test]
    fn garbage_hashes_verify_as_false() {
        for garbage in ["", "$argon2id$", "plain", "$fake$00"] {
            assert!(!Argon2Hasher.verify("anything at all", &PasswordHash::new(garbage)));
        }
    }
}
