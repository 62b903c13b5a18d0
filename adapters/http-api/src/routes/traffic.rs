//! Traffic history: `GET /v1/traffic`, `GET /v1/users/{user}/traffic` and
//! `GET /v1/clients/{client}/traffic`: bytes per rule in one-minute or one-hour samples, with
//! their totals.

use axum::Extension;
use axum::extract::State;
use axum::response::Json;
use portunus_core::history::{Bucket, TrafficAnswer, TrafficQuery};
use portunus_core::policy::Actor;
use portunus_core::service::TrafficScope;
use serde::Deserialize;
use utoipa::IntoParams;

use super::blocking;
use crate::AppState;
use crate::error::{ApiError, ApiPath, ApiQuery};

/// The window of a traffic query.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct TrafficWindow {
    /// Start, unix seconds (inclusive).
    pub from: i64,
    /// End, unix seconds (exclusive).
    pub to: i64,
    /// `1m` (kept 7 days) or `1h` (kept 90 days); default `1m` when the window fits in its
    /// retention, else `1h`.
    pub bucket: Option<String>,
    /// Only this client (id or name).
    pub client: Option<String>,
    /// Only this user's rules (users may name only themselves).
    pub user: Option<String>,
}

async fn answer(
    state: AppState,
    actor: Actor,
    window: TrafficWindow,
    scope: TrafficScope,
) -> Result<TrafficAnswer, ApiError> {
    let bucket = window.bucket.as_deref().map(Bucket::parse).transpose()?;
    let query = TrafficQuery::new(window.from, window.to, bucket, state.runtime.now())?;
    Ok(blocking(move || state.runtime.traffic(&actor, query, &scope)).await?)
}

/// Traffic of everyone (superadmins) or of the caller's own rules (users).
#[utoipa::path(get, path = "/v1/traffic", tag = "quotas", params(TrafficWindow),
    responses((status = 200, body = TrafficAnswer)))]
pub async fn traffic(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    ApiQuery(window): ApiQuery<TrafficWindow>,
) -> Result<Json<TrafficAnswer>, ApiError> {
    let scope = TrafficScope { user: window.user.clone(), client: window.client.clone() };
    Ok(Json(answer(state, actor, window, scope).await?))
}

/// Traffic of one user's rules (superadmins, or the user).
#[utoipa::path(get, path = "/v1/users/{user}/traffic", tag = "quotas",
    params(("user" = String, Path, description = "user id"), TrafficWindow),
    responses((status = 200, body = TrafficAnswer)))]
pub async fn user_traffic(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    ApiPath(user): ApiPath<String>,
    ApiQuery(window): ApiQuery<TrafficWindow>,
) -> Result<Json<TrafficAnswer>, ApiError> {
    let scope = TrafficScope { user: Some(user), client: window.client.clone() };
    Ok(Json(answer(state, actor, window, scope).await?))
}

/// Traffic through one client (everyone's for superadmins, the caller's own for users).
#[utoipa::path(get, path = "/v1/clients/{client}/traffic", tag = "quotas",
    params(("client" = String, Path, description = "client id or name"), TrafficWindow),
    responses((status = 200, body = TrafficAnswer)))]
pub async fn client_traffic(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    ApiPath(client): ApiPath<String>,
    ApiQuery(window): ApiQuery<TrafficWindow>,
) -> Result<Json<TrafficAnswer>, ApiError> {
    let scope = TrafficScope { user: window.user.clone(), client: Some(client) };
    Ok(Json(answer(state, actor, window, scope).await?))
}
