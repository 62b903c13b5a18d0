//! `/v1/quotas` and `/v1/users/{user}/quotas/{client}`: monthly traffic quotas per (user,
//! client) pair. Superadmins set them; a user reads their own.

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Json;
use portunus_core::policy::Actor;
use portunus_core::quota::{QuotaPatch, QuotaSpec};
use portunus_core::service::QuotaView;
use serde::Deserialize;
use utoipa::IntoParams;

use super::blocking;
use crate::AppState;
use crate::error::{ApiError, ApiJson, ApiPath, ApiQuery};

/// `GET /v1/quotas` filter.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct QuotaFilter {
    /// Only quotas of this user (users may name only themselves).
    pub user: Option<String>,
}

/// Quotas: all (superadmins) or the caller's own (users), with their usage now.
#[utoipa::path(get, path = "/v1/quotas", tag = "quotas", params(QuotaFilter),
    responses((status = 200, body = Vec<QuotaView>)))]
pub async fn list_quotas(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    ApiQuery(filter): ApiQuery<QuotaFilter>,
) -> Result<Json<Vec<QuotaView>>, ApiError> {
    Ok(Json(blocking(move || state.runtime.list_quotas(&actor, filter.user.as_deref())).await?))
}

/// Creates or replaces the quota of a user on a client (superadmins). A grant must give the
/// user the client. Replacing with the same anchor (or none) keeps the period's usage.
#[utoipa::path(put, path = "/v1/users/{user}/quotas/{client}", tag = "quotas", request_body = QuotaSpec,
    params(("user" = String, Path, description = "user id", example = "alice"), ("client" = String, Path, description = "client id or name", example = "edge-01")),
    responses((status = 200, body = QuotaView)))]
pub async fn set_quota(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    ApiPath((user, client)): ApiPath<(String, String)>,
    ApiJson(spec): ApiJson<QuotaSpec>,
) -> Result<Json<QuotaView>, ApiError> {
    Ok(Json(blocking(move || state.runtime.set_quota(&actor, &user, &client, &spec)).await?))
}

/// Changes the cap, or clears the current period's usage (a one-shot credit), without moving
/// the period's boundaries (superadmins).
#[utoipa::path(patch, path = "/v1/users/{user}/quotas/{client}", tag = "quotas", request_body = QuotaPatch,
    params(("user" = String, Path, description = "user id", example = "alice"), ("client" = String, Path, description = "client id or name", example = "edge-01")),
    responses((status = 200, body = QuotaView)))]
pub async fn patch_quota(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    ApiPath((user, client)): ApiPath<(String, String)>,
    ApiJson(patch): ApiJson<QuotaPatch>,
) -> Result<Json<QuotaView>, ApiError> {
    Ok(Json(blocking(move || state.runtime.patch_quota(&actor, &user, &client, &patch)).await?))
}

/// Removes a quota: the pair is no longer metered or capped (superadmins).
#[utoipa::path(delete, path = "/v1/users/{user}/quotas/{client}", tag = "quotas",
    params(("user" = String, Path, description = "user id", example = "carol"), ("client" = String, Path, description = "client id or name", example = "edge-01")),
    responses((status = 204, description = "removed")))]
pub async fn delete_quota(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    ApiPath((user, client)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    blocking(move || state.runtime.delete_quota(&actor, &user, &client)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A quota's cap, period and usage now (superadmins, or the user it is for).
#[utoipa::path(get, path = "/v1/users/{user}/quotas/{client}/status", tag = "quotas",
    params(("user" = String, Path, description = "user id", example = "alice"), ("client" = String, Path, description = "client id or name", example = "edge-01")),
    responses((status = 200, body = QuotaView)))]
pub async fn quota_status(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    ApiPath((user, client)): ApiPath<(String, String)>,
) -> Result<Json<QuotaView>, ApiError> {
    Ok(Json(blocking(move || state.runtime.get_quota(&actor, &user, &client)).await?))
}
