//! `/v1/owner-caps` and `/v1/users/{user}/owner-caps/{client}`: owner envelopes, the rate
//! limits of all of one user's rules on one client taken together. Superadmins set them; a
//! user reads their own. Bandwidth caps count bytes (not bits) per second.

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Json;
use portunus_core::policy::Actor;
use portunus_core::ratelimit::{OwnerEnvelope, RateLimits};
use portunus_core::service::OwnerCapsView;
use serde::Deserialize;
use utoipa::IntoParams;

use super::blocking;
use crate::AppState;
use crate::error::{ApiError, ApiJson, ApiPath, ApiQuery, ErrorBody};

/// `GET /v1/owner-caps` filter.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct OwnerCapsFilter {
    /// Only the envelopes of this user (users may name only themselves).
    pub user: Option<String>,
}

/// Owner envelopes: all (superadmins) or the caller's own (users).
#[utoipa::path(get, path = "/v1/owner-caps", tag = "rate-limits", params(OwnerCapsFilter),
    responses((status = 200, body = Vec<OwnerCapsView>)))]
pub async fn list_owner_caps(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    ApiQuery(filter): ApiQuery<OwnerCapsFilter>,
) -> Result<Json<Vec<OwnerCapsView>>, ApiError> {
    Ok(Json(blocking(move || state.runtime.list_owner_caps(&actor, filter.user.as_deref())).await?))
}

/// Creates or replaces the envelope of a user on a client (superadmins): caps on all the
/// user's rules there together, enforced before each rule's own caps. Bandwidth is in bytes
/// (not bits) per second. At least one cap must be set (`validation.empty_envelope`: delete
/// the envelope to lift it); a grant must give the user the client, and a connected client
/// must support rate limits. Replacing keeps the live buckets' levels on the client.
#[utoipa::path(put, path = "/v1/users/{user}/owner-caps/{client}", tag = "rate-limits", request_body = RateLimits,
    params(("user" = String, Path, description = "user id", example = "alice"), ("client" = String, Path, description = "client id or name", example = "edge-01")),
    responses((status = 200, body = OwnerCapsView),
        (status = 422, description = "capability gate: the connected client did not announce rate-limit support", body = ErrorBody)))]
pub async fn set_owner_caps(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    ApiPath((user, client)): ApiPath<(String, String)>,
    ApiJson(limits): ApiJson<RateLimits>,
) -> Result<Json<OwnerCapsView>, ApiError> {
    let envelope = OwnerEnvelope(limits);
    Ok(Json(blocking(move || state.runtime.set_owner_caps(&actor, &user, &client, &envelope)).await?))
}

/// One envelope, every burst written out (superadmins, or the user it is for; another user's
/// answers as a missing one).
#[utoipa::path(get, path = "/v1/users/{user}/owner-caps/{client}", tag = "rate-limits",
    params(("user" = String, Path, description = "user id", example = "alice"), ("client" = String, Path, description = "client id or name", example = "edge-01")),
    responses((status = 200, body = OwnerCapsView)))]
pub async fn get_owner_caps(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    ApiPath((user, client)): ApiPath<(String, String)>,
) -> Result<Json<OwnerCapsView>, ApiError> {
    Ok(Json(blocking(move || state.runtime.get_owner_caps(&actor, &user, &client)).await?))
}

/// Removes an envelope (superadmins): the user's rules keep only their own caps.
#[utoipa::path(delete, path = "/v1/users/{user}/owner-caps/{client}", tag = "rate-limits",
    params(("user" = String, Path, description = "user id", example = "carol"), ("client" = String, Path, description = "client id or name", example = "edge-01")),
    responses((status = 204, description = "removed")))]
pub async fn delete_owner_caps(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    ApiPath((user, client)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    blocking(move || state.runtime.delete_owner_caps(&actor, &user, &client)).await?;
    Ok(StatusCode::NO_CONTENT)
}
