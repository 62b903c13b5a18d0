//! Who is acting, and what they may do: roles, the actor a credential becomes, and the pure
//! authorisation functions — RBAC over actions, the closed-set grant rule for pushes, and the
//! same-origin/CSRF rule for cookie-authenticated writes.
//!
//! Invariant: authorisation is a pure function of the actor and the request; adapters
//! authenticate (turn a credential into an [`Actor`], through core) and never decide access
//! themselves.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::account::{User, WebSession};
use crate::error::{ErrorCode, Failure};
use crate::grant::Grant;
use crate::ids::{ClientId, UserId};
use crate::rule::{PortRange, Protocol};

/// A principal's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// May do everything, for every user.
    Superadmin,
    /// May manage only their own rules, within their grants.
    User,
}

impl Role {
    /// `"superadmin"` or `"user"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Superadmin => "superadmin",
            Role::User => "user",
        }
    }
}

/// How an actor proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    /// The server host's operator token (a machine credential, not a user).
    OperatorToken,
    /// A user's API token.
    ApiToken,
    /// A Web session cookie.
    Session,
    /// A local command that opened the store directly (`reset-password`, …).
    Local,
}

/// An authenticated principal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// Who.
    pub principal: UserId,
    /// With which rights.
    pub role: Role,
    /// True while the account holds a temporary password: only [`Action::ManageSelf`] is
    /// allowed.
    pub must_change_password: bool,
    /// How it authenticated.
    pub credential: Credential,
    /// The remote address the request came from, for the audit trail.
    pub remote: Option<IpAddr>,
}

impl Actor {
    /// The server host's operator token: the built-in `_operator` with superadmin rights.
    pub fn operator() -> Self {
        Actor {
            principal: UserId::operator(),
            role: Role::Superadmin,
            must_change_password: false,
            credential: Credential::OperatorToken,
            remote: None,
        }
    }

    /// The actor an authenticated user becomes.
    pub fn for_user(user: &User, credential: Credential, remote: Option<IpAddr>) -> Actor {
        Actor {
            principal: user.id.clone(),
            role: user.role,
            must_change_password: user.must_change_password,
            credential,
            remote,
        }
    }

    /// The same actor, acting from `remote`.
    pub fn from_remote(self, remote: Option<IpAddr>) -> Self {
        Actor { remote, ..self }
    }

    /// True for superadmins (and `_operator`).
    pub fn is_superadmin(&self) -> bool {
        self.role == Role::Superadmin
    }

    /// True when [`authorize`] lets this actor read every client and every rule, so its
    /// unfiltered listings are the same as any other such actor's (an adapter may share one
    /// rendering of them).
    pub fn sees_everything(&self) -> bool {
        self.is_superadmin() && !self.must_change_password
    }
}

/// What an actor wants to do, with the facts the decision needs.
#[derive(Debug, Clone, Copy)]
pub enum Action<'a> {
    /// Read one's own account, log out, change one's own password. Always allowed, even with
    /// a temporary password.
    ManageSelf,
    /// List a resource; the listing shows only what the actor may read.
    List,
    /// Server-wide administration: users, grants, client lifecycle, settings, audit, metrics.
    Administer,
    /// Read or manage the account data (record, API tokens, grants) of `user`.
    AccessAccount(&'a UserId),
    /// Read a client; `grants` are the grants the decision may consult.
    ReadClient {
        /// The client.
        client: &'a ClientId,
        /// Grants (of any users; only the actor's count).
        grants: &'a [Grant],
    },
    /// Read, remove or read the stats of a rule owned by `owner`.
    AccessRule {
        /// The rule's owner.
        owner: &'a UserId,
    },
    /// Push a rule.
    PushRule {
        /// Target client.
        client: &'a ClientId,
        /// The rule's whole listen range.
        ports: PortRange,
        /// The rule's protocol.
        protocol: Protocol,
        /// Grants (of any users; only the actor's count).
        grants: &'a [Grant],
    },
}

