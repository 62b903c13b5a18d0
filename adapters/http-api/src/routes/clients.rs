//! `/v1/clients`: enrollment, listings, revocation.

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Json;
use portunus_core::policy::Actor;

use super::blocking;
use crate::AppState;
use crate::dto::{ClientDto, EnrollRequest, EnrollResponse};
use crate::error::{ApiError, ApiJson, ErrorBody};

/// Lists clients with their connection state.
#[utoipa::path(get, path = "/v1/clients", tag = "clients",
    responses((status = 200, body = Vec<ClientDto>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn list_clients(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
) -> Result<Json<Vec<ClientDto>>, ApiError> {
    let views = blocking(move || state.plane.list_clients(&actor)).await?;
    Ok(Json(views.into_iter().map(ClientDto::from).collect()))
}

/// Issues an enrollment code; creates the client if the name is new.
#[utoipa::path(post, path = "/v1/clients", tag = "clients", request_body = EnrollRequest,
    responses((status = 201, body = EnrollResponse), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
pub async fn enroll_client(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    ApiJson(body): ApiJson<EnrollRequest>,
) -> Result<(StatusCode, Json<EnrollResponse>), ApiError> {
    let (ticket, view) = blocking(move || {
        let ticket = state.plane.enroll_client(&actor, &body.name, body.expires_in_secs)?;
        let view = state.plane.get_client(&actor, ticket.client.id.as_str())?;
        Ok((ticket, view))
    })
    .await?;
    tracing::info!(event = "client.enrollment_issued", client = %ticket.client.name, client_id = %ticket.client.id,
        expires_at = %ticket.expires_at.to_rfc3339());
    Ok((StatusCode::CREATED, Json(EnrollResponse::new(&ticket, view.into()))))
}

/// One client by id or name.
#[utoipa::path(get, path = "/v1/clients/{client}", tag = "clients",
    params(("client" = String, Path, description = "client id (cl_…) or name")),
    responses((status = 200, body = ClientDto), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn get_client(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(client): Path<String>,
) -> Result<Json<ClientDto>, ApiError> {
    let view = blocking(move || state.plane.get_client(&actor, &client)).await?;
    Ok(Json(view.into()))
}

/// Revokes a client's token and ends its stream.
#[utoipa::path(post, path = "/v1/clients/{client}/revoke", tag = "clients",
    params(("client" = String, Path, description = "client id (cl_…) or name")),
    responses((status = 200, body = ClientDto), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn revoke_client(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(client): Path<String>,
) -> Result<Json<ClientDto>, ApiError> {
    let view = blocking(move || {
        let client = state.plane.revoke(&actor, &client)?;
        state.plane.get_client(&actor, client.id.as_str())
    })
    .await?;
    tracing::info!(event = "client.revoked", client = %view.client.name, client_id = %view.client.id);
    Ok(Json(view.into()))
}
