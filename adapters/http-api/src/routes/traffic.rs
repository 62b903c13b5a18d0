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

/// `GET /v1/traffic`: the window, and whose traffic.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct TrafficQueryParams {
    /// Start, unix seconds (inclusive) [default: an hour before `to`].
    pub from: Option<i64>,
    /// End, unix seconds (exclusive) [default: now].
    pub to: Option<i64>,
    /// `1m` (kept 7 days) or `1h` (kept 90 days); default `1m` when the window fits in its
    /// retention, else `1h`.
    pub bucket: Option<String>,
    /// Only this client (id or name).
    pub client: Option<String>,
    /// Only this user's rules (users may name only themselves).
    pub user: Option<String>,
}

/// `GET /v1/users/{user}/traffic`: the window, and optionally one client.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct UserTrafficParams {
    /// Start, unix seconds (inclusive) [default: an hour before `to`].
    pub from: Option<i64>,
    /// End, unix seconds (exclusive) [default: now].
    pub to: Option<i64>,
    /// `1m` or `1h` (see `GET /v1/traffic`).
    pub bucket: Option<String>,
    /// Only this client (id or name).
    pub client: Option<String>,
}

/// `GET /v1/clients/{client}/traffic`: the window, and optionally one user.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ClientTrafficParams {
    /// Start, unix seconds (inclusive) [default: an hour before `to`].
    pub from: Option<i64>,
    /// End, unix seconds (exclusive) [default: now].
    pub to: Option<i64>,
    /// `1m` or `1h` (see `GET /v1/traffic`).
    pub bucket: Option<String>,
    /// Only this user's rules (users may name only themselves).
    pub user: Option<String>,
}

/// The window when a query names no start: the hour before its end.
const DEFAULT_WINDOW_SECS: i64 = 3_600;

async fn answer(
    state: AppState,
    actor: Actor,
    (from, to, bucket): (Option<i64>, Option<i64>, Option<String>),
    scope: TrafficScope,
) -> Result<TrafficAnswer, ApiError> {
    let bucket = bucket.as_deref().map(Bucket::parse).transpose()?;
    let now = state.runtime.now();
    let to = to.unwrap_or_else(|| i64::try_from(now.as_millis() / 1_000).unwrap_or(i64::MAX));
    let from = from.unwrap_or_else(|| to.saturating_sub(DEFAULT_WINDOW_SECS));
    let query = TrafficQuery::new(from, to, bucket, now)?;
    Ok(blocking(move || state.runtime.traffic(&actor, query, &scope)).await?)
}

/// Traffic of everyone (superadmins) or of the caller's own rules (users).
#[utoipa::path(get, path = "/v1/traffic", tag = "quotas", params(TrafficQueryParams),
    responses((status = 200, body = TrafficAnswer)))]
pub async fn traffic(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    ApiQuery(q): ApiQuery<TrafficQueryParams>,
) -> Result<Json<TrafficAnswer>, ApiError> {
    let scope = TrafficScope { user: q.user, client: q.client };
    Ok(Json(answer(state, actor, (q.from, q.to, q.bucket), scope).await?))
}

/// Traffic of one user's rules (superadmins, or the user).
#[utoipa::path(get, path = "/v1/users/{user}/traffic", tag = "quotas",
    params(("user" = String, Path, description = "user id"), UserTrafficParams),
    responses((status = 200, body = TrafficAnswer)))]
pub async fn user_traffic(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    ApiPath(user): ApiPath<String>,
    ApiQuery(q): ApiQuery<UserTrafficParams>,
) -> Result<Json<TrafficAnswer>, ApiError> {
    let scope = TrafficScope { user: Some(user), client: q.client };
    Ok(Json(answer(state, actor, (q.from, q.to, q.bucket), scope).await?))
}

/// Traffic through one client (everyone's for superadmins, the caller's own for users). A
/// client no grant of a user names answers them 404, exactly like a missing one.
#[utoipa::path(get, path = "/v1/clients/{client}/traffic", tag = "quotas",
    params(("client" = String, Path, description = "client id or name"), ClientTrafficParams),
    responses((status = 200, body = TrafficAnswer), (status = 404, description = "no such client (or not one of the caller's)", body = crate::error::ErrorBody)))]
pub async fn client_traffic(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    ApiPath(client): ApiPath<String>,
    ApiQuery(q): ApiQuery<ClientTrafficParams>,
) -> Result<Json<TrafficAnswer>, ApiError> {
    let scope = TrafficScope { user: q.user, client: Some(client) };
    Ok(Json(answer(state, actor, (q.from, q.to, q.bucket), scope).await?))
}
