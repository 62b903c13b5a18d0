//! State the server keeps beside its resources and changes at runtime: the onboarding of the
//! first superadmin, and the operator's advertised-endpoint override.
//!
//! Invariants: onboarding, once complete, never reopens; only the hash of a setup token is
//! kept, and a token is refused after [`SETUP_TOKEN_TTL`].

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{ErrorCode, Failure};
use crate::ids::Timestamp;
use crate::secret::SecretHash;

/// How long an onboarding setup token works.
pub const SETUP_TOKEN_TTL: Duration = Duration::from_secs(30 * 60);

/// Everything in the store's settings record. The default is a fresh server.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeSettings {
    /// Onboarding of the first superadmin.
    #[serde(default)]
    pub onboarding: Onboarding,
    /// The operator's `host:port` override (tier 1 of endpoint resolution).
    #[serde(default)]
    pub advertised_endpoint: Option<String>,
}

/// Where onboarding stands.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Onboarding {
    /// When a superadmin first existed; onboarding is closed for good from then on.
    pub completed_at: Option<Timestamp>,
    /// Hash of the current setup token.
    pub setup_token: Option<SecretHash>,
    /// When the current setup token stops working.
    pub setup_expires_at: Option<Timestamp>,
}

impl Onboarding {
    /// True once a superadmin exists (or existed).
    pub fn is_complete(&self) -> bool {
        self.completed_at.is_some()
    }

    /// Accepts `token` at `now`: `conflict.onboarding_closed` after completion,
    /// `unauthenticated` for a wrong or expired token.
    pub fn check_setup_token(&self, token: &str, now: Timestamp) -> Result<(), Failure> {
        if self.is_complete() {
            return Err(Failure::new(ErrorCode::OnboardingClosed, "onboarding is complete; log in instead"));
        }
        let valid = self.setup_token.as_ref().is_some_and(|hash| hash.matches(token));
        if !valid {
            return Err(Failure::new(ErrorCode::Unauthenticated, "wrong setup token"));
        }
        if self.setup_expires_at.is_none_or(|until| now >= until) {
            return Err(Failure::new(
                ErrorCode::Unauthenticated,
                "the setup token expired; restart the server for a new one",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setup_tokens_expire_and_completion_closes_onboarding() {
        let t = Timestamp::from_millis;
        let mut o = Onboarding {
            completed_at: None,
            setup_token: Some(SecretHash::of("setup-token-0123456789")),
            setup_expires_at: Some(t(1000)),
        };
        assert!(o.check_setup_token("setup-token-0123456789", t(999)).is_ok());
        assert_eq!(
            o.check_setup_token("setup-token-0123456789", t(1000)).unwrap_err().code,
            ErrorCode::Unauthenticated
        );
        assert_eq!(o.check_setup_token("wrong", t(0)).unwrap_err().code, ErrorCode::Unauthenticated);
        o.completed_at = Some(t(5));
        assert_eq!(
            o.check_setup_token("setup-token-0123456789", t(0)).unwrap_err().code,
            ErrorCode::OnboardingClosed
        );
    }
}
