//! Clients (edge nodes) and their enrollments as the server keeps them.
//!
//! Invariant: only hashes of tokens and enrollment codes are stored.

use serde::{Deserialize, Serialize};

use crate::ids::{ClientId, ClientName, Timestamp};
use crate::secret::SecretHash;

/// An enrolled (or enrolling) client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Client {
    /// Stable id.
    pub id: ClientId,
    /// Unique, renameable name.
    pub name: ClientName,
    /// Hash of the current bearer token; `None` until the first redeem.
    pub token: Option<SecretHash>,
    /// Set by `revoke`; cleared by a later redeem (re-enrollment).
    pub revoked_at: Option<Timestamp>,
    /// When the client record was made.
    pub created_at: Timestamp,
    /// Last time a control stream for it opened.
    pub last_seen_at: Option<Timestamp>,
    /// Version string from its last Hello.
    pub version: Option<String>,
}

impl Client {
    /// Where the client stands, for listings.
    pub fn status(&self) -> ClientStatus {
        if self.revoked_at.is_some() {
            ClientStatus::Revoked
        } else if self.token.is_none() {
            ClientStatus::Enrolling
        } else {
            ClientStatus::Enrolled
        }
    }
}

/// A client's enrollment status (connection state is reported separately).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientStatus {
    /// Enrollment issued, not yet redeemed.
    Enrolling,
    /// Holds a valid token.
    Enrolled,
    /// Token revoked.
    Revoked,
}

impl ClientStatus {
    /// `"enrolling"`, `"enrolled"` or `"revoked"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ClientStatus::Enrolling => "enrolling",
            ClientStatus::Enrolled => "enrolled",
            ClientStatus::Revoked => "revoked",
        }
    }
}

/// A one-time enrollment code issued for a client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enrollment {
    /// Hash of the code; the store key.
    pub code_hash: SecretHash,
    /// The client it enrolls.
    pub client: ClientId,
    /// Issue time.
    pub created_at: Timestamp,
    /// After this the code is refused with `enrollment_expired`.
    pub expires_at: Timestamp,
    /// The advertised endpoint frozen at issue time.
    pub endpoint: String,
    /// Set once redeemed; a consumed code is refused with `enrollment_consumed`.
    pub consumed_at: Option<Timestamp>,
}
