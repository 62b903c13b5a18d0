//! The rule state machine: `Pending → Active | Failed(code)`, and any state `→ Removed`.
//!
//! Invariants: a Failed rule leaves Failed only through Removed (no auto-retry; it keeps
//! its port reservation until removed), and Removed is terminal.

use serde::{Deserialize, Serialize};

use crate::error::ErrorCode;

/// Where a rule is in its life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum RuleState {
    /// Stored and sent; the client has not reported an outcome yet.
    Pending,
    /// The client bound every listen port.
    Active,
    /// The client (or the server, for a reservation clash) could not activate it.
    Failed {
        /// Why, as a stable code (`port_in_use`, …).
        #[serde(with = "code_serde")]
        code: ErrorCode,
        /// A sentence naming the port or target at fault.
        message: String,
    },
    /// Removed by an operator; kept only transiently, never replayed.
    Removed,
}

impl RuleState {
    /// `"pending"`, `"active"`, `"failed"` or `"removed"`.
    pub fn name(&self) -> &'static str {
        match self {
            RuleState::Pending => "pending",
            RuleState::Active => "active",
            RuleState::Failed { .. } => "failed",
            RuleState::Removed => "removed",
        }
    }

    /// True for the states a reconnecting client is sent again (Pending and Active).
    pub fn is_replayed(&self) -> bool {
        matches!(self, RuleState::Pending | RuleState::Active)
    }

    /// True while the rule holds its `(client, protocol, port)` reservation: every state
    /// but Removed, Failed included.
    pub fn reserves_ports(&self) -> bool {
        !matches!(self, RuleState::Removed)
    }

    /// Applies `event`; an event that the machine does not allow is an error and leaves the
    /// state as it was. Repeating the current outcome is allowed and changes nothing.
    pub fn on(&self, event: RuleEvent) -> Result<RuleState, TransitionError> {
        use RuleState::*;
        match (self, event) {
            (Removed, _) => Err(TransitionError { from: self.name(), event: "any" }),
            (_, RuleEvent::Removed) => Ok(Removed),
            (Pending | Active, RuleEvent::Activated) => Ok(Active),
            (Pending | Active, RuleEvent::Failed { code, message }) => Ok(Failed { code, message }),
            (Failed { .. }, RuleEvent::Activated) => {
                Err(TransitionError { from: "failed", event: "activated" })
            }
            (Failed { .. }, RuleEvent::Failed { .. }) => Ok(self.clone()),
        }
    }
}

/// What can happen to a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleEvent {
    /// The client reports every port bound.
    Activated,
    /// Activation failed (client report, or a reservation clash found by the server).
    Failed {
        /// Stable code.
        code: ErrorCode,
        /// Human sentence.
        message: String,
    },
    /// An operator removed the rule.
    Removed,
}

/// An event the state machine refuses in the current state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rule in state {from} cannot take event {event}")]
pub struct TransitionError {
    /// State name.
    pub from: &'static str,
    /// Event name.
    pub event: &'static str,
}

mod code_serde {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::error::ErrorCode;

    pub fn serialize<S: Serializer>(code: &ErrorCode, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(code.as_str())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<ErrorCode, D::Error> {
        let text = String::deserialize(d)?;
        // A code written by a newer build degrades to `internal` rather than failing the read.
        Ok(ErrorCode::parse(&text).unwrap_or(ErrorCode::Internal))
    }
}
