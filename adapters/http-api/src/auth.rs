//! The one authentication layer in front of every `/v1/*` route: a credential becomes an
//! `Actor` (through core) in the request's extensions, or the request ends with 401.
//!
//! Invariant: handlers never look at credentials; they receive the `Actor`.

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::AppState;
use crate::error::ApiError;

/// Middleware: authenticates the bearer token and stores the actor.
pub async fn require_actor(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let bearer = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .trim()
        .to_owned();
    match state.plane.authenticate_operator(&bearer) {
        Ok(actor) => {
            request.extensions_mut().insert(actor);
            next.run(request).await
        }
        Err(failure) => {
            let path = request.uri().path().to_owned();
            tracing::warn!(
                event = "auth.failure",
                reason = if bearer.is_empty() { "missing_credentials" } else { "invalid_token" },
                kind = "operator_api",
                path = %path,
            );
            ApiError::from(failure).into_response()
        }
    }
}
