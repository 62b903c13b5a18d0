//! Owner envelopes as stored and as sent: the caps of one user's rules on one client, taken
//! together, which bind before each rule's own caps.
//!
//! Invariant: one envelope per (user, client) pair; the client hears of every change, and
//! of the pair's rules, before any rule it covers binds (the update goes out ahead of the
//! rule, and in Welcome before the replay).

use serde::{Deserialize, Serialize};

use super::Caps;
use crate::ids::{ClientId, RuleId, Timestamp, UserId};

/// A stored owner envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerCaps {
    /// The owner whose rules it caps.
    pub user: UserId,
    /// The client it applies on.
    pub client: ClientId,
    /// The caps (never unlimited: an envelope sets at least one).
    pub caps: Caps,
    /// Creation time.
    pub created_at: Timestamp,
    /// Last change.
    pub updated_at: Timestamp,
}

/// What the client is told about one owner's envelope: the caps (`None`: lifted) and the
/// owner's rules on the client as they are when it is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerCapsUpdate {
    /// The owner.
    pub user: UserId,
    /// The envelope, or `None` when it was deleted.
    pub caps: Option<Caps>,
    /// The owner's rules on the client.
    pub rules: Vec<RuleId>,
}

impl OwnerCapsUpdate {
    /// The update that states `envelope` to its client, with the owner's rules among
    /// `client_rules` (the client's rules).
    pub fn of(envelope: &OwnerCaps, client_rules: &[crate::rule::Rule]) -> OwnerCapsUpdate {
        OwnerCapsUpdate {
            user: envelope.user.clone(),
            caps: Some(envelope.caps),
            rules: client_rules.iter().filter(|r| r.owner == envelope.user).map(|r| r.id).collect(),
        }
    }
}