/// Why an action was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    /// The actor holds a temporary password.
    PasswordChangeRequired,
    /// Only superadmins may do this.
    SuperadminOnly,
    /// The resource belongs to someone else.
    NotOwner,
    /// No grant of the actor names the client.
    ClientNotGranted,
    /// Grants name the client, but none covers the whole listen range.
    PortOutsideGrant,
    /// Grants cover the client and ports, but none enables the protocol.
    ProtocolNotGranted,
}

impl Denial {
    /// The user-facing code.
    pub const fn code(self) -> ErrorCode {
        match self {
            Denial::PasswordChangeRequired => ErrorCode::PasswordChangeRequired,
            Denial::SuperadminOnly | Denial::NotOwner => ErrorCode::NotOwner,
            Denial::ClientNotGranted => ErrorCode::ClientNotGranted,
            Denial::PortOutsideGrant => ErrorCode::PortOutsideGrant,
            Denial::ProtocolNotGranted => ErrorCode::ProtocolNotGranted,
        }
    }

    fn message(self) -> &'static str {
        match self {
            Denial::PasswordChangeRequired => "change the temporary password first (PUT /v1/auth/password)",
            Denial::SuperadminOnly => "this operation needs superadmin rights",
            Denial::NotOwner => "this resource belongs to another user",
            Denial::ClientNotGranted => "no grant of yours covers this client",
            Denial::PortOutsideGrant => "no single grant of yours covers the whole listen range",
            Denial::ProtocolNotGranted => {
                "no grant of yours covering this client and ports allows the protocol"
            }
        }
    }
}

impl From<Denial> for Failure {
    fn from(denial: Denial) -> Self {
        Failure::new(denial.code(), denial.message())
    }
}

/// RBAC: may `actor` do `action`?
///
/// A temporary password limits every actor to [`Action::ManageSelf`]. Superadmins may do
/// everything else. Users may access their own account and rules, read clients a grant of
/// theirs names, and push rules that one of their grants covers whole.
pub fn authorize(actor: &Actor, action: &Action<'_>) -> Result<(), Denial> {
    if actor.must_change_password && !matches!(action, Action::ManageSelf) {
        return Err(Denial::PasswordChangeRequired);
    }
    if actor.is_superadmin() {
        return Ok(());
    }
    let me = &actor.principal;
    match *action {
        Action::ManageSelf | Action::List => Ok(()),
        Action::Administer => Err(Denial::SuperadminOnly),
        Action::AccessAccount(user) => {
            if user == me {
                Ok(())
            } else {
                Err(Denial::NotOwner)
            }
        }
        Action::AccessRule { owner } => {
            if owner == me {
                Ok(())
            } else {
                Err(Denial::NotOwner)
            }
        }
        Action::ReadClient { client, grants } => {
            if grants.iter().any(|g| &g.user == me && g.client.includes(client)) {
                Ok(())
            } else {
                Err(Denial::ClientNotGranted)
            }
        }
        Action::PushRule { client, ports, protocol, grants } => {
            check_push(grants, me, client, ports, protocol)
        }
    }
}

/// The closed-set rule: `user` may push a rule for `client` on `ports` with `protocol` only
/// when ONE of `user`'s grants covers all three. Grants are never combined: two grants that
/// each cover half the range allow nothing.
///
/// The refusal names the first fact no grant satisfies, in the order client, ports, protocol.
pub fn check_push(
    grants: &[Grant],
    user: &UserId,
    client: &ClientId,
    ports: PortRange,
    protocol: Protocol,
) -> Result<(), Denial> {
    let for_client: Vec<&Grant> =
        grants.iter().filter(|g| &g.user == user && g.client.includes(client)).collect();
    if for_client.is_empty() {
        return Err(Denial::ClientNotGranted);
    }
    let for_ports: Vec<&&Grant> = for_client.iter().filter(|g| g.ports.covers(ports)).collect();
    if for_ports.is_empty() {
        return Err(Denial::PortOutsideGrant);
    }
    if for_ports.iter().any(|g| g.protocols.contains(&protocol)) {
        Ok(())
    } else {
        Err(Denial::ProtocolNotGranted)
    }
}

