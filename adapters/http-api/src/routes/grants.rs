//! `/v1/grants`: edge capacity handed to users.

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Json;
use portunus_core::policy::Actor;
use portunus_core::rule::ListenSpec;
use portunus_core::service::NewGrant;

use super::blocking;
use crate::AppState;
use crate::dto::{GrantDto, GrantFilter, NewGrantRequest};
use crate::error::{ApiError, ApiJson, ApiPath, ApiQuery, ErrorBody};

/// Grants: all (superadmins) or the caller's own (users).
#[utoipa::path(get, path = "/v1/grants", tag = "grants", params(GrantFilter),
    responses((status = 200, body = Vec<GrantDto>)))]
pub async fn list_grants(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    ApiQuery(filter): ApiQuery<GrantFilter>,
) -> Result<Json<Vec<GrantDto>>, ApiError> {
    let grants = blocking(move || state.runtime.list_grants(&actor, filter.user.as_deref())).await?;
    Ok(Json(grants.into_iter().map(GrantDto::from).collect()))
}

/// Grants a user a client (or `*`), a listen port range and protocols (superadmins).
#[utoipa::path(post, path = "/v1/grants", tag = "grants", request_body = NewGrantRequest,
    responses((status = 201, body = GrantDto), (status = 404, description = "no such user or client", body = ErrorBody)))]
pub async fn create_grant(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    ApiJson(body): ApiJson<NewGrantRequest>,
) -> Result<(StatusCode, Json<GrantDto>), ApiError> {
    let ports = match body.ports {
        ListenSpec::Port(n) => n.to_string(),
        ListenSpec::Text(text) => text,
    };
    let new = NewGrant { user: body.user, client: body.client, ports, protocols: body.protocols };
    let grant = blocking(move || state.runtime.create_grant(&actor, &new)).await?;
    tracing::info!(event = "grant.created", grant = %grant.id, user = %grant.user);
    Ok((StatusCode::CREATED, Json(grant.into())))
}

/// One grant (superadmins, or the user it is for).
#[utoipa::path(get, path = "/v1/grants/{grant}", tag = "grants",
    params(("grant" = String, Path, description = "grant id (gr_…)")), responses((status = 200, body = GrantDto)))]
pub async fn get_grant(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    ApiPath(grant): ApiPath<String>,
) -> Result<Json<GrantDto>, ApiError> {
    let grant = blocking(move || state.runtime.get_grant(&actor, &grant)).await?;
    Ok(Json(grant.into()))
}

/// Revokes a grant; rules no remaining grant covers are removed, on the clients too
/// (superadmins).
#[utoipa::path(delete, path = "/v1/grants/{grant}", tag = "grants",
    params(("grant" = String, Path, description = "grant id (gr_…)")), responses((status = 204, description = "revoked")))]
pub async fn delete_grant(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    ApiPath(grant): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let (grant, removed) = blocking(move || state.runtime.delete_grant(&actor, &grant)).await?;
    tracing::info!(event = "grant.revoked", grant = %grant.id, user = %grant.user, rules_removed = removed.len());
    Ok(StatusCode::NO_CONTENT)
}
