//! Grants: what edge capacity a superadmin hands a user — one client (or every client), a
//! listen port range, and the protocols allowed on it.
//!
//! Invariant: a grant is a closed set. It covers a request only when the client, the *whole*
//! listen range and the protocol all fall inside it; two grants are never combined (see
//! [`crate::policy::check_push`]).

use serde::{Deserialize, Serialize};

use crate::error::{ErrorCode, Failure};
use crate::ids::{ClientId, GrantId, Timestamp, UserId};
use crate::rule::{PortRange, Protocol};

/// Which clients a grant names.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum GrantClient {
    /// `*`: every client, present and future.
    Any,
    /// One client, by its stable id (so renames keep the grant).
    Client(ClientId),
}

impl GrantClient {
    /// True when the grant names `client`.
    pub fn includes(&self, client: &ClientId) -> bool {
        match self {
            GrantClient::Any => true,
            GrantClient::Client(id) => id == client,
        }
    }
}

impl TryFrom<String> for GrantClient {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        if s == "*" {
            return Ok(GrantClient::Any);
        }
        ClientId::parse(&s).map(GrantClient::Client).ok_or_else(|| format!("not a grant client: {s:?}"))
    }
}

impl From<GrantClient> for String {
    fn from(c: GrantClient) -> String {
        match c {
            GrantClient::Any => "*".to_owned(),
            GrantClient::Client(id) => id.to_string(),
        }
    }
}

/// Capacity on the edge handed to one user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// Grant id (`gr_…`).
    pub id: GrantId,
    /// The user it is for.
    pub user: UserId,
    /// The client(s).
    pub client: GrantClient,
    /// Listen ports a rule may use (the whole rule range must fit).
    pub ports: PortRange,
    /// Allowed protocols; never empty, sorted, without duplicates.
    pub protocols: Vec<Protocol>,
    /// Creation time.
    pub created_at: Timestamp,
}

impl Grant {
    /// True when this grant alone covers `client`, every port of `ports`, and `protocol`.
    pub fn covers(&self, client: &ClientId, ports: PortRange, protocol: Protocol) -> bool {
        self.client.includes(client) && self.ports.covers(ports) && self.protocols.contains(&protocol)
    }
}

/// Normalises a protocol list: sorted, deduplicated, and refused when empty.
pub fn protocol_set(mut protocols: Vec<Protocol>) -> Result<Vec<Protocol>, Failure> {
    protocols.sort_by_key(|p| p.as_str());
    protocols.dedup();
    if protocols.is_empty() {
        return Err(Failure::new(ErrorCode::InvalidRequest, "a grant needs at least one protocol"));
    }
    Ok(protocols)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wildcard_round_trips_as_a_star() {
        let json = serde_json::to_string(&GrantClient::Any).unwrap();
        assert_eq!(json, "\"*\"");
        assert_eq!(serde_json::from_str::<GrantClient>(&json).unwrap(), GrantClient::Any);
        assert!(serde_json::from_str::<GrantClient>("\"edge-01\"").is_err());
    }

    #[test]
    fn protocol_sets_are_normalised() {
        assert_eq!(
            protocol_set(vec![Protocol::Udp, Protocol::Tcp, Protocol::Udp]).unwrap(),
            vec![Protocol::Tcp, Protocol::Udp]
        );
        assert!(protocol_set(vec![]).is_err());
    }
}
