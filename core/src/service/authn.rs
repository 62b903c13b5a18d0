//! Authentication of operator API requests: a bearer token (the operator token or a user's
//! API token) or a Web session cookie becomes an [`Actor`], or the request is refused.
//!
//! Invariants: a session cookie, when present, decides alone — an invalid one is refused even
//! if a valid bearer token came with it; cookie-authenticated writes pass the CSRF rule; until
//! a superadmin exists only the operator token is accepted (`bootstrap_required`); every
//! refusal is audited.

use std::net::IpAddr;

use super::{AccountService, Cx};
use crate::account::credential_id;
use crate::error::{ErrorCode, Failure};
use crate::ids::{SessionId, TokenId};
use crate::policy::{Actor, Credential, RequestOrigin, check_csrf};
use crate::ports::{CredentialStore, StateStore, UserStore, Write};

/// What a request presented.
#[derive(Debug, Clone, Copy, Default)]
pub struct Credentials<'a> {
    /// The `Authorization: Bearer` value.
    pub bearer: Option<&'a str>,
    /// The session cookie's value.
    pub session_cookie: Option<&'a str>,
    /// Method, `Origin`, `Host` and CSRF header, for the CSRF rule.
    pub request: RequestOrigin<'a>,
    /// Remote address.
    pub remote: Option<IpAddr>,
    /// The route (`METHOD /template`), for the audit record of a refusal.
    pub route: &'a str,
}

/// An authenticated request.
#[derive(Debug, Clone)]
pub struct Authenticated {
    /// Who.
    pub actor: Actor,
    /// The session the request came with, if it was cookie-authenticated.
    pub session: Option<SessionId>,
}

fn unauthenticated(why: &str) -> Failure {
    Failure::new(ErrorCode::Unauthenticated, why.to_owned())
}

impl AccountService {
    /// Authenticates a request. Refusals: `unauthenticated` (missing, unknown, revoked or
    /// expired credential), `csrf_failed`, `bootstrap_required` (a valid user credential
    /// before any superadmin exists). Refusals are audited; an expired session is deleted.
    pub fn authenticate<S: UserStore + CredentialStore + StateStore + ?Sized>(
        &self,
        cx: &mut Cx<'_, S>,
        credentials: &Credentials<'_>,
    ) -> Result<Authenticated, Failure> {
        match self.identify(cx, credentials).and_then(|auth| bootstrap_gate(cx.store, auth)) {
            Ok(auth) => Ok(auth),
            Err((Some(actor), failure)) => cx.record(
                actor.principal.as_str(),
                "auth.request",
                Some(credentials.route),
                credentials.remote,
                Err(failure),
            ),
            // Nobody was identified: the record is kept only within the source's budget, so a
            // flood of bad tokens neither grows the trail without bound nor writes per request.
            Err((None, failure)) => {
                let admitted = self
                    .anonymous
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .admit(credentials.remote, cx.now);
                if admitted {
                    cx.record(
                        "anonymous",
                        "auth.request",
                        Some(credentials.route),
                        credentials.remote,
                        Err(failure),
                    )
                } else {
                    Err(failure)
                }
            }
        }
    }

    /// Who the credentials name; on refusal, the actor when one was identified.
    fn identify<S: UserStore + CredentialStore + ?Sized>(
        &self,
        cx: &mut Cx<'_, S>,
        credentials: &Credentials<'_>,
    ) -> Result<Authenticated, (Option<Actor>, Failure)> {
        let remote = credentials.remote;
        let lift = |f: Failure| (None, f);
        let store = cx.store;
        if let Some(cookie) = credentials.session_cookie {
            let session = credential_id(cookie)
                .and_then(SessionId::parse)
                .map(|id| store.get_session(&id))
                .transpose()
                .map_err(|e| lift(e.into()))?
                .flatten()
                .filter(|s| s.hash.matches(cookie))
                .ok_or_else(|| lift(unauthenticated("invalid session cookie")))?;
            if !session.is_valid_at(cx.now) {
                cx.stage([Write::DeleteSession(session.id.clone())]);
                return Err(lift(unauthenticated("the session expired; log in again")));
            }
            let user = store
                .get_user(&session.user)
                .map_err(|e| lift(e.into()))?
                .ok_or_else(|| lift(unauthenticated("the session's user no longer exists")))?;
            let actor = Actor::for_user(&user, Credential::Session, remote);
            check_csrf(&credentials.request, &session).map_err(|f| (Some(actor.clone()), f))?;
            return Ok(Authenticated { actor, session: Some(session.id) });
        }
        let bearer = credentials
            .bearer
            .filter(|b| !b.is_empty())
            .ok_or_else(|| lift(unauthenticated("missing credentials: send a bearer token or log in")))?;
        if self.operator_token.matches(bearer) {
            return Ok(Authenticated { actor: Actor::operator().from_remote(remote), session: None });
        }
        let token = credential_id(bearer)
            .and_then(TokenId::parse)
            .map(|id| store.get_api_token(&id))
            .transpose()
            .map_err(|e| lift(e.into()))?
            .flatten()
            .filter(|t| t.hash.matches(bearer))
            .ok_or_else(|| lift(unauthenticated("missing or invalid bearer token")))?;
        let user = store
            .get_user(&token.user)
            .map_err(|e| lift(e.into()))?
            .ok_or_else(|| lift(unauthenticated("the token's user no longer exists")))?;
        Ok(Authenticated { actor: Actor::for_user(&user, Credential::ApiToken, remote), session: None })
    }
}

/// Until a superadmin exists, only the operator token passes.
fn bootstrap_gate<S: StateStore + ?Sized>(
    store: &S,
    auth: Authenticated,
) -> Result<Authenticated, (Option<Actor>, Failure)> {
    if auth.actor.credential == Credential::OperatorToken {
        return Ok(auth);
    }
    match store.runtime_settings() {
        Ok(settings) if settings.onboarding.is_complete() => Ok(auth),
        Ok(_) => Err((
            Some(auth.actor),
            Failure::new(
                ErrorCode::BootstrapRequired,
                "no superadmin exists yet: complete onboarding with the setup token the server printed",
            ),
        )),
        Err(err) => Err((Some(auth.actor), err.into())),
    }
}
