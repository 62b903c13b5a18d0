//! `/v1/users`: accounts and their API tokens.

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Json;
use portunus_core::policy::Actor;
use portunus_core::service::NewUser;

use super::blocking;
use crate::AppState;
use crate::dto::{MintedTokenDto, NewTokenRequest, NewUserRequest, TokenDto, UserDto};
use crate::error::{ApiError, ApiJson, ApiPath, ErrorBody};

/// Every account (superadmins).
#[utoipa::path(get, path = "/v1/users", tag = "users", responses((status = 200, body = Vec<UserDto>)))]
pub async fn list_users(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
) -> Result<Json<Vec<UserDto>>, ApiError> {
    let users = blocking(move || state.runtime.list_users(&actor)).await?;
    Ok(Json(users.into_iter().map(UserDto::from).collect()))
}

/// Creates an account (superadmins). A superadmin created here also closes onboarding.
#[utoipa::path(post, path = "/v1/users", tag = "users", request_body = NewUserRequest,
    responses((status = 201, body = UserDto), (status = 409, description = "the id is taken", body = ErrorBody)))]
pub async fn create_user(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    ApiJson(body): ApiJson<NewUserRequest>,
) -> Result<(StatusCode, Json<UserDto>), ApiError> {
    let new = NewUser { id: body.id, role: body.role.into(), password: body.password };
    let user = blocking(move || state.runtime.create_user(&actor, &new)).await?;
    tracing::info!(event = "user.created", user = %user.id, role = user.role.as_str());
    Ok((StatusCode::CREATED, Json(user.into())))
}

/// One account (superadmins, or the user themself).
#[utoipa::path(get, path = "/v1/users/{user}", tag = "users", params(("user" = String, Path, description = "user id")),
    responses((status = 200, body = UserDto)))]
pub async fn get_user(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    ApiPath(user): ApiPath<String>,
) -> Result<Json<UserDto>, ApiError> {
    let user = blocking(move || state.runtime.get_user(&actor, &user)).await?;
    Ok(Json(user.into()))
}

/// Deletes an account with its grants, tokens, sessions and rules (superadmins).
#[utoipa::path(delete, path = "/v1/users/{user}", tag = "users", params(("user" = String, Path, description = "user id")),
    responses((status = 204, description = "deleted"),
        (status = 409, description = "the last superadmin cannot be deleted", body = ErrorBody)))]
pub async fn delete_user(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    ApiPath(user): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let user = blocking(move || state.runtime.delete_user(&actor, &user)).await?;
    tracing::info!(event = "user.deleted", user = %user.id);
    Ok(StatusCode::NO_CONTENT)
}

/// A user's API tokens (superadmins, or the user themself).
#[utoipa::path(get, path = "/v1/users/{user}/tokens", tag = "users",
    params(("user" = String, Path, description = "user id")), responses((status = 200, body = Vec<TokenDto>)))]
pub async fn list_tokens(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    ApiPath(user): ApiPath<String>,
) -> Result<Json<Vec<TokenDto>>, ApiError> {
    let tokens = blocking(move || state.runtime.list_tokens(&actor, &user)).await?;
    Ok(Json(tokens.into_iter().map(TokenDto::from).collect()))
}

/// Mints an API token (superadmins, or the user themself); the text is in this response only.
#[utoipa::path(post, path = "/v1/users/{user}/tokens", tag = "users", request_body = NewTokenRequest,
    params(("user" = String, Path, description = "user id")), responses((status = 201, body = MintedTokenDto)))]
pub async fn create_token(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    ApiPath(user): ApiPath<String>,
    ApiJson(body): ApiJson<NewTokenRequest>,
) -> Result<(StatusCode, Json<MintedTokenDto>), ApiError> {
    let minted = blocking(move || state.runtime.create_token(&actor, &user, body.name.as_deref())).await?;
    tracing::info!(event = "token.created", user = %minted.token.user, token_id = %minted.token.id);
    let token = minted.secret.expose().to_owned();
    Ok((StatusCode::CREATED, Json(MintedTokenDto { record: minted.token.into(), token })))
}

/// Revokes an API token (superadmins, or the user themself).
#[utoipa::path(delete, path = "/v1/users/{user}/tokens/{token}", tag = "users",
    params(("user" = String, Path, description = "user id"), ("token" = String, Path, description = "token id (tk_…)")),
    responses((status = 204, description = "revoked")))]
pub async fn revoke_token(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    ApiPath((user, token)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    blocking(move || state.runtime.revoke_token(&actor, &user, &token)).await?;
    Ok(StatusCode::NO_CONTENT)
}
