//! `/v1/clients`: enrollment and re-enrollment, listings, rename, revocation, deletion.

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{Json, Response};
use portunus_core::policy::Actor;

use super::blocking;
use crate::AppState;
use crate::dto::{ClientDto, EnrollRequest, EnrollResponse, ReenrollRequest, RenameClientRequest};
use crate::error::{ApiError, ApiJson, ApiPath, ErrorBody};
use crate::listing::{self, Listing};

/// Lists clients with their connection state: all for superadmins, the granted ones for users.
#[utoipa::path(get, path = "/v1/clients", tag = "clients", responses((status = 200, body = Vec<ClientDto>)))]
pub async fn list_clients(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
) -> Result<Response, ApiError> {
    let shared = actor.sees_everything();
    listing::respond(&state, Listing::Clients, shared, move |runtime| {
        let views = runtime.list_clients(&actor)?;
        listing::encode(views.into_iter().map(ClientDto::from), CLIENT_JSON_BYTES)
    })
    .await
}

/// About what one client takes in a listing (a starting size for the buffer).
const CLIENT_JSON_BYTES: usize = 240;

/// Issues an enrollment code; creates the client if the name is new.
#[utoipa::path(post, path = "/v1/clients", tag = "clients", request_body = EnrollRequest,
    responses((status = 201, body = EnrollResponse),
        (status = 422, description = "the advertised endpoint is not covered by the certificate", body = ErrorBody)))]
pub async fn enroll_client(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    ApiJson(body): ApiJson<EnrollRequest>,
) -> Result<(StatusCode, Json<EnrollResponse>), ApiError> {
    let (ticket, view) = blocking(move || {
        let ticket = state.runtime.enroll_client(&actor, &body.name, body.expires_in_secs)?;
        let view = state.runtime.get_client(&actor, ticket.client.id.as_str())?;
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
    responses((status = 200, body = ClientDto)))]
pub async fn get_client(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    ApiPath(client): ApiPath<String>,
) -> Result<Json<ClientDto>, ApiError> {
    let view = blocking(move || state.runtime.get_client(&actor, &client)).await?;
    Ok(Json(view.into()))
}

/// Revokes a client's token and ends its stream.
#[utoipa::path(post, path = "/v1/clients/{client}/revoke", tag = "clients",
    params(("client" = String, Path, description = "client id (cl_…) or name")),
    responses((status = 200, body = ClientDto)))]
pub async fn revoke_client(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    ApiPath(client): ApiPath<String>,
) -> Result<Json<ClientDto>, ApiError> {
    let view = blocking(move || {
        let client = state.runtime.revoke(&actor, &client)?;
        state.runtime.get_client(&actor, client.id.as_str())
    })
    .await?;
    tracing::info!(event = "client.revoked", client = %view.client.name, client_id = %view.client.id);
    Ok(Json(view.into()))
}

/// Re-enrolls an existing client, by id or name: redeeming the code rotates its token.
#[utoipa::path(post, path = "/v1/clients/{client}/enrollment", tag = "clients", request_body = ReenrollRequest,
    params(("client" = String, Path, description = "client id (cl_…) or name")),
    responses((status = 201, body = EnrollResponse),
        (status = 422, description = "the advertised endpoint is not covered by the certificate", body = ErrorBody)))]
pub async fn reenroll_client(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    ApiPath(client): ApiPath<String>,
    ApiJson(body): ApiJson<ReenrollRequest>,
) -> Result<(StatusCode, Json<EnrollResponse>), ApiError> {
    let (ticket, view) = blocking(move || {
        let ticket = state.runtime.reenroll_client(&actor, &client, body.expires_in_secs)?;
        let view = state.runtime.get_client(&actor, ticket.client.id.as_str())?;
        Ok((ticket, view))
    })
    .await?;
    tracing::info!(event = "client.enrollment_issued", client = %ticket.client.name, client_id = %ticket.client.id,
        expires_at = %ticket.expires_at.to_rfc3339());
    Ok((StatusCode::CREATED, Json(EnrollResponse::new(&ticket, view.into()))))
}

/// Renames a client; its id, token, grants and rules stay.
#[utoipa::path(patch, path = "/v1/clients/{client}", tag = "clients", request_body = RenameClientRequest,
    params(("client" = String, Path, description = "client id (cl_…) or name")),
    responses((status = 200, body = ClientDto), (status = 409, description = "the name is taken", body = ErrorBody)))]
pub async fn rename_client(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    ApiPath(client): ApiPath<String>,
    ApiJson(body): ApiJson<RenameClientRequest>,
) -> Result<Json<ClientDto>, ApiError> {
    let view = blocking(move || {
        let renamed = state.runtime.rename_client(&actor, &client, &body.name)?;
        state.runtime.get_client(&actor, renamed.id.as_str())
    })
    .await?;
    tracing::info!(event = "client.renamed", client = %view.client.name, client_id = %view.client.id);
    Ok(Json(view.into()))
}

/// Deletes a revoked client with its rules and the grants that name it.
#[utoipa::path(delete, path = "/v1/clients/{client}", tag = "clients",
    params(("client" = String, Path, description = "client id (cl_…) or name")),
    responses((status = 204, description = "deleted"),
        (status = 409, description = "the client is not revoked", body = ErrorBody)))]
pub async fn delete_client(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    ApiPath(client): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let deleted = blocking(move || state.runtime.delete_client(&actor, &client)).await?;
    tracing::info!(event = "client.deleted", client = %deleted.name, client_id = %deleted.id);
    Ok(StatusCode::NO_CONTENT)
}
