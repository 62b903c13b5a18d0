//! `/v1/auth`: onboarding of the first superadmin, login and logout (the session cookie),
//! the caller's own account, and password changes.

use axum::Extension;
use axum::extract::State;
use axum::http::header::SET_COOKIE;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Json, Response};
use portunus_core::account::SESSION_TTL;
use portunus_core::policy::Actor;

use super::blocking;
use crate::AppState;
use crate::auth::{OverHttps, Remote, SESSION_COOKIE, SessionRef};
use crate::dto::{
    LoginRequest, LoginResponse, OnboardingRequest, OnboardingStatusDto, PasswordChangeRequest, UserDto,
};
use crate::error::{ApiError, ApiJson, ErrorBody};

fn cookie_header(value: &str, max_age_secs: u64, secure: bool) -> Result<HeaderValue, ApiError> {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age_secs}{secure}"
    ))
    .map_err(|_| ApiError::new(portunus_core::ErrorCode::Internal, "unrepresentable cookie"))
}

/// Whether onboarding is still open (public).
#[utoipa::path(get, path = "/v1/auth/onboarding", tag = "auth", security(()),
    responses((status = 200, body = OnboardingStatusDto)))]
pub async fn onboarding_status(State(state): State<AppState>) -> Result<Json<OnboardingStatusDto>, ApiError> {
    let onboarding = blocking(move || state.runtime.onboarding_status()).await?;
    Ok(Json(OnboardingStatusDto {
        required: !onboarding.is_complete(),
        setup_token_expires_at: onboarding
            .setup_expires_at
            .filter(|_| !onboarding.is_complete())
            .map(|t| t.to_rfc3339()),
    }))
}

/// Creates the first superadmin with the setup token `serve` printed (public). Closes
/// onboarding for good.
#[utoipa::path(post, path = "/v1/auth/onboarding", tag = "auth", security(()), request_body = OnboardingRequest,
    responses((status = 201, body = UserDto),
        (status = 401, description = "wrong or expired setup token", body = ErrorBody),
        (status = 409, description = "onboarding is already complete", body = ErrorBody)))]
pub async fn complete_onboarding(
    State(state): State<AppState>,
    Extension(Remote(remote)): Extension<Remote>,
    ApiJson(body): ApiJson<OnboardingRequest>,
) -> Result<(StatusCode, Json<UserDto>), ApiError> {
    let user = blocking(move || {
        state.runtime.complete_onboarding(&body.setup_token, &body.user_id, &body.password, remote)
    })
    .await
    .inspect_err(|failure| {
        tracing::warn!(event = "auth.failure", kind = "onboarding", reason = failure.code.as_str(),
            remote = ?remote);
    })?;
    tracing::info!(event = "auth.onboarding_completed", user = %user.id);
    Ok((StatusCode::CREATED, Json(user.into())))
}

/// Logs in with a password and sets the session cookie (public).
#[utoipa::path(post, path = "/v1/auth/login", tag = "auth", security(()), request_body = LoginRequest,
    responses((status = 200, body = LoginResponse,
            headers(("set-cookie" = String, description = "portunus_session=…; HttpOnly; SameSite=Strict"))),
        (status = 401, description = "wrong user id or password", body = ErrorBody)))]
pub async fn login(
    State(state): State<AppState>,
    Extension(Remote(remote)): Extension<Remote>,
    Extension(OverHttps(https)): Extension<OverHttps>,
    ApiJson(body): ApiJson<LoginRequest>,
) -> Result<Response, ApiError> {
    let outcome = blocking(move || state.runtime.login(&body.user_id, &body.password, remote))
        .await
        .inspect_err(|failure| {
            tracing::warn!(event = "auth.failure", kind = "login", reason = failure.code.as_str(),
                remote = ?remote);
        })?;
    let cookie = cookie_header(outcome.cookie.expose(), SESSION_TTL.as_secs(), https)?;
    tracing::info!(event = "auth.login", user = %outcome.user.id);
    let body = LoginResponse {
        csrf_token: outcome.csrf.expose().to_owned(),
        expires_at: outcome.session.expires_at.to_rfc3339(),
        user: outcome.user.into(),
    };
    Ok(([(SET_COOKIE, cookie)], Json(body)).into_response())
}

/// Ends the Web session (and clears the cookie); a no-op for bearer tokens.
#[utoipa::path(post, path = "/v1/auth/logout", tag = "auth", responses((status = 204, description = "logged out")))]
pub async fn logout(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Extension(SessionRef(session)): Extension<SessionRef>,
    Extension(OverHttps(https)): Extension<OverHttps>,
) -> Result<Response, ApiError> {
    let had_session = session.is_some();
    blocking(move || state.runtime.logout(&actor, session.as_ref())).await?;
    if had_session {
        let cleared = cookie_header("", 0, https)?;
        return Ok((StatusCode::NO_CONTENT, [(SET_COOKIE, cleared)]).into_response());
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The caller's own account (allowed with a temporary password).
#[utoipa::path(get, path = "/v1/auth/me", tag = "auth", responses((status = 200, body = UserDto)))]
pub async fn whoami(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
) -> Result<Json<UserDto>, ApiError> {
    let user = blocking(move || state.runtime.whoami(&actor)).await?;
    Ok(Json(user.into()))
}

/// Changes the caller's own password (allowed with a temporary password; required then).
#[utoipa::path(put, path = "/v1/auth/password", tag = "auth", request_body = PasswordChangeRequest,
    responses((status = 204, description = "changed; the caller's other sessions ended")))]
pub async fn change_password(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Extension(SessionRef(session)): Extension<SessionRef>,
    ApiJson(body): ApiJson<PasswordChangeRequest>,
) -> Result<StatusCode, ApiError> {
    blocking(move || {
        state.runtime.change_password(&actor, &body.current_password, &body.new_password, session.as_ref())
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