/// Routes that need no credential: onboarding status and completion, and login. Everything
/// else under `/v1` needs one.
pub const PUBLIC_ROUTES: &[(&str, &str)] =
    &[("GET", "/v1/auth/onboarding"), ("POST", "/v1/auth/onboarding"), ("POST", "/v1/auth/login")];

/// True when `method path` (a route template such as `/v1/rules/{id}`) needs no credential.
pub fn is_public_route(method: &str, path: &str) -> bool {
    PUBLIC_ROUTES.iter().any(|(m, p)| m.eq_ignore_ascii_case(method) && *p == path)
}

/// The facts of an HTTP request that the CSRF rule looks at.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestOrigin<'a> {
    /// True for GET, HEAD and OPTIONS.
    pub safe_method: bool,
    /// The `Origin` header.
    pub origin: Option<&'a str>,
    /// The origins the server is reached at, normalised (see
    /// [`crate::config::ServerSettings::allowed_origins`]); never taken from the request.
    pub allowed_origins: &'a [String],
    /// The `X-CSRF-Token` header.
    pub csrf_token: Option<&'a str>,
}

/// Where a request really came from: its peer, unless the peer is a trusted proxy, in which
/// case the nearest untrusted address of `X-Forwarded-For` (read right to left) and the
/// last scheme of `X-Forwarded-Proto`. Pass every header line of each, joined with commas
/// (a proxy may add a line rather than append to the client's). Headers from anyone else are ignored. Returns the client's
/// address and whether it used HTTPS.
pub fn forwarded_client(
    peer: IpAddr,
    trusted: &[IpAddr],
    forwarded_for: Option<&str>,
    forwarded_proto: Option<&str>,
) -> (IpAddr, bool) {
    if !trusted.contains(&peer) {
        return (peer, false);
    }
    let client = forwarded_for
        .into_iter()
        .flat_map(|list| list.rsplit(','))
        .map(|hop| hop.trim().parse::<IpAddr>())
        .take_while(Result::is_ok)
        .flatten()
        .find(|hop| !trusted.contains(hop))
        .unwrap_or(peer);
    // The nearest hop's word, as for the address: a value the client sent itself stands
    // further left.
    let https = forwarded_proto
        .and_then(|list| list.rsplit(',').next())
        .is_some_and(|proto| proto.trim().eq_ignore_ascii_case("https"));
    (client, https)
}

/// The header that carries the CSRF token on cookie-authenticated writes.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// A cookie-authenticated write must come from one of the server's configured origins
/// (scheme, host and port compared, never against the request's own `Host`, which a
/// rebinding name controls) and carry the session's CSRF token. Reads pass; bearer requests
/// never reach this check.
pub fn check_csrf(request: &RequestOrigin<'_>, session: &WebSession) -> Result<(), Failure> {
    if request.safe_method {
        return Ok(());
    }
    let refuse = |why: &str| Err(Failure::new(ErrorCode::CsrfFailed, why.to_owned()));
    let Some(origin) = request.origin else {
        return refuse("a cookie-authenticated write needs an Origin header");
    };
    let allowed = crate::config::normalize_origin(origin)
        .is_some_and(|origin| request.allowed_origins.contains(&origin));
    if !allowed {
        return refuse("the Origin header is not one of the server's public origins (public_origins)");
    }
    match request.csrf_token {
        Some(token) if session.csrf.matches(token) => Ok(()),
        _ => refuse("missing or wrong X-CSRF-Token header"),
    }
}

#[cfg(test)]
mod tests;
