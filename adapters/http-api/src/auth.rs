//! The one authentication layer in front of every `/v1/*` route. It gathers what the
//! request presented — bearer token, session cookie, `Origin`, CSRF header, remote address
//! (a trusted proxy's `X-Forwarded-For`/`-Proto` included) — and asks core: an [`Authenticated`] actor goes into the request's extensions,
//! anything else ends the request with core's error. Public routes (login, onboarding) pass
//! with only the remote address; core's `PUBLIC_ROUTES` names them.
//!
//! Invariant: handlers never look at credentials; they receive the `Actor` (and, for logout
//! and password changes, the session id).

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::header::{AUTHORIZATION, COOKIE, ORIGIN};
use axum::http::{HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use portunus_core::ids::SessionId;
use portunus_core::policy::{CSRF_HEADER, RequestOrigin, forwarded_client, is_public_route};
use portunus_core::service::Credentials;
use portunus_runtime::Refused;

use crate::AppState;
use crate::error::ApiError;

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "portunus_session";

/// The remote address of the request, for every `/v1` handler (public ones included): the
/// peer, or the client a trusted proxy names in `X-Forwarded-For`.
#[derive(Debug, Clone, Copy)]
pub struct Remote(pub Option<IpAddr>);

/// Whether the request reached the server over HTTPS: only a trusted proxy's
/// `X-Forwarded-Proto` says so (this listener itself speaks plain HTTP).
#[derive(Debug, Clone, Copy)]
pub struct OverHttps(pub bool);

/// The session a cookie-authenticated request came with.
#[derive(Debug, Clone)]
pub struct SessionRef(pub Option<SessionId>);

/// The value of the session cookie, if the request carries one. Several `Cookie` headers
/// and several cookies per header are allowed; the first session cookie counts.
pub fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.trim().to_owned())
}

/// Owned copies of what a request presented.
struct Presented {
    bearer: Option<String>,
    cookie: Option<String>,
    origin: Option<String>,
    csrf: Option<String>,
    safe_method: bool,
}

impl Presented {
    fn of(headers: &HeaderMap, method: &Method) -> Self {
        let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        Presented {
            bearer: headers
                .get(AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(|v| v.trim().to_owned()),
            cookie: session_cookie(headers),
            origin: text(ORIGIN.as_str()),
            csrf: text(CSRF_HEADER),
            safe_method: matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS),
        }
    }

    fn credentials<'a>(
        &'a self,
        remote: Option<IpAddr>,
        route: &'a str,
        allowed_origins: &'a [String],
    ) -> Credentials<'a> {
        Credentials {
            bearer: self.bearer.as_deref(),
            session_cookie: self.cookie.as_deref(),
            request: RequestOrigin {
                safe_method: self.safe_method,
                origin: self.origin.as_deref(),
                allowed_origins,
                csrf_token: self.csrf.as_deref(),
            },
            remote,
            route,
        }
    }
}

/// Middleware: authenticates the request through core and stores the actor.
pub async fn require_actor(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let peer = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    let (remote, https) = match peer {
        Some(peer) => {
            let headers = request.headers();
            // Every line of a header, joined: a proxy may add its own line rather than append
            // to one the client sent, and the nearest hop is read from the right.
            let header = |name: &str| {
                let lines: Vec<&str> = headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).collect();
                (!lines.is_empty()).then(|| lines.join(","))
            };
            let trusted = &state.runtime.settings().web.trusted_proxies;
            let (forwarded_for, forwarded_proto) = (header("x-forwarded-for"), header("x-forwarded-proto"));
            let (client, https) =
                forwarded_client(peer, trusted, forwarded_for.as_deref(), forwarded_proto.as_deref());
            (Some(client), https)
        }
        None => (None, false),
    };
    request.extensions_mut().insert(Remote(remote));
    request.extensions_mut().insert(OverHttps(https));
    let template = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| request.uri().path().to_owned());
    let method = request.method().clone();
    if is_public_route(method.as_str(), &template) {
        return next.run(request).await;
    }
    let presented = Presented::of(request.headers(), &method);
    let route = format!("{method} {template}");
    let plane = state.runtime.clone();
    let anonymous = presented.bearer.is_none() && presented.cookie.is_none();
    // Reads only the in-memory read model; a refusal's audit row is written behind.
    let origins = state.origins.clone();
    let outcome = plane.authenticate_async(&presented.credentials(remote, &route, &origins)).await;
    match outcome {
        Ok(auth) => {
            request.extensions_mut().insert(auth.actor);
            request.extensions_mut().insert(SessionRef(auth.session));
            next.run(request).await
        }
        Err(Refused { failure, audited }) => {
            let reason = match failure.code {
                _ if anonymous => "missing_credentials",
                portunus_core::ErrorCode::Unauthenticated => "invalid_token",
                other => other.as_str(),
            };
            // The log line follows the audit record: a source over its budget is counted in
            // `portunus_audit_rows_dropped_total`, not logged request by request.
            if audited {
                tracing::warn!(event = "auth.failure", reason, kind = "operator_api", path = %template);
            } else {
                tracing::debug!(event = "auth.failure", reason, kind = "operator_api", path = %template);
            }
            ApiError::from(failure).into_response()
        }
    }
}
