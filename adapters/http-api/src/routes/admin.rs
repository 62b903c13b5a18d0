//! `/v1/settings` and `/v1/audit`.

use axum::Extension;
use axum::extract::State;
use axum::response::Json;
use portunus_core::audit::AuditQuery;
use portunus_core::error::{ErrorCode, Failure};
use portunus_core::ids::Timestamp;
use portunus_core::policy::Actor;

use super::blocking;
use crate::AppState;
use crate::dto::{AuditPageDto, AuditParams, EndpointSettingsDto, EndpointUpdate, OutcomeDto};
use crate::error::{ApiError, ApiJson, ApiQuery, ErrorBody};

/// The advertised endpoint: override, seed, what enrollment uses now, and why not.
#[utoipa::path(get, path = "/v1/settings/advertised-endpoint", tag = "settings",
    responses((status = 200, body = EndpointSettingsDto)))]
pub async fn get_advertised_endpoint(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
) -> Result<Json<EndpointSettingsDto>, ApiError> {
    let view = blocking(move || state.runtime.endpoint_settings(&actor)).await?;
    Ok(Json(view.into()))
}

/// Sets or clears the override. Refused, and not stored, when it is not a bare `host:port`
/// (`endpoint_invalid`) or the certificate does not cover its host (`endpoint_not_in_cert_san`).
#[utoipa::path(put, path = "/v1/settings/advertised-endpoint", tag = "settings", request_body = EndpointUpdate,
    responses((status = 200, body = EndpointSettingsDto),
        (status = 422, description = "endpoint_invalid or endpoint_not_in_cert_san", body = ErrorBody)))]
pub async fn set_advertised_endpoint(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    ApiJson(body): ApiJson<EndpointUpdate>,
) -> Result<Json<EndpointSettingsDto>, ApiError> {
    let view =
        blocking(move || state.runtime.set_endpoint_override(&actor, body.endpoint.as_deref())).await?;
    tracing::info!(event = "settings.advertised_endpoint_set", effective = ?view.effective);
    Ok(Json(view.into()))
}

fn time(text: Option<&str>, name: &str) -> Result<Option<Timestamp>, Failure> {
    text.map(|t| {
        Timestamp::parse_rfc3339(t).ok_or_else(|| {
            Failure::new(ErrorCode::InvalidRequest, format!("`{name}` is not an RFC 3339 UTC time"))
        })
    })
    .transpose()
}

/// The audit trail, oldest first, in pages.
#[utoipa::path(get, path = "/v1/audit", tag = "audit", params(AuditParams),
    responses((status = 200, body = AuditPageDto),
        (status = 422, description = "`to` is before `from`", body = ErrorBody)))]
pub async fn list_audit(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    ApiQuery(params): ApiQuery<AuditParams>,
) -> Result<Json<AuditPageDto>, ApiError> {
    let page = blocking(move || {
        let outcome = params.outcome.map(|o| match o {
            OutcomeDto::Success => "success",
            OutcomeDto::Denied => "denied",
            OutcomeDto::Failed => "failed",
        });
        let query = AuditQuery::new(
            params.cursor.as_deref(),
            time(params.from.as_deref(), "from")?,
            time(params.to.as_deref(), "to")?,
            outcome,
            params.limit,
        )?;
        state.runtime.audit_page(&actor, &query)
    })
    .await?;
    Ok(Json(page.into()))
}
