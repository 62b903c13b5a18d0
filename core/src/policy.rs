//! Who is acting, and what they may do.
//!
//! Invariant: authorisation is a pure function of the actor and the request; adapters
//! authenticate (turn a credential into an [`Actor`]) and never decide access themselves.

use crate::ids::UserId;

/// A principal's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// May do everything, for every user.
    Superadmin,
    /// May manage only their own rules, within their grants.
    User,
}

/// An authenticated principal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// Who.
    pub principal: UserId,
    /// With which rights.
    pub role: Role,
}

impl Actor {
    /// The server host's operator token: the built-in `_operator` with superadmin rights.
    pub fn operator() -> Self {
        Actor { principal: UserId::operator(), role: Role::Superadmin }
    }

    /// True for superadmins (and `_operator`).
    pub fn is_superadmin(&self) -> bool {
        self.role == Role::Superadmin
    }
}
